//! What a message asks for: teloxide's `BotCommands` derive splits `/command@bot args`, and the
//! argument parsers here turn the arguments into a typed [`Request`] — or into the usage line of the
//! command. No I/O happens here, so every form of every command is tested without a network.

use rust_decimal::Decimal;
use teloxide::types::{BotCommand, ChatId, Update, UpdateKind};
use teloxide::utils::command::BotCommands;

use super::prices::{CoinMap, is_currency};

/// The commands the bot answers (the `/help` text and `setMyCommands` come from here).
#[derive(BotCommands, Clone, Debug, PartialEq, Eq)]
#[command(rename_rule = "lowercase")]
pub enum Command {
    #[command(description = "start talking to the bot")]
    Start,
    #[command(description = "list the commands")]
    Help,
    #[command(description = "check that the bot answers (replies pong)")]
    Ping,
    #[command(description = "price of one or more coins: /price btc eth [usd]")]
    Price(String),
    #[command(description = "price alert: /alert btc above 70000 [usd] [once] [for 7d]")]
    Alert(String),
    #[command(description = "list your price alerts")]
    Alerts,
    #[command(description = "delete a price alert: /delalert 3")]
    Delalert(String),
    #[command(description = "instance, host, PID, uptime, updates, conflicts (admins)")]
    Status,
    #[command(description = "restart the bot gracefully (admins)")]
    Restart,
}

pub const PRICE_USAGE: &str =
    "Usage: /price <coin> [more coins] [currency], e.g. /price btc eth usd";
pub const ALERT_USAGE: &str = "Usage: /alert <coin> above|below <price> [currency] [once|repeat] [for <n>m|h|d], e.g. /alert btc above 70000 usd once for 7d";
pub const DELALERT_USAGE: &str = "Usage: /delalert <id> (see /alerts for the ids)";
/// At most this many coins in one /price.
pub const MAX_PRICE_COINS: usize = 10;

/// Above or below a threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Above,
    Below,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Above => "above",
            Self::Below => "below",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "above" => Some(Self::Above),
            "below" => Some(Self::Below),
            _ => None,
        }
    }
}

/// `/price`: coins (symbol as typed, coin id) and the currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriceRequest {
    pub coins: Vec<(String, String)>,
    pub currency: String,
}

/// `/alert`: a new price alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertRequest {
    pub symbol: String,
    pub coin_id: String,
    pub direction: Direction,
    pub threshold: Decimal,
    pub currency: String,
    /// `once`: deleted when it fires; else (`repeat`, the default) re-armed on the way back.
    pub once: bool,
    /// `for 7d`: deleted (the chat told) this long after it was set.
    pub expires_in: Option<std::time::Duration>,
}

/// The longest `for <n>m|h|d` an alert may be given: a year.
pub const MAX_ALERT_LIFETIME: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);

/// What one message asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Start,
    Help,
    Ping,
    Price(PriceRequest),
    Alert(AlertRequest),
    Alerts,
    DeleteAlert(i64),
    Status,
    Restart,
    /// A known command with malformed arguments: reply with this usage line.
    Usage(&'static str),
    /// An unknown command addressed to us.
    Unknown,
}

/// The command list for `setMyCommands`.
pub fn bot_commands() -> Vec<BotCommand> {
    Command::bot_commands()
}

pub fn help_text() -> String {
    let mut text = String::from("cryptobot commands:\n");
    for c in Command::bot_commands() {
        text.push_str(&format!("{} - {}\n", c.command, c.description));
    }
    text
}

/// The chat, the sender and the request of an update; `None` for anything that is not a command to us.
pub fn parse_update(
    update: &Update,
    username: &str,
    coins: &CoinMap,
    default_currency: &str,
) -> Option<(ChatId, i64, Request)> {
    let UpdateKind::Message(message) = &update.kind else {
        return None;
    };
    let text = message.text()?;
    if !text.starts_with('/') {
        return None;
    }
    // Sent as a chat (an anonymous group administrator writes as the group itself, a user may write
    // as their channel): that chat is the sender.
    let sender = match (&message.sender_chat, &message.from) {
        (Some(as_chat), _) => as_chat.id.0,
        (None, Some(user)) => user.id.0 as i64,
        (None, None) => message.chat.id.0,
    };
    let request = match Command::parse(text, username) {
        Ok(command) => request_of(command, coins, default_currency),
        Err(_) => {
            // Commands addressed to another bot in a group are not ours to answer.
            let first = text.split_whitespace().next().unwrap_or(text);
            if let Some((_, addressee)) = first.split_once('@')
                && !addressee.eq_ignore_ascii_case(username)
            {
                return None;
            }
            Request::Unknown
        }
    };
    Some((message.chat.id, sender, request))
}

fn request_of(command: Command, coins: &CoinMap, default_currency: &str) -> Request {
    match command {
        Command::Start => Request::Start,
        Command::Help => Request::Help,
        Command::Ping => Request::Ping,
        Command::Status => Request::Status,
        Command::Restart => Request::Restart,
        Command::Alerts => Request::Alerts,
        Command::Price(args) => parse_price(&args, coins, default_currency)
            .map_or(Request::Usage(PRICE_USAGE), Request::Price),
        Command::Alert(args) => parse_alert(&args, coins, default_currency)
            .map_or(Request::Usage(ALERT_USAGE), Request::Alert),
        Command::Delalert(args) => match args.split_whitespace().take(2).collect::<Vec<_>>()[..] {
            [id] => id
                .parse()
                .ok()
                .filter(|id| *id > 0)
                .map_or(Request::Usage(DELALERT_USAGE), Request::DeleteAlert),
            _ => Request::Usage(DELALERT_USAGE),
        },
    }
}

/// `/price btc eth [usd]`: the last word is the currency when it is one (and not a coin symbol) and not
/// the only word.
pub fn parse_price(args: &str, coins: &CoinMap, default_currency: &str) -> Option<PriceRequest> {
    // More words than the most coins plus a currency is malformed: stop reading there (bounded work
    // for a message with thousands of words).
    let mut words: Vec<&str> = args.split_whitespace().take(MAX_PRICE_COINS + 2).collect();
    if words.len() > MAX_PRICE_COINS + 1 {
        return None;
    }
    let currency = match words.last() {
        // A trailing currency is one that is not also a coin: "/price btc eth" asks for two coins.
        Some(last) if words.len() >= 2 && is_currency(last) && !coins.is_symbol(last) => {
            let c = last.to_ascii_lowercase();
            words.pop();
            c
        }
        _ => default_currency.to_owned(),
    };
    if words.is_empty() || words.len() > MAX_PRICE_COINS {
        return None;
    }
    let mut resolved = Vec::new();
    for word in words {
        let id = coins.resolve(word)?;
        if !resolved.iter().any(|(_, known)| *known == id) {
            resolved.push((word.to_ascii_uppercase(), id));
        }
    }
    Some(PriceRequest {
        coins: resolved,
        currency,
    })
}

/// A positive amount, exactly as typed: digits with at most one '.', no exponent, no sign, no commas.
pub fn parse_amount(text: &str) -> Option<Decimal> {
    let plain = !text.is_empty()
        && text.len() <= 30
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && text.bytes().filter(|b| *b == b'.').count() <= 1
        && text.bytes().any(|b| b.is_ascii_digit());
    if !plain {
        return None;
    }
    // from_str_exact refuses what a Decimal cannot hold exactly (from_str would round
    // 9.9999999999999999999999999999 to 10: found by fuzzing, fuzz/regressions/command_parse).
    let amount = Decimal::from_str_exact(text).ok()?;
    (amount > Decimal::ZERO).then(|| amount.normalize())
}

/// `/alert btc above 70000 [usd] [once|repeat] [for 7d]`: the options in any order, each at most once.
pub fn parse_alert(args: &str, coins: &CoinMap, default_currency: &str) -> Option<AlertRequest> {
    // At most 7 words make an alert (3 + currency + once + for 7d); an eighth is enough to refuse it.
    let words: Vec<&str> = args.split_whitespace().take(8).collect();
    let [coin, direction, amount, ref rest @ ..] = words[..] else {
        return None;
    };
    let mut rest = rest;
    let mut currency = default_currency.to_owned();
    if let [first, tail @ ..] = rest
        && is_currency(first)
    {
        currency = first.to_ascii_lowercase();
        rest = tail;
    }
    let (mut once, mut expires_in) = (None, None);
    while let [word, tail @ ..] = rest {
        match word.to_ascii_lowercase().as_str() {
            "once" | "repeat" if once.is_none() => once = Some(word.eq_ignore_ascii_case("once")),
            "for" if expires_in.is_none() => {
                let [span, tail @ ..] = tail else { return None };
                expires_in = Some(parse_lifetime(span)?);
                rest = tail;
                continue;
            }
            _ => return None,
        }
        rest = tail;
    }
    Some(AlertRequest {
        symbol: coin.to_ascii_uppercase(),
        coin_id: coins.resolve(coin)?,
        direction: Direction::parse(&direction.to_ascii_lowercase())?,
        threshold: parse_amount(amount)?,
        currency,
        once: once.unwrap_or(false),
        expires_in,
    })
}

/// `30m`, `12h`, `7d`: a whole number of minutes, hours or days, from a minute to a year.
pub fn parse_lifetime(text: &str) -> Option<std::time::Duration> {
    let unit = match text.chars().last()?.to_ascii_lowercase() {
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return None,
    };
    let digits = &text[..text.len() - 1];
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds = digits.parse::<u64>().ok()?.checked_mul(unit)?;
    let lifetime = std::time::Duration::from_secs(seconds);
    (seconds >= 60 && lifetime <= MAX_ALERT_LIFETIME).then_some(lifetime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(text: &str) -> Update {
        // teloxide's Update only deserialises from text (serde_json::from_value loses the kind).
        let json = serde_json::json!({
            "update_id": 10,
            "message": {
                "message_id": 1, "date": 1700000000,
                "chat": {"id": 99, "type": "private", "first_name": "A"},
                "from": {"id": 99, "is_bot": false, "first_name": "A"},
                "text": text
            }
        });
        serde_json::from_str(&json.to_string()).unwrap()
    }

    fn request(text: &str) -> Option<Request> {
        parse_update(&update(text), "crypto_test_bot", &CoinMap::default(), "usd")
            .map(|(_, _, r)| r)
    }

    #[test]
    fn simple_commands_also_when_addressed() {
        assert_eq!(request("/ping"), Some(Request::Ping));
        assert_eq!(request("/ping@crypto_test_bot"), Some(Request::Ping));
        assert_eq!(request("/ping@other_bot"), None);
        assert_eq!(request("hello"), None);
        assert_eq!(request("/nope"), Some(Request::Unknown));
        assert_eq!(request("/status"), Some(Request::Status));
        assert_eq!(request("/alerts"), Some(Request::Alerts));
    }

    #[test]
    fn price_takes_several_coins_and_an_optional_currency() {
        let Some(Request::Price(p)) = request("/price btc ETH eur") else {
            panic!()
        };
        assert_eq!(
            p.coins,
            vec![
                ("BTC".into(), "bitcoin".into()),
                ("ETH".into(), "ethereum".into())
            ]
        );
        assert_eq!(p.currency, "eur");
        let Some(Request::Price(p)) = request("/price bitcoin") else {
            panic!()
        };
        assert_eq!((p.coins.len(), p.currency.as_str()), (1, "usd"));
        // A lone currency-looking word is a coin (eth is both).
        let Some(Request::Price(p)) = request("/price eth") else {
            panic!()
        };
        assert_eq!(p.coins[0].1, "ethereum");
    }

    #[test]
    fn malformed_price_gets_the_usage_line() {
        let too_many = format!("/price {}", "sol ".repeat(11));
        let huge = format!("/price {}", "x ".repeat(10_000));
        for text in [
            "/price",
            "/price usd eur",
            "/price b!tc",
            too_many.as_str(),
            huge.as_str(),
        ] {
            assert_eq!(request(text), Some(Request::Usage(PRICE_USAGE)), "{text}");
        }
    }

    /// Found by fuzzing: amounts a Decimal cannot hold exactly were rounded (an alert at 10 for
    /// 9.9999999999999999999999999999); they are refused with the usage line now.
    #[test]
    fn amounts_that_cannot_be_kept_exactly_are_refused() {
        assert_eq!(parse_amount("9.9999999999999999999999999999"), None);
        assert_eq!(parse_amount(".00000000000000000000000000009"), None);
        assert_eq!(
            parse_amount("70000.50").map(|d| d.to_string()).as_deref(),
            Some("70000.5")
        );
        assert_eq!(
            request("/alert btc above 9.9999999999999999999999999999"),
            Some(Request::Usage(ALERT_USAGE))
        );
    }

    #[test]
    fn alert_parses_exact_amounts() {
        let Some(Request::Alert(a)) = request("/alert btc above 70000.50") else {
            panic!()
        };
        assert_eq!(
            (a.coin_id.as_str(), a.direction, a.currency.as_str()),
            ("bitcoin", Direction::Above, "usd")
        );
        assert_eq!(a.threshold.to_string(), "70000.5");
        let Some(Request::Alert(a)) = request("/alert ETH below 0.1 eur") else {
            panic!()
        };
        assert_eq!(
            (a.direction, a.threshold.to_string(), a.currency.as_str()),
            (Direction::Below, "0.1".into(), "eur")
        );
    }

    #[test]
    fn malformed_alerts_get_the_usage_line() {
        for text in [
            "/alert",
            "/alert btc",
            "/alert btc above",
            "/alert btc sideways 100",
            "/alert btc above -5",
            "/alert btc above 0",
            "/alert btc above 1e5",
            "/alert btc above 1,000",
            "/alert btc above 1.2.3",
            "/alert btc above NaN",
            "/alert btc above 100 notacurrency",
            "/alert btc above 100 usd extra",
            "/alert btc above 100 once once",
            "/alert btc above 100 once repeat",
            "/alert btc above 100 for",
            "/alert btc above 100 for 7",
            "/alert btc above 100 for 7w",
            "/alert btc above 100 for 0d",
            "/alert btc above 100 for 30s",
            "/alert btc above 100 for 366d",
            "/alert btc above 100 for -1d",
            "/alert btc above 100 for 1d for 2d",
            "/alert btc above 100 once usd",
            "/alert btc above 100 usd once for 7d extra",
        ] {
            assert_eq!(request(text), Some(Request::Usage(ALERT_USAGE)), "{text}");
        }
    }

    #[test]
    fn alert_options_come_in_any_order_after_the_currency() {
        let options = |text: &str| match request(text) {
            Some(Request::Alert(a)) => (a.currency, a.once, a.expires_in.map(|d| d.as_secs())),
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(options("/alert btc above 100"), ("usd".into(), false, None));
        assert_eq!(
            options("/alert btc above 100 once"),
            ("usd".into(), true, None)
        );
        assert_eq!(
            options("/alert btc above 100 EUR repeat for 30m"),
            ("eur".into(), false, Some(1_800))
        );
        assert_eq!(
            options("/alert btc above 100 for 7d ONCE"),
            ("usd".into(), true, Some(7 * 86_400))
        );
        assert_eq!(
            options("/alert btc above 100 usd once for 365d"),
            ("usd".into(), true, Some(365 * 86_400))
        );
        assert_eq!(
            options("/alert btc above 100 for 1m"),
            ("usd".into(), false, Some(60))
        );
    }

    #[test]
    fn delalert_needs_one_positive_id() {
        assert_eq!(request("/delalert 3"), Some(Request::DeleteAlert(3)));
        for text in [
            "/delalert",
            "/delalert x",
            "/delalert 0",
            "/delalert 1 2",
            "/delalert -1",
        ] {
            assert_eq!(
                request(text),
                Some(Request::Usage(DELALERT_USAGE)),
                "{text}"
            );
        }
    }

    #[test]
    fn help_lists_every_command() {
        let help = help_text();
        for c in [
            "/price",
            "/alert",
            "/alerts",
            "/delalert",
            "/ping",
            "/status",
            "/help",
            "/restart",
        ] {
            assert!(help.contains(c), "{c} missing in {help}");
        }
    }
}
