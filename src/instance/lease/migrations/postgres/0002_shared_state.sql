-- Shared state (coordination = "postgres", store::postgres::PgStore): what the SQLite store keeps on
-- one host, kept here for every host, beside the lease whose epoch fences every write. The tables
-- mirror the SQLite schema (src/store/migrations/sqlite/); times are the database's clock.

-- Per bot: the last update whose handler finished (G4), and the epoch of the leader that recorded it.
CREATE TABLE cryptobot_lease.bot_state (
    bot_id              bigint      PRIMARY KEY REFERENCES cryptobot_lease.lease (bot_id),
    last_handled_update bigint      NOT NULL,
    epoch               bigint      NOT NULL,
    updated_at          timestamptz NOT NULL
);

-- Price alerts; `threshold` is the exact decimal text; `armed` while waiting for a crossing.
CREATE TABLE cryptobot_lease.alerts (
    id            bigserial   PRIMARY KEY,
    bot_id        bigint      NOT NULL,
    chat_id       bigint      NOT NULL,
    symbol        text        NOT NULL,
    coin_id       text        NOT NULL,
    currency      text        NOT NULL,
    direction     text        NOT NULL CHECK (direction IN ('above', 'below')),
    threshold     text        NOT NULL,
    armed         boolean     NOT NULL DEFAULT true,
    fired_count   bigint      NOT NULL DEFAULT 0,
    last_fired_at timestamptz,
    created_at    timestamptz NOT NULL
);
CREATE INDEX alerts_by_chat ON cryptobot_lease.alerts (bot_id, chat_id);

-- Per-chat settings: alerts are disabled when the user blocked the bot (403).
CREATE TABLE cryptobot_lease.chats (
    bot_id          bigint  NOT NULL,
    chat_id         bigint  NOT NULL,
    alerts_disabled boolean NOT NULL DEFAULT false,
    PRIMARY KEY (bot_id, chat_id)
);

-- Messages to send, written in the same transaction as their cause, deleted once Telegram took them.
CREATE TABLE cryptobot_lease.outbox (
    id         bigserial   PRIMARY KEY,
    bot_id     bigint      NOT NULL,
    chat_id    bigint      NOT NULL,
    text       text        NOT NULL,
    epoch      bigint      NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX outbox_bot_id ON cryptobot_lease.outbox (bot_id, id);

-- Webhook mode: the generated secret (the same on every host) and the URL this bot last set.
CREATE TABLE cryptobot_lease.webhook (
    bot_id     bigint      PRIMARY KEY,
    secret     text,
    url        text,
    updated_at timestamptz NOT NULL
);
