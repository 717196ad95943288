//! Telegram's sending limits, when switched on: 429 "Too Many Requests: retry after N".

mod support;

use fake_bot_api::FakeBotApi;
use serde_json::json;
use support::{BOT_ID, TOKEN, call};

fn api_with_bot() -> FakeBotApi {
    let api = FakeBotApi::start();
    api.add_bot(TOKEN, "cryptotest_bot");
    api
}

fn send(api: &FakeBotApi, chat_id: i64) -> (u16, serde_json::Value) {
    let response = call(
        api.addr(),
        TOKEN,
        "sendMessage",
        &json!({"chat_id": chat_id, "text": "alert"}),
    );
    (response.status, response.json())
}

#[test]
fn rate_limits_are_off_by_default() {
    let api = api_with_bot();
    api.inject_message(BOT_ID, 42, "hi");
    for _ in 0..10 {
        assert_eq!(send(&api, 42).0, 200);
    }
    assert_eq!(api.stats(BOT_ID).rate_limited_429, 0);
}

#[test]
fn one_chat_gets_a_short_burst_then_429_with_retry_after() {
    let api = api_with_bot();
    api.inject_message(BOT_ID, 42, "hi");
    api.set_rate_limits(true);
    for i in 0..3 {
        assert_eq!(send(&api, 42).0, 200, "message {i} of the burst");
    }
    // The bucket refills at 1/s: sent back to back, one of the next few must be refused.
    let refused = (0..5)
        .map(|_| send(&api, 42))
        .find(|(status, _)| *status == 429)
        .expect("no 429 after a burst of 8 messages to one chat");
    let body = refused.1;
    let retry_after = body["parameters"]["retry_after"]
        .as_u64()
        .expect("parameters.retry_after");
    assert!(retry_after >= 1);
    assert_eq!(body["error_code"], 429);
    assert_eq!(
        body["description"],
        format!("Too Many Requests: retry after {retry_after}")
    );
    let stats = api.stats(BOT_ID);
    assert!(stats.rate_limited_429 >= 1);
    assert_eq!(
        api.sent(BOT_ID).len() as u64,
        stats.send_message_calls - stats.rate_limited_429
    );
}

#[test]
fn all_chats_together_get_about_thirty_per_second() {
    let api = api_with_bot();
    let chats: Vec<i64> = (1..=25).collect();
    for &chat in &chats {
        api.inject_message(BOT_ID, chat, "hi");
    }
    api.set_rate_limits(true);
    // 30 go through at once (each chat stays within its own burst of 3); then the overall bucket,
    // refilled at 30/s, must refuse some of the next 45 sent back to back.
    let statuses: Vec<u16> = chats
        .iter()
        .cycle()
        .take(75)
        .map(|&chat| send(&api, chat).0)
        .collect();
    assert!(statuses[..30].iter().all(|&s| s == 200), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(
        api.stats(BOT_ID).rate_limited_429,
        statuses.iter().filter(|&&s| s == 429).count() as u64
    );
}

#[test]
fn switching_limits_off_lets_everything_through_again() {
    let api = api_with_bot();
    api.inject_message(BOT_ID, 42, "hi");
    api.set_rate_limits(true);
    let refused = (0..10).any(|_| send(&api, 42).0 == 429);
    assert!(
        refused,
        "10 messages to one chat back to back were all accepted"
    );
    api.set_rate_limits(false);
    assert_eq!(send(&api, 42).0, 200);
}
