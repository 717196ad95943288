-- Per bot: the last update whose handler finished (G4: after a crash, the next process skips it).
CREATE TABLE bot_state (
    bot_id              INTEGER PRIMARY KEY,
    last_handled_update INTEGER NOT NULL,
    updated_at_ms       INTEGER NOT NULL
);
