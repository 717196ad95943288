//! The alert checker: a singleton job (it runs only in the instance that holds the lock, and later the
//! lease) that fetches the prices the alerts need every `alert_interval` and fires each alert once per
//! crossing.
//!
//! An alert is *armed* while it waits for its crossing. When the price is on its side of the threshold
//! and it is armed, it fires: disarmed and its message queued in the outbox in one transaction
//! (`Store::fire_alerts`, up to 500 alerts at a time, the sender woken after each), so a crash can
//! neither lose the notification nor send it twice for one crossing. It is re-armed once the price is back on the other side. The state is in the store, so a
//! crossing that happened while the bot was down fires on the first check after the start.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

use super::commands::Direction;
use super::outbound::Wake;
use super::prices::PriceSource;
use super::service::crossed;
use crate::live_status::LiveStatus;
use crate::store::{AlertRow, Firing, Store};

/// What one check did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckOutcome {
    pub fired: usize,
    pub rearmed: usize,
}

/// Alerts fired in one transaction; the sender is woken after each, so the first messages leave
/// while later ones are still being queued.
const FIRE_BATCH: usize = 500;

/// One pass over every live alert; `outbox` is woken whenever fired alerts were queued.
pub async fn check_once<P: PriceSource>(
    store: &Store,
    prices: &P,
    bot_id: u64,
    outbox: &Wake,
) -> Result<CheckOutcome, String> {
    let alerts = store
        .live_alerts(bot_id)
        .await
        .map_err(|e| format!("cannot read the alerts: {e}"))?;
    let mut by_currency: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for a in &alerts {
        let ids = by_currency.entry(a.currency.as_str()).or_default();
        if !ids.contains(&a.coin_id) {
            ids.push(a.coin_id.clone());
        }
    }
    let mut outcome = CheckOutcome::default();
    for (currency, ids) in by_currency {
        let table = match prices.prices(&ids, currency).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(
                    bot_id,
                    currency,
                    "alert check skipped for this currency: {e}"
                );
                continue;
            }
        };
        let mut firings = Vec::new();
        let mut rearm = Vec::new();
        for alert in alerts.iter().filter(|a| a.currency == currency) {
            let Some(price) = table.get(&alert.coin_id) else {
                continue;
            };
            match evaluate(alert, *price) {
                Some(true) => firings.push(Firing {
                    alert_id: alert.id,
                    chat_id: alert.chat_id,
                    text: notification(alert, *price),
                }),
                Some(false) => rearm.push(alert.id),
                None => {}
            }
        }
        for batch in firings.chunks(FIRE_BATCH) {
            match store.fire_alerts(bot_id, batch).await {
                Ok(fired) => {
                    let fired: std::collections::HashSet<i64> = fired.into_iter().collect();
                    for f in batch.iter().filter(|f| fired.contains(&f.alert_id)) {
                        tracing::debug!(
                            bot_id,
                            alert_id = f.alert_id,
                            chat_id = f.chat_id,
                            "alert fired"
                        );
                    }
                    outcome.fired += fired.len();
                    if !fired.is_empty() {
                        outbox.wake();
                    }
                }
                // Still armed: the next check fires them.
                Err(e) => tracing::warn!(
                    bot_id,
                    alerts = batch.len(),
                    "cannot fire {} alert(s): {e}; the next check tries again",
                    batch.len()
                ),
            }
        }
        match store.rearm_alerts(&rearm).await {
            Ok(()) => outcome.rearmed += rearm.len(),
            Err(e) => tracing::warn!(
                bot_id,
                alerts = rearm.len(),
                "cannot re-arm {} alert(s): {e}; the next check tries again",
                rearm.len()
            ),
        }
    }
    if outcome.fired > 0 {
        tracing::info!(
            bot_id,
            fired = outcome.fired,
            "{} alert(s) fired",
            outcome.fired
        );
    }
    Ok(outcome)
}

/// `Some(true)`: fire; `Some(false)`: re-arm; `None`: nothing to do.
fn evaluate(alert: &AlertRow, price: Decimal) -> Option<bool> {
    let direction = Direction::parse(&alert.direction)?;
    let threshold = Decimal::from_str(&alert.threshold).ok()?;
    let on_its_side = crossed(direction, price, threshold);
    match (alert.armed, on_its_side) {
        (true, true) => Some(true),
        (false, false) => Some(false),
        _ => None,
    }
}

fn notification(alert: &AlertRow, price: Decimal) -> String {
    let currency = alert.currency.to_ascii_uppercase();
    format!(
        "🔔 {} is {} {} {currency}: {price} {currency} now (alert #{})",
        alert.symbol, alert.direction, alert.threshold, alert.id
    )
}

/// Runs the checker every `interval` until `cancel`; the first check is at once, so a crossing that
/// happened while the bot was down is reported right after the start.
pub async fn run_checker<P: PriceSource>(
    store: Store,
    prices: Arc<P>,
    bot_id: u64,
    interval: Duration,
    outbox: Arc<Wake>,
    status: Arc<LiveStatus>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match check_once(&store, prices.as_ref(), bot_id, &outbox).await {
            Ok(outcome) if outcome.fired > 0 => {
                status.metrics.alerts_fired.inc_by(outcome.fired as u64);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(bot_id, "alert check failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(direction: &str, threshold: &str, armed: bool) -> AlertRow {
        AlertRow {
            id: 1,
            chat_id: 2,
            symbol: "BTC".into(),
            coin_id: "bitcoin".into(),
            currency: "usd".into(),
            direction: direction.into(),
            threshold: threshold.into(),
            armed,
            fired_count: 0,
        }
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn fires_once_per_crossing_and_rearms_on_the_way_back() {
        assert_eq!(evaluate(&alert("above", "100", true), d("99.99")), None);
        assert_eq!(evaluate(&alert("above", "100", true), d("100")), Some(true));
        assert_eq!(
            evaluate(&alert("above", "100", false), d("150")),
            None,
            "fired: wait for the way back"
        );
        assert_eq!(
            evaluate(&alert("above", "100", false), d("99")),
            Some(false)
        );
        assert_eq!(
            evaluate(&alert("below", "0.1", true), d("0.09")),
            Some(true)
        );
        assert_eq!(evaluate(&alert("below", "0.1", true), d("0.1000001")), None);
    }

    #[test]
    fn the_notification_shows_exact_amounts() {
        let text = notification(&alert("above", "70000.5", true), d("70000.51"));
        assert_eq!(
            text,
            "🔔 BTC is above 70000.5 USD: 70000.51 USD now (alert #1)"
        );
    }
}
