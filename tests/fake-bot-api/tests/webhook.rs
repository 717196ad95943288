//! Webhook delivery: pending updates are POSTed to the webhook with the secret header, confirmed
//! on 2xx and retried otherwise.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use fake_bot_api::FakeBotApi;
use serde_json::{Value, json};
use support::{BOT_ID, TOKEN, result};

const WAIT: Duration = Duration::from_secs(10);

/// One POST the webhook received.
struct Delivery {
    request_line: String,
    secret: Option<String>,
    body: Value,
}

/// A webhook receiver on its own thread, answering the given statuses in turn.
fn webhook_receiver(statuses: Vec<u16>) -> (SocketAddr, mpsc::Receiver<Delivery>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for status in statuses {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let (mut length, mut secret) = (0, None);
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap(),
                    "x-telegram-bot-api-secret-token" => secret = Some(value.trim().to_owned()),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let answer =
                format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            reader.get_mut().write_all(answer.as_bytes()).unwrap();
            let body = serde_json::from_slice(&body).unwrap();
            let request_line = request_line.trim_end().to_owned();
            if tx
                .send(Delivery {
                    request_line,
                    secret,
                    body,
                })
                .is_err()
            {
                return;
            }
        }
    });
    (addr, rx)
}

#[test]
fn updates_are_posted_with_the_secret_and_retried_until_2xx() {
    let api = FakeBotApi::start();
    api.add_bot(TOKEN, "hook_bot");
    let (hook, deliveries) = webhook_receiver(vec![500, 200]);
    let url = format!("http://{hook}/tg/hook");
    result(
        api.addr(),
        TOKEN,
        "setWebhook",
        &json!({"url": url, "secret_token": "s3cret"}),
    );
    let id = api.inject_message(BOT_ID, 42, "/ping");

    let first = deliveries
        .recv_timeout(WAIT)
        .expect("the update was not POSTed");
    assert_eq!(first.request_line, "POST /tg/hook HTTP/1.1");
    assert_eq!(first.secret.as_deref(), Some("s3cret"));
    assert_eq!(first.body["update_id"], id);
    assert_eq!(first.body["message"]["text"], "/ping");
    let second = deliveries
        .recv_timeout(WAIT)
        .expect("a refused update was not retried");
    assert_eq!(second.body["update_id"], id);

    let stats = api
        .wait_until(BOT_ID, |s| s.pending_updates == 0, WAIT)
        .expect("a 200 did not confirm the update");
    assert_eq!(stats.deliveries.get(&id), Some(&2));
    let info = result(api.addr(), TOKEN, "getWebhookInfo", &json!({}));
    assert_eq!(info["url"], url);
    assert_eq!(info["pending_update_count"], 0);
    assert!(
        info["last_error_message"].as_str().unwrap().contains("500"),
        "{info}"
    );
}

#[test]
fn deleting_the_webhook_stops_delivery_and_polling_works_again() {
    let api = FakeBotApi::start();
    api.add_bot(TOKEN, "hook_bot");
    let (hook, deliveries) = webhook_receiver(vec![200]);
    result(
        api.addr(),
        TOKEN,
        "setWebhook",
        &json!({"url": format!("http://{hook}/")}),
    );
    let first = api.inject_message(BOT_ID, 42, "one");
    assert_eq!(
        deliveries.recv_timeout(WAIT).unwrap().body["update_id"],
        first
    );
    api.wait_until(BOT_ID, |s| s.pending_updates == 0, WAIT)
        .unwrap();

    result(api.addr(), TOKEN, "deleteWebhook", &json!({}));
    let second = api.inject_message(BOT_ID, 42, "two");
    let updates = result(api.addr(), TOKEN, "getUpdates", &json!({}));
    assert_eq!(support::update_ids(&updates), [second]);
}

#[test]
fn set_webhook_ends_a_pending_long_poll_and_an_unchanged_one_is_already_set() {
    let api = FakeBotApi::start();
    api.add_bot(TOKEN, "hook_bot");
    let addr = api.addr();
    let (tx, poll) = mpsc::channel();
    thread::spawn(move || {
        let response = support::call(addr, TOKEN, "getUpdates", &json!({"timeout": 25}));
        let _ = tx.send((response.status, response.json()));
    });
    api.wait_until(BOT_ID, |s| s.active_polls == 1, WAIT)
        .unwrap();
    let hook = json!({"url": "https://example.invalid/hook"});
    let set = support::call(addr, TOKEN, "setWebhook", &hook).json();
    assert_eq!(set["description"], "Webhook was set");
    let (status, body) = poll
        .recv_timeout(WAIT)
        .expect("the pending poll was not ended");
    assert_eq!(status, 409);
    assert_eq!(
        body["description"],
        "Conflict: terminated by setWebhook request"
    );
    assert_eq!(api.stats(BOT_ID).webhook_conflicts_409, 1);

    // The same again, as a client does it: at most one setWebhook a second, so a 429 is waited out
    // for its retry_after (1 s) first.
    let deadline = Instant::now() + WAIT;
    let again = loop {
        let response = support::call(addr, TOKEN, "setWebhook", &hook);
        if response.status != 429 {
            break response.json();
        }
        assert!(
            Instant::now() < deadline,
            "setWebhook still 429 after {WAIT:?}"
        );
        let retry_after = response.json()["parameters"]["retry_after"]
            .as_u64()
            .unwrap();
        thread::sleep(Duration::from_secs(retry_after)); // what the 429 asks for, not a synchronisation
    };
    assert_eq!(again["description"], "Webhook is already set");
}

#[test]
fn set_webhook_is_limited_to_one_per_second_with_or_without_the_send_limits() {
    let api = FakeBotApi::start();
    api.add_bot(TOKEN, "hook_bot");
    result(
        api.addr(),
        TOKEN,
        "setWebhook",
        &json!({"url": "https://example.invalid/a"}),
    );
    let response = support::call(
        api.addr(),
        TOKEN,
        "setWebhook",
        &json!({"url": "https://example.invalid/b"}),
    );
    assert_eq!(response.status, 429);
    assert_eq!(response.json()["parameters"]["retry_after"], 1);
}

/// Telegram's schedule (telegram-bot-api, `WebhookActor::on_update_error`): a refused update is
/// tried again at once, then after 2 s, 4 s, ... up to 60 s, and given up when the next attempt
/// would come after the update's lifetime (a day; 5 s here).
#[test]
fn a_refused_update_is_retried_on_telegrams_schedule_and_dropped_when_its_day_is_over() {
    let api = FakeBotApi::start();
    api.add_bot(TOKEN, "hook_bot");
    api.set_update_lifetime(BOT_ID, Duration::from_secs(5));
    let (hook, deliveries) = webhook_receiver(vec![500, 500, 500, 500]);
    result(
        api.addr(),
        TOKEN,
        "setWebhook",
        &json!({"url": format!("http://{hook}/")}),
    );
    let id = api.inject_message(BOT_ID, 42, "/ping");
    let mut at = Vec::new();
    for _ in 0..3 {
        let delivery = deliveries.recv_timeout(WAIT).expect("no retry");
        assert_eq!(delivery.body["update_id"], id);
        at.push(Instant::now());
    }
    assert!(
        at[1] - at[0] < Duration::from_secs(1),
        "the first retry waited {:?}",
        at[1] - at[0]
    );
    assert!(
        at[2] - at[1] >= Duration::from_millis(1900),
        "the second retry came after {:?}, not 2 s",
        at[2] - at[1]
    );
    // The next attempt would be 4 s later, past the 5 s lifetime: given up.
    let stats = api
        .wait_until(BOT_ID, |s| s.expired_updates == 1, WAIT)
        .expect("the update was not given up");
    assert_eq!(stats.pending_updates, 0);
    assert!(
        deliveries.recv_timeout(Duration::from_secs(5)).is_err(),
        "an update given up was delivered again"
    );
}

#[test]
fn an_update_nobody_fetched_within_its_lifetime_is_dropped_for_get_updates_too() {
    let api = FakeBotApi::start();
    api.add_bot(TOKEN, "poll_bot");
    api.set_update_lifetime(BOT_ID, Duration::from_millis(300));
    let old = api.inject_message(BOT_ID, 42, "old");
    api.wait_until(BOT_ID, |s| s.pending_updates == 0, WAIT)
        .expect("the update did not expire");
    api.set_update_lifetime(BOT_ID, fake_bot_api::UPDATE_LIFETIME);
    let new = api.inject_message(BOT_ID, 42, "new");
    let updates = result(api.addr(), TOKEN, "getUpdates", &json!({}));
    assert_eq!(
        support::update_ids(&updates),
        [new],
        "{old} was not dropped"
    );
    assert_eq!(api.stats(BOT_ID).expired_updates, 1);
}
