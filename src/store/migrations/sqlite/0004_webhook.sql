-- Webhook mode: the secret token generated for a bot when none is configured (kept so a restart sets
-- the same webhook), and the URL this bot last gave setWebhook (so going back to polling deletes the
-- webhook this bot set, and only that one).
CREATE TABLE webhook (
    bot_id        INTEGER PRIMARY KEY,
    secret        TEXT,
    url           TEXT,
    updated_at_ms INTEGER NOT NULL
);
