//! `cryptobot status`, `cryptobot stop` and `cryptobot reload`: operator commands on the instance lock.
//!
//! None takes the lock, even briefly: `status` reads `/proc/locks` and the holder's files, so a starting
//! instance is never refused because someone looked; `stop` signals the holder and watches the kernel's
//! lock record until it is gone; `reload` sends the holder SIGHUP (the units' `ExecReload=`: it needs
//! nothing outside the package, where `/bin/kill` needs procps, absent from minimal systems).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::holder::{self, HolderInfo, unix_now};
use super::status_file::StatusFile;
use crate::exit::{Code, Failure, Result};

/// One lock file found in the runtime directory, and who holds it now.
#[derive(Debug)]
pub struct LockState {
    pub bot_id: u64,
    pub path: PathBuf,
    /// PID holding the lock according to the kernel; `None` when the lock is free.
    pub holder_pid: Option<u32>,
    /// The diagnostics in the file, when they belong to the current holder.
    pub info: Option<HolderInfo>,
}

impl LockState {
    pub fn unit(&self) -> Option<String> {
        self.info
            .as_ref()
            .and_then(|i| i.unit.clone())
            .or_else(|| self.holder_pid.and_then(holder::unit_of_pid))
    }
}

/// Reads the lock state of one bot.
pub fn lock_state(runtime_dir: &Path, bot_id: u64) -> LockState {
    let path = super::lock_path(runtime_dir, bot_id);
    let holder_pid = holder::flock_holders(&path).first().copied();
    let info = holder_pid.and_then(|pid| {
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|c| HolderInfo::parse(&c))
            .filter(|i| i.pid == pid)
    });
    LockState {
        bot_id,
        path,
        holder_pid,
        info,
    }
}

/// Every `bot-<id>.lock` in the runtime directory, sorted by bot id.
pub fn all_lock_states(runtime_dir: &Path) -> Vec<LockState> {
    let Ok(entries) = std::fs::read_dir(runtime_dir) else {
        return Vec::new();
    };
    let mut ids: Vec<u64> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("bot-")?
                .strip_suffix(".lock")?
                .parse()
                .ok()
        })
        .collect();
    ids.sort_unstable();
    ids.into_iter()
        .map(|id| lock_state(runtime_dir, id))
        .collect()
}

fn ago(ms: u64) -> String {
    let now = unix_now().as_millis() as u64;
    let secs = now.saturating_sub(ms) / 1000;
    humantime::format_duration(Duration::from_secs(secs)).to_string() + " ago"
}

/// The report `cryptobot status` prints for one lock.
pub fn describe(state: &LockState, runtime_dir: &Path) -> String {
    let Some(pid) = state.holder_pid else {
        return format!(
            "bot {}: not running (lock {} is free)",
            state.bot_id,
            state.path.display()
        );
    };
    let mut out = match &state.info {
        Some(info) => format!("bot {}: running, {}", state.bot_id, info.describe()),
        None => {
            let unit = state.unit().map(|u| format!(" ({u})")).unwrap_or_default();
            format!(
                "bot {}: running, PID {pid}{unit} (no details in the lock file)",
                state.bot_id
            )
        }
    };
    if let Some(snap) = StatusFile::read(runtime_dir, state.bot_id).filter(|s| s.pid == pid) {
        let last = if snap.last_poll_ms == 0 {
            "no poll yet".to_owned()
        } else {
            format!("last poll {}", ago(snap.last_poll_ms))
        };
        out.push_str(&format!(
            "\n  {}; {} updates handled; {last}; {} conflicts",
            snap.state, snap.updates_handled, snap.conflicts
        ));
        if snap.conflicts > 0 {
            out.push_str(&format!(" (latest {})", ago(snap.last_conflict_ms)));
        }
    }
    out
}

/// `cryptobot status`: exit 0 when an instance holds a lock, 3 (LSB "not running") otherwise.
pub fn status(runtime_dir: &Path, bot_id: Option<u64>) -> (String, u8) {
    let states = match bot_id {
        Some(id) => vec![lock_state(runtime_dir, id)],
        None => all_lock_states(runtime_dir),
    };
    if states.is_empty() {
        return (
            format!(
                "no cryptobot instance has run here (no lock files in {})",
                runtime_dir.display()
            ),
            3,
        );
    }
    let running = states.iter().any(|s| s.holder_pid.is_some());
    let text = states
        .iter()
        .map(|s| describe(s, runtime_dir))
        .collect::<Vec<_>>()
        .join("\n");
    (text, if running { 0 } else { 3 })
}

/// Options of `cryptobot stop`.
#[derive(Clone, Copy, Debug)]
pub struct StopOptions {
    pub timeout: Duration,
    pub force: bool,
}

/// `cryptobot reload`: SIGHUP to every holder (of `bot_id`, or all), which re-reads its configuration
/// (src/reload.rs; its log says what changed). Exit 1 when no instance runs: nothing was reloaded.
pub fn reload(runtime_dir: &Path, bot_id: Option<u64>) -> Result<String> {
    let holders: Vec<(u64, u32)> = match bot_id {
        Some(id) => vec![lock_state(runtime_dir, id)],
        None => all_lock_states(runtime_dir),
    }
    .into_iter()
    .filter_map(|s| Some((s.bot_id, s.holder_pid?)))
    .collect();
    if holders.is_empty() {
        return Err(Failure::new(
            Code::Problem,
            format!(
                "no cryptobot instance is running (runtime dir {}): nothing to reload",
                runtime_dir.display()
            ),
        ));
    }
    let mut report = Vec::new();
    for (bot, pid) in holders {
        report.push(reload_pid(Some(bot), pid)?);
    }
    Ok(report.join("\n"))
}

/// SIGHUP to `pid` (of bot `bot`, when known): `cryptobot reload` as the unit's `ExecReload=`, where
/// systemd names the main process in `$MAINPID`.
pub fn reload_pid(bot: Option<u64>, pid: u32) -> Result<String> {
    kill(Pid::from_raw(pid as i32), Signal::SIGHUP).map_err(|e| {
        Failure::new(
            Code::Problem,
            format!("cannot signal PID {pid}: {e}; run as the same user or as root"),
        )
    })?;
    let who = bot.map_or_else(String::new, |bot| format!("bot {bot}: "));
    Ok(format!(
        "{who}PID {pid} asked to reload its configuration (SIGHUP); its log says what changed"
    ))
}

/// `cryptobot stop`: SIGTERM to every holder (of `bot_id`, or all), wait until the locks are free.
pub fn stop(runtime_dir: &Path, bot_id: Option<u64>, opts: StopOptions) -> Result<String> {
    let states: Vec<LockState> = match bot_id {
        Some(id) => vec![lock_state(runtime_dir, id)],
        None => all_lock_states(runtime_dir),
    }
    .into_iter()
    .filter(|s| s.holder_pid.is_some())
    .collect();
    if states.is_empty() {
        return Ok(format!(
            "no cryptobot instance is running (runtime dir {})",
            runtime_dir.display()
        ));
    }
    let mut report = Vec::new();
    for state in &states {
        let pid = state.holder_pid.expect("filtered on holders");
        if let (Some(unit), false) = (state.unit(), opts.force) {
            return Err(Failure::new(
                Code::Problem,
                format!(
                    "bot {} is run by systemd as {unit} (PID {pid}); stop it with: systemctl stop {unit} (or cryptobot stop --force, and systemd may start it again)",
                    state.bot_id
                ),
            ));
        }
        report.push(stop_one(state, pid, opts)?);
    }
    Ok(report.join("\n"))
}

fn stop_one(state: &LockState, pid: u32, opts: StopOptions) -> Result<String> {
    let target = Pid::from_raw(pid as i32);
    let signal_error = |e| {
        Failure::new(
            Code::Problem,
            format!("cannot signal PID {pid}: {e}; run as the same user or as root"),
        )
    };
    kill(target, Signal::SIGTERM).map_err(signal_error)?;
    let start = Instant::now();
    if wait_free(&state.path, pid, opts.timeout) {
        return Ok(format!(
            "bot {}: PID {pid} stopped in {:.1} s; lock is free",
            state.bot_id,
            start.elapsed().as_secs_f64()
        ));
    }
    if !opts.force {
        return Err(Failure::new(
            Code::Problem,
            format!(
                "bot {}: PID {pid} still holds the lock after {} s; wait, or run: cryptobot stop --force",
                state.bot_id,
                opts.timeout.as_secs()
            ),
        ));
    }
    kill(target, Signal::SIGKILL).map_err(signal_error)?;
    if wait_free(&state.path, pid, Duration::from_secs(5)) {
        Ok(format!(
            "bot {}: PID {pid} did not stop in {} s and was killed; lock is free",
            state.bot_id,
            opts.timeout.as_secs()
        ))
    } else {
        Err(Failure::new(
            Code::Problem,
            format!(
                "bot {}: PID {pid} still holds the lock after SIGKILL",
                state.bot_id
            ),
        ))
    }
}

/// Waits until `pid` no longer holds the lock at `path`, checking the kernel's record every 20 ms.
fn wait_free(path: &Path, pid: u32, timeout: Duration) -> bool {
    // Bounded: a deadline past what the clock can hold would panic (the CLI allows a day at most).
    let deadline = Instant::now() + timeout.min(Duration::from_secs(86_400));
    loop {
        if !holder::flock_holders(path).contains(&pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
