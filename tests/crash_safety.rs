//! G3/G4 under crashes: a burst of updates, the bot SIGKILLed at random moments and restarted, many
//! times (seeded; the seed is printed). Every update is answered at least once, and an update is answered
//! again only if it was in flight at a kill (its `sendMessage` started, its outbox row not yet deleted).
//! The outbound queue bounds that to one message per chat and `sends_in_flight` in all (a sent
//! message keeps its slot until its row is deleted, gathered with others for up to 250 ms); run here
//! with `sends_in_flight = 4`, so: at most 4 repeats per kill. A clean SIGTERM restart repeats nothing.
//! And a stop is bounded even while a handler hangs.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fake_bot_api::Fault;
use nix::sys::signal::Signal;
use support::{FakeBotApi, Host, NotifySocket, random_token};

const T: Duration = Duration::from_secs(60);
const UPDATES: i64 = 500;
const KILLS: u32 = 20;
/// `sends_in_flight` for this test: the most a kill may repeat.
const IN_FLIGHT: usize = 4;
const IN_FLIGHT_ENV: (&str, &str) = ("CRYPTOBOT_SENDS_IN_FLIGHT", "4");

fn replies_per_chat(api: &FakeBotApi, id: i64) -> BTreeMap<i64, usize> {
    let mut per_chat = BTreeMap::new();
    for m in api.sent(id) {
        *per_chat.entry(m.chat_id).or_insert(0) += 1;
    }
    per_chat
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_repeats_only_in_flight_updates() {
    let seed = support::seed("CRASH_SEED");
    let mut rng = fastrand::Rng::with_seed(seed);

    let api = FakeBotApi::start();
    let token = random_token();
    let id = api.add_bot(&token, "crash_bot");
    let host = Host::new(&token, &api.url());
    // Each update comes from its own chat, so replies per chat count handlings per update.
    for chat in 1..=UPDATES {
        api.inject_message(id, chat, "/ping");
    }

    // What one process sends again: replies to chats answered before it started (each chat has one
    // update), i.e. what the kill before it left in flight.
    let answered_so_far = || {
        let sent = api.sent(id);
        let chats: std::collections::BTreeSet<i64> = sent.iter().map(|m| m.chat_id).collect();
        (sent.len(), chats)
    };
    let sent_again = |(from, chats): &(usize, std::collections::BTreeSet<i64>)| {
        api.sent(id)[*from..]
            .iter()
            .filter(|m| chats.contains(&m.chat_id))
            .count()
    };
    let mut worst_kill = 0;
    let mut kills = 0;
    while kills < KILLS {
        let before = answered_so_far();
        let notify = NotifySocket::new();
        let mut bot = host.spawn_run(Some(&notify), &[IN_FLIGHT_ENV]);
        notify.wait_for("READY=1", T);
        // Kill in the middle of a batch: after this process has answered a random 1–30 more updates
        // (a batch holds up to 100, so they are handled but not yet confirmed to Telegram).
        let answered = api.stats(id).send_message_calls;
        let more = rng.u64(1..=30);
        let _ = api.wait_until(
            id,
            |s| s.send_message_calls >= answered + more,
            Duration::from_secs(10),
        );
        bot.signal(Signal::SIGKILL);
        bot.wait_exit(T);
        worst_kill = worst_kill.max(sent_again(&before));
        kills += 1;
        if api
            .sent(id)
            .iter()
            .map(|m| m.chat_id)
            .collect::<std::collections::BTreeSet<_>>()
            .len() as i64
            == UPDATES
        {
            break; // everything answered before all the kills were spent
        }
    }
    // A last, clean run finishes the burst.
    let before = answered_so_far();
    let notify = NotifySocket::new();
    let mut bot = host.spawn_run(Some(&notify), &[IN_FLIGHT_ENV]);
    notify.wait_for("READY=1", T);
    let deadline = Instant::now() + T;
    while (replies_per_chat(&api, id).len() as i64) < UPDATES {
        assert!(
            Instant::now() < deadline,
            "only {} of {UPDATES} updates answered (seed {seed})",
            replies_per_chat(&api, id).len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    bot.signal(Signal::SIGTERM);
    assert_eq!(bot.wait_exit(T).code(), Some(0));
    worst_kill = worst_kill.max(sent_again(&before));

    let per_chat = replies_per_chat(&api, id);
    let repeated: usize = per_chat.values().map(|n| n - 1).sum();
    eprintln!(
        "crash-safety: {UPDATES} updates, {kills} SIGKILLs, {repeated} answered twice, at most \
         {worst_kill} after one kill (seed {seed})"
    );
    assert_eq!(per_chat.len() as i64, UPDATES, "updates lost (seed {seed})");
    assert!(
        worst_kill <= IN_FLIGHT,
        "one kill left {worst_kill} messages to send again, more than sends_in_flight = {IN_FLIGHT} \
         (seed {seed})"
    );

    // A clean restart afterwards repeats nothing.
    let before = api.sent(id).len();
    let notify = NotifySocket::new();
    let mut bot = host.spawn_run(Some(&notify), &[]);
    notify.wait_for("READY=1", T);
    api.inject_message(id, 9_999, "/ping");
    api.wait_for_sent(id, |m| m.chat_id == 9_999, T).unwrap();
    bot.signal(Signal::SIGTERM);
    assert_eq!(bot.wait_exit(T).code(), Some(0));
    assert_eq!(
        api.sent(id).len(),
        before + 1,
        "a clean restart repeated updates (seed {seed})"
    );
}

#[test]
fn stop_is_bounded_while_a_handler_hangs_and_the_update_is_not_lost() {
    let api = FakeBotApi::start();
    let token = random_token();
    let id = api.add_bot(&token, "hang_bot");
    let host = Host::new(&token, &api.url());
    let notify = NotifySocket::new();
    let mut bot = host.spawn_run(Some(&notify), &[]);
    notify.wait_for("READY=1", T);
    api.inject_fault(id, "sendMessage", Fault::Hang, 1);
    api.inject_message(id, 11, "/ping");
    api.wait_until(id, |s| s.send_message_calls >= 1, T)
        .unwrap();

    let asked = Instant::now();
    bot.signal(Signal::SIGTERM);
    assert_eq!(bot.wait_exit(T).code(), Some(0), "{}", bot.stderr());
    let took = asked.elapsed();
    // The outbound queue's drain is bounded (2 s: a send still unanswered then is left in the outbox),
    // and so is each closing step (5 s): the stop stays far below TimeoutStopSec=30s.
    assert!(took < Duration::from_secs(12), "stop took {took:?}");
    assert!(
        bot.stderr()
            .contains("still unanswered when the stop's drain ended stay in the outbox"),
        "{}",
        bot.stderr()
    );

    // The reply that could not be sent stayed in the outbox: the next start sends it.
    let notify = NotifySocket::new();
    let mut next = host.spawn_run(Some(&notify), &[]);
    notify.wait_for("READY=1", T);
    assert_eq!(
        api.wait_for_sent(id, |m| m.chat_id == 11, T).unwrap().text,
        "pong"
    );
    next.signal(Signal::SIGTERM);
    assert_eq!(next.wait_exit(T).code(), Some(0));
}
