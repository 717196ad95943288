-- G4 by the ids actually handled (see the SQLite store's 0005_handled_updates.sql, the same table):
-- update ids are not increasing forever, so "not above the highest" is no test of "handled before".
CREATE TABLE cryptobot_lease.handled_updates (
    seq         bigserial   PRIMARY KEY,
    bot_id      bigint      NOT NULL,
    update_id   bigint      NOT NULL,
    fingerprint bigint,
    epoch       bigint      NOT NULL,
    handled_at  timestamptz NOT NULL
);
CREATE UNIQUE INDEX handled_updates_by_id ON cryptobot_lease.handled_updates (bot_id, update_id);
CREATE INDEX handled_updates_by_seq ON cryptobot_lease.handled_updates (bot_id, seq);
INSERT INTO cryptobot_lease.handled_updates (bot_id, update_id, fingerprint, epoch, handled_at)
    SELECT bot_id, last_handled_update, NULL, epoch, updated_at FROM cryptobot_lease.bot_state;
DROP TABLE cryptobot_lease.bot_state;

ALTER TABLE cryptobot_lease.alerts ADD COLUMN source_update bigint;
CREATE UNIQUE INDEX alerts_by_source ON cryptobot_lease.alerts (bot_id, source_update)
    WHERE source_update IS NOT NULL;
