-- The inbox: see the SQLite store's 0006_inbox.sql, the same table.
CREATE TABLE cryptobot_lease.inbox (
    seq         bigserial   PRIMARY KEY,
    bot_id      bigint      NOT NULL,
    update_id   bigint      NOT NULL,
    fingerprint bigint      NOT NULL,
    body        text        NOT NULL,
    epoch       bigint      NOT NULL,
    received_at timestamptz NOT NULL
);
CREATE INDEX inbox_by_bot ON cryptobot_lease.inbox (bot_id, seq);
