//! Stop requests: SIGTERM and SIGINT mean the same thing (a graceful stop); a second one during the stop
//! ends the process at once; and the whole stop is bounded, so it always ends before systemd's
//! `TimeoutStopSec=` would SIGKILL us.
//!
//! The graceful path itself (drain, confirm the offset, release the lock) is the ordinary return path
//! of `app::run`: resources are dropped in reverse order of acquisition there.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::systemd::notify::Notifier;

/// How long a graceful stop may take before the process exits anyway (below the unit's 30 s).
pub const STOP_BOUND: Duration = Duration::from_secs(20);

/// Exit code when a stop is forced (second signal, or the bound passed).
pub const FORCED_EXIT: i32 = 1;

/// Listens for SIGTERM/SIGINT; cancels `cancel` on the first, exits on the second or after `bound`.
pub fn spawn_signal_listener(
    cancel: CancellationToken,
    notifier: Notifier,
    bound: Duration,
) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            () = cancel.cancelled() => return,
        };
        notifier.stopping();
        tracing::info!(
            "{name} received: stopping (confirming the offset, then releasing the lock)"
        );
        cancel.cancel();
        tokio::select! {
            _ = term.recv() => tracing::warn!("second signal during the stop: exiting now"),
            _ = int.recv() => tracing::warn!("second signal during the stop: exiting now"),
            () = tokio::time::sleep(bound) => tracing::error!("the stop took longer than {} s: exiting now", bound.as_secs()),
        }
        std::process::exit(FORCED_EXIT);
    });
    Ok(())
}
