//! Concurrency without giving up a guarantee: updates are handled concurrently across chats and in
//! order within one, a slow chat delays only itself, a stop lets the handlers in progress finish, what
//! was accepted but not handled survives a kill -9 (the inbox), and empty polls are paced.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::fake_prices::FakePrices;
use support::{BotProcess, FakeBotApi, Host, NotifySocket, random_token};

const T: Duration = Duration::from_secs(30);
const PRICE: &str = "BTC: 67187.12 USD";

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
        let id = api.add_bot(&token, "concurrent_bot");
        let host = Host::new(&token, &api.url());
        let prices = FakePrices::start();
        prices.set("bitcoin", "usd", "67187.12");
        Self {
            api,
            prices,
            id,
            host,
        }
    }

    fn start(&self) -> BotProcess {
        self.start_with(&[])
    }

    fn start_with(&self, extra: &[(&str, &str)]) -> BotProcess {
        self.start_maybe_on(None, extra)
    }

    /// [`Self::start_with`] with `listener` passed as cryptobot.socket would.
    fn start_on(&self, listener: &support::PassedListener) -> BotProcess {
        self.start_maybe_on(Some(listener), &[])
    }

    fn start_maybe_on(
        &self,
        listener: Option<&support::PassedListener>,
        extra: &[(&str, &str)],
    ) -> BotProcess {
        let notify = NotifySocket::new();
        let mut env = vec![
            ("CRYPTOBOT_PRICE_API_URL", self.prices.url.as_str()),
            ("CRYPTOBOT_PRICE_CACHE_TTL", "0"),
            ("CRYPTOBOT_POLL_TIMEOUT", "5"),
        ];
        env.extend_from_slice(extra);
        let bot = match listener {
            Some(listener) => self.host.spawn_run_on(listener, Some(&notify), &env),
            None => self.host.spawn_run(Some(&notify), &env),
        };
        notify.wait_for("READY=1", T);
        bot
    }

    fn texts_to(&self, chat: i64) -> Vec<String> {
        self.api
            .sent(self.id)
            .into_iter()
            .filter(|m| m.chat_id == chat)
            .map(|m| m.text)
            .collect()
    }

    fn wait_for_prices_requested(&self, n: u64) {
        let deadline = Instant::now() + T;
        while self.prices.requests() < n {
            assert!(
                Instant::now() < deadline,
                "the price API got {} of {n} requests",
                self.prices.requests()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn stop(bot: &mut BotProcess) {
    bot.signal(Signal::SIGTERM);
    assert_eq!(bot.wait_exit(T).code(), Some(0), "{}", bot.stderr());
}

/// One chat's `/price` waits 3 s for the price API; another chat's `/ping` does not wait for it.
#[test]
fn a_slow_price_delays_only_its_own_chat() {
    let w = World::new();
    let mut bot = w.start();
    w.prices.delay(Duration::from_secs(3));
    w.api.inject_message(w.id, 1, "/price btc");
    w.wait_for_prices_requested(1);
    let asked = Instant::now();
    w.api.inject_message(w.id, 2, "/ping");
    w.api
        .wait_for_sent(w.id, |m| m.chat_id == 2, T)
        .unwrap_or_else(|e| panic!("no pong: {e}\n{}", bot.stderr()));
    let pong_after = asked.elapsed();
    assert!(
        pong_after < Duration::from_millis(1500),
        "the pong waited {pong_after:?} behind another chat's slow price"
    );
    assert!(w.texts_to(1).is_empty(), "the price came first?");
    w.api
        .wait_for_sent(w.id, |m| m.chat_id == 1, T)
        .expect("the slow price is answered too");
    stop(&mut bot);
}

/// Many chats, each with a random sequence of commands (some slow), all at once: every chat's replies
/// come in the order of its commands (seeded; the seed is printed).
#[test]
fn replies_keep_their_order_within_each_chat_under_concurrency() {
    let seed = support::seed("ORDER_SEED");
    let mut rng = fastrand::Rng::with_seed(seed);
    let w = World::new();
    let mut bot = w.start();
    w.prices.delay(Duration::from_millis(150));
    let commands = [
        ("/price btc", "BTC:"),
        ("/ping", "pong"),
        ("/alerts", "You have no alerts"),
    ];
    let mut expected: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    let mut pending: Vec<(i64, usize)> = (1..=40).map(|chat| (chat, 3)).collect();
    while !pending.is_empty() {
        let i = rng.usize(..pending.len());
        let (chat, left) = &mut pending[i];
        let (command, reply) = commands[rng.usize(..commands.len())];
        w.api.inject_message(w.id, *chat, command);
        expected.entry(*chat).or_default().push(reply);
        *left -= 1;
        if *left == 0 {
            pending.swap_remove(i);
        }
    }
    let id = w.id;
    w.api
        .wait_until(id, |_| w.api.sent(id).len() >= 120, T)
        .unwrap_or_else(|e| panic!("not every command was answered (seed {seed}): {e}"));
    for (chat, replies) in &expected {
        let got = w.texts_to(*chat);
        assert_eq!(
            got.len(),
            replies.len(),
            "chat {chat} (seed {seed}): {got:?}"
        );
        for (reply, prefix) in got.iter().zip(replies) {
            assert!(
                reply.starts_with(prefix),
                "chat {chat} (seed {seed}): expected {replies:?}, got {got:?}"
            );
        }
    }
    stop(&mut bot);
}

/// SIGTERM while five chats' handlers wait 1.5 s for prices: they finish within the drain and their
/// replies go out before the process exits.
#[test]
fn a_stop_lets_the_handlers_in_progress_finish() {
    let w = World::new();
    let mut bot = w.start();
    w.prices.delay(Duration::from_millis(1500));
    // A coin each: five requests in flight (one coin would be one shared request).
    for chat in 1..=5 {
        w.prices.set(&format!("coin-{chat}"), "usd", "2");
        w.api
            .inject_message(w.id, chat, &format!("/price coin-{chat}"));
    }
    w.wait_for_prices_requested(5);
    let asked = Instant::now();
    stop(&mut bot);
    assert!(
        asked.elapsed() < Duration::from_secs(12),
        "{:?}",
        asked.elapsed()
    );
    for chat in 1..=5 {
        assert_eq!(
            w.texts_to(chat),
            [format!("COIN-{chat}: 2 USD")],
            "chat {chat}: {}",
            bot.stderr()
        );
    }
}

/// Updates that finish out of order and a kill -9 in between: the fast ones are answered and
/// confirmed while a slow one is still in its handler; the process dies; the next start handles the
/// slow one from the inbox (Telegram will not deliver it again) and none of the others twice.
#[test]
fn what_was_accepted_but_not_handled_survives_a_kill() {
    let w = World::new();
    let listener = support::PassedListener::new();
    let listen = listener.addr.clone();
    let mut bot = w.start_on(&listener);
    w.prices.delay(Duration::from_secs(60));
    w.api.inject_message(w.id, 1, "/price btc");
    w.wait_for_prices_requested(1);
    w.api.inject_message(w.id, 2, "/ping");
    w.api.inject_message(w.id, 3, "/ping");
    for chat in [2, 3] {
        w.api
            .wait_for_sent(w.id, |m| m.chat_id == chat, T)
            .unwrap_or_else(|e| panic!("chat {chat}: {e}"));
    }
    w.api
        .wait_until(w.id, |s| s.pending_updates == 0, T)
        .expect("every update confirmed to Telegram, the slow one included");
    // The pongs are out of the outbox too (a message sent but not yet deleted when the process dies
    // is sent again: at least once, as documented; this test is about the inbox).
    let deadline = Instant::now() + T;
    loop {
        let (_, metrics) = support::http_get(&listen, "/metrics");
        if metrics
            .lines()
            .any(|l| l == "cryptobot_outbound_queue_depth 0")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox never emptied:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    bot.signal(Signal::SIGKILL);
    bot.wait_exit(T);

    w.prices.delay(Duration::ZERO);
    let mut next = w.start();
    w.api
        .wait_for_sent(w.id, |m| m.chat_id == 1, T)
        .unwrap_or_else(|e| panic!("the accepted update was lost: {e}\n{}", next.stderr()));
    stop(&mut next);
    assert_eq!(w.texts_to(1), [PRICE]);
    assert_eq!(w.texts_to(2), ["pong"], "answered twice");
    assert_eq!(w.texts_to(3), ["pong"], "answered twice");
}

/// Against a server that answers getUpdates at once whatever the timeout, the idle bot polls at most
/// about twice a second, and still answers at once.
#[test]
fn empty_polls_are_paced_against_a_server_that_ignores_the_timeout() {
    let w = World::new();
    w.api.set_ignore_poll_timeout(w.id, true);
    let mut bot = w.start();
    let before = w.api.stats(w.id).get_updates_calls;
    let window = Instant::now();
    // A measurement window, not a synchronisation: count the polls the idle bot makes in 3 s.
    std::thread::sleep(Duration::from_secs(3));
    let calls = w.api.stats(w.id).get_updates_calls - before;
    let per_s = calls as f64 / window.elapsed().as_secs_f64();
    assert!(
        per_s <= 2.5,
        "{calls} polls in 3 s while idle ({per_s:.1}/s)"
    );
    let asked = Instant::now();
    w.api.inject_message(w.id, 1, "/ping");
    w.api.wait_for_sent(w.id, |m| m.chat_id == 1, T).unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    stop(&mut bot);
}

/// Five chats ask for the same coin at once while the provider takes half a second: one request.
#[test]
fn concurrent_lookups_of_one_coin_share_one_request() {
    let w = World::new();
    let mut bot = w.start();
    w.prices.delay(Duration::from_millis(500));
    let before = w.prices.requests();
    for chat in 1..=5 {
        w.api.inject_message(w.id, chat, "/price btc");
    }
    let id = w.id;
    w.api
        .wait_until(id, |_| w.api.sent(id).len() >= 5, T)
        .unwrap_or_else(|e| panic!("not every chat got its price: {e}"));
    for chat in 1..=5 {
        assert_eq!(w.texts_to(chat), [PRICE], "chat {chat}");
    }
    assert_eq!(w.prices.requests() - before, 1, "one request for one coin");
    stop(&mut bot);
}
