//! The operator's commands on the PostgreSQL lease, replacing hand-written SQL:
//!
//! - `cryptobot lease show`: holder, host, PID, epoch, when it expires (exit 0; 3 when nobody holds it).
//! - `cryptobot lease release`, on the leader's host: asks the local leader to resign. It stops cleanly
//!   (drain, confirm the offset, release: the `NOTIFY` wakes the standbys, one acquires at once) and
//!   exits with the restart code, so systemd starts it again as a standby. Exit 0 once the lease has
//!   left that process.
//! - `cryptobot lease takeover`, on a standby's host: asks the leader, wherever it runs, to hand over to
//!   this host. It stops cleanly and releases the lease reserved for this host for one TTL, so this
//!   host's standby (the running `cryptobot` service) acquires it, not another. Exit 0 once this host
//!   leads.
//!
//! Requests travel on the bot's control channel (`LISTEN`/`NOTIFY`, [`lease::ControlRequest`]) and name
//! the epoch they are meant for: a request never reaches a later leader. Every wait is bounded (the TTL
//! plus the stop's own bound); a request nobody obeyed is one line and exit 1.

use std::time::{Duration, Instant};

use super::holder;
use super::leadership::lease_failure;
use super::lease::{ControlRequest, Holder, Lease, LeaseInfo};
use crate::config::Config;
use crate::exit::{Code, Failure, Result};

/// How long a clean stop of the leader may take before it releases (drain + confirmation + closing).
const LEADER_STOP_BOUND: Duration = Duration::from_secs(15);

/// How often the commands look at the lease while they wait.
const POLL: Duration = Duration::from_millis(50);

/// Runs `f` on a connection to the lease of the configured bot.
fn with_lease<T>(config: &Config, f: impl AsyncFnOnce(&Lease) -> Result<T>) -> Result<T> {
    let Some(url) = &config.database_url else {
        return Err(Failure::config(
            "no PostgreSQL lease: coordination is \"none\" (set coordination = \"postgres\" and the database URL)",
        ));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::software(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let lease = Lease::connect(
            url.expose(),
            config.token.bot_id(),
            config.settings.coordination.lease_ttl,
            Holder::this_process(),
        )
        .await
        .map_err(|e| lease_failure(&e))?;
        let out = f(&lease).await;
        lease.close().await;
        out
    })
}

async fn current(lease: &Lease) -> Result<Option<LeaseInfo>> {
    lease.show().await.map_err(|e| lease_failure(&e))
}

fn describe(info: &LeaseInfo) -> String {
    format!("{} pid {} (epoch {})", info.host, info.pid, info.epoch)
}

/// `cryptobot lease show`: exit 0 when someone holds the lease, 3 when not.
pub fn show(config: &Config) -> Result<(String, u8)> {
    let bot_id = config.token.bot_id();
    with_lease(config, async |lease| {
        Ok(match current(lease).await? {
            None => (
                format!("bot {bot_id}: no lease yet (no instance has led)"),
                3,
            ),
            Some(info) => match info.expires_in() {
                Some(left) => (
                    format!(
                        "bot {bot_id}: held by {} pid {} (instance {}), epoch {}, renewed {:.1} s ago, expires in {:.1} s",
                        info.host,
                        info.pid,
                        info.instance,
                        info.epoch,
                        info.renewed_ago.as_secs_f64(),
                        left.as_secs_f64()
                    ),
                    0,
                ),
                None => (
                    format!(
                        "bot {bot_id}: nobody holds it; last holder {} pid {}, epoch {}, expired {:.1} s ago",
                        info.host,
                        info.pid,
                        info.epoch,
                        info.expired_ago().unwrap_or_default().as_secs_f64()
                    ),
                    3,
                ),
            },
        })
    })
}

/// Waits (bounded by `within`) until `done` says yes about the lease; the last state seen, and whether
/// `done` said yes.
async fn wait_for(
    lease: &Lease,
    within: Duration,
    done: impl Fn(Option<&LeaseInfo>) -> bool,
) -> Result<(Option<LeaseInfo>, bool)> {
    let deadline = Instant::now() + within;
    loop {
        let info = current(lease).await?;
        if done(info.as_ref()) {
            return Ok((info, true));
        }
        if Instant::now() >= deadline {
            return Ok((info, false));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn now_held(info: Option<&LeaseInfo>) -> String {
    match info {
        Some(i) if i.expires_in().is_some() => format!("now held by {}", describe(i)),
        _ => "nobody holds it yet (a standby acquires it within a third of the TTL)".to_owned(),
    }
}

/// `cryptobot lease release`: the leader on this host resigns.
pub fn release(config: &Config) -> Result<(String, u8)> {
    let bot_id = config.token.bot_id();
    let here = holder::hostname();
    let ttl = config.settings.coordination.lease_ttl;
    with_lease(config, async |lease| {
        let Some(leader) = current(lease).await?.filter(|i| i.expires_in().is_some()) else {
            return Ok((
                format!("bot {bot_id}: nobody holds the lease; nothing to release"),
                3,
            ));
        };
        if leader.host != here {
            return Err(Failure::new(
                Code::Problem,
                format!(
                    "bot {bot_id}: the lease is held by {}, not by this host ({here}); run `cryptobot lease release` on {}, or `cryptobot lease takeover` on the host that should lead",
                    describe(&leader),
                    leader.host
                ),
            ));
        }
        let asked = Instant::now();
        lease
            .ask_leader(leader.epoch, &ControlRequest::Resign)
            .await
            .map_err(|e| lease_failure(&e))?;
        let (after, released) = wait_for(lease, ttl + LEADER_STOP_BOUND, |i| {
            i.is_none_or(|i| i.epoch != leader.epoch || i.expires_in().is_none())
        })
        .await?;
        if !released {
            return Err(not_obeyed(&leader, ttl + LEADER_STOP_BOUND));
        }
        Ok((
            format!(
                "bot {bot_id}: {} released the lease in {:.2} s; {}",
                describe(&leader),
                asked.elapsed().as_secs_f64(),
                now_held(after.as_ref())
            ),
            0,
        ))
    })
}

/// `cryptobot lease takeover`: the leader hands over to this host's standby.
pub fn takeover(config: &Config) -> Result<(String, u8)> {
    let bot_id = config.token.bot_id();
    let here = holder::hostname();
    let ttl = config.settings.coordination.lease_ttl;
    let here_leads =
        |i: Option<&LeaseInfo>| i.is_some_and(|i| i.host == here && i.expires_in().is_some());
    with_lease(config, async |lease| {
        let leader = current(lease).await?.filter(|i| i.expires_in().is_some());
        let asked = Instant::now();
        let from = match leader {
            Some(leader) if leader.host == here => {
                return Ok((
                    format!(
                        "bot {bot_id}: this host ({here}) leads already: {}",
                        describe(&leader)
                    ),
                    0,
                ));
            }
            Some(leader) => {
                lease
                    .ask_leader(
                        leader.epoch,
                        &ControlRequest::Takeover { host: here.clone() },
                    )
                    .await
                    .map_err(|e| lease_failure(&e))?;
                Some(leader)
            }
            // Nobody leads: a standby acquires it within TTL/3; say whether it was this host's.
            None => None,
        };
        let (after, here_now) = wait_for(lease, ttl + LEADER_STOP_BOUND, here_leads).await?;
        let took = asked.elapsed().as_secs_f64();
        match (here_now, after, from) {
            (true, Some(now), Some(from)) => Ok((
                format!(
                    "bot {bot_id}: taken over from {} by this host: {} in {took:.2} s",
                    describe(&from),
                    describe(&now)
                ),
                0,
            )),
            (true, Some(now), None) => Ok((
                format!(
                    "bot {bot_id}: nobody led; this host's standby acquired the lease: {} in {took:.2} s",
                    describe(&now)
                ),
                0,
            )),
            (_, after, from) => {
                let state = now_held(after.as_ref());
                let asked_whom = match &from {
                    Some(f) => format!("asked {} to hand over; ", describe(f)),
                    None => String::new(),
                };
                Err(Failure::new(
                    Code::Problem,
                    format!(
                        "bot {bot_id}: {asked_whom}this host ({here}) did not get the lease within {:.0} s ({state}); is cryptobot running here as a standby? (systemctl status cryptobot; cryptobot status)",
                        (ttl + LEADER_STOP_BOUND).as_secs_f64()
                    ),
                ))
            }
        }
    })
}

fn not_obeyed(leader: &LeaseInfo, waited: Duration) -> Failure {
    Failure::new(
        Code::Problem,
        format!(
            "bot {}: {} did not release the lease within {:.0} s; is it running? (cryptobot status; journalctl -u cryptobot)",
            leader.bot_id,
            describe(leader),
            waited.as_secs_f64()
        ),
    )
}

/// The lease as one line for `cryptobot status` and `doctor`: `(healthy, text)`; `None` without the
/// lease (`coordination = "none"`). Someone holding it is healthy; nobody, or an unreachable database,
/// is not.
pub fn summary(config: &Config) -> Option<(bool, String)> {
    config.database_url.as_ref()?;
    Some(match show(config) {
        Ok((text, 0)) => (true, format!("PostgreSQL lease: {text}")),
        Ok((text, _)) => (
            false,
            format!(
                "PostgreSQL lease: {text} → is cryptobot running on any host? (systemctl status cryptobot)"
            ),
        ),
        Err(e) => (false, format!("PostgreSQL lease: {}", e.message)),
    })
}
