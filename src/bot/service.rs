//! The bot's behaviour: what each [`Request`] does and the replies it produces.
//!
//! Parsing is pure ([`super::commands`]); this is where the I/O happens — prices from the
//! [`PriceSource`], alerts in the [`Store`]. Replies are returned, not sent: the update source queues
//! them in the outbox in the same transaction that marks the update handled.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use teloxide::types::{ChatId, Update, UpdateKind};
use tokio_util::sync::CancellationToken;

use super::alerts::AlertRules;
use super::commands::{self, AlertRequest, Direction, PriceRequest, Request};
use super::group_admins::GroupAdmins;
use super::prices::{ChatLimiter, CoinMap, PriceError, PriceSource};
use crate::live_status::LiveStatus;
use crate::store::{NewAlert, Store};
use crate::telegram::client::UNDECODABLE;

/// What the handlers may know about the running instance.
#[derive(Clone, Debug)]
pub struct Context {
    pub username: String,
    pub host: String,
    pub pid: u32,
    pub version: &'static str,
    pub started: Instant,
    /// "single (flock)" today; "leader"/"standby" once the PostgreSQL lease exists.
    pub role: String,
}

/// A message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub chat: ChatId,
    pub text: String,
}

/// Settings of the bot's behaviour.
#[derive(Clone, Debug)]
pub struct BotSettings {
    pub admins: Vec<i64>,
    pub default_currency: String,
    pub max_alerts_per_chat: i64,
    pub coins: CoinMap,
    pub alert_rules: AlertRules,
}

impl BotSettings {
    pub fn from_options(options: &crate::config::BotOptions) -> Self {
        Self {
            admins: options.admin_chat_ids.clone(),
            default_currency: options.default_currency.clone(),
            max_alerts_per_chat: options.max_alerts_per_chat as i64,
            coins: CoinMap::with_extra(&options.coins),
            alert_rules: AlertRules::new(options.alert_hysteresis_percent, options.alert_cooldown),
        }
    }
}

/// The bot: request in, replies out.
pub struct Service<P> {
    pub prices: Arc<P>,
    pub store: Store,
    /// The bot's settings; a reload (SIGHUP) publishes new ones, read at each update.
    pub settings: tokio::sync::watch::Receiver<Arc<BotSettings>>,
    pub context: Context,
    pub status: Arc<LiveStatus>,
    pub bot_id: u64,
    /// Set by `/restart`; `stop` is then cancelled and the process exits with the restart code.
    pub restart_requested: Arc<AtomicBool>,
    pub stop: CancellationToken,
    /// Bounds the price lookups that miss the cache, per chat: one user cannot make the bot trip the
    /// provider's rate limit for everyone.
    pub price_limiter: ChatLimiter,
    /// Who administers a group: only they delete the group's alerts.
    pub group_admins: Arc<GroupAdmins>,
}

pub const NOT_ALLOWED: &str = "not allowed: this command is for the bot's admins (admin_chat_ids)";
const UNKNOWN: &str = "Unknown command. Send /help for the list.";
/// The answer to a member who is not an administrator deleting a group's alert.
pub const GROUP_ADMINS_ONLY: &str =
    "Only the group's administrators can delete its alerts; /alerts lists them.";

fn format_uptime(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

impl<P: PriceSource> Service<P> {
    /// The replies to one update (none for updates that are not commands to us). `fingerprint`
    /// identifies the update ([`super::dispatch::fingerprint`]): what it stores is keyed by it, so
    /// handling the same update again (after a crash before it was recorded) changes nothing twice.
    pub async fn handle(&self, update: &Update, fingerprint: i64) -> Vec<Reply> {
        if let UpdateKind::Error(raw) = &update.kind {
            self.skip_unreadable(update.id.0, raw);
            return Vec::new();
        }
        #[cfg(debug_assertions)]
        if crate::fault::hangs(update) {
            std::future::pending::<()>().await;
        }
        let settings = self.settings();
        let Some((chat, sender, request)) = commands::parse_update(
            update,
            &self.context.username,
            &settings.coins,
            &settings.default_currency,
        ) else {
            return Vec::new();
        };
        let text = self.answer(chat.0, sender, request, fingerprint).await;
        vec![Reply { chat, text }]
    }

    /// An update this bot cannot read (its kind is unknown, its content malformed, or it did not
    /// decode at all: [`UNDECODABLE`]) is skipped: logged with its id and counted, no reply; it is
    /// then recorded as handled like any other, so the offset moves past it.
    fn skip_unreadable(&self, update_id: u32, raw: &serde_json::Value) {
        let reason = match raw.get(UNDECODABLE).and_then(serde_json::Value::as_str) {
            Some(error) => format!("it does not decode ({error})"),
            None => {
                let kind = raw
                    .as_object()
                    .and_then(|o| o.keys().find(|k| *k != "update_id"))
                    .map_or("none", String::as_str);
                let kind: String = kind.chars().take(40).collect();
                format!("unknown or malformed update kind {kind:?}")
            }
        };
        self.status.metrics.api_error("bad_update");
        tracing::warn!(
            bot_id = self.bot_id,
            update_id,
            "skipping update {update_id}: this bot cannot read it: {reason}"
        );
    }

    /// The settings in force now (a reload may have replaced them).
    fn settings(&self) -> Arc<BotSettings> {
        Arc::clone(&self.settings.borrow())
    }

    fn is_admin(&self, chat: i64, sender: i64) -> bool {
        self.settings()
            .admins
            .iter()
            .any(|a| *a == chat || *a == sender)
    }

    async fn answer(&self, chat: i64, sender: i64, request: Request, fingerprint: i64) -> String {
        match request {
            Request::Start => format!(
                "Hello! I am @{}. {}",
                self.context.username,
                commands::help_text()
            ),
            Request::Help => commands::help_text(),
            Request::Ping => "pong".to_owned(),
            Request::Usage(usage) => usage.to_owned(),
            Request::Unknown => UNKNOWN.to_owned(),
            Request::Price(p) => self.price(chat, &p).await,
            Request::Alert(a) => self.add_alert(chat, &a, fingerprint).await,
            Request::Alerts => self.list_alerts(chat).await,
            Request::DeleteAlert(id) => self.delete_alert(chat, sender, id).await,
            Request::Status if self.is_admin(chat, sender) => self.status_text(),
            Request::Restart if self.is_admin(chat, sender) => {
                tracing::warn!(
                    bot_id = self.bot_id,
                    chat_id = chat,
                    "restart requested by an admin"
                );
                self.restart_requested.store(true, Ordering::SeqCst);
                self.stop.cancel();
                "Restarting: stopping cleanly; systemd starts me again.".to_owned()
            }
            Request::Status | Request::Restart => NOT_ALLOWED.to_owned(),
        }
    }

    /// `/delalert`: in a group, for its administrators (and the bot's admins) only; the group's
    /// alerts belong to the group, not to whoever set them.
    async fn delete_alert(&self, chat: i64, sender: i64, id: i64) -> String {
        if chat < 0 && !self.is_admin(chat, sender) {
            match self.group_admins.is_admin(chat, sender).await {
                Ok(true) => {}
                Ok(false) => return GROUP_ADMINS_ONLY.to_owned(),
                Err(e) => {
                    tracing::warn!(
                        bot_id = self.bot_id,
                        chat_id = chat,
                        "cannot tell whether {sender} administers chat {chat}: {e}"
                    );
                    return "I could not check who administers this group; try again in a minute."
                        .to_owned();
                }
            }
        }
        match self.store.delete_alert(self.bot_id, chat, id).await {
            Ok(true) => format!("Alert #{id} deleted."),
            Ok(false) => format!("There is no alert #{id} in this chat; see /alerts."),
            Err(e) => self.storage_trouble(&e),
        }
    }

    fn storage_trouble(&self, e: &crate::store::Error) -> String {
        tracing::error!(bot_id = self.bot_id, "state store error: {e}");
        "Sorry, I could not reach my storage; try again in a moment.".to_owned()
    }

    fn status_text(&self) -> String {
        let c = &self.context;
        format!(
            "cryptobot {}\ninstance: {}@{}\nhost: {}\npid: {}\nrole: {}\nuptime: {}\nupdates handled: {}\nconflicts: {}",
            c.version,
            c.pid,
            c.host,
            c.host,
            c.pid,
            c.role,
            format_uptime(c.started.elapsed()),
            self.status.handled(),
            self.status.conflicts()
        )
    }

    /// `Err(reply)` when `chat` has made too many lookups that miss the cache lately.
    fn may_look_up(&self, chat: i64, ids: &[String], currency: &str) -> Result<(), String> {
        if self.prices.is_cached(ids, currency) {
            return Ok(());
        }
        self.price_limiter.take(chat).map_err(|wait| {
            format!(
                "You have asked for many prices in a short time; try again in {} s.",
                wait.as_secs().max(1)
            )
        })
    }

    async fn price(&self, chat: i64, request: &PriceRequest) -> String {
        let ids: Vec<String> = request.coins.iter().map(|(_, id)| id.clone()).collect();
        if let Err(reply) = self.may_look_up(chat, &ids, &request.currency) {
            return reply;
        }
        let table = match self.prices.prices(&ids, &request.currency).await {
            Ok(t) => t,
            Err(e) => return format!("Sorry, {e}."),
        };
        let currency = request.currency.to_ascii_uppercase();
        let lines: Vec<String> = request
            .coins
            .iter()
            .map(|(symbol, id)| match table.get(id) {
                Some(price) => format!("{symbol}: {price} {currency}"),
                None => format!(
                    "{symbol}: {}",
                    PriceError::UnknownCoin(symbol.to_ascii_lowercase())
                ),
            })
            .collect();
        lines.join("\n")
    }

    async fn add_alert(&self, chat: i64, a: &AlertRequest, source_update: i64) -> String {
        let ids = std::slice::from_ref(&a.coin_id);
        if let Err(reply) = self.may_look_up(chat, ids, &a.currency) {
            return reply;
        }
        // The price now decides whether the alert waits for a crossing (armed) or is already past it.
        let now = self.prices.prices(ids, &a.currency).await;
        let current: Option<Decimal> = match &now {
            Ok(table) if !table.contains_key(&a.coin_id) => {
                return format!(
                    "Sorry, {}.",
                    PriceError::UnknownCoin(a.symbol.to_ascii_lowercase())
                );
            }
            Ok(table) => table.get(&a.coin_id).copied(),
            // A coin the map names is known to exist: the alert waits for its first check. Any
            // other id must be confirmed by the provider first, or alerts on coins nobody checked
            // would pile up while it is down.
            Err(_) if self.settings().coins.knows_id(&a.coin_id) => None,
            Err(e) => {
                return format!(
                    "Sorry, I cannot check the coin {:?} now, so I did not set the alert: {e}.",
                    a.symbol.to_ascii_lowercase()
                );
            }
        };
        let already = current.is_some_and(|p| crossed(a.direction, p, a.threshold));
        let threshold = a.threshold.to_string();
        let expires_at_ms = a
            .expires_in
            .map(|d| crate::clock::unix_now_ms().saturating_add(d.as_millis() as i64));
        let new = NewAlert {
            symbol: &a.symbol,
            coin_id: &a.coin_id,
            currency: &a.currency,
            direction: a.direction.as_str(),
            threshold: &threshold,
            armed: !already,
            once: a.once,
            expires_at_ms,
            source_update: Some(source_update),
        };
        let mut options = String::new();
        if a.once {
            options.push_str(" Once: deleted when it fires.");
        }
        if let Some(d) = a.expires_in {
            options.push_str(&format!(" Expires in {}.", span(d)));
        }
        let currency = a.currency.to_ascii_uppercase();
        let cap = self.settings().max_alerts_per_chat;
        match self.store.add_alert(self.bot_id, chat, &new, cap).await {
            Ok(None) => format!(
                "You have {cap} alerts, the most a chat can have; delete one with /delalert first."
            ),
            Ok(Some(id)) if already => format!(
                "Alert #{id} set: {} {} {threshold} {currency}. It is already {} ({} {currency} now), so I will tell you the next time it crosses.{options}",
                a.symbol,
                a.direction.as_str(),
                a.direction.as_str(),
                current.unwrap_or_default()
            ),
            Ok(Some(id)) => format!(
                "Alert #{id} set: {} {} {threshold} {currency}.{options}",
                a.symbol,
                a.direction.as_str()
            ),
            Err(e) => self.storage_trouble(&e),
        }
    }

    async fn list_alerts(&self, chat: i64) -> String {
        match self.store.chat_alerts(self.bot_id, chat).await {
            Ok(alerts) if alerts.is_empty() => {
                "You have no alerts. Set one with /alert btc above 70000.".to_owned()
            }
            Ok(alerts) => {
                let rules = self.settings().alert_rules;
                let now_ms = crate::clock::unix_now_ms();
                let mut text = String::from("Your alerts:\n");
                for a in alerts {
                    text.push_str(&alert_line(&a, rules, now_ms));
                    text.push('\n');
                }
                text
            }
            Err(e) => self.storage_trouble(&e),
        }
    }
}

/// One line of `/alerts`: the alert, then its state: armed (or quiet for its cooldown), or fired and
/// waiting for the price to move back past its re-arm level; `once`; when it expires.
fn alert_line(a: &crate::store::AlertRow, rules: AlertRules, now_ms: i64) -> String {
    let currency = a.currency.to_ascii_uppercase();
    let mut state = Vec::new();
    let quiet_for = a
        .last_fired_at_ms
        .map(|t| rules.cooldown.as_millis() as i64 - now_ms.saturating_sub(t))
        .filter(|left| *left > 0);
    match (
        a.armed,
        Direction::parse(&a.direction),
        Decimal::from_str(&a.threshold),
    ) {
        (true, ..) => match quiet_for {
            Some(left) => state.push(format!(
                "armed, quiet for {} (cooldown)",
                span(Duration::from_millis(left as u64))
            )),
            None => state.push("armed".to_owned()),
        },
        (false, Some(direction), Ok(threshold)) => {
            let side = match direction {
                Direction::Above => "below",
                Direction::Below => "above",
            };
            state.push(format!(
                "re-arms {side} {} {currency}",
                rules.rearm_level(direction, threshold)
            ));
        }
        (false, ..) => state.push("waiting to re-arm".to_owned()),
    }
    if a.fired_count > 0 {
        state.push(format!("fired {}×", a.fired_count));
    }
    if a.once {
        state.push("once".to_owned());
    }
    if let Some(at) = a.expires_at_ms {
        let left = Duration::from_millis(at.saturating_sub(now_ms).max(0) as u64);
        state.push(format!("expires in {}", span(left)));
    }
    format!(
        "#{} {} {} {} {currency} — {}",
        a.id,
        a.symbol,
        a.direction,
        a.threshold,
        state.join(", ")
    )
}

/// A duration as people say it: `6d 23h`, `3h 5m`, `12m`, `40s`.
pub fn span(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes) = (s / 86_400, s % 86_400 / 3_600, s % 3_600 / 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// True when `price` is on the alert's side of `threshold` (inclusive).
pub fn crossed(direction: Direction, price: Decimal, threshold: Decimal) -> bool {
    match direction {
        Direction::Above => price >= threshold,
        Direction::Below => price <= threshold,
    }
}
