//! Webhook mode against the fake Bot API's webhook sender: the bot sets its webhook with a secret,
//! answers what Telegram POSTs, refuses every request that is not Telegram's (404 / 401 / 413 / 400)
//! without crashing or leaking the secret, loses nothing across a restart (Telegram delivers again
//! what was not answered 200), and deletes its webhook when it goes back to polling.

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use fake_bot_api::FakeBotApi;
use nix::sys::signal::Signal;
use support::{
    BotProcess, Host, NotifySocket, PassedListener, assert_no_token, http_get, http_post_json,
    random_token,
};

const T: Duration = Duration::from_secs(20);
const SECRET: &str = "test-webhook-secret_0123456789";

/// A bot host in webhook mode: its listener passed as cryptobot.socket passes it (the same one to
/// every process), the public URL pointing at it, the secret in a mode-600 file.
struct WebhookHost {
    host: Host,
    listener: PassedListener,
    addr: String,
    env: Vec<(String, String)>,
}

impl WebhookHost {
    fn new(token: &str, api: &FakeBotApi) -> Self {
        let host = Host::new(token, &api.url());
        let listener = PassedListener::new();
        let addr = listener.addr.clone();
        let secret_file = host.dir.path().join("webhook_secret");
        std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let env = vec![
            ("CRYPTOBOT_MODE".to_owned(), "webhook".to_owned()),
            ("CRYPTOBOT_WEBHOOK_URL".to_owned(), format!("http://{addr}")),
            (
                "CRYPTOBOT_WEBHOOK_SECRET_FILE".to_owned(),
                secret_file.display().to_string(),
            ),
        ];
        Self {
            host,
            listener,
            addr,
            env,
        }
    }

    fn spawn(&self, notify: &NotifySocket) -> BotProcess {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.host.spawn_run_on(&self.listener, Some(notify), &env)
    }

    fn path(&self) -> String {
        let secret = cryptobot::config::WebhookSecret::parse(SECRET).unwrap();
        format!(
            "{}{}",
            cryptobot::webhook::PATH_PREFIX,
            cryptobot::webhook::path_secret(&secret)
        )
    }
}

fn webhook_info(api: &FakeBotApi, token: &str) -> serde_json::Value {
    let (status, body) = http_post_json(&api.url(), &format!("/bot{token}/getWebhookInfo"), "{}");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["result"].clone()
}

/// One POST with the given headers and raw body; the status. A server may answer (413) and close
/// before the whole body is written: the write error is then ignored and the answer read.
fn post_raw(addr: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> u16 {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the bot");
    stream.set_read_timeout(Some(T)).unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body));
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(&response)))
}

#[test]
fn webhook_mode_sets_its_webhook_and_answers_what_telegram_posts() {
    let api = FakeBotApi::start();
    let token = random_token();
    let id = api.add_bot(&token, "webhook_bot");
    let wh = WebhookHost::new(&token, &api);
    let notify = NotifySocket::new();
    let mut bot = wh.spawn(&notify);
    let ready = notify.wait_for("READY=1", T);
    assert!(
        ready.iter().any(|n| n.text.contains("STATUS=webhook")),
        "{ready:?}"
    );

    let info = webhook_info(&api, &token);
    assert_eq!(
        info["url"],
        format!("http://{}{}", wh.addr, wh.path()),
        "{info}"
    );
    assert_eq!(info["max_connections"], 1, "{info}");
    for chat in 1..=5 {
        api.inject_message(id, chat, "/ping");
    }
    api.wait_until(id, |_| api.sent(id).len() >= 5, T).unwrap();
    let stats = api.stats(id);
    assert!(
        stats.deliveries.values().all(|n| *n == 1),
        "an update was delivered twice: {:?}",
        stats.deliveries
    );
    assert_eq!(stats.get_updates_calls, 0, "webhook mode must not poll");
    let (status, health) = http_get(&wh.addr, "/healthz");
    assert_eq!(status, 200, "{health}");

    bot.signal(Signal::SIGTERM);
    assert_eq!(bot.wait_exit(T).code(), Some(0), "{}", bot.stderr());
    let stderr = bot.stderr();
    assert!(!stderr.contains(SECRET), "the secret leaked:\n{stderr}");
    assert!(
        !stderr.contains(&wh.path()),
        "the path secret leaked:\n{stderr}"
    );
    assert_no_token(&token, &[&stderr]);
    assert_eq!(api.sent(id).len(), 5);
}

#[test]
fn requests_that_are_not_telegrams_are_refused_and_reach_nothing() {
    let api = FakeBotApi::start();
    let token = random_token();
    let id = api.add_bot(&token, "webhook_bot");
    let wh = WebhookHost::new(&token, &api);
    let notify = NotifySocket::new();
    let mut bot = wh.spawn(&notify);
    notify.wait_for("READY=1", T);
    // Chat 77 exists for the fake once it wrote to the bot (delivered by the fake's webhook sender).
    api.inject_message(id, 77, "/help");
    api.wait_for_sent(id, |m| m.chat_id == 77, T).unwrap();

    let update = r#"{"update_id":900,"message":{"message_id":1,"date":0,"chat":{"id":77,"type":"private","first_name":"m"},"from":{"id":77,"is_bot":false,"first_name":"m"},"text":"/ping"}}"#;
    let path = wh.path();
    let good = [("X-Telegram-Bot-Api-Secret-Token", SECRET)];
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], Vec<u8>, u16);
    let cases: [Case; 6] = [
        ("wrong path", "/telegram/0000", &good, update.into(), 404),
        ("no secret", &path, &[], update.into(), 401),
        (
            "wrong secret",
            &path,
            &[("X-Telegram-Bot-Api-Secret-Token", "guess")],
            update.into(),
            401,
        ),
        (
            "malformed JSON",
            &path,
            &good,
            b"{\"update_id\":".to_vec(),
            400,
        ),
        (
            "not UTF-8",
            &path,
            &good,
            b"{\"update_id\":1,\"x\":\"\xff\"}".to_vec(),
            400,
        ),
        ("2 MB body", &path, &good, vec![b' '; 2 << 20], 413),
    ];
    for (what, path, headers, body, expected) in cases {
        assert_eq!(post_raw(&wh.addr, path, headers, &body), expected, "{what}");
    }
    // An update from Telegram that does not decode (a lone surrogate) is accepted and skipped by id:
    // a 400 would make Telegram send it again for ever.
    let undecodable = update
        .replace("900", "899")
        .replace("/ping", "/ping \\udc80");
    assert_eq!(
        post_raw(&wh.addr, &path, &good, undecodable.as_bytes()),
        200
    );
    // Still serving: the right request is handled (and a repeat of it is a duplicate, answered 200).
    assert_eq!(post_raw(&wh.addr, &path, &good, update.as_bytes()), 200);
    assert_eq!(post_raw(&wh.addr, &path, &good, update.as_bytes()), 200);
    api.wait_for_sent(id, |m| m.chat_id == 77 && m.text == "pong", T)
        .unwrap();
    let (status, metrics) = http_get(&wh.addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("webhook_unauthorized") && metrics.contains("webhook_malformed"),
        "{metrics}"
    );

    bot.signal(Signal::SIGTERM);
    assert_eq!(bot.wait_exit(T).code(), Some(0), "{}", bot.stderr());
    let stderr = bot.stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains(SECRET), "the secret leaked:\n{stderr}");
    assert_eq!(
        api.sent(id).iter().filter(|m| m.chat_id == 77).count(),
        2,
        "the repeated update was answered twice"
    );
}

#[test]
fn a_restart_in_webhook_mode_loses_and_repeats_nothing() {
    let api = FakeBotApi::start();
    let token = random_token();
    let id = api.add_bot(&token, "webhook_bot");
    let wh = WebhookHost::new(&token, &api);

    let notify = NotifySocket::new();
    let mut first = wh.spawn(&notify);
    notify.wait_for("READY=1", T);
    for chat in 1..=3 {
        api.inject_message(id, chat, "/ping");
    }
    api.wait_until(id, |_| api.sent(id).len() >= 3, T).unwrap();
    first.signal(Signal::SIGTERM);
    assert_eq!(first.wait_exit(T).code(), Some(0), "{}", first.stderr());

    // While no process serves (the port refuses: no socket unit holds the connections), Telegram
    // keeps the updates and retries them on its schedule (at once, then after 2 s, 4 s, ...).
    let refusing = wh.listener.refuse_connections();
    for chat in 4..=6 {
        api.inject_message(id, chat, "/ping");
    }
    api.wait_until(
        id,
        |_| webhook_info(&api, &token)["last_error_message"].is_string(),
        T,
    )
    .expect("Telegram never found the webhook refusing");
    drop(refusing);
    let notify2 = NotifySocket::new();
    let mut second = wh.spawn(&notify2);
    notify2.wait_for("READY=1", T);
    api.wait_until(id, |_| api.sent(id).len() >= 6, T).unwrap();
    second.signal(Signal::SIGTERM);
    assert_eq!(second.wait_exit(T).code(), Some(0), "{}", second.stderr());

    let mut chats: Vec<i64> = api.sent(id).iter().map(|m| m.chat_id).collect();
    chats.sort_unstable();
    assert_eq!(
        chats,
        vec![1, 2, 3, 4, 5, 6],
        "each update answered exactly once"
    );
}

#[test]
fn going_back_to_polling_deletes_the_webhook_this_bot_set() {
    let api = FakeBotApi::start();
    let token = random_token();
    let id = api.add_bot(&token, "webhook_bot");
    let wh = WebhookHost::new(&token, &api);
    let notify = NotifySocket::new();
    let mut hooked = wh.spawn(&notify);
    notify.wait_for("READY=1", T);
    hooked.signal(Signal::SIGTERM);
    assert_eq!(hooked.wait_exit(T).code(), Some(0), "{}", hooked.stderr());
    assert_ne!(webhook_info(&api, &token)["url"], "");

    // Same host and state, polling mode (the default).
    let notify2 = NotifySocket::new();
    let mut polling = wh.host.spawn_run(Some(&notify2), &[]);
    notify2.wait_for("READY=1", T);
    assert_eq!(webhook_info(&api, &token)["url"], "");
    api.inject_message(id, 9, "/ping");
    api.wait_for_sent(id, |m| m.chat_id == 9, T).unwrap();
    polling.signal(Signal::SIGTERM);
    assert_eq!(polling.wait_exit(T).code(), Some(0));
    assert!(
        polling.stderr().contains("back to polling"),
        "{}",
        polling.stderr()
    );
}

#[test]
fn webhook_mode_without_a_listener_or_a_public_url_is_a_config_error() {
    let api = FakeBotApi::start();
    let token = random_token();
    api.add_bot(&token, "webhook_bot");
    let host = Host::new(&token, &api.url());

    let mut cmd = host.command(&["run"]);
    cmd.env("CRYPTOBOT_MODE", "webhook")
        .env("CRYPTOBOT_WEBHOOK_URL", "https://bot.example.com");
    let (status, _, stderr) = support::run_command_to_end(cmd, T);
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("cryptobot.socket"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let mut cmd = host.command(&["run"]);
    cmd.env("CRYPTOBOT_MODE", "webhook");
    let (status, _, stderr) = support::run_command_to_end(cmd, T);
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("public_url"), "{stderr}");

    let mut cmd = host.command(&["run"]);
    cmd.env("CRYPTOBOT_MODE", "hooks");
    let (status, _, stderr) = support::run_command_to_end(cmd, T);
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("CRYPTOBOT_MODE"), "{stderr}");
}

#[test]
fn an_idle_webhook_bot_keeps_feeding_the_watchdog() {
    let api = FakeBotApi::start();
    let token = random_token();
    api.add_bot(&token, "webhook_bot");
    let wh = WebhookHost::new(&token, &api);
    let notify = NotifySocket::new();
    let mut env: Vec<(&str, &str)> = wh
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.push(("WATCHDOG_USEC", "4000000"));
    let mut bot = wh.host.spawn_run_on(&wh.listener, Some(&notify), &env);
    notify.wait_for("READY=1", T);
    // No update arrives: the keeper of the webhook route alone must feed a 4 s watchdog, beyond the
    // 4 s that the start-up's own beat would cover (the supervisor sends one a second while live).
    let seen = notify.collect_for(Duration::from_secs(10));
    let beats = seen
        .iter()
        .filter(|n| n.text.contains("WATCHDOG=1"))
        .count();
    assert!(
        beats >= 8,
        "{beats} WATCHDOG=1 in 10 s with WatchdogSec=4: {seen:?}"
    );
    bot.signal(Signal::SIGTERM);
    assert_eq!(bot.wait_exit(T).code(), Some(0), "{}", bot.stderr());
}
