-- Price alerts. `threshold` is the exact decimal text the user typed (normalised); `armed` = 1 while the
-- alert waits for a crossing, 0 after it fired until the price is back on the other side.
CREATE TABLE alerts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    bot_id           INTEGER NOT NULL,
    chat_id          INTEGER NOT NULL,
    symbol           TEXT    NOT NULL,
    coin_id          TEXT    NOT NULL,
    currency         TEXT    NOT NULL,
    direction        TEXT    NOT NULL CHECK (direction IN ('above', 'below')),
    threshold        TEXT    NOT NULL,
    armed            INTEGER NOT NULL DEFAULT 1,
    fired_count      INTEGER NOT NULL DEFAULT 0,
    last_fired_at_ms INTEGER,
    created_at_ms    INTEGER NOT NULL
);
CREATE INDEX alerts_by_chat ON alerts (bot_id, chat_id);

-- Per-chat settings: alerts are disabled when the user blocked the bot (403).
CREATE TABLE chats (
    bot_id          INTEGER NOT NULL,
    chat_id         INTEGER NOT NULL,
    alerts_disabled INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (bot_id, chat_id)
);

-- Messages to send, written in the same transaction as what caused them (a handled update, a fired
-- alert) and deleted once Telegram accepted them: a crash loses none.
CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    bot_id        INTEGER NOT NULL,
    chat_id       INTEGER NOT NULL,
    text          TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL
);
