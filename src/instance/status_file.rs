//! The live status a running instance keeps beside its lock (`bot-<id>.status`, one JSON object).
//!
//! Written by the holder only (it replaces the file atomically with a rename, so readers never see half
//! of it), read by `cryptobot status` and `cryptobot doctor`. It is informational: whether an instance
//! runs is decided by the lock, never by this file.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a running instance reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub pid: u32,
    /// "starting", "polling", "degraded: …", "conflict: …", "stopping"
    pub state: String,
    pub updates_handled: u64,
    /// Unix milliseconds of the last completed `getUpdates`, 0 before the first.
    pub last_poll_ms: u64,
    pub conflicts: u64,
    /// Unix milliseconds of the first and the latest conflict, 0 when none.
    pub first_conflict_ms: u64,
    pub last_conflict_ms: u64,
}

/// Writes snapshots for one bot.
#[derive(Debug)]
pub struct StatusFile {
    path: PathBuf,
    tmp: PathBuf,
}

impl StatusFile {
    pub fn new(runtime_dir: &Path, bot_id: u64) -> Self {
        let path = super::status_path(runtime_dir, bot_id);
        let tmp = path.with_extension(format!("status.{}.tmp", std::process::id()));
        Self { path, tmp }
    }

    /// Replaces the file with `snapshot`. Errors are returned for the caller to log; never fatal.
    pub fn write(&self, snapshot: &Snapshot) -> std::io::Result<()> {
        let mut data = serde_json::to_vec(snapshot)?;
        data.push(b'\n');
        let mut file = std::fs::File::create(&self.tmp)?;
        file.write_all(&data)?;
        std::fs::rename(&self.tmp, &self.path)
    }

    pub fn read(runtime_dir: &Path, bot_id: u64) -> Option<Snapshot> {
        let text = std::fs::read_to_string(super::status_path(runtime_dir, bot_id)).ok()?;
        serde_json::from_str(&text).ok()
    }
}
