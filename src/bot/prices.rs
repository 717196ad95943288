//! Crypto prices: the [`PriceSource`] trait and its CoinGecko implementation, with a symbol → coin id
//! map, a short cache and a deadline on every request.
//!
//! What one user can cost the provider is bounded, so that nobody can trip its rate limit for every
//! chat: a coin the provider does not know is remembered as unknown for [`UNKNOWN_COIN_TTL`] (ten
//! `/price nosuchcoin` are one request); a request asks for at most [`IDS_PER_REQUEST`] coins (the
//! alert checker's thousands of coins go in several requests of a bounded URL); the cache holds at
//! most [`CACHE_ENTRIES`] entries; and [`ChatLimiter`] bounds the requests that miss the cache per
//! chat.
//!
//! Prices are [`Decimal`]s read from the JSON number's own text, so a reply shows the provider's digits
//! and comparisons with a user's threshold are exact: no float surprises. A provider that is down, rate
//! limited or does not know a coin is a [`PriceError`] the bot turns into a friendly reply.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;

use crate::live_status::LiveStatus;

/// Why prices could not be had. The texts are what the user reads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("I don't know the coin {0:?}; try its symbol (btc, eth) or its CoinGecko id (bitcoin)")]
    UnknownCoin(String),
    #[error("the price provider is rate limiting us; try again in a minute")]
    RateLimited,
    #[error("the price provider is unavailable right now ({0}); try again later")]
    Unavailable(String),
}

/// Prices of coins (by coin id) in one currency.
pub type PriceTable = BTreeMap<String, Decimal>;

/// A source of current prices.
pub trait PriceSource: Send + Sync {
    /// Prices of `coin_ids` in `currency` (lowercase, e.g. "usd"). A coin the provider does not know is
    /// absent from the table.
    fn prices(
        &self,
        coin_ids: &[String],
        currency: &str,
    ) -> impl Future<Output = Result<PriceTable, PriceError>> + Send;

    /// True when [`PriceSource::prices`] would answer these from its cache, without a request.
    fn is_cached(&self, _coin_ids: &[String], _currency: &str) -> bool {
        false
    }
}

/// Common symbols and their CoinGecko ids; `coins` in the config adds or overrides entries.
const DEFAULT_COINS: &[(&str, &str)] = &[
    ("btc", "bitcoin"),
    ("eth", "ethereum"),
    ("usdt", "tether"),
    ("bnb", "binancecoin"),
    ("sol", "solana"),
    ("xrp", "ripple"),
    ("usdc", "usd-coin"),
    ("ada", "cardano"),
    ("doge", "dogecoin"),
    ("trx", "tron"),
    ("ton", "the-open-network"),
    ("dot", "polkadot"),
    ("ltc", "litecoin"),
    ("bch", "bitcoin-cash"),
    ("link", "chainlink"),
    ("avax", "avalanche-2"),
    ("xlm", "stellar"),
    ("xmr", "monero"),
    ("atom", "cosmos"),
    ("matic", "matic-network"),
];

/// Currencies a price can be quoted in (CoinGecko's `vs_currencies`, the common ones).
pub const CURRENCIES: &[&str] = &[
    "usd", "eur", "gbp", "jpy", "chf", "cad", "aud", "cny", "inr", "krw", "brl", "rub", "try",
    "uah", "pln", "sek", "nok", "btc", "eth",
];

pub fn is_currency(text: &str) -> bool {
    CURRENCIES.contains(&text.to_ascii_lowercase().as_str())
}

/// Symbol → coin id.
#[derive(Clone, Debug)]
pub struct CoinMap {
    by_symbol: HashMap<String, String>,
}

impl Default for CoinMap {
    fn default() -> Self {
        Self::with_extra(&BTreeMap::new())
    }
}

impl CoinMap {
    pub fn with_extra(extra: &BTreeMap<String, String>) -> Self {
        let mut by_symbol: HashMap<String, String> = DEFAULT_COINS
            .iter()
            .map(|(s, id)| ((*s).to_owned(), (*id).to_owned()))
            .collect();
        for (symbol, id) in extra {
            by_symbol.insert(symbol.to_ascii_lowercase(), id.to_ascii_lowercase());
        }
        Self { by_symbol }
    }

    /// True for a known coin symbol ("eth"): such a word names a coin, even where a currency could stand.
    pub fn is_symbol(&self, text: &str) -> bool {
        self.by_symbol.contains_key(&text.to_ascii_lowercase())
    }

    /// True for a coin id this map names (a built-in symbol's or one from `coins`): known to exist
    /// without asking the provider.
    pub fn knows_id(&self, id: &str) -> bool {
        self.by_symbol.values().any(|known| known == id)
    }

    /// The coin id for a symbol or an id typed by a user ("BTC", "bitcoin"); `None` if it cannot be one.
    pub fn resolve(&self, text: &str) -> Option<String> {
        let lower = text.to_ascii_lowercase();
        if let Some(id) = self.by_symbol.get(&lower) {
            return Some(id.clone());
        }
        if is_currency(&lower) {
            return None; // "usd" is a currency, not a coin
        }
        // Anything shaped like a CoinGecko id is passed through; the provider says if it exists.
        let valid = !lower.is_empty()
            && lower.len() <= 64
            && lower
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        valid.then_some(lower)
    }
}

/// How long a coin the provider did not know is answered as unknown without asking again.
pub const UNKNOWN_COIN_TTL: Duration = Duration::from_secs(600);
/// Coins asked for in one request (CoinGecko's ids are up to 64 characters: the URL stays under 4 KB).
pub const IDS_PER_REQUEST: usize = 50;
/// Entries the cache holds at most; past that, expired entries go, then the oldest.
pub const CACHE_ENTRIES: usize = 10_000;

/// A cached answer: the price, or `None` when the provider did not know the coin.
type Cached = (Instant, Option<Decimal>);

/// What a request in flight will tell those waiting for one coin: its price, `None` if unknown.
type Landing = Option<Result<Option<Decimal>, PriceError>>;

/// CoinGecko's `/api/v3/simple/price`, with a cache of `ttl` (unknown coins: [`UNKNOWN_COIN_TTL`]).
///
/// Concurrent lookups of the same coin and currency share one request: the first asks, the others
/// wait for its answer (`in_flight`). A slow or hanging provider delays only the callers that asked
/// for a price (each request is bounded by [`PRICE_DEADLINE`]).
pub struct CoinGecko {
    http: reqwest::Client,
    base: url::Url,
    api_key: Option<String>,
    ttl: Duration,
    cache: Mutex<HashMap<(String, String), Cached>>,
    in_flight: Mutex<HashMap<(String, String), tokio::sync::watch::Receiver<Landing>>>,
    /// Where each request's outcome is counted (`cryptobot_price_requests_total`), if anywhere.
    status: Option<Arc<LiveStatus>>,
}

/// The coins one lookup is asking the provider for: each answer goes to whoever waits for it; what
/// is left when it is dropped (an error, a cancelled lookup) is told "unavailable".
struct Asking<'a> {
    owner: &'a CoinGecko,
    currency: String,
    senders: HashMap<String, tokio::sync::watch::Sender<Landing>>,
}

impl Asking<'_> {
    fn land(&mut self, id: &str, landing: Result<Option<Decimal>, PriceError>) {
        if let Some(sender) = self.senders.remove(id) {
            self.owner
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(id.to_owned(), self.currency.clone()));
            let _ = sender.send(Some(landing));
        }
    }
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        let ids: Vec<String> = self.senders.keys().cloned().collect();
        for id in ids {
            self.land(
                &id,
                Err(PriceError::Unavailable(
                    "the request was abandoned".to_owned(),
                )),
            );
        }
    }
}

/// Deadline of one price request.
const PRICE_DEADLINE: Duration = Duration::from_secs(10);

impl CoinGecko {
    pub fn new(base: url::Url, api_key: Option<String>, ttl: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(PRICE_DEADLINE)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot create the price HTTP client: {e}"))?;
        Ok(Self {
            http,
            base,
            api_key,
            ttl,
            cache: Mutex::default(),
            in_flight: Mutex::default(),
            status: None,
        })
    }

    /// Counts every request's outcome in `status`'s metrics (`cryptobot_price_requests_total`,
    /// `cryptobot_price_last_success_timestamp_seconds`): what an operator's alert on a failing price
    /// source reads.
    pub fn observed_by(mut self, status: Arc<LiveStatus>) -> Self {
        self.status = Some(status);
        self
    }

    /// [`CoinGecko::request`], its outcome counted.
    async fn fetch(&self, coin_ids: &[String], currency: &str) -> Result<PriceTable, PriceError> {
        let result = self.request(coin_ids, currency).await;
        if let Some(status) = &self.status {
            let outcome = match &result {
                Ok(_) => "ok",
                Err(PriceError::RateLimited) => "rate_limited",
                Err(_) => "unavailable",
            };
            status.metrics.price_request("coingecko", outcome);
        }
        result
    }

    /// `Some(Some(price))`: a fresh price; `Some(None)`: known to be unknown; `None`: ask the provider.
    fn cached(&self, coin: &str, currency: &str) -> Option<Option<Decimal>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(&(coin.to_owned(), currency.to_owned()))
            .filter(|(at, price)| at.elapsed() < self.ttl_of(price))
            .map(|(_, price)| *price)
    }

    fn ttl_of(&self, price: &Option<Decimal>) -> Duration {
        match price {
            Some(_) => self.ttl,
            None => UNKNOWN_COIN_TTL,
        }
    }

    /// Keeps the cache under [`CACHE_ENTRIES`]: expired entries first, then the oldest.
    fn bound(&self, cache: &mut HashMap<(String, String), Cached>) {
        if cache.len() <= CACHE_ENTRIES {
            return;
        }
        cache.retain(|_, (at, price)| at.elapsed() < self.ttl_of(price));
        if cache.len() > CACHE_ENTRIES {
            let mut ages: Vec<Instant> = cache.values().map(|(at, _)| *at).collect();
            ages.sort_unstable();
            let cut = ages[cache.len() - CACHE_ENTRIES];
            cache.retain(|_, (at, _)| *at >= cut);
        }
    }

    async fn request(&self, coin_ids: &[String], currency: &str) -> Result<PriceTable, PriceError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| PriceError::Unavailable("bad price_api_url".to_owned()))?
            .pop_if_empty()
            .extend(["api", "v3", "simple", "price"]);
        url.query_pairs_mut()
            .append_pair("ids", &coin_ids.join(","))
            .append_pair("vs_currencies", currency);
        let mut request = self.http.get(url);
        if let Some(key) = &self.api_key {
            request = request.header("x-cg-demo-api-key", key);
        }
        // Errors are shown without the URL: it may carry a key in a proxy's rewrite, and users need none of it.
        let response = request
            .send()
            .await
            .map_err(|e| PriceError::Unavailable(short_reason(&e)))?;
        match response.status().as_u16() {
            200 => {}
            429 => return Err(PriceError::RateLimited),
            code => return Err(PriceError::Unavailable(format!("HTTP {code}"))),
        }
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|_| PriceError::Unavailable("an answer that is not JSON".to_owned()))?;
        let mut table = PriceTable::new();
        for id in coin_ids {
            let Some(number) = body.get(id).and_then(|c| c.get(currency)) else {
                continue;
            };
            // The number's shortest text form, parsed exactly (scientific notation for tiny prices too).
            let text = number.to_string();
            let price = Decimal::from_str(&text)
                .or_else(|_| Decimal::from_scientific(&text))
                .map_err(|_| {
                    PriceError::Unavailable(format!("a price that is not a number: {text}"))
                })?;
            table.insert(id.clone(), price.normalize());
        }
        Ok(table)
    }
}

fn short_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "network error".to_owned()
    }
}

impl PriceSource for CoinGecko {
    async fn prices(&self, coin_ids: &[String], currency: &str) -> Result<PriceTable, PriceError> {
        let currency = currency.to_ascii_lowercase();
        let mut table = PriceTable::new();
        let mut missing = Vec::new();
        for id in coin_ids {
            match self.cached(id, &currency) {
                Some(Some(price)) => {
                    table.insert(id.clone(), price);
                }
                Some(None) => {} // known to be unknown: absent from the table
                None if missing.contains(id) => {}
                None => missing.push(id.clone()),
            }
        }
        // Coins another lookup is asking for already are waited for, not asked again.
        let mut asking = Asking {
            owner: self,
            currency: currency.clone(),
            senders: HashMap::new(),
        };
        let mut waiting = Vec::new();
        let mut ask = Vec::new();
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            for id in missing {
                let key = (id.clone(), currency.clone());
                match in_flight.get(&key) {
                    Some(landing) => waiting.push((id, landing.clone())),
                    None => {
                        let (sender, landing) = tokio::sync::watch::channel(None);
                        in_flight.insert(key, landing);
                        asking.senders.insert(id.clone(), sender);
                        ask.push(id);
                    }
                }
            }
        }
        for chunk in ask.chunks(IDS_PER_REQUEST) {
            let fetched = match self.fetch(chunk, &currency).await {
                Ok(fetched) => fetched,
                Err(e) => {
                    for id in chunk {
                        asking.land(id, Err(e.clone()));
                    }
                    return Err(e);
                }
            };
            let now = Instant::now();
            {
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                for id in chunk {
                    let price = fetched.get(id).copied();
                    cache.insert((id.clone(), currency.clone()), (now, price));
                    if let Some(price) = price {
                        table.insert(id.clone(), price);
                    }
                }
                self.bound(&mut cache);
            }
            for id in chunk {
                asking.land(id, Ok(fetched.get(id).copied()));
            }
        }
        drop(asking);
        for (id, mut landing) in waiting {
            let landed = match landing.wait_for(Option::is_some).await {
                Ok(value) => value.clone().unwrap_or_else(|| {
                    Err(PriceError::Unavailable(
                        "the request was abandoned".to_owned(),
                    ))
                }),
                Err(_) => Err(PriceError::Unavailable(
                    "the request was abandoned".to_owned(),
                )),
            };
            if let Some(price) = landed? {
                table.insert(id, price);
            }
        }
        Ok(table)
    }

    fn is_cached(&self, coin_ids: &[String], currency: &str) -> bool {
        let currency = currency.to_ascii_lowercase();
        coin_ids
            .iter()
            .all(|id| self.cached(id, &currency).is_some())
    }
}

/// A token bucket per chat for the price lookups that miss the cache: `burst` at once, then one per
/// `every`. Chats whose bucket is full again are forgotten, so the map holds only recent askers.
#[derive(Debug)]
pub struct ChatLimiter {
    burst: f64,
    every: Duration,
    chats: Mutex<HashMap<i64, (f64, Instant)>>,
}

impl ChatLimiter {
    /// The default: 10 lookups at once, then one every 6 s (10 a minute) per chat. Lookups served by
    /// the cache (prices younger than `price_cache_ttl`, unknown coins) do not count.
    pub fn new() -> Self {
        Self::with(10, Duration::from_secs(6))
    }

    pub fn with(burst: u32, every: Duration) -> Self {
        Self {
            burst: f64::from(burst),
            every,
            chats: Mutex::default(),
        }
    }

    /// Takes a token for `chat`; `Err(wait)` when it has none, with the time until the next.
    pub fn take(&self, chat: i64) -> Result<(), Duration> {
        let now = Instant::now();
        let mut chats = self.chats.lock().unwrap_or_else(|e| e.into_inner());
        if chats.len() > 1024 {
            let (burst, every) = (self.burst, self.every);
            chats.retain(|_, entry| refill(entry, now, burst, every) < burst);
        }
        let entry = chats.entry(chat).or_insert((self.burst, now));
        let tokens = refill(entry, now, self.burst, self.every);
        if tokens >= 1.0 {
            entry.0 = tokens - 1.0;
            Ok(())
        } else {
            Err(self.every.mul_f64(1.0 - tokens))
        }
    }
}

impl Default for ChatLimiter {
    fn default() -> Self {
        Self::new()
    }
}

/// Refills `entry` (tokens, as of) to `now`; the tokens now.
fn refill(entry: &mut (f64, Instant), now: Instant, burst: f64, every: Duration) -> f64 {
    let earned = now.saturating_duration_since(entry.1).as_secs_f64() / every.as_secs_f64();
    entry.0 = (entry.0 + earned).min(burst);
    entry.1 = now;
    entry.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_and_ids_resolve_and_garbage_does_not() {
        let map = CoinMap::with_extra(&BTreeMap::from([("pepe".to_owned(), "pepe".to_owned())]));
        assert_eq!(map.resolve("BTC").as_deref(), Some("bitcoin"));
        assert_eq!(map.resolve("bitcoin").as_deref(), Some("bitcoin"));
        assert_eq!(map.resolve("pepe").as_deref(), Some("pepe"));
        assert_eq!(map.resolve("not a coin"), None);
        assert_eq!(map.resolve(""), None);
    }

    #[test]
    fn a_chat_gets_its_burst_then_waits_and_other_chats_are_not_held() {
        let limiter = ChatLimiter::with(2, Duration::from_secs(60));
        assert!(limiter.take(1).is_ok());
        assert!(limiter.take(1).is_ok());
        let wait = limiter.take(1).unwrap_err();
        assert!(
            wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert!(limiter.take(2).is_ok(), "another chat has its own bucket");
    }

    #[test]
    fn the_limiter_forgets_chats_whose_bucket_is_full_again() {
        // Refilled as soon as taken: every entry is "full again" by the next call.
        let limiter = ChatLimiter::with(1, Duration::from_nanos(1));
        for chat in 0..5000 {
            let _ = limiter.take(chat);
        }
        assert!(limiter.chats.lock().unwrap().len() <= 1025);
    }

    #[test]
    fn currencies_are_known_case_insensitively() {
        assert!(is_currency("USD") && is_currency("eur") && !is_currency("bitcoin"));
    }
}
