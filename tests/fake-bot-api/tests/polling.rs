//! getUpdates: offsets, long polling, and the 409 between two pollers.

mod support;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use fake_bot_api::FakeBotApi;
use serde_json::{Value, json};
use support::{BOT_ID, TOKEN, call, result, update_ids};

const WAIT: Duration = Duration::from_secs(10);

fn api_with_bot() -> FakeBotApi {
    let api = FakeBotApi::start();
    api.add_bot(TOKEN, "cryptotest_bot");
    api
}

fn get_updates(api: &FakeBotApi, params: Value) -> Vec<i64> {
    update_ids(&result(api.addr(), TOKEN, "getUpdates", &params))
}

/// Starts a getUpdates on its own thread; the receiver gets (status, body).
fn poll_in_background(addr: SocketAddr, params: Value) -> mpsc::Receiver<(u16, Value)> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let response = call(addr, TOKEN, "getUpdates", &params);
        let _ = tx.send((response.status, response.json()));
    });
    rx
}

#[test]
fn offset_confirms_earlier_updates_for_ever() {
    let api = api_with_bot();
    let ids: Vec<i64> = ["a", "b", "c"]
        .iter()
        .map(|t| api.inject_message(BOT_ID, 42, t))
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(
        get_updates(&api, json!({})),
        [1, 2, 3],
        "nothing confirmed yet"
    );
    assert_eq!(get_updates(&api, json!({"offset": 2})), [2, 3]);
    let stats = api.stats(BOT_ID);
    assert_eq!(stats.confirmed_offset, 2);
    assert_eq!(stats.pending_updates, 2);
    assert_eq!(
        stats.deliveries.into_iter().collect::<Vec<_>>(),
        [(1, 1), (2, 2), (3, 2)]
    );

    assert_eq!(get_updates(&api, json!({"offset": 4})), Vec::<i64>::new());
    assert_eq!(
        get_updates(&api, json!({})),
        Vec::<i64>::new(),
        "confirmed updates never come back"
    );
    assert_eq!(get_updates(&api, json!({"offset": 1})), Vec::<i64>::new());
    let stats = api.stats(BOT_ID);
    assert_eq!(
        (
            stats.confirmed_offset,
            stats.pending_updates,
            stats.get_updates_calls
        ),
        (4, 0, 5)
    );
}

#[test]
fn negative_offset_keeps_only_the_last_updates() {
    let api = api_with_bot();
    for text in ["1", "2", "3", "4", "5"] {
        api.inject_message(BOT_ID, 42, text);
    }
    assert_eq!(get_updates(&api, json!({"offset": -2})), [4, 5]);
    assert_eq!(
        get_updates(&api, json!({})),
        [4, 5],
        "the earlier ones are forgotten"
    );
    assert_eq!(api.stats(BOT_ID).confirmed_offset, 4);
    assert_eq!(
        get_updates(&api, json!({"offset": -10})),
        [4, 5],
        "fewer than asked: nothing dropped"
    );
}

#[test]
fn limit_caps_the_batch_and_numbers_may_be_strings() {
    let api = api_with_bot();
    for text in ["1", "2", "3"] {
        api.inject_message(BOT_ID, 42, text);
    }
    assert_eq!(get_updates(&api, json!({"limit": 2})), [1, 2]);
    assert_eq!(
        get_updates(&api, json!({"offset": "3", "limit": "1", "timeout": "0"})),
        [3]
    );
}

#[test]
fn message_updates_carry_a_bot_command_entity() {
    let api = api_with_bot();
    api.inject_message(BOT_ID, 42, "/price btc");
    let updates = result(api.addr(), TOKEN, "getUpdates", &json!({}));
    let message = &updates[0]["message"];
    assert_eq!(message["text"], "/price btc");
    assert_eq!(
        message["chat"],
        json!({"id": 42, "type": "private", "first_name": "Test", "last_name": "User42"})
    );
    assert_eq!(message["from"]["id"], 42);
    assert_eq!(message["from"]["is_bot"], false);
    assert_eq!(
        message["entities"],
        json!([{"type": "bot_command", "offset": 0, "length": 6}])
    );
}

#[test]
fn long_poll_returns_as_soon_as_an_update_is_injected() {
    let api = api_with_bot();
    let answer = poll_in_background(api.addr(), json!({"timeout": 25}));
    api.wait_until(BOT_ID, |s| s.active_polls == 1, WAIT)
        .unwrap();
    let injected_at = Instant::now();
    let id = api.inject_message(BOT_ID, 42, "wake up");
    let (status, body) = answer
        .recv_timeout(WAIT)
        .expect("the long poll did not return after an inject");
    assert_eq!(status, 200);
    assert_eq!(update_ids(&body["result"]), [id]);
    assert!(injected_at.elapsed() < WAIT);
    let stats = api
        .wait_until(BOT_ID, |s| s.active_polls == 0, WAIT)
        .unwrap();
    assert_eq!(stats.max_concurrent_polls, 1);
}

#[test]
fn long_poll_without_updates_answers_empty_after_timeout() {
    let api = api_with_bot();
    let started = Instant::now();
    assert_eq!(get_updates(&api, json!({"timeout": 1})), Vec::<i64>::new());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}, before the 1 s timeout"
    );
}

#[test]
fn a_newer_get_updates_answers_the_older_one_409() {
    let api = api_with_bot();
    let older = poll_in_background(api.addr(), json!({"timeout": 25}));
    api.wait_until(BOT_ID, |s| s.active_polls == 1, WAIT)
        .unwrap();
    let newer = poll_in_background(api.addr(), json!({"timeout": 25}));

    let (status, body) = older
        .recv_timeout(WAIT)
        .expect("the older poll was not answered");
    assert_eq!(status, 409);
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 409,
               "description": "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"})
    );
    let stats = api
        .wait_until(
            BOT_ID,
            |s| s.active_polls == 1 && s.conflicts_409 == 1,
            WAIT,
        )
        .unwrap();
    assert_eq!(stats.max_concurrent_polls, 2);

    let id = api.inject_message(BOT_ID, 42, "for the newer poller");
    let (status, body) = newer
        .recv_timeout(WAIT)
        .expect("the newer poll did not get the update");
    assert_eq!(status, 200);
    assert_eq!(update_ids(&body["result"]), [id]);
}

/// As telegram-bot-api's do_get_updates: only a request that will itself wait ends the pending long
/// poll. One with timeout=0 is answered beside it, no 409, and the pending poll goes on (and gets the
/// next update). (So would one with an update to take, but a pending poll takes any update at once.)
#[test]
fn a_get_updates_that_does_not_wait_leaves_the_pending_poll_alone() {
    let api = api_with_bot();
    let pending = poll_in_background(api.addr(), json!({"timeout": 25}));
    api.wait_until(BOT_ID, |s| s.active_polls == 1, WAIT)
        .unwrap();
    // (Another offset than the pending poll's: a repeated one within 3 s would be made to wait.)
    assert_eq!(
        get_updates(&api, json!({"offset": 1, "timeout": 0})),
        Vec::<i64>::new()
    );
    let stats = api.stats(BOT_ID);
    assert_eq!(
        (stats.conflicts_409, stats.active_polls),
        (0, 1),
        "{stats:?}"
    );
    let id = api.inject_message(BOT_ID, 42, "for the pending poll");
    let (status, body) = pending.recv_timeout(WAIT).expect("pending poll answered");
    assert_eq!((status, update_ids(&body["result"])), (200, vec![id]));
}

/// As telegram-bot-api's fail_query_conflict: one 409 ending a long poll is answered at once; the
/// next within 3 s is held 3 s first.
#[test]
fn a_second_409_within_three_seconds_is_held_three_seconds() {
    let api = api_with_bot();
    let first = poll_in_background(api.addr(), json!({"timeout": 25}));
    api.wait_until(BOT_ID, |s| s.active_polls == 1, WAIT)
        .unwrap();
    let second = poll_in_background(api.addr(), json!({"timeout": 25}));
    let (status, _) = first.recv_timeout(WAIT).expect("first 409");
    assert_eq!(status, 409);
    api.wait_until(
        BOT_ID,
        |s| s.conflicts_409 == 1 && s.active_polls == 1,
        WAIT,
    )
    .unwrap();
    let started = Instant::now();
    let _third = poll_in_background(api.addr(), json!({"timeout": 25}));
    let (status, _) = second.recv_timeout(WAIT).expect("second 409");
    let held = started.elapsed();
    assert_eq!(status, 409);
    assert!(
        held >= Duration::from_millis(2900),
        "the second 409 came after {held:?}, not held 3 s"
    );
}

#[test]
fn a_single_poller_never_has_two_polls_in_flight() {
    let api = api_with_bot();
    let mut offset = 0;
    for text in ["1", "2", "3"] {
        api.inject_message(BOT_ID, 42, text);
        let ids = get_updates(&api, json!({"offset": offset, "timeout": 5}));
        offset = ids.last().unwrap() + 1;
    }
    let stats = api.stats(BOT_ID);
    assert_eq!(
        (
            stats.max_concurrent_polls,
            stats.conflicts_409,
            stats.active_polls
        ),
        (1, 0, 0)
    );
    assert!(
        stats.deliveries.values().all(|&n| n == 1),
        "{:?}",
        stats.deliveries
    );
}

#[test]
fn a_poll_whose_client_went_away_is_no_longer_in_flight() {
    let api = api_with_bot();
    let mut stream = std::net::TcpStream::connect(api.addr()).unwrap();
    let path = format!("/bot{TOKEN}/getUpdates?timeout=25");
    support::write_request(&mut stream, "GET", &path, None, b"").unwrap();
    api.wait_until(BOT_ID, |s| s.active_polls == 1, WAIT)
        .unwrap();
    drop(stream);
    api.wait_until(BOT_ID, |s| s.active_polls == 0, WAIT)
        .unwrap();
    // So the next poll is not a conflict (another offset: a repeated one would wait 3 s).
    assert_eq!(get_updates(&api, json!({"offset": 1})), Vec::<i64>::new());
    assert_eq!(api.stats(BOT_ID).conflicts_409, 0);
}

#[test]
fn allowed_updates_filters_update_kinds_and_is_remembered() {
    let api = api_with_bot();
    let member = api.inject_raw_update(
        BOT_ID,
        json!({"chat_member": {"chat": {"id": -5, "type": "group", "title": "g"}}}),
    );
    let message = api.inject_message(BOT_ID, 42, "hi");
    assert_eq!(
        get_updates(&api, json!({})),
        [message],
        "chat_member is opt-in, as on Telegram"
    );

    let callback = api.inject_raw_update(BOT_ID, json!({"callback_query": {"id": "1", "from": {"id": 42, "is_bot": false, "first_name": "T"}}}));
    let message2 = api.inject_message(BOT_ID, 42, "again");
    let params = json!({"offset": message + 1, "allowed_updates": ["message"]});
    assert_eq!(get_updates(&api, params), [message2]);
    assert_eq!(
        get_updates(&api, json!({})),
        [message2],
        "the setting is remembered"
    );
    assert!(member < callback);
}

#[test]
fn a_repeated_offset_gets_one_update_and_waits_at_least_three_seconds() {
    // telegram-bot-api: the same offset as the previous call within 0.5 s gets limit 1; within
    // 3 s, a timeout below 3 is raised to 3.
    let api = api_with_bot();
    api.inject_message(BOT_ID, 42, "1");
    api.inject_message(BOT_ID, 42, "2");
    assert_eq!(get_updates(&api, json!({"offset": 1})), [1, 2]);
    assert_eq!(get_updates(&api, json!({"offset": 1})), [1]);

    assert_eq!(
        get_updates(&api, json!({"offset": 3, "timeout": 0})),
        Vec::<i64>::new()
    );
    let started = Instant::now();
    assert_eq!(
        get_updates(&api, json!({"offset": 3, "timeout": 0})),
        Vec::<i64>::new()
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "a repeated offset with timeout 0 answered after {took:?}"
    );
}
