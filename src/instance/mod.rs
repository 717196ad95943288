//! The single-instance guarantee on one host (G1) and what operators see of it.
//!
//! - [`guard`]: the exclusive `flock` on `<runtime dir>/bot-<bot id>.lock`, taken before any Telegram call,
//!   released only by the kernel when the process ends; the file is never unlinked.
//! - [`holder`]: who holds a lock: the diagnostics written into the lock file once it is held, checked
//!   against the kernel's own record in `/proc/locks`, and the holder's systemd unit from its cgroup.
//! - [`status_file`]: the live status (`polling; 12 updates; last poll 1s ago`) a running instance keeps
//!   next to its lock, read by `cryptobot status` without disturbing the lock.
//! - [`control`]: the `status` and `stop` operator commands.
//! - [`lease`]: one poller across hosts (G2): the PostgreSQL leader lease, its epoch (fencing token) and timing.
//! - [`lease_window`]: G2 on this host: until when the leader may poll, from its lease renewals.
//! - [`leadership`]: `coordination = "postgres"`: standby until the lease is ours, then renew it.

pub mod control;
pub mod guard;
pub mod holder;
pub mod leadership;
pub mod lease;
pub mod lease_commands;
pub mod lease_window;
pub mod status_file;

use std::path::{Path, PathBuf};

/// `<runtime dir>/bot-<bot id>.lock`
pub fn lock_path(runtime_dir: &Path, bot_id: u64) -> PathBuf {
    runtime_dir.join(format!("bot-{bot_id}.lock"))
}

/// `<runtime dir>/bot-<bot id>.status`
pub fn status_path(runtime_dir: &Path, bot_id: u64) -> PathBuf {
    runtime_dir.join(format!("bot-{bot_id}.status"))
}
