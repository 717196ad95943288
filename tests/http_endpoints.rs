//! `/healthz` and `/metrics`: on a socket passed by socket activation (`systemd-socket-activate`, the
//! same protocol as `cryptobot.socket`), or on the `listen` address; an unexpected fd set is exit 78.
//!
//! These are the tests that hand the bot (or systemd-socket-activate, which takes no port 0) a port
//! by number: another test may take it between our check and the bind, so each retries with a new
//! port, at most [`PORT_ATTEMPTS`] times, when the bind found it taken.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use support::fake_prices::FakePrices;
use support::{BotProcess, FakeBotApi, Host, NotifySocket, free_port, http_get, random_token};

const T: Duration = Duration::from_secs(30);
const PORT_ATTEMPTS: usize = 5;

/// `n` loopback addresses on ports that were free a moment ago.
fn free_addrs(n: usize) -> Vec<String> {
    (0..n)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect()
}

/// [`socket_activated`] on `n` fresh ports, again on new ones while a port was taken first; returns
/// the process once systemd-socket-activate listens on all of them, and the addresses.
fn socket_activated_on_free_ports(
    host: &Host,
    n: usize,
    fdname: &str,
) -> (BotProcess, Vec<String>) {
    for _ in 0..PORT_ATTEMPTS {
        let listens = free_addrs(n);
        let bot = socket_activated(host, &listens, fdname);
        let bound = bot.wait_for_stderr_where(
            &format!("{n} \"Listening on\" or \"Address already in use\""),
            |lines| {
                if lines.iter().any(|l| l.contains("Address already in use")) {
                    Some(false)
                } else {
                    (lines.iter().filter(|l| l.contains("Listening on")).count() == n)
                        .then_some(true)
                }
            },
            T,
        );
        if bound {
            return (bot, listens);
        }
    }
    panic!(
        "{PORT_ATTEMPTS} sets of free ports were all taken before systemd-socket-activate bound them"
    );
}

fn socket_activate_available() -> bool {
    Command::new("systemd-socket-activate")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// `systemd-socket-activate -l ADDR... --fdname=... -E VAR... cryptobot run`, with the host's env.
fn socket_activated(host: &Host, listens: &[String], fdname: &str) -> BotProcess {
    assert!(
        socket_activate_available(),
        "systemd-socket-activate not found (Debian package systemd)"
    );
    let bot = host.command(&["run"]);
    let mut cmd = Command::new("systemd-socket-activate");
    for l in listens {
        cmd.args(["-l", l]);
    }
    cmd.arg(format!("--fdname={fdname}"));
    // Pass the bot's environment through -E (systemd-socket-activate starts it with a clean one).
    for (k, v) in bot.get_envs() {
        if let Some(v) = v {
            cmd.arg("-E")
                .arg(format!("{}={}", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    cmd.arg(bot.get_program()).args(bot.get_args());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    BotProcess::adopt(child)
}

#[test]
fn healthz_answers_through_a_socket_passed_by_socket_activation() {
    let api = FakeBotApi::start();
    let token = random_token();
    api.add_bot(&token, "http_bot");
    let host = Host::new(&token, &api.url());
    let (mut bot, listens) = socket_activated_on_free_ports(&host, 1, "http");
    let addr = &listens[0];
    // The first connection starts the bot (like a .socket unit); the kernel holds it until it serves.
    let (status, body) = http_get(addr, "/healthz");
    assert_eq!(status, 200, "{body}\n{}", bot.stderr());
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    // The log line was written before the answer, but reaches us through a pipe: wait for it.
    bot.wait_for_stderr("(Activated)", T);
    bot.signal(Signal::SIGTERM);
    assert_eq!(bot.wait_exit(T).code(), Some(0), "{}", bot.stderr());
}

#[test]
fn an_unexpected_fd_set_is_a_config_error() {
    let token = random_token();
    let host = Host::new(&token, "http://127.0.0.1:9");
    let (mut bot, listens) = socket_activated_on_free_ports(&host, 2, "http:other");
    // Connecting starts the program; it must refuse the fd set at once.
    let _ = std::net::TcpStream::connect(&listens[0]);
    let status = bot.wait_exit(T);
    assert_eq!(status.code(), Some(78), "{}", bot.stderr());
    assert!(
        bot.stderr()
            .contains("expected exactly one TCP listener named \"http\""),
        "{}",
        bot.stderr()
    );
}

#[test]
fn metrics_count_what_happens_and_follow_prometheus_names() {
    let api = FakeBotApi::start();
    let token = random_token();
    let id = api.add_bot(&token, "http_bot");
    let host = Host::new(&token, &api.url());
    // The `listen` setting: the bot binds the address itself.
    let (mut bot, notify, addr) = listening_on_a_free_port(&host);
    notify.wait_for("READY=1", T);

    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("{name} not in:\n{text}"))
    };
    let (status, before) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    for _ in 0..3 {
        api.inject_message(id, 8, "/ping");
    }
    api.wait_until(id, |_| api.sent(id).len() >= 3, T).unwrap();
    // The fake records a message when it receives sendMessage; the bot counts
    // it once the answer is back. Poll (bounded) until the counters caught up.
    let deadline = std::time::Instant::now() + T;
    let after = loop {
        let (_, text) = http_get(&addr, "/metrics");
        if value(&text, "cryptobot_messages_sent_total") >= 3.0
            && value(&text, "cryptobot_updates_handled_total")
                - value(&before, "cryptobot_updates_handled_total")
                >= 3.0
        {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {T:?} waiting for 3 sent messages in /metrics:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(
        value(&after, "cryptobot_updates_handled_total")
            - value(&before, "cryptobot_updates_handled_total"),
        3.0
    );
    assert!(
        value(&after, "cryptobot_messages_sent_total") >= 3.0,
        "{after}"
    );
    assert!(
        after.contains("cryptobot_handler_duration_seconds_bucket{le="),
        "{after}"
    );
    assert!(
        after.contains("cryptobot_long_poll_duration_seconds_count"),
        "{after}"
    );
    assert!(
        after.contains("cryptobot_build_info{version=\"0.1.0\"} 1"),
        "{after}"
    );
    // Every sample line is `name{labels} value` with a cryptobot_ name.
    for line in after
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(line.starts_with("cryptobot_"), "{line}");
    }

    // A second instance is refused by the lock (75), not by the busy port.
    let (status, _, stderr) = host.run_to_end(&["run"], T);
    assert_eq!(status.code(), Some(75), "{stderr}");

    bot.signal(Signal::SIGTERM);
    assert_eq!(bot.wait_exit(T).code(), Some(0));
}

/// What the shipped alerting rule on a failing price source reads (packaging/examples): every request
/// to the price source is counted by outcome, and a good answer moves the time of the last success.
#[test]
fn price_requests_are_counted_by_outcome_for_the_operators_alerts() {
    let api = FakeBotApi::start();
    let token = random_token();
    let id = api.add_bot(&token, "http_prices_bot");
    let host = Host::new(&token, &api.url());
    let prices = FakePrices::start();
    prices.set("bitcoin", "usd", "68250.5");
    let (mut bot, notify, addr) =
        listening_on_a_free_port_with(&host, &[("CRYPTOBOT_PRICE_API_URL", &prices.url)]);
    notify.wait_for("READY=1", T);

    let sample = |text: &str, line_start: &str| -> Option<f64> {
        text.lines().find_map(|l| {
            l.strip_prefix(line_start)
                .and_then(|rest| rest.trim().parse().ok())
        })
    };
    let (_, before) = http_get(&addr, "/metrics");
    assert_eq!(
        sample(&before, "cryptobot_price_last_success_timestamp_seconds"),
        Some(0.0),
        "no price asked yet:\n{before}"
    );
    api.inject_message(id, 31, "/price btc");
    api.wait_until(id, |_| !api.sent(id).is_empty(), T).unwrap();
    prices.fail_with(429);
    api.inject_message(id, 32, "/price eth");
    api.wait_until(id, |_| api.sent(id).len() >= 2, T).unwrap();

    let ok = "cryptobot_price_requests_total{source=\"coingecko\",outcome=\"ok\"}";
    let limited = "cryptobot_price_requests_total{source=\"coingecko\",outcome=\"rate_limited\"}";
    let (_, after) = http_get(&addr, "/metrics");
    assert_eq!(sample(&after, ok), Some(1.0), "{after}");
    assert_eq!(sample(&after, limited), Some(1.0), "{after}");
    let last = sample(&after, "cryptobot_price_last_success_timestamp_seconds").unwrap_or(0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 60.0..=now + 1.0).contains(&last),
        "the last good price is not from the last minute ({last}, now {now}):\n{after}"
    );
    bot.signal(Signal::SIGTERM);
    assert_eq!(bot.wait_exit(T).code(), Some(0), "{}", bot.stderr());
}

/// `cryptobot run` with `listen` on a fresh port, again on a new one while the bot found its port
/// taken (exit 78, "cannot bind"); returns it once it serves there.
fn listening_on_a_free_port(host: &Host) -> (BotProcess, NotifySocket, String) {
    listening_on_a_free_port_with(host, &[])
}

/// [`listening_on_a_free_port`], with more environment for the bot.
fn listening_on_a_free_port_with(
    host: &Host,
    env: &[(&str, &str)],
) -> (BotProcess, NotifySocket, String) {
    for _ in 0..PORT_ATTEMPTS {
        let addr = free_addrs(1).remove(0);
        let notify = NotifySocket::new();
        let mut all_env = vec![("CRYPTOBOT_LISTEN", addr.as_str())];
        all_env.extend_from_slice(env);
        let mut bot = host.spawn_run(Some(&notify), &all_env);
        let serving = bot.wait_for_stderr_where(
            "\"serving\" or \"cannot bind\"",
            |lines| {
                if lines.iter().any(|l| l.contains("cannot bind")) {
                    Some(false)
                } else {
                    lines.iter().any(|l| l.contains("serving ")).then_some(true)
                }
            },
            T,
        );
        if serving {
            return (bot, notify, addr);
        }
        assert_eq!(bot.wait_exit(T).code(), Some(78), "{}", bot.stderr());
    }
    panic!("{PORT_ATTEMPTS} free ports were all taken before the bot bound them");
}
