-- The outbound queue reads the outbox per bot in id order (`WHERE bot_id = ? AND id > ? ORDER BY id`)
-- and counts it for the queue-depth gauge (`WHERE bot_id = ?`) on every wake-up; without this index
-- both were full scans of the table.
CREATE INDEX outbox_bot_id ON outbox (bot_id, id);
