//! The crypto bot against a fake Bot API and a fake CoinGecko: prices, alerts that fire once per
//! crossing (also across a restart), the per-chat cap, admin commands, and the outbound queue within
//! Telegram's limits.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::fake_prices::FakePrices;
use support::{BotProcess, FakeBotApi, Host, NotifySocket, random_token};

const T: Duration = Duration::from_secs(30);
const CHAT: i64 = 500;

struct World {
    api: FakeBotApi,
    prices: FakePrices,
    id: i64,
    host: Host,
}

impl World {
    fn new() -> Self {
        let api = FakeBotApi::start();
        let token = random_token();
        let id = api.add_bot(&token, "crypto_bot");
        let host = Host::new(&token, &api.url());
        let prices = FakePrices::start();
        prices.set("bitcoin", "usd", "67187.12");
        prices.set("ethereum", "usd", "3500.5");
        prices.set("bitcoin", "eur", "61000");
        Self {
            api,
            prices,
            id,
            host,
        }
    }

    fn start(&self, extra: &[(&str, &str)]) -> BotProcess {
        let mut env = vec![
            ("CRYPTOBOT_PRICE_API_URL", self.prices.url.as_str()),
            ("CRYPTOBOT_ALERT_INTERVAL", "1"),
            ("CRYPTOBOT_PRICE_CACHE_TTL", "0"),
            ("CRYPTOBOT_ADMIN_CHAT_IDS", "1"),
        ];
        env.extend_from_slice(extra);
        let notify = NotifySocket::new();
        let bot = self.host.spawn_run(Some(&notify), &env);
        notify.wait_for("READY=1", T);
        bot
    }

    /// Sends `text` from `chat` and returns the bot's answer.
    fn ask(&self, chat: i64, text: &str) -> String {
        let before = self.api.sent(self.id).len();
        self.api.inject_message(self.id, chat, text);
        let id = self.id;
        let api = &self.api;
        api.wait_until(id, |_| api.sent(id).len() > before, T)
            .unwrap_or_else(|e| panic!("no answer to {text:?}: {e}"));
        self.api.sent(self.id)[before].text.clone()
    }

    /// Sends `text` in the group `group` from `sender` (a user id; or the group's own id with
    /// `as_group`: an anonymous administrator, whose message Telegram sends as the group) and
    /// returns the bot's answer.
    fn ask_in_group(&self, group: i64, sender: i64, as_group: bool, text: &str) -> String {
        static MESSAGE_ID: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1);
        let before = self.api.sent(self.id).len();
        let command = text.split_whitespace().next().unwrap_or(text);
        let mut message = serde_json::json!({
            "message_id": MESSAGE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            "date": 1_700_000_000,
            "chat": {"id": group, "type": "supergroup", "title": "Traders"},
            "from": {"id": sender, "is_bot": false, "first_name": "Member"},
            "text": text,
            "entities": [{"type": "bot_command", "offset": 0, "length": command.encode_utf16().count()}],
        });
        if as_group {
            // Telegram's own "GroupAnonymousBot" in `from`, the group in `sender_chat`.
            message["from"] = serde_json::json!({"id": 1_087_968_824_i64, "is_bot": true,
                "first_name": "Group", "username": "GroupAnonymousBot"});
            message["sender_chat"] =
                serde_json::json!({"id": group, "type": "supergroup", "title": "Traders"});
        }
        self.api
            .inject_raw_update(self.id, serde_json::json!({ "message": message }));
        let id = self.id;
        let api = &self.api;
        api.wait_until(id, |_| api.sent(id).len() > before, T)
            .unwrap_or_else(|e| panic!("no answer to {text:?} in {group}: {e}"));
        self.api.sent(self.id)[before].text.clone()
    }

    /// How many `getChatMember` calls the bot made.
    fn member_lookups(&self) -> u64 {
        let stats = self.api.stats(self.id);
        stats.calls.get("getChatMember").copied().unwrap_or(0)
    }

    /// Waits until `chat` has received `n` messages in all.
    fn wait_for_replies(&self, chat: i64, n: usize) {
        let id = self.id;
        let api = &self.api;
        api.wait_until(id, |_| self.messages_to(chat).len() >= n, T)
            .unwrap_or_else(|e| panic!("chat {chat} did not get {n} messages: {e}"));
    }

    fn messages_to(&self, chat: i64) -> Vec<String> {
        self.api
            .sent(self.id)
            .into_iter()
            .filter(|m| m.chat_id == chat)
            .map(|m| m.text)
            .collect()
    }

    /// Waits until the alert checker has fetched prices `n` more times.
    fn wait_for_checks(&self, n: u64) {
        let target = self.prices.requests() + n;
        let deadline = Instant::now() + T;
        while self.prices.requests() < target {
            assert!(Instant::now() < deadline, "the checker stopped checking");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many alert messages (🔔) `chat` received.
    fn bells(&self, chat: i64) -> usize {
        self.messages_to(chat)
            .iter()
            .filter(|m| m.starts_with("🔔"))
            .count()
    }

    fn wait_for_message(&self, chat: i64, needle: &str) -> String {
        self.api
            .wait_for_sent(self.id, |m| m.chat_id == chat && m.text.contains(needle), T)
            .unwrap_or_else(|e| panic!("no message with {needle:?} to {chat}: {e}"))
            .text
    }
}

fn stop(mut bot: BotProcess) -> Option<i32> {
    bot.signal(Signal::SIGTERM);
    bot.wait_exit(T).code()
}

#[test]
fn price_answers_exact_digits_and_friendly_errors() {
    let w = World::new();
    let bot = w.start(&[]);
    assert_eq!(
        w.ask(CHAT, "/price btc eth"),
        "BTC: 67187.12 USD\nETH: 3500.5 USD"
    );
    assert_eq!(w.ask(CHAT, "/price btc eur"), "BTC: 61000 EUR");
    assert!(
        w.ask(CHAT, "/price nosuchcoin")
            .contains("I don't know the coin")
    );
    assert!(w.ask(CHAT, "/price").starts_with("Usage: /price"));
    w.prices.fail_with(429);
    assert!(w.ask(CHAT, "/price btc").contains("rate limiting"));
    w.prices.fail_with(500);
    assert!(w.ask(CHAT, "/price btc").contains("unavailable"));
    w.prices.fail_with(0);
    assert_eq!(w.ask(CHAT, "/price BTC"), "BTC: 67187.12 USD");
    assert_eq!(stop(bot), Some(0));
}

/// One user must not be able to trip the provider's rate limit for everyone: an unknown coin is asked
/// for once (then remembered as unknown), and lookups that miss the cache are bounded per chat.
#[test]
fn an_unknown_coin_is_asked_for_once_and_one_chat_cannot_flood_the_provider() {
    let w = World::new();
    let bot = w.start(&[]);
    let before = w.prices.requests();
    for _ in 0..5 {
        w.api.inject_message(w.id, CHAT, "/price nosuchcoin");
    }
    w.wait_for_replies(CHAT, 5);
    assert!(
        w.messages_to(CHAT)
            .iter()
            .all(|m| m.contains("I don't know the coin"))
    );
    assert_eq!(
        w.prices.requests() - before,
        1,
        "five lookups of one unknown coin"
    );

    // Distinct coins (the cache cannot help), all at once: one chat gets its burst (10, of which
    // the unknown coin took one), then is told to wait.
    let before = w.prices.requests();
    for i in 0..15 {
        w.api
            .inject_message(w.id, CHAT, &format!("/price coin-{i}"));
    }
    w.wait_for_replies(CHAT, 20);
    let made = w.prices.requests() - before;
    let refused = w
        .messages_to(CHAT)
        .iter()
        .filter(|m| m.contains("try again in"))
        .count();
    assert!(made <= 10, "one chat made {made} requests in a burst");
    assert!(refused >= 5, "only {refused} of 15 refused");
    // Another chat is not held back by the first.
    assert_eq!(w.ask(CHAT + 1, "/price btc"), "BTC: 67187.12 USD");
    assert_eq!(stop(bot), Some(0));
}

/// While the provider is down, an alert on a coin nobody checked is not stored (it would pile up
/// alerts on coins that may not exist); one on a coin the bot knows is.
#[test]
fn alerts_on_unchecked_coins_are_refused_while_the_provider_is_down() {
    let w = World::new();
    let bot = w.start(&[]);
    w.prices.fail_with(500);
    let reply = w.ask(CHAT, "/alert nosuchcoin above 5");
    assert!(reply.contains("did not set the alert"), "{reply}");
    assert!(w.ask(CHAT, "/alert btc above 70000").starts_with("Alert #"));
    w.prices.fail_with(0);
    let list = w.ask(CHAT, "/alerts");
    assert!(
        !list.contains("nosuchcoin") && !list.contains("NOSUCHCOIN"),
        "{list}"
    );
    assert!(list.contains("BTC"), "{list}");
    assert_eq!(stop(bot), Some(0));
}

/// The alert checker asks for the coins of all alerts in requests of a bounded size (one URL with
/// every coin id grew by 1.35 KB per chat of 20 alerts).
#[test]
fn the_alert_checker_asks_for_many_coins_in_bounded_requests() {
    let w = World::new();
    for i in 0..120 {
        w.prices.set(&format!("coin-{i}"), "usd", "1");
    }
    let bot = w.start(&[]);
    // 60 chats with 2 alerts each, sent at once (a chat's replies are paced at about 1/s).
    for i in 0..120 {
        w.api
            .inject_message(w.id, CHAT + i / 2, &format!("/alert coin-{i} above 2"));
    }
    let id = w.id;
    w.api
        .wait_until(id, |_| w.api.sent(id).len() >= 120, T)
        .unwrap_or_else(|e| panic!("not every alert was answered: {e}"));
    let set = w
        .api
        .sent(id)
        .iter()
        .filter(|m| m.text.starts_with("Alert #"))
        .count();
    assert_eq!(set, 120);
    w.wait_for_checks(3);
    let widest = w.prices.max_ids_per_request();
    assert!(widest <= 50, "one request asked for {widest} coins");
    assert!(widest >= 20, "the checker asked for {widest} coins at most");
    assert_eq!(stop(bot), Some(0));
}

#[test]
fn alerts_are_listed_deleted_and_capped_per_chat() {
    let w = World::new();
    let bot = w.start(&[("CRYPTOBOT_MAX_ALERTS_PER_CHAT", "2")]);
    assert_eq!(
        w.ask(CHAT, "/alerts"),
        "You have no alerts. Set one with /alert btc above 70000."
    );
    assert_eq!(
        w.ask(CHAT, "/alert btc above 70000.50"),
        "Alert #1 set: BTC above 70000.5 USD."
    );
    assert_eq!(
        w.ask(CHAT, "/alert eth below 3000"),
        "Alert #2 set: ETH below 3000 USD."
    );
    assert!(
        w.ask(CHAT, "/alert eth below 2000")
            .contains("the most a chat can have")
    );
    assert!(
        w.ask(CHAT + 1, "/alert eth below 2000")
            .starts_with("Alert #3 set"),
        "the cap is per chat"
    );
    let list = w.ask(CHAT, "/alerts");
    assert!(
        list.contains("#1 BTC above 70000.5 USD") && list.contains("#2 ETH below 3000 USD"),
        "{list}"
    );
    assert_eq!(w.ask(CHAT, "/delalert 2"), "Alert #2 deleted.");
    assert!(
        w.ask(CHAT + 1, "/delalert 1")
            .contains("no alert #1 in this chat"),
        "another chat's alert"
    );
    assert!(
        w.ask(CHAT, "/alert btc sideways 5")
            .starts_with("Usage: /alert")
    );
    assert_eq!(stop(bot), Some(0));
}

/// Without a cooldown: once per crossing, re-armed past the 0.5 % band (69,650) on the way back.
#[test]
fn an_alert_fires_once_per_crossing_and_rearms() {
    let w = World::new();
    let bot = w.start(&[("CRYPTOBOT_ALERT_COOLDOWN", "0")]);
    assert!(
        w.ask(CHAT, "/alert btc above 70000")
            .starts_with("Alert #1 set")
    );
    w.prices.set("bitcoin", "usd", "70500");
    assert_eq!(
        w.wait_for_message(CHAT, "🔔"),
        "🔔 BTC is above 70000 USD: 70500 USD now (alert #1)"
    );
    // Still above for several checks: no second message.
    w.wait_for_checks(3);
    assert_eq!(
        w.messages_to(CHAT)
            .iter()
            .filter(|m| m.starts_with("🔔"))
            .count(),
        1
    );
    // Back below (re-arm), then above again: a second crossing, a second message.
    w.prices.set("bitcoin", "usd", "69000");
    w.wait_for_checks(2);
    w.prices.set("bitcoin", "usd", "70001.5");
    w.api
        .wait_for_sent(w.id, |m| m.text.contains("70001.5 USD now"), T)
        .unwrap();
    assert_eq!(
        w.messages_to(CHAT)
            .iter()
            .filter(|m| m.starts_with("🔔"))
            .count(),
        2
    );
    let list = w.ask(CHAT, "/alerts");
    assert!(
        list.contains("#1 BTC above 70000 USD — re-arms below 69650 USD, fired 2×"),
        "{list}"
    );
    assert_eq!(stop(bot), Some(0));
}

/// No spam: a price hovering at the threshold (inside the 0.5 % band) fires the alert once, however
/// often it crosses; moved back past the band, it re-arms and the next crossing fires. No cooldown
/// here, so the band alone is what holds the hovering back.
#[test]
fn a_price_hovering_at_the_threshold_fires_once() {
    let w = World::new();
    let bot = w.start(&[("CRYPTOBOT_ALERT_COOLDOWN", "0")]);
    assert!(
        w.ask(CHAT, "/alert btc above 70000")
            .starts_with("Alert #1 set")
    );
    w.prices.set("bitcoin", "usd", "70010");
    w.wait_for_message(CHAT, "🔔");
    for _ in 0..5 {
        w.prices.set("bitcoin", "usd", "69990");
        w.wait_for_checks(1);
        w.prices.set("bitcoin", "usd", "70010");
        w.wait_for_checks(1);
    }
    assert_eq!(w.bells(CHAT), 1, "{:?}", w.messages_to(CHAT));
    w.prices.set("bitcoin", "usd", "69000");
    w.wait_for_checks(2);
    w.prices.set("bitcoin", "usd", "70500");
    w.wait_for_message(CHAT, "70500 USD now");
    assert_eq!(w.bells(CHAT), 2);
    assert_eq!(stop(bot), Some(0));
}

/// An alert fires at most once per cooldown (10 s here): re-armed and crossed again at once, it
/// stays quiet (and /alerts says so) until the cooldown is over, then fires.
#[test]
fn a_crossing_inside_the_cooldown_fires_when_it_ends() {
    let w = World::new();
    let bot = w.start(&[("CRYPTOBOT_ALERT_COOLDOWN", "10")]);
    assert!(
        w.ask(CHAT, "/alert btc above 70000")
            .starts_with("Alert #1 set")
    );
    w.prices.set("bitcoin", "usd", "70010");
    w.wait_for_message(CHAT, "🔔");
    let first = w.api.sent(w.id).last().unwrap().at;
    w.prices.set("bitcoin", "usd", "69000");
    w.wait_for_checks(2);
    w.prices.set("bitcoin", "usd", "70500");
    w.wait_for_checks(2);
    let asked_at = std::time::SystemTime::now();
    let list = w.ask(CHAT, "/alerts");
    // Asked well inside the cooldown (the usual case), the list says why it is quiet.
    if asked_at.duration_since(first).unwrap() < Duration::from_secs(9) {
        assert!(list.contains("armed, quiet for"), "{list}");
    }
    let second = w.wait_for_message(CHAT, "70500 USD now");
    assert_eq!(
        second,
        "🔔 BTC is above 70000 USD: 70500 USD now (alert #1)"
    );
    let at = w
        .api
        .sent(w.id)
        .iter()
        .rev()
        .find(|m| m.text == second)
        .unwrap()
        .at;
    let gap = at.duration_since(first).unwrap();
    assert!(
        gap >= Duration::from_secs(10),
        "fired again {gap:?} after the first, inside the 10 s cooldown"
    );
    assert_eq!(w.bells(CHAT), 2);
    assert_eq!(stop(bot), Some(0));
}

/// `once` is deleted when it fires; the reply says so, and /alerts no longer lists it.
#[test]
fn a_once_alert_fires_and_is_gone() {
    let w = World::new();
    let bot = w.start(&[]);
    assert_eq!(
        w.ask(CHAT, "/alert btc above 70000 once for 7d"),
        "Alert #1 set: BTC above 70000 USD. Once: deleted when it fires. Expires in 7d."
    );
    let list = w.ask(CHAT, "/alerts");
    assert!(
        list.contains("#1 BTC above 70000 USD — armed, once, expires in 6d 23h"),
        "{list}"
    );
    w.prices.set("bitcoin", "usd", "70500");
    assert_eq!(
        w.wait_for_message(CHAT, "🔔"),
        "🔔 BTC is above 70000 USD: 70500 USD now (alert #1, once: now deleted)"
    );
    assert!(w.ask(CHAT, "/alerts").starts_with("You have no alerts"));
    assert_eq!(stop(bot), Some(0));
}

#[test]
fn a_crossing_while_the_bot_was_down_fires_once_after_the_start() {
    let w = World::new();
    let bot = w.start(&[]);
    assert!(
        w.ask(CHAT, "/alert eth below 3000")
            .starts_with("Alert #1 set")
    );
    assert_eq!(stop(bot), Some(0));
    w.prices.set("ethereum", "usd", "2999.99");
    let bot = w.start(&[]);
    assert_eq!(
        w.wait_for_message(CHAT, "🔔"),
        "🔔 ETH is below 3000 USD: 2999.99 USD now (alert #1)"
    );
    assert_eq!(stop(bot), Some(0));
    // A further restart does not fire it again: it is disarmed in the store.
    let bot = w.start(&[]);
    assert_eq!(w.ask(CHAT, "/ping"), "pong");
    w.wait_for_checks(2);
    assert_eq!(stop(bot), Some(0));
    assert_eq!(
        w.messages_to(CHAT)
            .iter()
            .filter(|m| m.starts_with("🔔"))
            .count(),
        1
    );
}

#[test]
fn admin_commands_are_refused_to_others_and_restart_exits_3_after_a_clean_stop() {
    let w = World::new();
    let mut bot = w.start(&[]);
    assert!(w.ask(CHAT, "/status").starts_with("not allowed"));
    assert!(w.ask(CHAT, "/restart").starts_with("not allowed"));
    let status = w.ask(1, "/status");
    for part in [
        "cryptobot 0.1.0",
        "host:",
        &format!("pid: {}", bot.pid()),
        "role:",
        "uptime:",
        "updates handled:",
        "conflicts: 0",
    ] {
        assert!(status.contains(part), "{part} missing in {status}");
    }
    assert!(w.ask(1, "/restart").starts_with("Restarting"));
    assert_eq!(bot.wait_exit(T).code(), Some(3), "{}", bot.stderr());
    assert!(bot.stderr().contains("stopped cleanly"), "{}", bot.stderr());
}

#[test]
fn a_thousand_alert_messages_to_200_chats_meet_no_429() {
    const CHATS: i64 = 200;
    const PER_CHAT: usize = 5;
    let w = World::new();
    // Create the alerts through the bot itself, five per chat, all armed below the threshold.
    let bot = w.start(&[("CRYPTOBOT_ALERT_INTERVAL", "3600")]);
    for chat in 1..=CHATS {
        for k in 0..PER_CHAT {
            w.api.inject_message(
                w.id,
                10_000 + chat,
                &format!("/alert btc above {}", 100_000 + k),
            );
        }
    }
    let id = w.id;
    w.api
        .wait_until(
            id,
            |_| w.api.sent(id).len() >= (CHATS as usize) * PER_CHAT,
            Duration::from_secs(120),
        )
        .unwrap();
    assert_eq!(stop(bot), Some(0));
    // Every alert crosses at once; the next start's first check fires all 1,000, with Telegram's
    // limits enforced by the fake from now on.
    w.prices.set("bitcoin", "usd", "200000");
    w.api.set_rate_limits(true);
    let before = w.api.sent(id).len();
    let started = Instant::now();
    let bot = w.start(&[]);
    w.api
        .wait_until(
            id,
            |_| w.api.sent(id).len() >= before + (CHATS as usize) * PER_CHAT,
            Duration::from_secs(120),
        )
        .unwrap();
    let took = started.elapsed();
    let stats = w.api.stats(id);
    eprintln!(
        "outbound: {} alert messages to {CHATS} chats in {:.1} s = {:.1} msg/s, {} × 429",
        CHATS as usize * PER_CHAT,
        took.as_secs_f64(),
        (CHATS as usize * PER_CHAT) as f64 / took.as_secs_f64(),
        stats.rate_limited_429
    );
    assert_eq!(
        stats.rate_limited_429, 0,
        "the queue exceeded Telegram's limits"
    );
    assert_eq!(stop(bot), Some(0));
}

#[test]
fn a_user_who_blocked_the_bot_gets_no_more_alerts() {
    let w = World::new();
    let bot = w.start(&[]);
    assert!(
        w.ask(CHAT, "/alert btc above 70000")
            .starts_with("Alert #1 set")
    );
    // Another chat's alert that never fires keeps the checker fetching prices: the test counts checks.
    assert!(
        w.ask(CHAT + 1, "/alert btc below 1")
            .starts_with("Alert #2 set")
    );
    w.api.block_chat(w.id, CHAT, true);
    w.prices.set("bitcoin", "usd", "70500");
    // The alert fires, the send meets 403, and the chat's alerts are disabled.
    w.api
        .wait_until(w.id, |s| s.send_message_calls >= 2, T)
        .unwrap();
    bot.wait_for_stderr("the user blocked the bot: alerts to this chat disabled", T);
    // A second crossing is not even attempted.
    w.prices.set("bitcoin", "usd", "60000");
    w.wait_for_checks(3);
    w.prices.set("bitcoin", "usd", "71000");
    w.wait_for_checks(3);
    assert_eq!(
        w.api.stats(w.id).send_message_calls,
        3,
        "alerts were sent to a chat that blocked the bot"
    );
    assert_eq!(stop(bot), Some(0));
}

/// Alerts set in a group belong to the group: any member sets and lists them, but only the group's
/// administrators (as getChatMember says, cached), an anonymous administrator writing as the group,
/// or the bot's admins delete them; not even the member who set one. A private chat needs no lookup.
#[test]
fn only_a_groups_administrators_delete_its_alerts() {
    const GROUP: i64 = -100_777;
    const SETTER: i64 = 801;
    const MEMBER: i64 = 802;
    const ADMIN: i64 = 803;
    let w = World::new();
    w.api.set_chat_admins(w.id, GROUP, &[ADMIN]);
    let bot = w.start(&[]);

    assert_eq!(
        w.ask_in_group(GROUP, SETTER, false, "/alert btc above 70000"),
        "Alert #1 set: BTC above 70000 USD."
    );
    assert_eq!(
        w.ask_in_group(GROUP, SETTER, false, "/alert eth below 3000"),
        "Alert #2 set: ETH below 3000 USD."
    );
    let list = w.ask_in_group(GROUP, MEMBER, false, "/alerts");
    assert!(
        list.contains("#1 BTC above 70000 USD"),
        "the group's alerts: {list}"
    );
    assert_eq!(
        w.member_lookups(),
        0,
        "setting and listing ask nobody's rights"
    );

    let refused = "Only the group's administrators can delete its alerts; /alerts lists them.";
    assert_eq!(w.ask_in_group(GROUP, MEMBER, false, "/delalert 1"), refused);
    assert_eq!(
        w.ask_in_group(GROUP, SETTER, false, "/delalert 1"),
        refused,
        "setting an alert does not make it yours in a group"
    );
    assert_eq!(w.member_lookups(), 2);
    assert_eq!(w.ask_in_group(GROUP, MEMBER, false, "/delalert 2"), refused);
    assert_eq!(w.member_lookups(), 2, "the answer for MEMBER is cached");

    assert_eq!(
        w.ask_in_group(GROUP, ADMIN, false, "/delalert 1"),
        "Alert #1 deleted."
    );
    assert_eq!(w.member_lookups(), 3);
    assert_eq!(
        w.ask_in_group(GROUP, GROUP, true, "/delalert 2"),
        "Alert #2 deleted.",
        "an anonymous administrator writes as the group"
    );
    assert_eq!(
        w.member_lookups(),
        3,
        "a message sent as the group needs no lookup"
    );

    // A private chat's alerts are its own: no lookup.
    assert!(
        w.ask(CHAT, "/alert btc above 80000")
            .starts_with("Alert #3 set")
    );
    assert_eq!(w.ask(CHAT, "/delalert 3"), "Alert #3 deleted.");
    assert_eq!(w.member_lookups(), 3);
    assert_eq!(stop(bot), Some(0));
}
