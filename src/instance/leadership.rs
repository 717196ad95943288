//! `coordination = "postgres"`: wait as a standby until this process holds the lease, then keep it.
//!
//! - Standby: READY, `STATUS=standby; leader <host> pid <pid> epoch <n>` (each wait is declared to the
//!   watchdog); it tries to acquire every TTL/3 with jitter, just after the holder's lease expires when
//!   that is sooner, and at once when the leader's release `NOTIFY` arrives.
//! - Leader: [`Leadership`] renews every TTL/3 and keeps the [`LeaseWindow`] that bounds every poll. When
//!   a renewal says the lease is lost, or none succeeded before the renew deadline, the window closes
//!   (the poller stops before its next poll or batch), `lost` is set and the run is cancelled: the
//!   process exits with the restart code and comes back as a standby. The offset is then NOT confirmed
//!   (a successor may already be polling); a clean stop releases the lease, which wakes a standby.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::lease::{self, Acquire, ControlRequest, Holder, Lease};
use super::lease_window::LeaseWindow;
use crate::clock::BootInstant;
use crate::config::DatabaseUrl;
use crate::exit::{Code, Failure, Result};
use crate::live_status::{LiveStatus, State};
use crate::systemd::notify::Notifier;
use crate::systemd::watchdog::Liveness;

/// The lease this process holds.
pub struct Leadership {
    pub lease: Arc<Lease>,
    pub epoch: i64,
    pub window: Arc<LeaseWindow>,
    /// How the leadership ended, for the exit code.
    pub end: Arc<LeaseEnd>,
}

/// How a leadership ended, read when the run is over: lost (exit to come back as a standby, nothing
/// confirmed), or handed over on an operator's request (a clean stop, then back as a standby).
#[derive(Debug, Default)]
pub struct LeaseEnd {
    /// Set when the lease was lost (not a clean stop).
    pub lost: AtomicBool,
    /// Set when `cryptobot lease release|takeover` asked this leader to hand over.
    pub handover: std::sync::Mutex<Option<ControlRequest>>,
}

impl LeaseEnd {
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    pub fn handover(&self) -> Option<ControlRequest> {
        self.handover
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// `cryptobot lease release|takeover` was obeyed: stopped cleanly and released the lease. The restart
/// code makes systemd start this instance again, as a standby.
pub fn handed_over(request: &ControlRequest) -> Failure {
    let how = match request {
        ControlRequest::Resign => {
            "released the PostgreSQL lease (cryptobot lease release)".to_owned()
        }
        ControlRequest::Takeover { host } => {
            format!("handed the PostgreSQL lease over to {host} (cryptobot lease takeover)")
        }
    };
    Failure::new(
        Code::Restart,
        format!("{how}: stopped cleanly; systemd starts this instance again as a standby"),
    )
    .with_message_id(crate::systemd::catalog::LEASE_HANDED_OVER)
}

pub(crate) fn lease_failure(e: &lease::LeaseError) -> Failure {
    match e {
        lease::LeaseError::Config { .. } => Failure::config(format!("{e}; fix the database URL")),
        // The database may come back: the unit restarts the service.
        _ => Failure::new(
            Code::Problem,
            format!("{e}; check that PostgreSQL is reachable"),
        ),
    }
}

/// G2: the lease was lost (another host holds it, or no renewal in time): polling stopped. The restart
/// code makes systemd start this instance again, as a standby.
pub fn lease_lost() -> Failure {
    Failure::new(
        Code::Restart,
        "lost the PostgreSQL lease (not renewed within its renew deadline, or another host holds it): stopped polling; systemd starts this instance again as a standby",
    )
    .with_message_id(crate::systemd::catalog::LEASE_LOST)
}

/// Connects, then waits as a standby until the lease is ours. `None` when stopped meanwhile. `end` is
/// where [`Leadership`] records how it ended.
#[allow(clippy::too_many_arguments)] // one call, in app.rs; each argument is a distinct role
pub async fn acquire(
    url: &DatabaseUrl,
    end: Arc<LeaseEnd>,
    bot_id: u64,
    ttl: Duration,
    status: &LiveStatus,
    liveness: &Liveness,
    notifier: &Notifier,
    cancel: &CancellationToken,
) -> Result<Option<Leadership>> {
    let lease = Lease::connect(url.expose(), bot_id, ttl, Holder::this_process())
        .await
        .map_err(|e| lease_failure(&e))?;
    let mut released = lease.listen().await.map_err(|e| lease_failure(&e))?;
    let mut announced = false;
    status.metrics.set_role("standby");
    loop {
        // When the holder's lease expires, per the database (a crashed leader renews no more).
        let mut expiry: Option<Duration> = None;
        let asked = BootInstant::now();
        liveness.busy_until(Instant::now() + lease.query_timeout());
        let outcome = tokio::select! {
            () = cancel.cancelled() => return Ok(None),
            r = lease.try_acquire() => r,
        };
        liveness.beat();
        match outcome {
            Ok(Acquire::Leader { epoch, .. }) => {
                status.metrics.set_role("leader");
                status.metrics.lease_acquired.inc();
                let window = Arc::new(LeaseWindow::new());
                window.extend(asked, lease::renew_deadline(ttl));
                tracing::info!(
                    bot_id,
                    epoch,
                    "PostgreSQL lease acquired (epoch {epoch}): this instance is the leader"
                );
                return Ok(Some(Leadership {
                    lease: Arc::new(lease),
                    epoch,
                    window,
                    end,
                }));
            }
            Ok(Acquire::Standby(holder)) => {
                expiry = holder.expires_in();
                status.set_state(State::Standby(holder.to_string()));
                if !announced {
                    tracing::info!(bot_id, "standby: the lease is held by {holder}");
                    notifier.ready(&status.status_line());
                    announced = true;
                }
            }
            Err(e) => {
                status.set_state(State::Standby(format!("degraded: {e}")));
                tracing::warn!(bot_id, "standby: {e}");
                if !announced {
                    notifier.ready(&status.status_line());
                    announced = true;
                }
            }
        }
        // The next try: at the retry period (TTL/3 with jitter), or just after the holder's lease
        // expires if that is sooner, so a crashed leader is replaced within the TTL, not TTL + TTL/3.
        let wait = match expiry {
            Some(left) => lease::standby_retry(ttl)
                .min(left + Duration::from_millis(10 + fastrand::u64(..40))),
            None => lease::standby_retry(ttl),
        };
        liveness.busy_until(Instant::now() + wait + Duration::from_secs(1));
        tokio::select! {
            () = cancel.cancelled() => return Ok(None),
            () = tokio::time::sleep(wait) => {}
            woke = released.released() => {
                if let Err(e) = woke {
                    tracing::warn!(bot_id, "standby: {e}");
                }
            }
        }
    }
}

impl Leadership {
    /// What to do the moment the lease is known to be lost (a renewal refused, or a fenced write of the
    /// shared store refused): close the window (no further poll or batch), set `lost` (no offset
    /// confirmation, exit with the restart code) and cancel the run (stops the singleton jobs).
    pub fn on_lost(&self, cancel: CancellationToken) -> Arc<dyn Fn() + Send + Sync> {
        let window = Arc::clone(&self.window);
        let end = Arc::clone(&self.end);
        Arc::new(move || {
            window.lose();
            end.lost.store(true, Ordering::SeqCst);
            cancel.cancel();
        })
    }

    /// Renews every TTL/3 until `cancel`; on a lost lease closes the window, sets `lost` and cancels.
    pub fn spawn_renewer(
        &self,
        bot_id: u64,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let lease = Arc::clone(&self.lease);
        let window = Arc::clone(&self.window);
        let lose = self.on_lost(cancel.clone());
        let epoch = self.epoch;
        tokio::spawn(async move {
            let ttl = lease.ttl();
            let mut tick = tokio::time::interval(lease::renew_interval(ttl));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is now: the acquisition just happened
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let asked = BootInstant::now();
                let why = match lease.renew(epoch).await {
                    Ok(Some(_)) => {
                        window.extend(asked, lease::renew_deadline(ttl));
                        continue;
                    }
                    Ok(None) => "another host holds it now, or it expired".to_owned(),
                    Err(e) if window.remaining().is_some() => {
                        tracing::warn!(bot_id, epoch, "cannot renew the lease, retrying: {e}");
                        continue;
                    }
                    Err(e) => format!("no renewal within the renew deadline ({e})"),
                };
                lose();
                tracing::error!(
                    bot_id,
                    epoch,
                    "lost the PostgreSQL lease: {why}; stopping polling and the singleton jobs"
                );
                return;
            }
        })
    }

    /// Listens for `cryptobot lease release|takeover` until `cancel`; on a request for this epoch it
    /// records it in `end` and cancels the run: the clean stop drains, confirms the offset, then
    /// [`Leadership::release`] releases the lease (reserved for the asking host on a takeover).
    pub fn spawn_control_listener(
        &self,
        bot_id: u64,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let lease = Arc::clone(&self.lease);
        let end = Arc::clone(&self.end);
        let epoch = self.epoch;
        tokio::spawn(async move {
            let mut listener = None;
            loop {
                let attempt = async {
                    let l = match &mut listener {
                        Some(l) => l,
                        None => listener.insert(lease.listen_control().await?),
                    };
                    l.next(epoch).await
                };
                let request = tokio::select! {
                    () = cancel.cancelled() => return,
                    r = attempt => r,
                };
                match request {
                    Ok(request) => {
                        tracing::info!(
                            bot_id,
                            epoch,
                            "asked to hand the lease over ({request:?}): stopping cleanly"
                        );
                        *end.handover
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(request);
                        cancel.cancel();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(bot_id, "cannot listen for lease requests, retrying: {e}");
                        listener = None;
                        tokio::select! {
                            () = cancel.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
        })
    }

    /// A clean stop: give the lease up (NOTIFY wakes a standby), then close the pool.
    pub async fn release(&self) -> std::result::Result<(), String> {
        let outcome = if self.end.is_lost() {
            Ok(())
        } else {
            let to = match self.end.handover() {
                Some(ControlRequest::Takeover { host }) => Some(host),
                _ => None,
            };
            self.lease
                .release_to(self.epoch, to.as_deref())
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        };
        self.lease.close().await;
        outcome
    }
}
