//! The HTTP control API (what the systemd e2e drives the binary with), round trip.

mod support;

use std::time::Duration;

use fake_bot_api::{FakeBotApi, SentMessage, Stats};
use serde_json::json;
use support::{BOT_ID, TOKEN, call, get, post_json, request, result, update_ids};

#[test]
fn control_api_round_trip() {
    let api = FakeBotApi::start();
    let addr = api.addr();

    let added = post_json(
        addr,
        "/control/bots",
        &json!({"token": TOKEN, "username": "ctl_bot"}),
    );
    assert_eq!(added.status, 200, "{}", added.text());
    assert_eq!(added.json(), json!({"bot_id": BOT_ID}));
    assert_eq!(
        result(addr, TOKEN, "getMe", &json!({}))["username"],
        "ctl_bot"
    );

    let injected = post_json(
        addr,
        &format!("/control/bots/{BOT_ID}/messages"),
        &json!({"chat_id": 42, "text": "/ping"}),
    );
    assert_eq!(injected.json(), json!({"update_id": 1}));
    let raw = json!({"message": {"message_id": 99, "date": 1, "chat": {"id": 43, "type": "private", "first_name": "A"},
                                 "from": {"id": 43, "is_bot": false, "first_name": "A"}, "text": "raw"}});
    let injected = post_json(addr, &format!("/control/bots/{BOT_ID}/updates"), &raw);
    assert_eq!(injected.json(), json!({"update_id": 2}));

    let updates = result(addr, TOKEN, "getUpdates", &json!({}));
    assert_eq!(update_ids(&updates), [1, 2]);
    assert_eq!(updates[1]["message"]["text"], "raw");
    result(
        addr,
        TOKEN,
        "sendMessage",
        &json!({"chat_id": 43, "text": "pong"}),
    );

    let sent: Vec<SentMessage> =
        serde_json::from_value(get(addr, &format!("/control/bots/{BOT_ID}/sent")).json()).unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].chat_id, sent[0].text.as_str()), (43, "pong"));
    let sent_json = get(addr, &format!("/control/bots/{BOT_ID}/sent")).json();
    assert!(sent_json[0]["at_ms"].as_u64().unwrap() > 1_600_000_000_000);

    let stats: Stats =
        serde_json::from_value(get(addr, &format!("/control/bots/{BOT_ID}/stats")).json()).unwrap();
    assert_eq!(stats, api.stats(BOT_ID));
    assert_eq!(
        (
            stats.get_updates_calls,
            stats.send_message_calls,
            stats.pending_updates
        ),
        (1, 1, 2)
    );
    assert_eq!(stats.deliveries.get(&1), Some(&1));

    let fault =
        json!({"method": "getUpdates", "kind": "too_many_requests", "count": 2, "retry_after": 3});
    assert_eq!(
        post_json(addr, &format!("/control/bots/{BOT_ID}/faults"), &fault).status,
        200
    );
    for _ in 0..2 {
        let response = call(addr, TOKEN, "getUpdates", &json!({}));
        assert_eq!(response.json()["parameters"]["retry_after"], 3);
    }
    assert_eq!(call(addr, TOKEN, "getUpdates", &json!({})).status, 200);

    assert_eq!(
        post_json(addr, "/control/rate-limits", &json!({"enabled": true})).status,
        200
    );
    let statuses: Vec<u16> = (0..8)
        .map(|_| {
            call(
                addr,
                TOKEN,
                "sendMessage",
                &json!({"chat_id": 43, "text": "x"}),
            )
            .status
        })
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");

    let blocked = post_json(
        addr,
        &format!("/control/bots/{BOT_ID}/blocked"),
        &json!({"chat_id": 42}),
    );
    assert_eq!(blocked.status, 200);
    assert_eq!(
        call(
            addr,
            TOKEN,
            "sendMessage",
            &json!({"chat_id": 42, "text": "x"})
        )
        .status,
        403
    );

    api.wait_for_sent(BOT_ID, |m| m.text == "pong", Duration::from_secs(1))
        .unwrap();
}

#[test]
fn control_errors_are_json_with_a_reason() {
    let api = FakeBotApi::start();
    let addr = api.addr();
    let bad_token = post_json(addr, "/control/bots", &json!({"token": "not-a-token"}));
    assert_eq!(bad_token.status, 400);
    assert!(
        bad_token.json()["error"]
            .as_str()
            .unwrap()
            .contains("invalid bot token")
    );
    let unknown = get(addr, "/control/bots/77/stats");
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.json()["error"]
            .as_str()
            .unwrap()
            .contains("no bot with id 77")
    );
    post_json(addr, "/control/bots", &json!({"token": TOKEN}));
    let kind = post_json(
        addr,
        &format!("/control/bots/{BOT_ID}/faults"),
        &json!({"method": "getMe", "kind": "boom"}),
    );
    assert_eq!(kind.status, 400);
    let method = post_json(
        addr,
        &format!("/control/bots/{BOT_ID}/faults"),
        &json!({"method": "sendPhoto", "kind": "hang"}),
    );
    assert_eq!(method.status, 400);
    let not_json = support::request(addr, "POST", "/control/rate-limits", None, b"yes please");
    assert_eq!(not_json.status, 400);
}

#[test]
fn waits_time_out_with_what_they_last_saw() {
    let api = FakeBotApi::start();
    api.add_bot(TOKEN, "");
    api.inject_message(BOT_ID, 42, "hi");
    result(
        api.addr(),
        TOKEN,
        "sendMessage",
        &json!({"chat_id": 42, "text": "not it"}),
    );
    let error = api
        .wait_for_sent(BOT_ID, |m| m.text == "it", Duration::from_millis(50))
        .unwrap_err();
    assert!(
        error.contains("timed out") && error.contains("not it"),
        "{error}"
    );
    let error = api
        .wait_until(BOT_ID, |s| s.conflicts_409 > 0, Duration::from_millis(50))
        .unwrap_err();
    assert!(error.contains("send_message_calls: 1"), "{error}");
    let error = api
        .wait_until(5, |_| true, Duration::from_millis(50))
        .unwrap_err();
    assert!(error.contains("no bot with id 5"), "{error}");
}

#[test]
fn update_text_is_delivered_verbatim_even_when_no_value_can_hold_it() {
    let api = FakeBotApi::start();
    let addr = api.addr();
    api.add_bot(TOKEN, "raw_bot");
    let lone = r#"{"message": {"message_id": 1, "date": 1, "chat": {"id": 5, "type": "private", "first_name": "A"}, "text": "\udc80"}}"#;
    assert_eq!(api.inject_update_text(BOT_ID, lone), 1);
    let path = format!("/control/bots/{BOT_ID}/updates/raw");
    let raw = |body: &str| {
        request(
            addr,
            "POST",
            &path,
            Some("application/json"),
            body.as_bytes(),
        )
    };
    assert_eq!(
        raw(r#" { "poll": {"total_voter_count": 1e400} } "#).json(),
        json!({"update_id": 2})
    );
    assert_eq!(raw("{}").json(), json!({"update_id": 3}));
    for refused in ["not json", "[1]", r#"{"a": 1} {"b": 2}"#, r#"{"a": "#] {
        let answer = raw(refused);
        assert_eq!(answer.status, 400, "{refused}: {}", answer.text());
        assert!(
            answer.json()["error"]
                .as_str()
                .unwrap()
                .contains("one JSON object")
        );
    }

    let answer = call(addr, TOKEN, "getUpdates", &json!({})).text();
    assert!(
        answer.contains(r#"{"update_id":1,"message": {"message_id": 1, "date": 1,"#),
        "{answer}"
    );
    assert!(answer.contains(r#""text": "\udc80"}}"#), "{answer}");
    assert!(
        answer.contains(r#"{"update_id":2, "poll": {"total_voter_count": 1e400} }"#),
        "{answer}"
    );
    assert!(answer.contains(r#"{"update_id":3}"#), "{answer}");
    // Delivered and confirmed like any update; the allowed_updates filter reads its kind.
    let stats = api.stats(BOT_ID);
    assert_eq!(stats.deliveries.len(), 3, "{stats:?}");
    let empty = call(
        addr,
        TOKEN,
        "getUpdates",
        &json!({"offset": 4, "allowed_updates": ["message"]}),
    );
    assert_eq!(empty.json()["result"], json!([]));
    assert_eq!(api.stats(BOT_ID).pending_updates, 0);
}
