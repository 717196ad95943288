//! Who holds an instance lock, told in a way an operator can act on.
//!
//! The lock file's content ([`HolderInfo`], one JSON line) is written by the holder after it has the lock
//! and is diagnostics only: it may be empty (a holder that has just started) or garbage (a file edited by
//! hand). The kernel's record of the lock in `/proc/locks` is the truth for *whether* and *by which PID*
//! the lock is held; the content only adds when, where and which version.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What a lock holder writes into its lock file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderInfo {
    pub pid: u32,
    pub bot_id: u64,
    /// Unix seconds when the lock was taken.
    pub since: u64,
    pub host: String,
    /// The systemd unit the holder runs in, if any.
    pub unit: Option<String>,
    pub version: String,
}

impl HolderInfo {
    /// Describes this process as a holder of `bot_id`'s lock.
    pub fn current(bot_id: u64) -> Self {
        let pid = std::process::id();
        Self {
            pid,
            bot_id,
            since: unix_now().as_secs(),
            host: hostname(),
            unit: unit_of_pid(pid),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// Parses lock-file content; `None` for empty or garbage content.
    pub fn parse(content: &str) -> Option<Self> {
        serde_json::from_str(content.trim()).ok()
    }

    /// "PID 4242 (cryptobot.service) on vps1, since 2026-11-24T13:00:00Z, version 0.1.0"
    pub fn describe(&self) -> String {
        let unit = self
            .unit
            .as_deref()
            .map(|u| format!(" ({u})"))
            .unwrap_or_default();
        format!(
            "PID {}{unit} on {}, since {}, version {}",
            self.pid,
            self.host,
            format_unix(self.since),
            self.version
        )
    }

    /// The command that stops this holder.
    pub fn stop_command(&self, runtime_dir: &Path) -> String {
        stop_command(self.unit.as_deref(), runtime_dir)
    }
}

/// `systemctl stop <unit>` for a service, else `cryptobot stop` with the runtime dir it needs.
pub fn stop_command(unit: Option<&str>, runtime_dir: &Path) -> String {
    match unit {
        Some(unit) => format!("systemctl stop {unit}"),
        None if runtime_dir == Path::new("/run/cryptobot") => "cryptobot stop".to_owned(),
        None => format!(
            "CRYPTOBOT_RUNTIME_DIR={} cryptobot stop",
            runtime_dir.display()
        ),
    }
}

pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

pub fn format_unix(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// The systemd service a process runs in, from `/proc/<pid>/cgroup` (`…/cryptobot.service[/…]`).
pub fn unit_of_pid(pid: u32) -> Option<String> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    unit_from_cgroup(&cgroups)
}

/// Parses the content of a `/proc/<pid>/cgroup` file (v1, v2 or hybrid).
pub fn unit_from_cgroup(cgroups: &str) -> Option<String> {
    // Prefer the unified (`0::`) or systemd's named hierarchy: they carry the unit in a hybrid setup.
    let preferred = cgroups
        .lines()
        .filter(|l| l.starts_with("0::") || l.contains(":name=systemd:"))
        .chain(cgroups.lines());
    preferred
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .find_map(|path| {
            path.rsplit('/')
                .find(|c| c.ends_with(".service"))
                .map(str::to_owned)
        })
}

/// PIDs holding a `flock` on the file at `path`, from the kernel's `/proc/locks`.
pub fn flock_holders(path: &Path) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Vec::new();
    };
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    parse_proc_locks(&locks, meta.dev(), meta.ino())
}

/// Parses `/proc/locks` lines like `1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF`.
pub fn parse_proc_locks(locks: &str, dev: u64, ino: u64) -> Vec<u32> {
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    locks
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Waiters are shown as `N: -> FLOCK ...`: not holders.
            if fields.get(1) != Some(&"FLOCK") {
                return None;
            }
            let pid: u32 = fields.get(4)?.parse().ok()?;
            let mut id = fields.get(5)?.split(':');
            let maj = u64::from_str_radix(id.next()?, 16).ok()?;
            let min = u64::from_str_radix(id.next()?, 16).ok()?;
            let inode: u64 = id.next()?.parse().ok()?;
            (maj == major && min == minor && inode == ino).then_some(pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_is_found_in_v1_v2_and_hybrid_cgroups() {
        assert_eq!(
            unit_from_cgroup("0::/system.slice/cryptobot.service\n").as_deref(),
            Some("cryptobot.service")
        );
        let hybrid = "12:cpu,cpuacct:/\n1:name=systemd:/system.slice/system-cryptobot.slice/cryptobot@eth.service\n0::/\n";
        assert_eq!(
            unit_from_cgroup(hybrid).as_deref(),
            Some("cryptobot@eth.service")
        );
        assert_eq!(
            unit_from_cgroup("0::/user.slice/user-0.slice/session-3.scope\n"),
            None
        );
        assert_eq!(unit_from_cgroup(""), None);
    }

    #[test]
    fn proc_locks_lines_are_matched_by_device_and_inode() {
        let dev = nix::sys::stat::makedev(0, 0x1a);
        let locks = "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 999 00:1a:5678 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 77 00:1a:5678 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 4321 00:1b:5678 0 EOF\n";
        assert_eq!(parse_proc_locks(locks, dev, 5678), vec![1234]);
        assert!(parse_proc_locks(locks, dev, 1).is_empty());
    }

    #[test]
    fn garbage_content_parses_to_none() {
        assert_eq!(HolderInfo::parse(""), None);
        assert_eq!(HolderInfo::parse("\u{0}\u{1}garbage{"), None);
        let info = HolderInfo::current(7);
        let text = serde_json::to_string(&info).unwrap();
        assert_eq!(HolderInfo::parse(&text), Some(info));
    }
}
