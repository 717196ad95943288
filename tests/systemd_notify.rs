//! The sd_notify protocol as systemd would see it, on a NOTIFY_SOCKET owned by the test: READY=1 only
//! after getMe, STOPPING=1 on SIGTERM, and an idle bot that keeps feeding a 4 s watchdog (G5).

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use support::{FakeBotApi, Host, NotifySocket, random_token};

const T: Duration = Duration::from_secs(20);

#[test]
fn ready_comes_after_get_me_and_stopping_on_sigterm() {
    let api = FakeBotApi::start();
    let token = random_token();
    let id = api.add_bot(&token, "notify_bot");
    // getMe held 1.5 s: a READY sent before its answer arrives while the fake still holds it.
    api.set_latency(id, "getMe", Duration::from_millis(1500));
    let host = Host::new(&token, &api.url());
    let notify = NotifySocket::new();
    let mut bot = host.spawn_run(Some(&notify), &[]);
    let before_ready = notify.wait_for("READY=1", T);
    let at_ready = api.stats(id);
    let ready = before_ready.last().unwrap();
    assert!(ready.text.contains("STATUS=polling"), "{:?}", ready.text);
    assert_eq!(
        at_ready.answered.get("getMe"),
        Some(&1),
        "READY=1 before Telegram answered getMe: {:?}",
        at_ready.answered
    );
    // Nor was Telegram polled before READY (the poll starts after it).
    assert!(
        !at_ready.answered.contains_key("getUpdates"),
        "{:?}",
        at_ready.answered
    );

    bot.signal(Signal::SIGTERM);
    notify.wait_for("STOPPING=1", T);
    assert_eq!(bot.wait_exit(T).code(), Some(0));
}

#[test]
fn idle_bot_feeds_a_4s_watchdog_at_least_every_2s_for_15s() {
    let api = FakeBotApi::start();
    let token = random_token();
    api.add_bot(&token, "watchdog_bot");
    let host = Host::new(&token, &api.url());
    let notify = NotifySocket::new();
    // WATCHDOG_PID must name the child; the bot ignores WATCHDOG_USEC meant for another process. The
    // child's PID is unknown before spawn, so the variable is left out: sd-notify then accepts it.
    let mut bot = host.spawn_run(Some(&notify), &[("WATCHDOG_USEC", "4000000")]);
    notify.wait_for("READY=1", T);
    let seen = notify.collect_for(Duration::from_secs(15));
    let pings: Vec<_> = seen
        .iter()
        .filter(|n| n.text.lines().any(|l| l == "WATCHDOG=1"))
        .map(|n| n.at)
        .collect();
    assert!(pings.len() >= 7, "only {} WATCHDOG=1 in 15 s", pings.len());
    let max_gap = pings.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        max_gap <= Duration::from_millis(2000),
        "gap of {max_gap:?} between WATCHDOG=1"
    );
    bot.signal(Signal::SIGTERM);
    assert_eq!(bot.wait_exit(T).code(), Some(0));
}

#[test]
fn sighup_reloads_with_reloading_and_ready_and_a_bad_config_is_refused_not_fatal() {
    let api = FakeBotApi::start();
    let token = random_token();
    let id = api.add_bot(&token, "reload_bot");
    let host = Host::new(&token, &api.url());
    let file = host.dir.path().join("cryptobot.toml");
    std::fs::write(&file, "poll_timeout = 5\n").unwrap();
    let notify = NotifySocket::new();
    let mut cmd = host.command(&["--config", file.to_str().unwrap(), "run"]);
    cmd.env("NOTIFY_SOCKET", &notify.path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut bot = support::BotProcess::adopt(cmd.spawn().unwrap());
    notify.wait_for("READY=1", T);

    // Not an admin yet.
    api.inject_message(id, 5, "/status");
    assert!(
        api.wait_for_sent(id, |m| m.chat_id == 5, T)
            .unwrap()
            .text
            .starts_with("not allowed")
    );

    // A reload applies the bot's settings at once, and names what waits for a restart.
    std::fs::write(&file, "poll_timeout = 7\nadmin_chat_ids = [5]\n").unwrap();
    bot.signal(Signal::SIGHUP);
    notify.wait_for("RELOADING=1", T);
    notify.wait_for("READY=1", T);
    bot.wait_for_stderr(
        "configuration reloaded: applied bot settings; changes to poll_timeout take effect at the next restart",
        T,
    );
    api.inject_message(id, 5, "/status");
    let status = api
        .wait_for_sent(
            id,
            |m| m.chat_id == 5 && !m.text.starts_with("not allowed"),
            T,
        )
        .unwrap();
    assert!(
        status.text.contains(&format!("pid: {}", bot.pid())),
        "{}",
        status.text
    );

    std::fs::write(&file, "poll_timeout = \"never\"\n").unwrap();
    bot.signal(Signal::SIGHUP);
    notify.wait_for("READY=1", T);
    bot.wait_for_stderr("reload refused, keeping the current configuration", T);

    // Still polling with the old configuration.
    api.inject_message(id, 3, "/ping");
    assert_eq!(
        api.wait_for_sent(id, |m| m.chat_id == 3, T).unwrap().text,
        "pong"
    );
    bot.signal(Signal::SIGTERM);
    assert_eq!(bot.wait_exit(T).code(), Some(0));
}

#[test]
fn a_telegram_outage_is_not_a_hang_the_watchdog_keeps_being_fed() {
    let api = FakeBotApi::start();
    let token = random_token();
    let id = api.add_bot(&token, "outage_bot");
    let host = Host::new(&token, &api.url());
    let notify = NotifySocket::new();
    let mut bot = host.spawn_run(
        Some(&notify),
        &[
            ("WATCHDOG_USEC", "4000000"),
            ("CRYPTOBOT_POLL_TIMEOUT", "1"),
        ],
    );
    notify.wait_for("READY=1", T);
    // Every poll for the next 10 s fails: the loop backs off (declared to the watchdog) and retries.
    api.inject_fault(id, "getUpdates", fake_bot_api::Fault::Reset, 1000);
    notify.wait_for("STATUS=degraded", T);
    let seen = notify.collect_for(Duration::from_secs(10));
    let pings: Vec<_> = seen
        .iter()
        .filter(|n| n.text.lines().any(|l| l == "WATCHDOG=1"))
        .map(|n| n.at)
        .collect();
    assert!(
        pings.len() >= 4,
        "only {} WATCHDOG=1 during the outage",
        pings.len()
    );
    let max_gap = pings.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        max_gap <= Duration::from_millis(2500),
        "gap of {max_gap:?} during the outage"
    );
    assert!(
        bot.child.try_wait().unwrap().is_none(),
        "the outage ended the bot"
    );
    bot.signal(Signal::SIGTERM);
    assert_eq!(bot.wait_exit(T).code(), Some(0));
}
