//! The running instance's own account of itself: state, updates handled, last poll, conflicts.
//!
//! One value shared by the update loop (which writes it) and the supervisor (which turns it into the
//! systemd `STATUS=` line and the runtime status file read by `cryptobot status`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::instance::holder::{format_unix, unix_now};
use crate::instance::status_file::Snapshot;
use crate::metrics::Metrics;

/// What the update loop is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Starting,
    Polling,
    /// Webhook mode: Telegram POSTs updates to this instance.
    Webhook,
    /// coordination = "postgres": another host holds the lease (the text names it, or the fault).
    Standby(String),
    /// Telegram or the network fails; the loop retries. The text says what failed.
    Degraded(String),
    /// Another instance polls this token.
    Conflict,
    Stopping,
}

#[derive(Debug)]
struct Inner {
    state: State,
    handled: u64,
    last_poll: Option<(Instant, u64)>,
    conflicts: u64,
    first_conflict_ms: u64,
    last_conflict_ms: u64,
}

/// Shared, cheap to update.
#[derive(Debug)]
pub struct LiveStatus {
    inner: Mutex<Inner>,
    pub started: Instant,
    /// The Prometheus metrics (`GET /metrics`).
    pub metrics: Metrics,
}

impl Default for LiveStatus {
    fn default() -> Self {
        Self::new()
    }
}

fn ms_now() -> u64 {
    unix_now().as_millis() as u64
}

impl LiveStatus {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                state: State::Starting,
                handled: 0,
                last_poll: None,
                conflicts: 0,
                first_conflict_ms: 0,
                last_conflict_ms: 0,
            }),
            started: Instant::now(),
            metrics: Metrics::default(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn set_state(&self, state: State) {
        self.with(|i| i.state = state);
    }

    pub fn state(&self) -> State {
        self.with(|i| i.state.clone())
    }

    /// A `getUpdates` completed successfully.
    pub fn polled(&self) {
        self.with(|i| {
            i.last_poll = Some((Instant::now(), ms_now()));
            i.state = State::Polling;
        });
    }

    pub fn handled(&self) -> u64 {
        self.with(|i| i.handled)
    }

    pub fn add_handled(&self) {
        self.with(|i| i.handled += 1);
    }

    /// Records a conflict; returns how many there were so far.
    pub fn conflict(&self) -> u64 {
        self.with(|i| {
            let now = ms_now();
            if i.conflicts == 0 {
                i.first_conflict_ms = now;
            }
            i.conflicts += 1;
            i.last_conflict_ms = now;
            i.state = State::Conflict;
            i.conflicts
        })
    }

    pub fn conflicts(&self) -> u64 {
        self.with(|i| i.conflicts)
    }

    /// Webhook mode: an update arrived (kept where polling keeps its last poll).
    pub fn webhook_received(&self) {
        self.with(|i| {
            i.last_poll = Some((Instant::now(), ms_now()));
            i.state = State::Webhook;
        });
    }

    /// The systemd `STATUS=` line: `polling; 12 updates; last poll 1s ago`.
    pub fn status_line(&self) -> String {
        self.with(|i| {
            let last = match i.last_poll {
                Some((at, _)) => format!("last poll {}s ago", at.elapsed().as_secs()),
                None => "no poll yet".to_owned(),
            };
            match &i.state {
                State::Starting => "starting".to_owned(),
                State::Polling => format!("polling; {} updates; {last}", i.handled),
                State::Webhook => {
                    let last = match i.last_poll {
                        Some((at, _)) => format!("last update {}s ago", at.elapsed().as_secs()),
                        None => "no update yet".to_owned(),
                    };
                    format!("webhook; {} updates; {last}", i.handled)
                }
                State::Degraded(why) => format!("degraded: {why}; {} updates; {last}", i.handled),
                State::Conflict => format!(
                    "conflict: another instance polls this token ({} times since {}); {} updates",
                    i.conflicts,
                    format_unix(i.first_conflict_ms / 1000),
                    i.handled
                ),
                State::Standby(leader) => format!("standby; {leader}"),
                State::Stopping => format!("stopping; {} updates", i.handled),
            }
        })
    }

    pub fn snapshot(&self) -> Snapshot {
        let state = self.status_line();
        self.with(|i| Snapshot {
            pid: std::process::id(),
            state,
            updates_handled: i.handled,
            last_poll_ms: i.last_poll.map_or(0, |(_, ms)| ms),
            conflicts: i.conflicts,
            first_conflict_ms: i.first_conflict_ms,
            last_conflict_ms: i.last_conflict_ms,
        })
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}
