//! Telegram and network faults never end the update loop: every fault kind of the fake Bot API, on
//! getUpdates and on sendMessage, is survived, the bot recovers by itself, and a 429's retry_after is
//! honoured.

mod support;

use std::time::{Duration, Instant};

use fake_bot_api::Fault;
use nix::sys::signal::Signal;
use support::{FakeBotApi, Host, NotifySocket, random_token};

const T: Duration = Duration::from_secs(40);

fn survive(method: &str, fault: Fault) {
    let api = FakeBotApi::start();
    let token = random_token();
    let id = api.add_bot(&token, "fault_bot");
    // Injected before the start, so the very first calls meet the fault (a long poll already
    // pending when a fault is injected would not).
    api.inject_fault(id, method, fault, 2);
    let host = Host::new(&token, &api.url());
    let notify = NotifySocket::new();
    let mut bot = host.spawn_run(Some(&notify), &[("CRYPTOBOT_POLL_TIMEOUT", "1")]);
    notify.wait_for("READY=1", T);
    api.inject_message(id, 77, "/ping");
    let sent = api
        .wait_for_sent(id, |m| m.chat_id == 77, T)
        .unwrap_or_else(|e| panic!("{method} {fault:?}: {e}\n{}", bot.stderr()));
    assert_eq!(sent.text, "pong");
    assert!(
        bot.child.try_wait().unwrap().is_none(),
        "{method} {fault:?} ended the bot"
    );
    bot.signal(Signal::SIGTERM);
    assert_eq!(
        bot.wait_exit(T).code(),
        Some(0),
        "{method} {fault:?}: {}",
        bot.stderr()
    );
    let stats = api.stats(id);
    assert!(
        stats.deliveries.values().all(|n| *n <= 2),
        "{method} {fault:?}: {stats:?}"
    );
}

#[test]
fn server_errors_are_retried() {
    survive("getUpdates", Fault::ServerError);
    survive("sendMessage", Fault::ServerError);
}

#[test]
fn connection_resets_are_retried() {
    survive("getUpdates", Fault::Reset);
    survive("sendMessage", Fault::Reset);
}

#[test]
fn garbage_bodies_are_retried() {
    survive("getUpdates", Fault::Garbage);
    survive("sendMessage", Fault::Garbage);
}

#[test]
fn a_hung_get_updates_hits_its_deadline_and_the_loop_goes_on() {
    survive("getUpdates", Fault::Hang);
}

#[test]
fn a_hung_send_message_hits_its_deadline_and_the_loop_goes_on() {
    survive("sendMessage", Fault::Hang);
}

#[test]
fn retry_after_is_honoured_on_both_methods() {
    for method in ["getUpdates", "sendMessage"] {
        let started = Instant::now();
        survive(method, Fault::TooManyRequests { retry_after: 2 });
        // Two 429s of 2 s each were waited out before the answer went through.
        assert!(
            started.elapsed() >= Duration::from_secs(4),
            "{method}: retry_after not honoured ({:?})",
            started.elapsed()
        );
    }
}

/// "Nothing lost" through an outage longer than a few retries: 10 s in which every `sendMessage`
/// fails (5xx, then connection resets) used to exhaust the 5 attempts a message had, and the replies
/// and fired alerts were deleted. Every reply must arrive once Telegram is back, in order per chat.
#[test]
fn replies_survive_an_outage_of_sendmessage() {
    for fault in [Fault::ServerError, Fault::Reset] {
        let api = FakeBotApi::start();
        let token = random_token();
        let id = api.add_bot(&token, "outage_bot");
        let host = Host::new(&token, &api.url());
        let notify = NotifySocket::new();
        let mut bot = host.spawn_run(Some(&notify), &[("CRYPTOBOT_POLL_TIMEOUT", "1")]);
        notify.wait_for("READY=1", T);
        let outage = Duration::from_secs(10);
        api.set_outage(id, "sendMessage", fault, outage);
        let started = Instant::now();
        for chat in [1, 2, 3] {
            api.inject_message(id, chat, "/ping");
            api.inject_message(id, chat, "/help");
        }
        for chat in [1, 2, 3] {
            api.wait_for_sent(
                id,
                |m| m.chat_id == chat && m.text != "pong",
                Duration::from_secs(60),
            )
            .unwrap_or_else(|e| {
                panic!(
                    "{fault:?}: chat {chat} lost its replies: {e}\n{}",
                    bot.stderr()
                )
            });
        }
        assert!(started.elapsed() >= outage, "the outage did not hold");
        let sent = api.sent(id);
        for chat in [1, 2, 3] {
            let texts: Vec<&str> = sent
                .iter()
                .filter(|m| m.chat_id == chat)
                .map(|m| m.text.as_str())
                .collect();
            assert_eq!(texts.len(), 2, "{fault:?}: chat {chat}: {texts:?}");
            assert_eq!(
                texts[0], "pong",
                "{fault:?}: chat {chat}: order kept: {texts:?}"
            );
        }
        bot.signal(Signal::SIGTERM);
        assert_eq!(bot.wait_exit(T).code(), Some(0), "{}", bot.stderr());
    }
}
