-- The leader lease (G2), in its own schema `cryptobot_lease` (created by the program before this runs;
-- sqlx keeps this schema's migration history in cryptobot_lease._sqlx_migrations).
--
-- One row per bot id, never deleted: `epoch` is the fencing token, +1 on every acquisition, so a row
-- that is deleted by hand would let epochs start again at 1. Every time is the database's clock.

CREATE TABLE cryptobot_lease.lease (
    bot_id          bigint      PRIMARY KEY,
    -- the holder: host name, PID, and a random id per process (a restarted process is a new holder)
    holder_host     text        NOT NULL,
    holder_pid      bigint      NOT NULL,
    holder_instance text        NOT NULL,
    epoch           bigint      NOT NULL CHECK (epoch > 0),
    acquired_at     timestamptz NOT NULL,
    renewed_at      timestamptz NOT NULL,
    -- free once expires_at <= now(); a release sets it to now()
    expires_at      timestamptz NOT NULL
);

-- The example of a fenced shared-state write (instance::lease::Lease::commit_offset): the next
-- update offset of a bot, written only by the holder of the current, unexpired epoch.
CREATE TABLE cryptobot_lease.fenced_offset (
    bot_id      bigint      PRIMARY KEY REFERENCES cryptobot_lease.lease (bot_id),
    epoch       bigint      NOT NULL,
    next_offset bigint      NOT NULL,
    written_at  timestamptz NOT NULL
);
