//! The alert checker: a singleton job (it runs only in the instance that holds the lock, and later the
//! lease) that fetches the prices the alerts need every `alert_interval` and fires each alert once per
//! crossing.
//!
//! An alert is *armed* while it waits for its crossing. When the price is on its side of the threshold
//! and it is armed, it fires: disarmed and its message queued in the outbox in one transaction
//! (`Store::fire_alerts`, up to 500 alerts at a time, the sender woken after each), so a crash can
//! neither lose the notification nor send it twice for one crossing. It is re-armed once the price is back on the other side. The state is in the store, so a
//! crossing that happened while the bot was down fires on the first check after the start.

use std::collections::{BTreeMap, HashMap};
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

/// What alerts share: the coin (its id and the symbol the user wrote), the currency and the
/// direction. Interned by the checker: a crossing that concerns 10,000 alerts concerns a few kinds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Kind {
    symbol: String,
    coin_id: String,
    currency: String,
    direction: Direction,
}

/// What the checker keeps of one alert.
#[derive(Clone, Copy, Debug)]
struct Watched {
    id: i64,
    chat_id: i64,
    kind: usize,
    threshold: Decimal,
    armed: bool,
}

/// The live alerts in a compact form: each kind once, each alert in about 50 bytes.
#[derive(Default)]
struct Watchlist {
    kinds: Vec<Kind>,
    index: HashMap<Kind, usize>,
    alerts: Vec<Watched>,
}

impl Watchlist {
    fn add(&mut self, row: AlertRow) {
        // A row the bot did not write (an unknown direction, a threshold that is not a number) is
        // left alone, as before.
        let (Some(direction), Ok(threshold)) = (
            Direction::parse(&row.direction),
            Decimal::from_str(&row.threshold),
        ) else {
            return;
        };
        let kind = Kind {
            symbol: row.symbol,
            coin_id: row.coin_id,
            currency: row.currency,
            direction,
        };
        let kind = match self.index.get(&kind) {
            Some(&k) => k,
            None => {
                self.kinds.push(kind.clone());
                self.index.insert(kind, self.kinds.len() - 1);
                self.kinds.len() - 1
            }
        };
        self.alerts.push(Watched {
            id: row.id,
            chat_id: row.chat_id,
            kind,
            threshold,
            armed: row.armed,
        });
    }
}

/// One pass over every live alert; `outbox` is woken whenever fired alerts were queued.
pub async fn check_once<P: PriceSource>(
    store: &Store,
    prices: &P,
    bot_id: u64,
    outbox: &Wake,
) -> Result<CheckOutcome, String> {
    let mut list = Watchlist::default();
    store
        .each_live_alert(bot_id, |row| list.add(row))
        .await
        .map_err(|e| format!("cannot read the alerts: {e}"))?;
    let mut by_currency: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for k in &list.kinds {
        let ids = by_currency.entry(k.currency.as_str()).or_default();
        if !ids.contains(&k.coin_id) {
            ids.push(k.coin_id.clone());
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
        let mut firings = Vec::with_capacity(FIRE_BATCH);
        let mut rearm = Vec::new();
        for alert in &list.alerts {
            let kind = &list.kinds[alert.kind];
            if kind.currency != currency {
                continue;
            }
            let Some(price) = table.get(&kind.coin_id) else {
                continue;
            };
            match evaluate(kind.direction, alert.threshold, alert.armed, *price) {
                Some(true) => firings.push(Firing {
                    alert_id: alert.id,
                    chat_id: alert.chat_id,
                    text: notification(kind, alert, *price),
                }),
                Some(false) => rearm.push(alert.id),
                None => {}
            }
            // Fired as they are found, FIRE_BATCH at a time: the messages of a crossing that fires
            // thousands never all wait in memory at once.
            if firings.len() == FIRE_BATCH {
                outcome.fired += fire(store, bot_id, &firings, outbox).await;
                firings.clear();
            }
        }
        outcome.fired += fire(store, bot_id, &firings, outbox).await;
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

/// Fires `batch` in one transaction and wakes the sender; how many fired. A failure leaves the
/// alerts armed: the next check fires them.
async fn fire(store: &Store, bot_id: u64, batch: &[Firing], outbox: &Wake) -> usize {
    if batch.is_empty() {
        return 0;
    }
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
            if !fired.is_empty() {
                outbox.wake();
            }
            fired.len()
        }
        Err(e) => {
            tracing::warn!(
                bot_id,
                alerts = batch.len(),
                "cannot fire {} alert(s): {e}; the next check tries again",
                batch.len()
            );
            0
        }
    }
}

/// `Some(true)`: fire; `Some(false)`: re-arm; `None`: nothing to do.
fn evaluate(direction: Direction, threshold: Decimal, armed: bool, price: Decimal) -> Option<bool> {
    match (armed, crossed(direction, price, threshold)) {
        (true, true) => Some(true),
        (false, false) => Some(false),
        _ => None,
    }
}

fn notification(kind: &Kind, alert: &Watched, price: Decimal) -> String {
    let currency = kind.currency.to_ascii_uppercase();
    format!(
        "🔔 {} is {} {} {currency}: {price} {currency} now (alert #{})",
        kind.symbol,
        kind.direction.as_str(),
        alert.threshold,
        alert.id
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

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn evaluate_text(direction: &str, threshold: &str, armed: bool, price: &str) -> Option<bool> {
        let direction = Direction::parse(direction).unwrap();
        evaluate(direction, d(threshold), armed, d(price))
    }

    #[test]
    fn fires_once_per_crossing_and_rearms_on_the_way_back() {
        assert_eq!(evaluate_text("above", "100", true, "99.99"), None);
        assert_eq!(evaluate_text("above", "100", true, "100"), Some(true));
        assert_eq!(
            evaluate_text("above", "100", false, "150"),
            None,
            "fired: wait for the way back"
        );
        assert_eq!(evaluate_text("above", "100", false, "99"), Some(false));
        assert_eq!(evaluate_text("below", "0.1", true, "0.09"), Some(true));
        assert_eq!(evaluate_text("below", "0.1", true, "0.1000001"), None);
    }

    fn row(id: i64, chat_id: i64, symbol: &str, direction: &str, threshold: &str) -> AlertRow {
        AlertRow {
            id,
            chat_id,
            symbol: symbol.into(),
            coin_id: "bitcoin".into(),
            currency: "usd".into(),
            direction: direction.into(),
            threshold: threshold.into(),
            armed: true,
            fired_count: 0,
        }
    }

    #[test]
    fn the_notification_shows_exact_amounts() {
        let mut list = Watchlist::default();
        list.add(row(1, 2, "BTC", "above", "70000.5"));
        let alert = list.alerts[0];
        let text = notification(&list.kinds[alert.kind], &alert, d("70000.51"));
        assert_eq!(
            text,
            "🔔 BTC is above 70000.5 USD: 70000.51 USD now (alert #1)"
        );
    }

    /// Alerts of one kind share it; a row the bot cannot read is left out.
    #[test]
    fn the_watchlist_keeps_each_kind_once() {
        let mut list = Watchlist::default();
        for id in 1..=100 {
            list.add(row(id, id, "BTC", "above", "100"));
        }
        list.add(row(101, 1, "BTC", "below", "100"));
        list.add(row(102, 1, "XBT", "above", "100"));
        list.add(row(103, 1, "BTC", "sideways", "100"));
        list.add(row(104, 1, "BTC", "above", "lots"));
        assert_eq!(list.alerts.len(), 102);
        assert_eq!(list.kinds.len(), 3);
        assert_eq!(list.alerts[101].id, 102);
        assert_eq!(list.kinds[list.alerts[101].kind].symbol, "XBT");
    }
}
