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

/// One closing step: a name for the log and the work, bounded by [`Cleanup::run`].
type Step = (
    &'static str,
    Box<dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>>>>>,
);

/// Resources registered as they are opened, closed last-opened-first.
///
/// A step that fails or overruns its bound is logged and the others still run; running twice is a
/// no-op. The sum of the bounds is what keeps a stop below the unit's `TimeoutStopSec=`.
#[derive(Default)]
pub struct Cleanup {
    steps: Vec<Step>,
}

impl Cleanup {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the closing of a resource that was just opened.
    pub fn push<F, Fut>(&mut self, name: &'static str, step: F)
    where
        F: FnOnce() -> Fut + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + 'static,
    {
        self.steps.push((name, Box::new(move || Box::pin(step()))));
    }

    /// Runs every registered step, newest first, each bounded by `per_step`. Returns the names of the
    /// steps that failed or timed out.
    pub async fn run(&mut self, per_step: Duration) -> Vec<&'static str> {
        let mut failed = Vec::new();
        while let Some((name, step)) = self.steps.pop() {
            match tokio::time::timeout(per_step, step()).await {
                Ok(Ok(())) => tracing::debug!("closed: {name}"),
                Ok(Err(e)) => {
                    tracing::warn!("closing {name} failed: {e}; going on with the rest");
                    failed.push(name);
                }
                Err(_) => {
                    tracing::warn!(
                        "closing {name} took over {} s; going on with the rest",
                        per_step.as_secs()
                    );
                    failed.push(name);
                }
            }
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[tokio::test]
    async fn steps_run_newest_first_and_a_failure_or_hang_does_not_stop_the_rest() {
        let order = Rc::new(RefCell::new(Vec::new()));
        let mut cleanup = Cleanup::new();
        for name in ["lock", "store", "hangs", "fails", "poller"] {
            let order = Rc::clone(&order);
            cleanup.push(name, move || async move {
                order.borrow_mut().push(name);
                match name {
                    "fails" => Err("boom".to_owned()),
                    "hangs" => std::future::pending().await,
                    _ => Ok(()),
                }
            });
        }
        let started = std::time::Instant::now();
        let failed = cleanup.run(Duration::from_millis(100)).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the hanging step was not bounded"
        );
        assert_eq!(
            *order.borrow(),
            ["poller", "fails", "hangs", "store", "lock"]
        );
        assert_eq!(failed, ["fails", "hangs"]);
        // Idempotent: a second run has nothing left to do.
        assert!(cleanup.run(Duration::from_millis(100)).await.is_empty());
        assert_eq!(order.borrow().len(), 5);
    }
}
