//! The checks behind cryptobot's fuzz targets, one function per target.
//!
//! Each `fuzz_targets/<name>.rs` is a one-line `fuzz_target!` that calls the function of the same name
//! here. Keeping the checks in a library lets `cargo test` (tests/regressions.rs) replay every seed in
//! `corpus/<name>/` and every saved crash in `regressions/<name>/` on stable Rust, without cargo-fuzz or
//! libFuzzer: a crash found once stays a test.
//!
//! Every function takes arbitrary bytes, must never panic on them, and panics (a "crash" for libFuzzer)
//! when an invariant that cryptobot documents does not hold.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use cryptobot::bot::commands::{
    self, ALERT_USAGE, DELALERT_USAGE, MAX_PRICE_COINS, PRICE_USAGE, Request,
};
use cryptobot::bot::prices::{CoinMap, is_currency};
use cryptobot::config::{Config, Env, Mode, Settings, WebhookSecret};
use cryptobot::exit::Code;
use cryptobot::telegram::client::UNDECODABLE;
use cryptobot::webhook::{self, MAX_BODY, Rejection};
use rust_decimal::Decimal;
use teloxide::types::{MediaKind, MessageKind, Update, UpdateKind};

/// The bot's username in the messages the targets build (`/cmd@crypto_fuzz_bot` is addressed to us).
pub const BOT_USERNAME: &str = "crypto_fuzz_bot";
/// The default currency, as `default_currency` would set it.
pub const DEFAULT_CURRENCY: &str = "usd";

/// The coin map the bot would build from `coins = { pepe = "pepe" }` in its config.
fn coins() -> &'static CoinMap {
    static COINS: OnceLock<CoinMap> = OnceLock::new();
    COINS.get_or_init(|| {
        CoinMap::with_extra(&BTreeMap::from([("pepe".to_owned(), "pepe".to_owned())]))
    })
}

// ---------------------------------------------------------------------------------------------------
// config_toml

struct ConfigHarness {
    path: PathBuf,
    env: Env,
    /// A `Config` as `Config::load` makes it (token from `CRYPTOBOT_TOKEN`, built-in settings): each
    /// input's settings replace its own, so `render` runs as `cryptobot check-config` runs it.
    base: Config,
}

/// One file per process, rewritten for every input: `Settings::load` only reads a config from a path.
/// It lives in /dev/shm (memory) when there is one, else in the temporary directory.
fn config_harness() -> &'static ConfigHarness {
    static HARNESS: OnceLock<ConfigHarness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        let dir = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!("cryptobot-fuzz-{}.toml", std::process::id()));
        // Only the directories that systemd would pass: no CRYPTOBOT_* variable, so every value comes
        // from the file (the environment overrides are plain FromStr, tested by the unit tests); and no
        // INVOCATION_ID, HOME or XDG_*, so nothing outside the file is read.
        let env = Env::from_pairs([
            ("RUNTIME_DIRECTORY", "/run/cryptobot-fuzz"),
            ("STATE_DIRECTORY", "/var/lib/cryptobot-fuzz"),
        ]);
        std::fs::write(&path, "").expect("cannot write the fuzz config file");
        let with_token = Env::from_pairs([
            ("RUNTIME_DIRECTORY", "/run/cryptobot-fuzz"),
            ("STATE_DIRECTORY", "/var/lib/cryptobot-fuzz"),
            ("CRYPTOBOT_TOKEN", FUZZ_TOKEN),
        ]);
        let base = Config::load(Some(&path), &with_token).expect("the built-in config loads");
        ConfigHarness { path, env, base }
    })
}

/// Removes the per-process config file (the fuzz binary calls it nowhere: the file is tiny and
/// /dev/shm is cleared at boot; tests call it to leave nothing behind).
pub fn config_cleanup() {
    let _ = std::fs::remove_file(&config_harness().path);
}

/// A token of the right shape, to render a `Config` the way `cryptobot check-config` does.
const FUZZ_TOKEN: &str = "123456789:AAFuzzFuzzFuzzFuzzFuzzFuzzFuzzFuzz";

/// The bytes as the config file, through `Settings::load` — the function `cryptobot run`,
/// `check-config`, `doctor` and the SIGHUP reload use — then `Config::render` (`check-config`).
pub fn config_toml(data: &[u8]) {
    let h = config_harness();
    std::fs::write(&h.path, data).expect("cannot write the fuzz config file");
    let settings = match Settings::load(Some(&h.path), &h.env) {
        Ok(settings) => settings,
        Err(failure) => {
            // "every bad value becomes one line naming the key and where it came from, and exit code 78"
            assert_eq!(failure.code, Code::Config, "{failure}");
            assert!(
                !failure.message.contains('\n'),
                "a config error must be one line: {:?}",
                failure.message
            );
            return;
        }
    };
    check_settings(&settings);
    let mut config = h.base.clone();
    config.settings = settings;
    let rendered = config.render();
    let secret = FUZZ_TOKEN.split_once(':').map_or(FUZZ_TOKEN, |(_, s)| s);
    assert!(
        !rendered.contains(secret),
        "check-config must not print the token"
    );
}

/// The ranges `Settings::load` promises (README.md, Configure; src/config.rs).
fn check_settings(s: &Settings) {
    use std::time::Duration;
    assert!(s.runtime_dir.is_absolute(), "{:?}", s.runtime_dir);
    assert!(s.state_dir.is_absolute(), "{:?}", s.state_dir);
    assert!(
        matches!(s.api_url.scheme(), "http" | "https"),
        "{}",
        s.api_url
    );
    assert!(
        matches!(s.bot.price_api_url.scheme(), "http" | "https"),
        "{}",
        s.bot.price_api_url
    );
    assert!(
        (Duration::from_secs(1)..=Duration::from_secs(50)).contains(&s.poll_timeout),
        "poll_timeout {:?}",
        s.poll_timeout
    );
    let c = &s.conflict;
    assert!((1..=1_000_000).contains(&c.max_conflicts));
    assert!(
        Duration::from_millis(10) <= c.backoff_initial
            && c.backoff_initial <= c.backoff_max
            && c.backoff_max <= Duration::from_secs(86_400),
        "conflict backoff {:?}..{:?}",
        c.backoff_initial,
        c.backoff_max
    );
    let w = &s.webhook;
    if w.mode == Mode::Webhook {
        assert!(w.public_url.is_some(), "webhook mode without public_url");
    }
    if let Some(url) = &w.public_url {
        assert!(matches!(url.scheme(), "http" | "https"), "{url}");
    }
    let b = &s.bot;
    assert!(b.price_cache_ttl <= Duration::from_secs(3600));
    assert!(
        (Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&b.alert_interval),
        "alert_interval {:?}",
        b.alert_interval
    );
    assert!((1..=1000).contains(&b.max_alerts_per_chat));
    assert!(
        is_currency(&b.default_currency) && b.default_currency == b.default_currency.to_lowercase(),
        "default_currency {:?}",
        b.default_currency
    );
    // The coin map is built from the file's `coins` at start (app.rs): it must not panic either.
    let map = CoinMap::with_extra(&b.coins);
    for symbol in b.coins.keys() {
        assert!(
            map.is_symbol(symbol),
            "coin {symbol:?} from the config is unknown"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// command_parse

/// A private-chat text message from user 99, as Telegram sends it; the text is replaced per input.
fn message_template() -> &'static Update {
    static TEMPLATE: OnceLock<Update> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        serde_json::from_str(
            r#"{"update_id":10,"message":{"message_id":1,"date":1700000000,
                "chat":{"id":99,"type":"private","first_name":"A"},
                "from":{"id":99,"is_bot":false,"first_name":"A"},"text":"/ping"}}"#,
        )
        .expect("the template update decodes")
    })
}

fn message_with_text(text: &str) -> Update {
    let mut update = message_template().clone();
    let UpdateKind::Message(message) = &mut update.kind else {
        unreachable!("the template is a message")
    };
    let MessageKind::Common(common) = &mut message.kind else {
        unreachable!("the template is a common message")
    };
    let MediaKind::Text(media) = &mut common.media_kind else {
        unreachable!("the template is a text message")
    };
    media.text = text.to_owned();
    update
}

/// The text of a message (Telegram's texts are UTF-8; other bytes are skipped) through every parser of
/// src/bot/commands.rs: `parse_amount`, `parse_price` and `parse_alert` on the text as the arguments,
/// and `parse_update` on a message with that text.
pub fn command_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_amount(text);
    let coins = coins();
    if let Some(price) = commands::parse_price(text, coins, DEFAULT_CURRENCY) {
        check_request(&Request::Price(price));
    }
    if let Some(alert) = commands::parse_alert(text, coins, DEFAULT_CURRENCY) {
        // The alert fires at the price the user typed, not at a rounded one.
        let typed = text
            .split_whitespace()
            .nth(2)
            .expect("an alert has an amount");
        assert_eq!(
            alert.threshold.to_string(),
            canonical_amount(typed),
            "alert threshold {typed:?} was not kept exactly as typed"
        );
        check_request(&Request::Alert(alert));
    }
    let update = message_with_text(text);
    match commands::parse_update(&update, BOT_USERNAME, coins, DEFAULT_CURRENCY) {
        Some((chat, sender, request)) => {
            assert!(
                text.starts_with('/'),
                "a request from a non-command {text:?}"
            );
            assert_eq!((chat.0, sender), (99, 99));
            if let Request::Alert(alert) = &request {
                // "/alert btc above <amount> [currency]": kept exactly as typed, as above.
                let typed = text
                    .split_whitespace()
                    .nth(3)
                    .expect("an alert has an amount");
                assert_eq!(
                    alert.threshold.to_string(),
                    canonical_amount(typed),
                    "alert threshold {typed:?} was not kept exactly as typed"
                );
            }
            check_request(&request);
        }
        None => assert!(
            !text.starts_with('/') || addressed_elsewhere(text),
            "a command to us was ignored: {text:?}"
        ),
    }
}

/// `/cmd@other_bot ...`: a command in a group meant for another bot.
fn addressed_elsewhere(text: &str) -> bool {
    let first = text.split_whitespace().next().unwrap_or(text);
    first
        .split_once('@')
        .is_some_and(|(_, to)| !to.eq_ignore_ascii_case(BOT_USERNAME))
}

/// `parse_amount`: "A positive amount, exactly as typed" (README: "Amounts are exact decimals:
/// `70000.50` stays `70000.5`"). What it returns is positive, renders back to what was typed (less
/// leading and trailing zeros) and parses again to itself.
fn check_amount(text: &str) {
    let Some(amount) = commands::parse_amount(text) else {
        return;
    };
    assert!(amount > Decimal::ZERO, "{text:?} -> {amount}");
    let rendered = amount.to_string();
    assert_eq!(
        rendered,
        canonical_amount(text),
        "{text:?} was not kept exactly as typed"
    );
    assert_eq!(
        commands::parse_amount(&rendered),
        Some(amount),
        "{text:?} -> {rendered:?} does not parse back"
    );
}

/// Digits with at most one '.', less leading zeros of the whole part and trailing zeros of the fraction.
fn canonical_amount(text: &str) -> String {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        whole.to_owned()
    } else {
        format!("{whole}.{fraction}")
    }
}

/// What every request the parsers return must satisfy before `Service::answer` acts on it.
fn check_request(request: &Request) {
    match request {
        Request::Price(p) => {
            assert!(
                (1..=MAX_PRICE_COINS).contains(&p.coins.len()),
                "{} coins",
                p.coins.len()
            );
            assert!(is_currency(&p.currency), "currency {:?}", p.currency);
            assert_eq!(p.currency, p.currency.to_ascii_lowercase());
            for (i, (symbol, id)) in p.coins.iter().enumerate() {
                assert_eq!(*symbol, symbol.to_ascii_uppercase());
                check_coin_id(id);
                assert!(
                    p.coins[..i].iter().all(|(_, other)| other != id),
                    "coin {id:?} twice"
                );
            }
        }
        Request::Alert(a) => {
            assert!(a.threshold > Decimal::ZERO, "threshold {}", a.threshold);
            assert_eq!(
                commands::parse_amount(&a.threshold.to_string()),
                Some(a.threshold),
                "threshold {} does not render back",
                a.threshold
            );
            assert!(is_currency(&a.currency), "currency {:?}", a.currency);
            assert_eq!(a.currency, a.currency.to_ascii_lowercase());
            assert_eq!(a.symbol, a.symbol.to_ascii_uppercase());
            check_coin_id(&a.coin_id);
            if let Some(lifetime) = a.expires_in {
                assert!(
                    lifetime >= std::time::Duration::from_secs(60)
                        && lifetime <= commands::MAX_ALERT_LIFETIME,
                    "alert lifetime {lifetime:?} out of range"
                );
            }
        }
        Request::DeleteAlert(id) => assert!(*id > 0, "alert id {id}"),
        Request::Usage(usage) => assert!(
            [PRICE_USAGE, ALERT_USAGE, DELALERT_USAGE].contains(usage),
            "{usage:?}"
        ),
        Request::Start
        | Request::Help
        | Request::Ping
        | Request::Alerts
        | Request::Status
        | Request::Restart
        | Request::Unknown => {}
    }
}

/// A CoinGecko id goes into the price URL's query: lowercase letters, digits and '-' only.
fn check_coin_id(id: &str) {
    assert!(
        !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "coin id {id:?}"
    );
}

// ---------------------------------------------------------------------------------------------------
// update_decode

/// The bytes as one update of a `getUpdates` answer (or a webhook body): teloxide decodes it, then
/// cryptobot's own `parse_update` turns it into a request, as `Service::handle` does.
pub fn update_decode(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(update) = serde_json::from_str::<Update>(text) else {
        return;
    };
    check_update(&update);
}

/// What `Service::handle` makes of a decoded update, from either source: a request only from a text
/// command, the reply aimed at the chat it came from, the request within its limits.
fn check_update(update: &Update) {
    // The poller and the dispatcher key everything on the id (offset = id + 1, "handled" rows).
    let _offset = i64::from(update.id.0) + 1;
    let Some((chat, sender, request)) =
        commands::parse_update(update, BOT_USERNAME, coins(), DEFAULT_CURRENCY)
    else {
        return;
    };
    let UpdateKind::Message(message) = &update.kind else {
        panic!(
            "a request from an update that is not a message: {:?}",
            update.kind
        )
    };
    let text = message
        .text()
        .expect("a request from a message without text");
    assert!(
        text.starts_with('/'),
        "a request from a non-command {text:?}"
    );
    assert_eq!(chat, message.chat.id, "the reply would go to another chat");
    // A message sent as a chat (an anonymous group administrator as the group, a user as their
    // channel) is from that chat; else from its user; else from the chat itself.
    let expected_sender = match (&message.sender_chat, &message.from) {
        (Some(as_chat), _) => as_chat.id.0,
        (None, Some(user)) => user.id.0 as i64,
        (None, None) => message.chat.id.0,
    };
    assert_eq!(sender, expected_sender);
    check_request(&request);
}

// ---------------------------------------------------------------------------------------------------
// webhook_request

/// A body padded with spaces to about [`MAX_BODY`], in one buffer of spaces kept for the process: a
/// fresh megabyte (allocated, filled, freed under ASan) for every padded input would cost more than
/// the decoding. Dropping it puts the spaces back.
struct Padded {
    buffer: std::sync::MutexGuard<'static, Vec<u8>>,
    body_len: usize,
    len: usize,
}

impl Padded {
    fn new(body: &[u8], len: usize) -> Self {
        static SPACES: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());
        // A panic while it was held (a crash `cargo test` caught) left it restored: see `drop`.
        let mut buffer = SPACES.lock().unwrap_or_else(|e| e.into_inner());
        if buffer.is_empty() {
            *buffer = vec![b' '; MAX_BODY + 1];
        }
        assert!(body.len() <= len && len <= buffer.len());
        buffer[..body.len()].copy_from_slice(body);
        Self {
            buffer,
            body_len: body.len(),
            len,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buffer[..self.len]
    }
}

impl Drop for Padded {
    fn drop(&mut self) {
        self.buffer[..self.body_len].fill(b' ');
    }
}

/// The expected secrets the input chooses from: Telegram's rule allows 1 to 256 characters of
/// `A-Z a-z 0-9 _ -`; `WebhookSecret::generate` makes 64.
fn webhook_secrets() -> &'static [WebhookSecret; 3] {
    static SECRETS: OnceLock<[WebhookSecret; 3]> = OnceLock::new();
    SECRETS.get_or_init(|| {
        const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
        [ALPHABET.to_owned(), "Z".to_owned(), ALPHABET.repeat(4)]
            .map(|s| WebhookSecret::parse(&s).expect("a valid webhook secret"))
    })
}

/// One webhook request, as `webhook::receive` hands it to `webhook::decode` (the path secret is
/// checked before that, on its own). The input is a line that says how to build the secret
/// header and the body's size, then the body:
///
/// ```text
/// <header mode><expected secret><size>[header bytes]\n<body>
/// ```
///
/// - header mode: `R` the right secret, `N` no header, `E` an empty header, `H` the header bytes as
///   given, `P` the right secret followed by the header bytes, `S` the right secret less its last
///   character, `C` the right secret with the case of its first letter swapped, `X` the right secret
///   with one byte replaced (position and byte from the header bytes); any other byte picks one of
///   these by its value.
/// - expected secret: `0` 64 characters (as generated), `1` one character, `2` 256 characters (the
///   longest Telegram allows); other bytes by value.
/// - size: `=` the body as it is, `.` padded with spaces to exactly [`MAX_BODY`] (still accepted
///   if it was), `+` padded to `MAX_BODY` + 1 (refused); other bytes mean `=`.
///
/// Empty fields take the first choice (an empty input is an empty body with the right secret).
///
/// Fails when: `decode` panics; a request without the right secret is anything but `WrongSecret`
/// (whatever the body, oversize included: 401 before 413, so the unauthenticated learn nothing);
/// an oversize body with the right secret is anything but `TooLarge`; a body that is not UTF-8 is
/// accepted; an accepted update's id is not the body's `update_id`; an accepted update, encoded
/// again, is not accepted again as the same update; an update recorded as undecodable carries a
/// reason that is not one line; padding a body with whitespace up to the limit changes the verdict;
/// or the accepted update fails `update_decode`'s checks (what `Service::handle` makes of it).
pub fn webhook_request(data: &[u8]) {
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let mode = head.first().copied().unwrap_or(b'R');
    let secrets = webhook_secrets();
    let secret = &secrets[match head.get(1).copied().unwrap_or(b'0') {
        b'0' => 0,
        b'1' => 1,
        b'2' => 2,
        other => usize::from(other) % secrets.len(),
    }];
    let size = head.get(2).copied().unwrap_or(b'=');
    let given = head.get(3..).unwrap_or_default();

    let expected = secret.expose().as_bytes();
    let header: Option<Vec<u8>> = match mode {
        b'R' => Some(expected.to_vec()),
        b'N' => None,
        b'E' => Some(Vec::new()),
        b'H' => Some(given.to_vec()),
        b'P' => Some([expected, given].concat()),
        b'S' => Some(expected[..expected.len() - 1].to_vec()),
        b'C' => {
            let mut h = expected.to_vec();
            if let Some(c) = h.iter_mut().find(|c| c.is_ascii_alphabetic()) {
                *c ^= 0x20;
            }
            Some(h)
        }
        b'X' => {
            let mut h = expected.to_vec();
            let at = given.first().map_or(0, |&b| usize::from(b)) % h.len();
            h[at] = given.get(1).copied().unwrap_or(0);
            Some(h)
        }
        other => {
            // Another byte: one of the modes above, so that mutated inputs still reach each.
            let modes = *b"RNEHPSCX";
            let mut d = data.to_vec();
            d[0] = modes[usize::from(other) % modes.len()];
            return webhook_request(&d);
        }
    };
    let right = header.as_deref() == Some(expected);

    let mut padding = None;
    let (body, original) = match size {
        b'.' | b'+' if body.len() <= MAX_BODY => {
            let len = if size == b'.' { MAX_BODY } else { MAX_BODY + 1 };
            let padded = padding.insert(Padded::new(body, len));
            (padded.bytes(), body)
        }
        _ => (body, body),
    };

    let verdict = webhook::decode(header.as_deref(), secret, body);
    if !right {
        assert_eq!(
            verdict.as_ref().err(),
            Some(&Rejection::WrongSecret),
            "a request without the right secret ({} header bytes, body {} bytes) was not refused as 401",
            header.as_ref().map_or(0, Vec::len),
            body.len()
        );
        return;
    }
    if body.len() > MAX_BODY {
        assert_eq!(
            verdict.as_ref().err(),
            Some(&Rejection::TooLarge),
            "a body of {} bytes was not refused as 413",
            body.len()
        );
        return;
    }
    if size == b'.' {
        // Whitespace after a JSON value changes nothing: the limit is on bytes, nothing else.
        let unpadded = webhook::decode(header.as_deref(), secret, original);
        assert_eq!(
            verdict, unpadded,
            "padding the body with spaces to MAX_BODY changed the verdict"
        );
    }
    let update = match verdict {
        Ok(update) => update,
        Err(rejection) => {
            assert_eq!(
                rejection,
                Rejection::Malformed,
                "with the right secret and a body within the limit"
            );
            return;
        }
    };
    let text = std::str::from_utf8(body).expect("a body that is not UTF-8 was accepted");
    // The id the dispatcher records is the one Telegram sent (when the body is plain JSON: a lone
    // surrogate, which `decode` accepts as undecodable, is no `Value`).
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(text) {
        assert_eq!(
            fields.get("update_id").and_then(serde_json::Value::as_u64),
            Some(u64::from(update.id.0)),
            "the accepted update's id is not the body's update_id"
        );
    }
    if serde_json::from_str::<Update>(text).is_err() {
        // Accepted although teloxide refuses it: recorded as undecodable (skipped by Service::handle,
        // which logs the reason on one line) under its id, rather than refused for ever.
        let reason = match &update.kind {
            UpdateKind::Error(value) => value.get(UNDECODABLE).and_then(serde_json::Value::as_str),
            _ => None,
        };
        let reason = reason.expect("an update teloxide refuses was accepted, not as undecodable");
        assert!(
            !reason.contains('\n'),
            "undecodable reason on several lines: {reason:?}"
        );
    }
    // An accepted update encoded again (as Telegram would deliver it once more) is accepted again as
    // the same update: nothing the bot keeps of it depends on how the JSON was spelled.
    let again = serde_json::to_vec(&update).expect("an accepted update encodes");
    match webhook::decode(Some(expected), secret, &again) {
        Ok(second) => {
            assert_eq!(second.id, update.id, "re-decoded with another id");
            if !matches!(update.kind, UpdateKind::Error(_)) {
                assert_eq!(second, update, "re-decoded as another update");
            }
        }
        Err(rejection) => panic!(
            "an accepted update, encoded again, is refused ({rejection:?}): {}",
            String::from_utf8_lossy(&again)
        ),
    }
    check_update(&update);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_amounts() {
        for (typed, canonical) in [
            ("70000.50", "70000.5"),
            ("007", "7"),
            (".5", "0.5"),
            ("5.", "5"),
            ("0.10", "0.1"),
        ] {
            assert_eq!(canonical_amount(typed), canonical);
        }
    }

    #[test]
    fn the_message_template_carries_the_text() {
        let update = message_with_text("/price btc");
        let UpdateKind::Message(m) = &update.kind else {
            panic!()
        };
        assert_eq!(m.text(), Some("/price btc"));
    }
}
