//! `sd_notify(3)` messages: READY, STATUS, STOPPING, WATCHDOG (through the `sd-notify` crate).
//!
//! A no-op when `NOTIFY_SOCKET` is unset (not started by systemd with `Type=notify`). Send errors are
//! logged at debug level and otherwise ignored: a lost STATUS line must never stop the bot.

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends notifications to the service manager, when there is one.
#[derive(Clone, Debug)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    pub fn from_env() -> Self {
        Self {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    pub fn disabled() -> Self {
        Self { enabled: false }
    }

    fn send(&self, states: &[NotifyState]) {
        if self.enabled
            && let Err(e) = sd_notify::notify(false, states)
        {
            tracing::debug!("sd_notify failed: {e}");
        }
    }

    /// The service is up: the lock is held and Telegram accepted the token.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    pub fn reloading(&self) {
        self.send(&[NotifyState::Reloading]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// The watchdog timeout systemd expects us to beat, if enabled: `WATCHDOG_USEC`, when
    /// `WATCHDOG_PID` is unset or names this process (the semantics of `sd_watchdog_enabled(3)`;
    /// the sd-notify crate insists on `WATCHDOG_PID`, which a test harness cannot know before spawn).
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        let for_us = match std::env::var("WATCHDOG_PID") {
            Ok(pid) => pid.parse() == Ok(std::process::id()),
            Err(_) => true,
        };
        (self.enabled && for_us && usec > 0).then(|| Duration::from_micros(usec))
    }
}
