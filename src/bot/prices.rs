//! Crypto prices: the [`PriceSource`] trait and its CoinGecko implementation, with a symbol → coin id
//! map, a short cache and a deadline on every request.
//!
//! Prices are [`Decimal`]s read from the JSON number's own text, so a reply shows the provider's digits
//! and comparisons with a user's threshold are exact: no float surprises. A provider that is down, rate
//! limited or does not know a coin is a [`PriceError`] the bot turns into a friendly reply.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;

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

/// CoinGecko's `/api/v3/simple/price`, with a cache of `ttl`.
pub struct CoinGecko {
    http: reqwest::Client,
    base: url::Url,
    api_key: Option<String>,
    ttl: Duration,
    cache: Mutex<HashMap<(String, String), (Instant, Decimal)>>,
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
        })
    }

    fn cached(&self, coin: &str, currency: &str) -> Option<Decimal> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(&(coin.to_owned(), currency.to_owned()))
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, price)| *price)
    }

    async fn fetch(&self, coin_ids: &[String], currency: &str) -> Result<PriceTable, PriceError> {
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
                Some(price) => {
                    table.insert(id.clone(), price);
                }
                None => missing.push(id.clone()),
            }
        }
        if !missing.is_empty() {
            let fetched = self.fetch(&missing, &currency).await?;
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            for (id, price) in fetched {
                cache.insert((id.clone(), currency.clone()), (now, price));
                table.insert(id, price);
            }
        }
        Ok(table)
    }
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
    fn currencies_are_known_case_insensitively() {
        assert!(is_currency("USD") && is_currency("eur") && !is_currency("bitcoin"));
    }
}
