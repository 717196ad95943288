-- Alert options (issue "alerts people rely on"): a `once` alert is deleted when it fires, in the same
-- transaction that queues its message; an alert with `expires_at` is deleted at that time, in the same
-- transaction that queues the note telling its chat.
ALTER TABLE cryptobot_lease.alerts ADD COLUMN once boolean NOT NULL DEFAULT false;
ALTER TABLE cryptobot_lease.alerts ADD COLUMN expires_at timestamptz;
