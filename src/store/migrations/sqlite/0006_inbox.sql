-- The inbox (issue "concurrency without giving up a guarantee"): the updates of a getUpdates batch (or a
-- webhook request) are written here in one transaction *before* the offset moves past them (or the
-- webhook answers 200), then handled concurrently across chats; recording an update deletes its row
-- in the same transaction that records it as handled and queues its replies. So an update confirmed
-- to Telegram is always either here or recorded as handled: a crash loses none, and the next start
-- handles what is left, in the order it arrived (seq).
CREATE TABLE inbox (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    bot_id         INTEGER NOT NULL,
    update_id      INTEGER NOT NULL,
    fingerprint    INTEGER NOT NULL,
    body           TEXT    NOT NULL,
    received_at_ms INTEGER NOT NULL
);
CREATE INDEX inbox_by_bot ON inbox (bot_id, seq);
