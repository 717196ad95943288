//! The lease's SQL: one statement per decision, each on the database's clock (see the module above for
//! why each is written the way it is). Used by `Lease`'s methods only; [`FENCE_CTE`] is public for
//! shared-state writes written elsewhere.

/// The lease columns a [`LeaseInfo`] is read from; durations measured by the database's clock.
macro_rules! info_columns {
    () => {
        "holder_host, holder_pid, holder_instance, epoch, \
         (extract(epoch FROM acquired_at) * 1000)::bigint, \
         (extract(epoch FROM clock_timestamp() - renewed_at) * 1000)::bigint, \
         (extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint"
    };
}

/// The fencing CTE (see [`FENCE_CTE`]).
macro_rules! fence_cte {
    () => {
        "fence AS (\
            SELECT bot_id, epoch FROM cryptobot_lease.lease \
             WHERE bot_id = $1 AND epoch = $2 AND holder_instance = $3 AND expires_at > now() \
               FOR SHARE)"
    };
}

/// The fencing condition of a shared-state write, as a CTE named `fence` to put after `WITH`: it yields
/// one row (`bot_id`, `epoch`) only while `$2` is the current, unexpired epoch of bot `$1` held by the
/// instance `$3`, and share-locks the lease row until the write commits. Bind the bot id, the epoch and
/// [`Holder::instance`] as `$1..$3`, the write's own values from `$4`, and make the write read from
/// `fence`, so it writes nothing when the fence yields nothing. For example:
///
/// ```sql
/// WITH fence AS (…)
/// UPDATE alerts SET armed = $5 FROM fence WHERE alerts.bot_id = fence.bot_id AND alerts.id = $4
/// RETURNING alerts.id           -- no row: refused (stale epoch): stop leading at once
/// ```
pub const FENCE_CTE: &str = fence_cte!();

/// Whether the lease row `l` may be taken by the acquiring holder (`excluded`, TTL `$5`): it expired,
/// and it is not reserved for another host by a takeover (a reservation lapses one TTL after expiry).
macro_rules! free {
    () => {
        "(l.expires_at <= now() AND (l.handover_to IS NULL \
              OR l.handover_to = excluded.holder_host \
              OR l.expires_at <= now() - make_interval(secs => $5)))"
    };
}

/// Whether the acquiring holder gets (or keeps) the row: it is free, or already this holder's.
macro_rules! taken {
    () => {
        concat!(
            "(",
            free!(),
            " OR l.holder_instance = excluded.holder_instance)"
        )
    };
}

pub(super) const ACQUIRE_SQL: &str = concat!(
    "INSERT INTO cryptobot_lease.lease AS l \
        (bot_id, holder_host, holder_pid, holder_instance, epoch, acquired_at, renewed_at, expires_at) \
     VALUES ($1, $2, $3, $4, 1, now(), now(), now() + make_interval(secs => $5)) \
     ON CONFLICT (bot_id) DO UPDATE SET \
        holder_host = CASE WHEN ",
    taken!(),
    " THEN excluded.holder_host ELSE l.holder_host END, \
        holder_pid = CASE WHEN ",
    taken!(),
    " THEN excluded.holder_pid ELSE l.holder_pid END, \
        holder_instance = CASE WHEN ",
    taken!(),
    " THEN excluded.holder_instance ELSE l.holder_instance END, \
        epoch = CASE WHEN ",
    free!(),
    " THEN l.epoch + 1 ELSE l.epoch END, \
        acquired_at = CASE WHEN ",
    free!(),
    " THEN now() ELSE l.acquired_at END, \
        renewed_at = CASE WHEN ",
    taken!(),
    " THEN now() ELSE l.renewed_at END, \
        expires_at = CASE WHEN ",
    taken!(),
    " THEN excluded.expires_at ELSE l.expires_at END, \
        handover_to = CASE WHEN ",
    free!(),
    " THEN NULL ELSE l.handover_to END \
     RETURNING ",
    info_columns!()
);

pub(super) const RENEW_SQL: &str = "UPDATE cryptobot_lease.lease \
        SET renewed_at = now(), expires_at = now() + make_interval(secs => $4) \
      WHERE bot_id = $1 AND epoch = $2 AND holder_instance = $3 AND expires_at > now() \
     RETURNING (extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint";

pub(super) const RELEASE_SQL: &str = "WITH released AS (\
        UPDATE cryptobot_lease.lease SET expires_at = now(), handover_to = $5 \
         WHERE bot_id = $1 AND epoch = $2 AND holder_instance = $3 AND expires_at > now() \
        RETURNING epoch) \
     SELECT epoch, pg_notify($4, epoch::text)::text FROM released";

pub(super) const SHOW_SQL: &str = concat!(
    "SELECT ",
    info_columns!(),
    " FROM cryptobot_lease.lease WHERE bot_id = $1"
);

pub(super) const IS_CURRENT_SQL: &str =
    concat!("WITH ", fence_cte!(), " SELECT count(*) FROM fence");

pub(super) const COMMIT_OFFSET_SQL: &str = concat!(
    "WITH ",
    fence_cte!(),
    " INSERT INTO cryptobot_lease.fenced_offset AS f (bot_id, epoch, next_offset, written_at) \
       SELECT bot_id, epoch, $4, now() FROM fence \
     ON CONFLICT (bot_id) DO UPDATE \
        SET epoch = excluded.epoch, next_offset = excluded.next_offset, written_at = excluded.written_at \
      WHERE f.epoch <= excluded.epoch \
     RETURNING f.epoch"
);

pub(super) const FENCED_OFFSET_SQL: &str =
    "SELECT epoch, next_offset FROM cryptobot_lease.fenced_offset WHERE bot_id = $1";
