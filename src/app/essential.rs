//! The long-lived tasks that run beside the update source (the outbound queue, the alert checker, the
//! HTTP server): none of them may end, or panic, while the bot runs.
//!
//! Guarantee: a half-dead bot never looks healthy. The watchdog and `/healthz` follow the update
//! loop; a sender that died would leave replies unsent behind a green `/healthz`. So when an essential
//! task ends before the stop was requested, whatever the reason (it returned, failed, or panicked),
//! the run is cancelled and `cryptobot run` exits with a failure (70, EX_SOFTWARE), which systemd
//! restarts (`Restart=on-failure`). A task that ends because the stop was requested is normal.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::exit::Failure;

/// Watches the essential tasks of one run and remembers the first that ended too early.
#[derive(Clone, Debug, Default)]
pub struct Essentials {
    failed: Arc<Mutex<Option<Failure>>>,
}

impl Essentials {
    /// Spawns `task`, named `name` in messages. If it ends (or panics) while `cancel` has not fired, the
    /// run is cancelled and [`Essentials::failure`] says why. The handle yields the task's own result,
    /// for the closing step that waits for it.
    pub fn spawn(
        &self,
        name: &'static str,
        cancel: &CancellationToken,
        task: impl Future<Output = Result<(), String>> + Send + 'static,
    ) -> JoinHandle<Result<(), String>> {
        let inner = tokio::spawn(task);
        let failed = Arc::clone(&self.failed);
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let outcome = match inner.await {
                Ok(result) => result,
                Err(e) if e.is_panic() => Err(format!("it panicked: {}", panic_text(e))),
                Err(e) => Err(e.to_string()),
            };
            if !cancel.is_cancelled() {
                let why = match &outcome {
                    Ok(()) => "it returned".to_owned(),
                    Err(e) => e.clone(),
                };
                tracing::error!(
                    "the {name} stopped while the bot runs ({why}): stopping, so that systemd restarts the bot"
                );
                failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert_with(|| {
                        Failure::software(format!(
                            "the {name} stopped while the bot was running ({why}); exiting so that the service manager restarts the bot"
                        ))
                    });
                cancel.cancel();
            }
            outcome
        })
    }

    /// The first essential task that ended too early, if one did.
    pub fn failure(&self) -> Option<Failure> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_while_running_stops_the_run() {
        let essentials = Essentials::default();
        let cancel = CancellationToken::new();
        let handle = essentials.spawn("outbound queue", &cancel, async {
            panic!("boom");
        });
        assert!(handle.await.unwrap().is_err());
        assert!(cancel.is_cancelled(), "the run was not stopped");
        let failure = essentials.failure().expect("the failure is kept");
        assert_eq!(failure.code, crate::exit::Code::Software);
        assert!(
            failure.message.contains("outbound queue"),
            "{}",
            failure.message
        );
        assert!(failure.message.contains("boom"), "{}", failure.message);
    }

    #[tokio::test]
    async fn a_task_that_returns_while_running_stops_the_run() {
        let essentials = Essentials::default();
        let cancel = CancellationToken::new();
        let handle = essentials.spawn("alert checker", &cancel, async { Ok(()) });
        assert_eq!(handle.await.unwrap(), Ok(()));
        assert!(cancel.is_cancelled());
        assert!(essentials.failure().is_some());
    }

    #[tokio::test]
    async fn a_task_that_ends_after_the_stop_request_is_normal() {
        let essentials = Essentials::default();
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let handle = essentials.spawn("http server", &cancel, async move {
            stop.cancelled().await;
            Err("closed".to_owned())
        });
        cancel.cancel();
        assert!(handle.await.unwrap().is_err());
        assert!(essentials.failure().is_none());
    }
}
