//! Logging: structured records to the journal when stderr is connected to it, else human text on stderr.
//!
//! systemd sets `JOURNAL_STREAM=<dev>:<inode>` for a service whose stderr goes to the journal; we log
//! natively to journald only when stderr really is that stream (a child with redirected stderr is not).
//! Field names are the tracing field names upper-cased (`bot_id` → `BOT_ID`) with no prefix, so
//! `journalctl -u cryptobot BOT_ID=123` works. Nothing here ever formats a token (G7).

use std::sync::OnceLock;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, reload};

/// The installed filter, replaceable by a reload (`set_filter`).
static FILTER: OnceLock<reload::Handle<Targets, Registry>> = OnceLock::new();

/// Where [`init`] sent the log records, once it ran.
static TARGET: OnceLock<Target> = OnceLock::new();

/// Where the log records go, if logging was set up ([`init`]).
pub fn target() -> Option<Target> {
    TARGET.get().copied()
}

/// `filter` as a [`Targets`] filter (`level` or `target=level`, comma-separated). The config loader
/// refused anything else, so this falls back to `info` only for a caller that skipped it.
fn parse_filter(filter: &str) -> Targets {
    filter
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO))
}

/// Where log records go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Journal,
    Stderr,
}

/// True when stderr is the journal stream systemd gave us.
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(meta) = nix::sys::stat::fstat(2) else {
        return false;
    };
    dev.parse() == Ok(meta.st_dev) && ino.parse() == Ok(meta.st_ino)
}

/// Installs the global subscriber. `filter` was validated by the config loader.
pub fn init(filter: &str) -> Target {
    let (filter, handle) = reload::Layer::new(parse_filter(filter));
    let registry = tracing_subscriber::registry().with(filter);
    let target = if stderr_is_journal()
        && let Ok(layer) = tracing_journald::layer()
    {
        let layer = layer
            .with_field_prefix(None)
            .with_syslog_identifier("cryptobot".to_owned());
        let _ = registry.with(layer).try_init();
        Target::Journal
    } else {
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(nix::unistd::isatty(2).unwrap_or(false))
            .with_target(false);
        let _ = registry.with(layer).try_init();
        Target::Stderr
    };
    let _ = FILTER.set(handle);
    let _ = TARGET.set(target);
    target
}

/// Replaces the log filter (a reload). `filter` was validated by the config loader; without an
/// installed subscriber (tests) this does nothing.
pub fn set_filter(filter: &str) -> Result<(), String> {
    match FILTER.get() {
        Some(handle) => handle
            .reload(parse_filter(filter))
            .map_err(|e| e.to_string()),
        None => Ok(()),
    }
}
