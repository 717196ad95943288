-- G4 by the ids actually handled, not by "below the highest": Telegram's update ids are not increasing
-- forever (after a week without updates the next id is chosen at random, and another Bot API server has
-- its own sequence). A redelivery can only repeat an update that was handled but not yet confirmed, so
-- the most recent ones are all that must be remembered (store::RECENT_UPDATES per bot; older rows are
-- pruned). `fingerprint` is a hash of the update's content, so an update that merely reuses the id of
-- a remembered one (a reset sequence) is not taken for it; NULL (the row carried over from bot_state)
-- matches by id alone.
CREATE TABLE handled_updates (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    bot_id        INTEGER NOT NULL,
    update_id     INTEGER NOT NULL,
    fingerprint   INTEGER,
    handled_at_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX handled_updates_by_id ON handled_updates (bot_id, update_id);
CREATE INDEX handled_updates_by_seq ON handled_updates (bot_id, seq);
INSERT INTO handled_updates (bot_id, update_id, fingerprint, handled_at_ms)
    SELECT bot_id, last_handled_update, NULL, updated_at_ms FROM bot_state;
DROP TABLE bot_state;

-- An alert remembers the update that set it (its fingerprint), so an update handled again after a
-- crash before it was recorded finds its alert instead of adding a second one.
ALTER TABLE alerts ADD COLUMN source_update INTEGER;
CREATE UNIQUE INDEX alerts_by_source ON alerts (bot_id, source_update) WHERE source_update IS NOT NULL;
