-- Alert options (issue "alerts people rely on"): a `once` alert is deleted when it fires, in the same
-- transaction that queues its message; an alert with `expires_at_ms` (Unix ms) is deleted at that time,
-- in the same transaction that queues the note telling its chat.
ALTER TABLE alerts ADD COLUMN once INTEGER NOT NULL DEFAULT 0;
ALTER TABLE alerts ADD COLUMN expires_at_ms INTEGER;
