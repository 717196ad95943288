//! The supervisor of `cryptobot run`: STATUS= and the status file kept current, and WATCHDOG=1 sent
//! only while the update loop's `Liveness` says it and its handlers make progress (G5): a hung loop or
//! a handler that never returns starves the watchdog, so systemd restarts the service.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::instance::status_file::StatusFile;
use crate::live_status::LiveStatus;
use crate::systemd::notify::Notifier;
use crate::systemd::watchdog::Liveness;

pub(super) fn write_status(file: &StatusFile, status: &LiveStatus) {
    if let Err(e) = file.write(&status.snapshot()) {
        tracing::debug!("cannot write the status file: {e}");
    }
}

/// Keeps STATUS= and the status file current, and feeds the watchdog only while the loop is alive.
pub(super) async fn supervise(
    notifier: Notifier,
    liveness: Arc<Liveness>,
    status: Arc<LiveStatus>,
    file: StatusFile,
    watchdog_timeout: Option<Duration>,
    cancel: CancellationToken,
) {
    let period = watchdog_timeout.map_or(Duration::from_secs(1), |wd| {
        (wd / 2).min(Duration::from_secs(1))
    });
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut starved = false;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        notifier.status(&status.status_line());
        write_status(&file, &status);
        if let Some(wd) = watchdog_timeout {
            match liveness.check(wd) {
                Ok(()) => {
                    notifier.watchdog();
                    starved = false;
                }
                Err(stall) if !starved => {
                    starved = true;
                    tracing::error!(
                        message_id = crate::systemd::catalog::WATCHDOG_WITHHELD,
                        "{stall}: withholding WATCHDOG=1 so systemd restarts the service"
                    );
                }
                Err(_) => {}
            }
        }
    }
    write_status(&file, &status);
}
