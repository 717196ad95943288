//! The alert checker: a singleton job (it runs only in the instance that holds the lock, or the lease)
//! that fetches the prices the alerts need every `alert_interval` and fires each alert once per
//! crossing.
//!
//! An alert is *armed* while it waits for its crossing. When the price is on its side of the threshold
//! and it is armed, it fires: disarmed (a `once` alert deleted) and its message queued in the outbox in
//! one transaction (`Store::fire_alerts`, up to 500 alerts at a time, the sender woken after each), so
//! a crash can neither lose the notification nor send it twice for one crossing. No spam, by design
//! ([`AlertRules`]): a fired alert re-arms only once the price moved back past the threshold by the
//! hysteresis band (`alert_hysteresis`, 0.5 % by default), so a price hovering at the threshold does
//! not fire it again and again; and an alert fires at most once per `alert_cooldown` (15 min), a
//! crossing inside the cooldown firing when it ends if the price is still there. An alert set `for
//! 7d` is deleted when its time is up, its chat told, in one transaction too (`Store::expire_alerts`).
//! The state is in the store, so a crossing that happened while the bot was down fires on the first
//! check after the start.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

use super::commands::Direction;
use super::outbound::Wake;
use super::prices::PriceSource;
use super::service::{BotSettings, crossed};
use crate::live_status::LiveStatus;
use crate::store::{AlertRow, Firing, Store};

/// What keeps an alert from speaking when it has nothing new to say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlertRules {
    /// The fraction of its threshold the price must move back before a fired alert re-arms.
    pub hysteresis: Decimal,
    /// The shortest time between two firings of one alert.
    pub cooldown: Duration,
}

impl AlertRules {
    /// From `alert_hysteresis` (a percentage) and `alert_cooldown`.
    pub fn new(hysteresis_percent: f64, cooldown: Duration) -> Self {
        let percent = Decimal::try_from(hysteresis_percent).unwrap_or_default();
        Self {
            hysteresis: (percent / Decimal::ONE_HUNDRED).normalize(),
            cooldown,
        }
    }

    /// The price a fired alert must move back past (strictly) before it re-arms.
    pub fn rearm_level(&self, direction: Direction, threshold: Decimal) -> Decimal {
        let band = threshold * self.hysteresis;
        match direction {
            Direction::Above => threshold - band,
            Direction::Below => threshold + band,
        }
        .normalize()
    }

    /// Whether an alert that last fired at `last_fired_at_ms` must stay quiet at `now_ms`.
    pub fn cooling_down(&self, last_fired_at_ms: Option<i64>, now_ms: i64) -> bool {
        last_fired_at_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < self.cooldown.as_millis() as i64)
    }
}

impl Default for AlertRules {
    fn default() -> Self {
        Self::new(0.5, Duration::from_secs(900))
    }
}

/// What one check did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckOutcome {
    pub fired: usize,
    pub rearmed: usize,
    pub expired: usize,
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
    once: bool,
    last_fired_at_ms: Option<i64>,
}

/// The live alerts in a compact form: each kind once, each alert in about 70 bytes; those whose time
/// was up at `now_ms` apart.
#[derive(Default)]
struct Watchlist {
    now_ms: i64,
    kinds: Vec<Kind>,
    index: HashMap<Kind, usize>,
    alerts: Vec<Watched>,
    expired: Vec<Watched>,
}

impl Watchlist {
    fn new(now_ms: i64) -> Self {
        Self {
            now_ms,
            ..Self::default()
        }
    }

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
        let watched = Watched {
            id: row.id,
            chat_id: row.chat_id,
            kind,
            threshold,
            armed: row.armed,
            once: row.once,
            last_fired_at_ms: row.last_fired_at_ms,
        };
        if row.expires_at_ms.is_some_and(|t| t <= self.now_ms) {
            self.expired.push(watched);
        } else {
            self.alerts.push(watched);
        }
    }
}

/// One pass over every live alert at `now_ms` (Unix ms): the expired ones deleted (their chats told),
/// the others fired or re-armed as `rules` say; `outbox` is woken whenever messages were queued.
pub async fn check_once<P: PriceSource>(
    store: &Store,
    prices: &P,
    bot_id: u64,
    outbox: &Wake,
    rules: AlertRules,
    now_ms: i64,
) -> Result<CheckOutcome, String> {
    let mut list = Watchlist::new(now_ms);
    store
        .each_live_alert(bot_id, |row| list.add(row))
        .await
        .map_err(|e| format!("cannot read the alerts: {e}"))?;
    let mut outcome = CheckOutcome::default();
    for chunk in list.expired.chunks(FIRE_BATCH) {
        let notices: Vec<Firing> = chunk
            .iter()
            .map(|alert| Firing {
                alert_id: alert.id,
                chat_id: alert.chat_id,
                text: expiry_note(&list.kinds[alert.kind], alert),
            })
            .collect();
        match store.expire_alerts(bot_id, &notices, now_ms).await {
            Ok(expired) => {
                outcome.expired += expired.len();
                if !expired.is_empty() {
                    outbox.wake();
                }
            }
            Err(e) => tracing::warn!(
                bot_id,
                alerts = notices.len(),
                "cannot delete {} expired alert(s): {e}; the next check tries again",
                notices.len()
            ),
        }
    }
    let mut by_currency: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for k in &list.kinds {
        let ids = by_currency.entry(k.currency.as_str()).or_default();
        if !ids.contains(&k.coin_id) {
            ids.push(k.coin_id.clone());
        }
    }
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
            let quiet = rules.cooling_down(alert.last_fired_at_ms, now_ms);
            match evaluate(
                kind.direction,
                alert.threshold,
                alert.armed,
                *price,
                rules,
                quiet,
            ) {
                Some(Step::Fire) => firings.push(Firing {
                    alert_id: alert.id,
                    chat_id: alert.chat_id,
                    text: notification(kind, alert, *price),
                }),
                Some(Step::Rearm) => rearm.push(alert.id),
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

/// What an alert does at one price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Fire,
    Rearm,
}

/// An armed alert fires when the price is on its side of the threshold (inclusive) and it is not
/// `quiet` (cooling down); a fired one re-arms once the price moved back strictly past the
/// re-arm level (the threshold less, or plus, the hysteresis band).
fn evaluate(
    direction: Direction,
    threshold: Decimal,
    armed: bool,
    price: Decimal,
    rules: AlertRules,
    quiet: bool,
) -> Option<Step> {
    if armed {
        return (crossed(direction, price, threshold) && !quiet).then_some(Step::Fire);
    }
    let level = rules.rearm_level(direction, threshold);
    let back = match direction {
        Direction::Above => price < level,
        Direction::Below => price > level,
    };
    back.then_some(Step::Rearm)
}

fn notification(kind: &Kind, alert: &Watched, price: Decimal) -> String {
    let currency = kind.currency.to_ascii_uppercase();
    let what = if alert.once {
        format!("alert #{}, once: now deleted", alert.id)
    } else {
        format!("alert #{}", alert.id)
    };
    format!(
        "🔔 {} is {} {} {currency}: {price} {currency} now ({what})",
        kind.symbol,
        kind.direction.as_str(),
        alert.threshold,
    )
}

fn expiry_note(kind: &Kind, alert: &Watched) -> String {
    format!(
        "⌛ Alert #{} expired: {} {} {} {}. Set a new one with /alert.",
        alert.id,
        kind.symbol,
        kind.direction.as_str(),
        alert.threshold,
        kind.currency.to_ascii_uppercase()
    )
}

/// The alert checker of one bot.
pub struct Checker<P> {
    pub store: Store,
    pub prices: Arc<P>,
    pub bot_id: u64,
    /// Time between two checks (`alert_interval`).
    pub interval: Duration,
    /// Woken when messages were queued.
    pub outbox: Arc<Wake>,
    pub status: Arc<LiveStatus>,
    /// The bot's settings, with the alert rules (reloadable).
    pub settings: tokio::sync::watch::Receiver<Arc<BotSettings>>,
}

impl<P: PriceSource> Checker<P> {
    /// Checks every `interval` until `cancel`; the first check is at once, so a crossing that
    /// happened while the bot was down is reported right after the start.
    pub async fn run(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let rules = self.settings.borrow().alert_rules;
            let now_ms = crate::clock::unix_now_ms();
            match check_once(
                &self.store,
                self.prices.as_ref(),
                self.bot_id,
                &self.outbox,
                rules,
                now_ms,
            )
            .await
            {
                Ok(outcome) if outcome.fired > 0 => {
                    self.status
                        .metrics
                        .alerts_fired
                        .inc_by(outcome.fired as u64);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(bot_id = self.bot_id, "alert check failed: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    /// No band: re-armed as soon as the price is back on the other side.
    const NO_BAND: AlertRules = AlertRules {
        hysteresis: Decimal::ZERO,
        cooldown: Duration::ZERO,
    };

    fn evaluate_text(direction: &str, threshold: &str, armed: bool, price: &str) -> Option<Step> {
        let direction = Direction::parse(direction).unwrap();
        evaluate(direction, d(threshold), armed, d(price), NO_BAND, false)
    }

    #[test]
    fn fires_once_per_crossing_and_rearms_on_the_way_back() {
        assert_eq!(evaluate_text("above", "100", true, "99.99"), None);
        assert_eq!(evaluate_text("above", "100", true, "100"), Some(Step::Fire));
        assert_eq!(
            evaluate_text("above", "100", false, "150"),
            None,
            "fired: wait for the way back"
        );
        assert_eq!(
            evaluate_text("above", "100", false, "99"),
            Some(Step::Rearm)
        );
        assert_eq!(
            evaluate_text("below", "0.1", true, "0.09"),
            Some(Step::Fire)
        );
        assert_eq!(evaluate_text("below", "0.1", true, "0.1000001"), None);
    }

    #[test]
    fn a_fired_alert_rearms_only_past_the_hysteresis_band() {
        let rules = AlertRules::new(0.5, Duration::ZERO);
        assert_eq!(rules.hysteresis, d("0.005"));
        let above = Direction::Above;
        assert_eq!(rules.rearm_level(above, d("70000")), d("69650"));
        assert_eq!(rules.rearm_level(Direction::Below, d("0.1")), d("0.1005"));
        let step = |price: &str| evaluate(above, d("70000"), false, d(price), rules, false);
        assert_eq!(step("69999"), None, "back, but inside the band");
        assert_eq!(step("69650"), None, "on the level is not past it");
        assert_eq!(step("69649.99"), Some(Step::Rearm));
        let below =
            |price: &str| evaluate(Direction::Below, d("0.1"), false, d(price), rules, false);
        assert_eq!(below("0.1004"), None);
        assert_eq!(below("0.10051"), Some(Step::Rearm));
    }

    #[test]
    fn an_armed_alert_stays_quiet_for_its_cooldown() {
        let rules = AlertRules::new(0.5, Duration::from_secs(900));
        let fired_at = 1_000_000;
        assert!(rules.cooling_down(Some(fired_at), fired_at + 899_999));
        assert!(!rules.cooling_down(Some(fired_at), fired_at + 900_000));
        assert!(!rules.cooling_down(None, fired_at));
        let step = |quiet| evaluate(Direction::Above, d("100"), true, d("101"), rules, quiet);
        assert_eq!(step(true), None);
        assert_eq!(step(false), Some(Step::Fire));
    }

    /// A price that crosses and falls back 100 times, one check each way, 1 minute apart: with the
    /// defaults (0.5 % band, 15 min cooldown) the alert fires once per 15 minutes at most; a price
    /// that never leaves the band fires it once.
    #[test]
    fn a_price_oscillating_across_the_threshold_fires_as_the_rules_allow() {
        let run = |rules: AlertRules, low: &str, high: &str| {
            let (mut armed, mut last_fired, mut fired) = (true, None, 0);
            for minute in 0..200i64 {
                let price = if minute % 2 == 0 { d(high) } else { d(low) };
                let now = minute * 60_000;
                let quiet = rules.cooling_down(last_fired, now);
                match evaluate(Direction::Above, d("100"), armed, price, rules, quiet) {
                    Some(Step::Fire) => {
                        armed = false;
                        last_fired = Some(now);
                        fired += 1;
                    }
                    Some(Step::Rearm) => armed = true,
                    None => {}
                }
            }
            fired
        };
        let defaults = AlertRules::default();
        assert_eq!(
            run(NO_BAND, "99.9", "100.1"),
            100,
            "no rules: every crossing"
        );
        assert_eq!(run(defaults, "99.9", "100.1"), 1, "inside the band: once");
        // Past the band each time: once per cooldown, at the first crossing after it (every 16th
        // minute: the crossings come on even minutes), so 13 times in 200 minutes.
        assert_eq!(run(defaults, "99", "101"), 13);
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
            once: false,
            last_fired_at_ms: None,
            expires_at_ms: None,
        }
    }

    #[test]
    fn the_notification_shows_exact_amounts() {
        let mut list = Watchlist::default();
        list.add(row(1, 2, "BTC", "above", "70000.5"));
        list.add(AlertRow {
            once: true,
            ..row(2, 2, "BTC", "below", "1")
        });
        let alert = list.alerts[0];
        let text = notification(&list.kinds[alert.kind], &alert, d("70000.51"));
        assert_eq!(
            text,
            "🔔 BTC is above 70000.5 USD: 70000.51 USD now (alert #1)"
        );
        let once = list.alerts[1];
        assert_eq!(
            notification(&list.kinds[once.kind], &once, d("0.9")),
            "🔔 BTC is below 1 USD: 0.9 USD now (alert #2, once: now deleted)"
        );
        assert_eq!(
            expiry_note(&list.kinds[once.kind], &once),
            "⌛ Alert #2 expired: BTC below 1 USD. Set a new one with /alert."
        );
    }

    #[test]
    fn an_alert_whose_time_is_up_is_set_apart() {
        let mut list = Watchlist::new(1_000);
        list.add(AlertRow {
            expires_at_ms: Some(1_000),
            ..row(1, 1, "BTC", "above", "1")
        });
        list.add(AlertRow {
            expires_at_ms: Some(1_001),
            ..row(2, 1, "BTC", "above", "1")
        });
        list.add(row(3, 1, "BTC", "above", "1"));
        let ids = |v: &[Watched]| v.iter().map(|w| w.id).collect::<Vec<_>>();
        assert_eq!(ids(&list.expired), [1]);
        assert_eq!(ids(&list.alerts), [2, 3]);
    }

    /// A price source that answers one fixed table.
    struct Fixed(super::super::prices::PriceTable);

    impl PriceSource for Fixed {
        async fn prices(
            &self,
            _coin_ids: &[String],
            _currency: &str,
        ) -> Result<super::super::prices::PriceTable, super::super::prices::PriceError> {
            Ok(self.0.clone())
        }
    }

    fn new_alert(once: bool, expires_at_ms: Option<i64>) -> crate::store::NewAlert<'static> {
        crate::store::NewAlert {
            symbol: "BTC",
            coin_id: "bitcoin",
            currency: "usd",
            direction: "above",
            threshold: "100",
            armed: true,
            once,
            expires_at_ms,
            source_update: None,
        }
    }

    /// Through a real store: a `once` alert is gone after it fired, a `repeat` one stays disarmed;
    /// an alert whose time is up is deleted with a note to its chat, and does not fire even though
    /// the price crossed; one whose time is not up stays. Each message queued exactly once.
    #[tokio::test]
    async fn once_alerts_go_when_they_fire_and_expired_ones_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        let now = 1_000_000_000;
        let repeat = store
            .add_alert(1, 10, &new_alert(false, None), 20)
            .await
            .unwrap()
            .unwrap();
        let once = store
            .add_alert(1, 11, &new_alert(true, None), 20)
            .await
            .unwrap()
            .unwrap();
        let expired = store
            .add_alert(1, 12, &new_alert(false, Some(now)), 20)
            .await
            .unwrap()
            .unwrap();
        let later = store
            .add_alert(1, 13, &new_alert(true, Some(now + 1)), 20)
            .await
            .unwrap()
            .unwrap();
        let prices = Fixed([("bitcoin".to_owned(), d("150"))].into());
        let wake = Wake::default();
        let outcome = check_once(&store, &prices, 1, &wake, AlertRules::default(), now)
            .await
            .unwrap();
        assert_eq!((outcome.fired, outcome.expired), (3, 1));
        let left: Vec<(i64, bool)> = store
            .live_alerts(1)
            .await
            .unwrap()
            .iter()
            .map(|a| (a.id, a.armed))
            .collect();
        assert_eq!(
            left,
            [(repeat, false)],
            "once {once}, later {later}, expired {expired}"
        );
        let mut queued: Vec<(i64, String)> = store
            .outbox(1, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.chat_id, m.text))
            .collect();
        queued.sort();
        assert_eq!(
            queued,
            [
                (
                    10,
                    format!("🔔 BTC is above 100 USD: 150 USD now (alert #{repeat})")
                ),
                (
                    11,
                    format!(
                        "🔔 BTC is above 100 USD: 150 USD now (alert #{once}, once: now deleted)"
                    )
                ),
                (
                    12,
                    format!(
                        "⌛ Alert #{expired} expired: BTC above 100 USD. Set a new one with /alert."
                    )
                ),
                (
                    13,
                    format!(
                        "🔔 BTC is above 100 USD: 150 USD now (alert #{later}, once: now deleted)"
                    )
                ),
            ]
        );
        // A second check at the same price: nothing more.
        let again = check_once(&store, &prices, 1, &wake, AlertRules::default(), now)
            .await
            .unwrap();
        assert_eq!(again, CheckOutcome::default());
        assert_eq!(store.outbox(1, 0, 100).await.unwrap().len(), 4);
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
