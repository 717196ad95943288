//! G6 across "hosts" (separate runtime dirs, so no shared lock) on one token: the fake Bot API's 409
//! counter stays bounded by the backoff, the conflict is named in STATUS= and the log, and with
//! `on_conflict = "exit"` the loser exits 69. A webhook is a different, named error.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{FakeBotApi, Host, NotifySocket, http_post_json, random_token};

const T: Duration = Duration::from_secs(30);

#[test]
fn two_hosts_on_one_token_back_off_instead_of_fighting() {
    let api = FakeBotApi::start();
    let token = random_token();
    let id = api.add_bot(&token, "conflict_bot");
    let fast = [
        ("CRYPTOBOT_CONFLICT_BACKOFF_INITIAL", "1"),
        ("CRYPTOBOT_CONFLICT_BACKOFF_MAX", "4"),
        ("CRYPTOBOT_POLL_TIMEOUT", "5"),
    ];
    let (host_a, host_b) = (Host::new(&token, &api.url()), Host::new(&token, &api.url()));
    let (notify_a, notify_b) = (NotifySocket::new(), NotifySocket::new());
    let mut a = host_a.spawn_run(Some(&notify_a), &fast);
    notify_a.wait_for("READY=1", T);
    let mut b = host_b.spawn_run(Some(&notify_b), &fast);
    notify_b.wait_for("READY=1", T);

    // The first conflict shows in STATUS= of whichever instance was answered 409.
    api.wait_until(id, |s| s.conflicts_409 >= 1, T).unwrap();
    let started = Instant::now();
    let seen_a = notify_a.collect_for(Duration::from_secs(12));
    let seen_b = notify_b.collect_for(Duration::from_millis(10));
    let window = started.elapsed();
    let conflicts = api.stats(id).conflicts_409;
    // With backoff 1 s doubling to 4 s (jittered to at least half), each instance polls at most about
    // once per 0.5–2 s while in conflict: a tight loop would be thousands of 409s.
    assert!(
        conflicts <= 2 + 2 * window.as_secs(),
        "{conflicts} 409s in {window:?}: not backing off"
    );
    let all: Vec<String> = seen_a
        .iter()
        .chain(&seen_b)
        .map(|n| n.text.clone())
        .collect();
    let named = all
        .iter()
        .any(|t| t.contains("STATUS=conflict: another instance polls this token"))
        || a.stderr().contains("another instance polls this token")
        || b.stderr().contains("another instance polls this token");
    assert!(named, "the conflict was not named; notifications: {all:?}");
    let log = format!("{}\n{}", a.stderr(), b.stderr());
    assert!(
        log.contains("conflict=\"other_poller\""),
        "no CONFLICT field in the log:\n{log}"
    );

    a.signal(Signal::SIGTERM);
    b.signal(Signal::SIGTERM);
    assert_eq!(a.wait_exit(T).code(), Some(0));
    assert_eq!(b.wait_exit(T).code(), Some(0));
}

#[test]
fn with_on_conflict_exit_the_loser_exits_69() {
    let api = FakeBotApi::start();
    let token = random_token();
    api.add_bot(&token, "conflict_bot");
    let policy = [
        ("CRYPTOBOT_ON_CONFLICT", "exit"),
        ("CRYPTOBOT_CONFLICT_MAX", "2"),
        ("CRYPTOBOT_CONFLICT_BACKOFF_INITIAL", "0.2"),
        ("CRYPTOBOT_CONFLICT_BACKOFF_MAX", "0.5"),
        ("CRYPTOBOT_POLL_TIMEOUT", "2"),
    ];
    let (host_a, host_b) = (Host::new(&token, &api.url()), Host::new(&token, &api.url()));
    let mut a = host_a.spawn_run(None, &policy);
    let mut b = host_b.spawn_run(None, &policy);
    let deadline = Instant::now() + T;
    let (loser, winner) = loop {
        if a.child.try_wait().unwrap().is_some() {
            break (&mut a, &mut b);
        }
        if b.child.try_wait().unwrap().is_some() {
            break (&mut b, &mut a);
        }
        assert!(
            Instant::now() < deadline,
            "neither instance gave up within {T:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = loser.wait_exit(T);
    assert_eq!(status.code(), Some(69), "{}", loser.stderr());
    assert!(
        loser.stderr().contains("gave up after 2 conflicts"),
        "{}",
        loser.stderr()
    );
    assert!(
        winner.child.try_wait().unwrap().is_none(),
        "the winner must keep running"
    );
    winner.signal(Signal::SIGTERM);
    assert_eq!(winner.wait_exit(T).code(), Some(0));
}

fn set_webhook(api: &FakeBotApi, token: &str) {
    let (status, body) = http_post_json(
        &api.url(),
        &format!("/bot{token}/setWebhook"),
        r#"{"url":"http://127.0.0.1:9/hook"}"#,
    );
    assert_eq!(status, 200, "setWebhook: {body}");
}

#[test]
fn an_active_webhook_is_a_named_error() {
    let api = FakeBotApi::start();
    let token = random_token();
    api.add_bot(&token, "webhook_bot");
    set_webhook(&api, &token);
    let host = Host::new(&token, &api.url());
    let (status, _, stderr) = host.run_to_end(&["run"], T);
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("deleteWebhook") && stderr.contains("webhook"),
        "{stderr}"
    );
}

#[test]
fn delete_webhook_switch_removes_it_and_polling_works() {
    let api = FakeBotApi::start();
    let token = random_token();
    let id = api.add_bot(&token, "webhook_bot");
    set_webhook(&api, &token);
    let host = Host::new(&token, &api.url());
    let notify = NotifySocket::new();
    let mut bot = host.spawn_run(Some(&notify), &[("CRYPTOBOT_DELETE_WEBHOOK", "true")]);
    notify.wait_for("READY=1", T);
    api.inject_message(id, 5, "/ping");
    assert_eq!(
        api.wait_for_sent(id, |m| m.chat_id == 5, T).unwrap().text,
        "pong"
    );
    assert_eq!(api.stats(id).webhook_conflicts_409, 0, "{}", bot.stderr());
    bot.signal(Signal::SIGTERM);
    assert_eq!(bot.wait_exit(T).code(), Some(0));
}
