//! Injected faults: each kind, how many calls they hit, and that a faulted call is not processed.

mod support;

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use fake_bot_api::{FakeBotApi, Fault};
use serde_json::json;
use support::{BOT_ID, TOKEN, call, get, try_request, write_request};

const WAIT: Duration = Duration::from_secs(10);

fn api_with_bot() -> FakeBotApi {
    let api = FakeBotApi::start();
    api.add_bot(TOKEN, "cryptotest_bot");
    api
}

fn get_me_path() -> String {
    format!("/bot{TOKEN}/getMe")
}

/// Sends getMe on a raw connection and returns it, the request written.
fn raw_get_me(api: &FakeBotApi) -> TcpStream {
    let mut stream = TcpStream::connect(api.addr()).unwrap();
    write_request(&mut stream, "GET", &get_me_path(), None, b"").unwrap();
    stream
}

#[test]
fn server_error_answers_500_for_the_next_count_calls_only() {
    let api = api_with_bot();
    api.inject_fault(BOT_ID, "getMe", Fault::ServerError, 2);
    for _ in 0..2 {
        let response = get(api.addr(), &get_me_path());
        assert_eq!(response.status, 500);
        let body = response.json();
        assert_eq!(
            (body["ok"].clone(), body["error_code"].clone()),
            (json!(false), json!(500))
        );
        assert!(body["description"].is_string());
    }
    assert_eq!(get(api.addr(), &get_me_path()).status, 200);
}

#[test]
fn garbage_answers_200_with_an_html_body() {
    let api = api_with_bot();
    api.inject_fault(BOT_ID, "getme", Fault::Garbage, 1);
    let response = get(api.addr(), &get_me_path());
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/html"));
    assert_eq!(response.text(), "<html>bad gateway</html>");
    assert_eq!(get(api.addr(), &get_me_path()).json()["ok"], true);
}

#[test]
fn too_many_requests_answers_429_with_retry_after() {
    let api = api_with_bot();
    api.inject_fault(
        BOT_ID,
        "sendMessage",
        Fault::TooManyRequests { retry_after: 7 },
        1,
    );
    let response = call(
        api.addr(),
        TOKEN,
        "sendMessage",
        &json!({"chat_id": 42, "text": "x"}),
    );
    assert_eq!(response.status, 429);
    assert_eq!(
        response.json(),
        json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 7",
               "parameters": {"retry_after": 7}})
    );
    let stats = api.stats(BOT_ID);
    assert_eq!((stats.rate_limited_429, stats.send_message_calls), (1, 1));
}

#[test]
fn reset_closes_the_connection_without_any_response() {
    let api = api_with_bot();
    api.inject_fault(BOT_ID, "getMe", Fault::Reset, 1);
    let mut stream = raw_get_me(&api);
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut received = Vec::new();
    match stream.read_to_end(&mut received) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected EOF or a reset, got {e}"),
    }
    assert!(
        received.is_empty(),
        "got bytes: {:?}",
        String::from_utf8_lossy(&received)
    );
    assert_eq!(
        get(api.addr(), &get_me_path()).status,
        200,
        "only one call was faulted"
    );
}

#[test]
fn hang_never_answers_and_blocks_nothing_else() {
    let api = api_with_bot();
    api.inject_fault(BOT_ID, "getMe", Fault::Hang, 1);
    let mut hung = raw_get_me(&api);
    // Other requests are served while the hung one waits.
    assert_eq!(get(api.addr(), &get_me_path()).status, 200);
    hung.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0_u8; 1];
    match hung.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the hung request got an answer: {other:?}"),
    }
}

#[test]
fn faults_queue_in_order_and_apply_per_method() {
    let api = api_with_bot();
    api.inject_fault(BOT_ID, "getMe", Fault::Garbage, 1);
    api.inject_fault(BOT_ID, "getMe", Fault::ServerError, 1);
    api.inject_fault(BOT_ID, "getUpdates", Fault::ServerError, 1);
    assert_eq!(
        get(api.addr(), &get_me_path()).header("content-type"),
        Some("text/html")
    );
    assert_eq!(get(api.addr(), &get_me_path()).status, 500);
    assert_eq!(get(api.addr(), &get_me_path()).status, 200);
    assert_eq!(
        call(api.addr(), TOKEN, "getUpdates", &json!({})).status,
        500
    );
}

#[test]
fn a_faulted_get_updates_confirms_nothing() {
    let api = api_with_bot();
    api.inject_message(BOT_ID, 42, "one");
    api.inject_message(BOT_ID, 42, "two");
    api.inject_fault(BOT_ID, "getUpdates", Fault::ServerError, 1);
    assert_eq!(
        call(api.addr(), TOKEN, "getUpdates", &json!({"offset": 2})).status,
        500
    );
    let stats = api.stats(BOT_ID);
    assert_eq!(
        (
            stats.get_updates_calls,
            stats.pending_updates,
            stats.confirmed_offset
        ),
        (1, 2, 0)
    );
    assert!(stats.deliveries.is_empty());
}

#[test]
fn dropping_the_server_ends_hung_requests_and_long_polls() {
    let api = api_with_bot();
    api.inject_fault(BOT_ID, "getMe", Fault::Hang, 1);
    let mut hung = raw_get_me(&api);
    let mut poll = TcpStream::connect(api.addr()).unwrap();
    write_request(
        &mut poll,
        "GET",
        &format!("/bot{TOKEN}/getUpdates?timeout=25"),
        None,
        b"",
    )
    .unwrap();
    api.wait_until(BOT_ID, |s| s.active_polls == 1, WAIT)
        .unwrap();
    let addr = api.addr();

    let (done, dropped) = mpsc::channel();
    thread::spawn(move || {
        drop(api);
        let _ = done.send(());
    });
    dropped
        .recv_timeout(WAIT)
        .expect("dropping FakeBotApi did not return");
    for stream in [&mut hung, &mut poll] {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        assert!(
            rest.is_empty(),
            "got an answer: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
    assert!(
        try_request(addr, "GET", "/", None, b"").is_err(),
        "the port still answers"
    );
}
