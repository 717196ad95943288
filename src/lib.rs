//! cryptobot: a Telegram crypto bot that is a first-class systemd service and never runs as two pollers
//! on one bot token.
//!
//! The map, in the order an update travels (see ARCHITECTURE.md for the guarantees G1–G7 and where each
//! is enforced):
//!
//! - [`config`]: TOML file + environment + systemd credential, validated once into a [`config::Config`].
//! - [`secret`]: the bot token as a type that cannot be printed by accident (G7).
//! - [`instance`]: the single-instance guard (G1: `flock` on `<runtime dir>/bot-<id>.lock`), the holder's
//!   diagnostics, the live status file, and the `status` / `stop` operator commands.
//! - [`systemd`]: `sd_notify` (READY, STATUS, STOPPING, WATCHDOG fed only by a live loop: G5) and logging
//!   (journald when stderr is the journal, human text otherwise).
//! - [`telegram`]: the Bot API client, error classification, and the long-polling update source that moves
//!   the offset only after a handler finished and confirms it on shutdown (G3).
//! - [`webhook`]: the other update source (`mode = "webhook"`): `POST /telegram/<path secret>`, answered
//!   200 only once the update is recorded; [`http`]: `/healthz`, `/metrics` and that route.
//! - [`bot`]: the commands the bot answers; `bot::dispatch` handles an update from either source once.
//! - [`app`]: `cryptobot run`, which wires the above together in the order the guarantees need.
//! - [`cli`]: the command line (`run`, `status`, `stop`, `doctor`, `check-config`).
//! - [`doctor`]: the diagnosis report: config, token, webhook, lock holder, unit, recent conflicts.
//! - [`store`]: the SQLite state (last handled update), [`shutdown`]: signals and ordered closing,
//!   [`reload`]: SIGHUP, [`live_status`]: what the running instance reports about itself.
//! - [`exit`]: the sysexits-style exit codes, documented in README.md.
//! - `fault` (debug builds only): the fault points the tests switch on, for bugs no bounded call makes.
//!
//! Linux only: the guard relies on `flock(2)`, `/proc/locks` and `/proc/<pid>/cgroup`.

pub mod app;
pub mod bot;
pub mod cli;
pub mod clock;
pub mod config;
pub mod doctor;
pub mod exit;
#[cfg(debug_assertions)]
pub mod fault;
pub mod http;
pub mod instance;
pub mod live_status;
pub mod metrics;
pub mod reload;
pub mod secret;
pub mod shutdown;
pub mod store;
pub mod systemd;
pub mod telegram;
pub mod webhook;
