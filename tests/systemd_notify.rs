//! The sd_notify protocol as systemd would see it, on a NOTIFY_SOCKET owned by the test: READY=1 only
//! after getMe, STOPPING=1 on SIGTERM, and an idle bot that keeps feeding a 4 s watchdog (G5).

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{FakeBotApi, Host, NotifySocket, PassedListener, http_get, random_token};

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

/// G5 when only the handlers stall: a handler that never returns (a fault point of debug builds,
/// `CRYPTOBOT_FAULT_HANG_ON`: every call the product makes is bounded, so no real input can do it)
/// while the update loop goes on polling. Once the update has waited 30 s with nothing finished,
/// WATCHDOG=1 stops and `/healthz` turns 503 naming the handlers, while the process lives and keeps
/// polling: systemd, not the bot, decides to restart it.
#[test]
fn a_handler_that_never_returns_stops_the_watchdog_while_the_process_lives() {
    let api = FakeBotApi::start();
    let token = random_token();
    let id = api.add_bot(&token, "stuck_bot");
    let host = Host::new(&token, &api.url());
    let notify = NotifySocket::new();
    let listener = PassedListener::new();
    let addr = listener.addr.clone();
    let mut bot = host.spawn_run_on(
        &listener,
        Some(&notify),
        &[
            ("WATCHDOG_USEC", "4000000"),
            ("CRYPTOBOT_POLL_TIMEOUT", "1"),
            ("CRYPTOBOT_FAULT_HANG_ON", "/hang"),
        ],
    );
    notify.wait_for("READY=1", T);
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    let hung_at = Instant::now();
    api.inject_message(id, 5, "/hang");

    // Bounded: the stall limit (30 s) and some room.
    let limit = Duration::from_secs(45);
    let (unhealthy_at, body) = loop {
        let (status, body) = http_get(&addr, "/healthz");
        if status == 503 {
            break (Instant::now(), body);
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            hung_at.elapsed() < limit,
            "/healthz still 200 {limit:?} after a handler hung"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(body.contains("handlers"), "{body}");
    let polls_at_stall = api.stats(id).calls["getUpdates"];
    let seen = notify.collect_for(Duration::from_secs(6));
    let pings: Vec<Instant> = seen
        .iter()
        .filter(|n| n.text.lines().any(|l| l == "WATCHDOG=1"))
        .map(|n| n.at)
        .collect();
    let last_ping = *pings.last().expect("no WATCHDOG=1 at all");
    assert!(
        last_ping >= hung_at + Duration::from_secs(25),
        "WATCHDOG=1 stopped {:?} after the hang, before the 30 s stall limit",
        last_ping - hung_at
    );
    assert!(
        last_ping <= unhealthy_at + Duration::from_millis(200),
        "WATCHDOG=1 {:?} after /healthz turned 503",
        last_ping - unhealthy_at
    );
    assert!(
        bot.child.try_wait().unwrap().is_none(),
        "the bot exited; the watchdog (systemd) is the one to restart it"
    );
    assert!(
        api.stats(id).calls["getUpdates"] > polls_at_stall,
        "the update loop stopped polling: only the handler was meant to hang"
    );
    bot.signal(Signal::SIGTERM);
    assert_eq!(bot.wait_exit(T).code(), Some(0));
}

/// `cryptobot reload` (the units' `ExecReload=`, which needs no /bin/kill): SIGHUP to the instance
/// holding the lock, seen as RELOADING=1 then READY=1; with no instance running, exit 1 saying so.
#[test]
fn cryptobot_reload_asks_the_running_instance_to_reload() {
    let api = FakeBotApi::start();
    let token = random_token();
    api.add_bot(&token, "reload_command_bot");
    let host = Host::new(&token, &api.url());
    let (status, _, stderr) = host.run_to_end(&["reload"], T);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing to reload"), "{stderr}");

    let notify = NotifySocket::new();
    let mut bot = host.spawn_run(Some(&notify), &[]);
    notify.wait_for("READY=1", T);
    let (status, stdout, stderr) = host.run_to_end(&["reload"], T);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!("PID {} asked to reload", bot.pid())),
        "{stdout}"
    );
    notify.wait_for("RELOADING=1", T);
    notify.wait_for("READY=1", T);
    // As ExecReload=: systemd names the main process in $MAINPID (the unit's sandbox hides
    // /proc/locks, so the lock's holder could not be found there).
    let mut cmd = host.command(&["reload"]);
    cmd.env("MAINPID", bot.pid().to_string())
        .env("CRYPTOBOT_RUNTIME_DIR", host.dir.path().join("elsewhere"));
    let (status, stdout, stderr) = support::run_command_to_end(cmd, T);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("asked to reload"), "{stdout}");
    notify.wait_for("RELOADING=1", T);
    notify.wait_for("READY=1", T);
    bot.signal(Signal::SIGTERM);
    assert_eq!(bot.wait_exit(T).code(), Some(0));
}
