//! Exit codes (sysexits) and the one error type that carries one to `main`.
//!
//! Every failure the user can act on becomes a [`Failure`]: one line that says what happened and what to
//! do, plus the exit code systemd's `RestartPreventExitStatus=` / `RestartForceExitStatus=` act on.

use std::fmt;

/// The process exit codes, as documented in README.md and used by the unit files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    /// Clean stop.
    Ok = 0,
    /// A problem was found (`doctor`), or an operator command could not do what was asked.
    Problem = 1,
    /// An admin asked for a restart (`/restart`): the unit lists it in `RestartForceExitStatus=`.
    Restart = 3,
    /// Bad command line (clap's own errors use 2 for `--help` misuse; we map usage errors here).
    Usage = 64,
    /// Gave up on a persistent external poller (when configured to).
    Unavailable = 69,
    /// Internal error: a bug or an unexpected OS failure.
    Software = 70,
    /// I/O error on a file the service needs (runtime dir, state dir).
    IoErr = 74,
    /// The instance lock is held by another local process: try again later.
    TempFail = 75,
    /// Bad configuration, or Telegram rejected the token: restarting will not help.
    Config = 78,
}

/// A failure with a human-readable, one-line message and the exit code it maps to.
#[derive(Clone, Debug)]
pub struct Failure {
    pub code: Code,
    pub message: String,
    /// The journal catalog's id of this event (`crate::systemd::catalog`), when an operator must act.
    pub message_id: Option<&'static str>,
}

impl Failure {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            message_id: None,
        }
    }

    /// This failure with its journal catalog id (`MESSAGE_ID` when it is logged to the journal).
    pub fn with_message_id(mut self, id: &'static str) -> Self {
        self.message_id = Some(id);
        self
    }
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(Code::Config, message)
    }
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(Code::IoErr, message)
    }
    pub fn software(message: impl Into<String>) -> Self {
        Self::new(Code::Software, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

pub type Result<T> = std::result::Result<T, Failure>;
