//! The Bot API surface: tokens, methods, parameter encodings, sendMessage, webhook and commands.

mod support;

use fake_bot_api::FakeBotApi;
use serde_json::{Value, json};
use support::{BOT_ID, TOKEN, call, get, request, result};

fn api_with_bot() -> FakeBotApi {
    let api = FakeBotApi::start();
    assert_eq!(api.add_bot(TOKEN, "cryptotest_bot"), BOT_ID);
    api
}

#[test]
fn get_me_answers_the_bot_user() {
    let api = api_with_bot();
    let me = result(api.addr(), TOKEN, "getMe", &json!({}));
    assert_eq!(me["id"], BOT_ID);
    assert_eq!(me["is_bot"], true);
    assert_eq!(me["username"], "cryptotest_bot");
    for flag in [
        "can_join_groups",
        "can_read_all_group_messages",
        "supports_inline_queries",
        "has_main_web_app",
    ] {
        assert!(me[flag].is_boolean(), "getMe lacks {flag}: {me}");
    }
}

#[test]
fn unknown_token_is_401_unauthorized() {
    let api = api_with_bot();
    let response = get(api.addr(), "/bot999:nope/getMe");
    assert_eq!(response.status, 401);
    assert_eq!(
        response.json(),
        json!({"ok": false, "error_code": 401, "description": "Unauthorized"})
    );
}

#[test]
fn replacing_a_token_revokes_the_old_one() {
    let api = api_with_bot();
    assert_eq!(api.add_bot("123456:newsecret", ""), BOT_ID);
    assert_eq!(get(api.addr(), &format!("/bot{TOKEN}/getMe")).status, 401);
    let me = result(api.addr(), "123456:newsecret", "getMe", &json!({}));
    assert_eq!(me["username"], "fake123456_bot");
}

#[test]
fn unknown_method_and_path_are_404_not_found() {
    let api = api_with_bot();
    for path in [
        format!("/bot{TOKEN}/sendTelepathy"),
        "/nothing".to_owned(),
        format!("/bot{TOKEN}"),
    ] {
        let response = get(api.addr(), &path);
        assert_eq!(response.status, 404, "{path}");
        assert_eq!(
            response.json(),
            json!({"ok": false, "error_code": 404, "description": "Not Found"})
        );
    }
}

#[test]
fn method_names_are_case_insensitive_and_token_may_be_percent_encoded() {
    let api = api_with_bot();
    let encoded = TOKEN.replace(':', "%3A");
    let response = get(api.addr(), &format!("/bot{encoded}/GETME"));
    assert_eq!(response.status, 200, "{}", response.text());
}

#[test]
fn parameters_are_read_from_query_json_form_and_multipart() {
    let api = api_with_bot();
    api.inject_message(BOT_ID, 42, "hi");
    let addr = api.addr();
    let path = format!("/bot{TOKEN}/sendMessage");
    let query = request(
        addr,
        "GET",
        &format!("{path}?chat_id=42&text=from+query"),
        None,
        b"",
    );
    let json = request(
        addr,
        "POST",
        &path,
        Some("application/json"),
        br#"{"chat_id":"42","text":"from json"}"#,
    );
    let form = request(
        addr,
        "POST",
        &path,
        Some("application/x-www-form-urlencoded"),
        b"chat_id=42&text=from%20form",
    );
    let body = b"--b0undary\r\nContent-Disposition: form-data; name=\"chat_id\"\r\n\r\n42\r\n\
                 --b0undary\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nfrom multipart\r\n--b0undary--\r\n";
    let multipart = request(
        addr,
        "POST",
        &path,
        Some("multipart/form-data; boundary=b0undary"),
        body,
    );
    for response in [&query, &json, &form, &multipart] {
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let texts: Vec<String> = api.sent(BOT_ID).into_iter().map(|m| m.text).collect();
    assert_eq!(
        texts,
        ["from query", "from json", "from form", "from multipart"]
    );
}

#[test]
fn send_message_returns_the_message_and_records_it() {
    let api = api_with_bot();
    api.inject_message(BOT_ID, 42, "/start");
    let message = result(
        api.addr(),
        TOKEN,
        "sendMessage",
        &json!({"chat_id": 42, "text": "pong"}),
    );
    assert_eq!(
        message["message_id"], 2,
        "message ids count per chat, the user's /start was 1"
    );
    assert_eq!(message["chat"]["id"], 42);
    assert_eq!(message["chat"]["type"], "private");
    assert_eq!(message["from"]["id"], BOT_ID);
    assert_eq!(message["from"]["is_bot"], true);
    assert_eq!(message["text"], "pong");
    assert!(message["date"].as_i64().unwrap() > 1_600_000_000);
    let sent = api.sent(BOT_ID);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].message_id, sent[0].chat_id, sent[0].text.as_str()),
        (2, 42, "pong")
    );
    assert_eq!(api.stats(BOT_ID).send_message_calls, 1);
}

fn error_of(api: &FakeBotApi, params: Value) -> (u16, String) {
    let response = call(api.addr(), TOKEN, "sendMessage", &params);
    let json = response.json();
    assert_eq!(json["ok"], false);
    assert_eq!(json["error_code"], response.status);
    (
        response.status,
        json["description"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn send_message_errors_are_telegrams() {
    let api = api_with_bot();
    api.inject_message(BOT_ID, 42, "hi");
    let bad = |d: &str| (400, format!("Bad Request: {d}"));
    assert_eq!(
        error_of(&api, json!({"chat_id": 42, "text": ""})),
        bad("message text is empty")
    );
    assert_eq!(
        error_of(&api, json!({"chat_id": 42})),
        bad("message text is empty")
    );
    assert_eq!(
        error_of(&api, json!({"chat_id": 42, "text": "x".repeat(4097)})),
        bad("message is too long")
    );
    assert_eq!(
        error_of(&api, json!({"chat_id": 7, "text": "hi"})),
        bad("chat not found")
    );
    assert_eq!(
        error_of(&api, json!({"chat_id": "@somewhere", "text": "hi"})),
        bad("chat not found")
    );
    assert_eq!(
        error_of(&api, json!({"text": "hi"})),
        bad("chat_id is empty")
    );
    api.block_chat(BOT_ID, 42, true);
    assert_eq!(
        error_of(&api, json!({"chat_id": 42, "text": "hi"})),
        (403, "Forbidden: bot was blocked by the user".to_owned())
    );
    assert!(api.sent(BOT_ID).is_empty());
}

#[test]
fn get_updates_while_a_webhook_is_set_is_409() {
    let api = api_with_bot();
    let set = call(
        api.addr(),
        TOKEN,
        "setWebhook",
        &json!({"url": "https://example.invalid/hook"}),
    )
    .json();
    assert_eq!(
        set,
        json!({"ok": true, "result": true, "description": "Webhook was set"})
    );
    let response = call(api.addr(), TOKEN, "getUpdates", &json!({"timeout": 0}));
    assert_eq!(response.status, 409);
    assert_eq!(
        response.json()["description"],
        "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
    );
    let stats = api.stats(BOT_ID);
    assert_eq!(
        (
            stats.webhook_conflicts_409,
            stats.conflicts_409,
            stats.get_updates_calls
        ),
        (1, 0, 1)
    );

    let deleted = call(api.addr(), TOKEN, "deleteWebhook", &json!({})).json();
    assert_eq!(deleted["description"], "Webhook was deleted");
    assert_eq!(
        call(api.addr(), TOKEN, "getUpdates", &json!({})).status,
        200
    );
}

#[test]
fn get_webhook_info_shows_the_webhook_and_pending_updates() {
    let api = api_with_bot();
    api.inject_message(BOT_ID, 42, "one");
    let info = result(api.addr(), TOKEN, "getWebhookInfo", &json!({}));
    assert_eq!(
        info,
        json!({"url": "", "has_custom_certificate": false, "pending_update_count": 1})
    );
    let params = json!({"url": "https://example.invalid/hook", "max_connections": 5,
                        "allowed_updates": ["message"], "drop_pending_updates": true});
    result(api.addr(), TOKEN, "setWebhook", &params);
    let info = result(api.addr(), TOKEN, "getWebhookInfo", &json!({}));
    assert_eq!(info["url"], "https://example.invalid/hook");
    assert_eq!(info["max_connections"], 5);
    assert_eq!(info["allowed_updates"], json!(["message"]));
    assert_eq!(
        info["pending_update_count"], 0,
        "drop_pending_updates confirmed the queued update"
    );
    let refused = call(
        api.addr(),
        TOKEN,
        "setWebhook",
        &json!({"url": "https://x.invalid", "secret_token": "no spaces"}),
    );
    assert_eq!(refused.status, 400);
}

#[test]
fn commands_are_kept_per_scope_and_language() {
    let api = api_with_bot();
    let commands = json!([{"command": "price", "description": "Show a price"}]);
    assert_eq!(
        result(
            api.addr(),
            TOKEN,
            "setMyCommands",
            &json!({"commands": commands})
        ),
        true
    );
    // Form encoding carries JSON parameters as JSON text.
    let form = r#"commands=[{"command":"preis","description":"Preis"}]&language_code=de"#;
    let path = format!("/bot{TOKEN}/setMyCommands");
    let response = request(
        api.addr(),
        "POST",
        &path,
        Some("application/x-www-form-urlencoded"),
        form.as_bytes(),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        result(api.addr(), TOKEN, "getMyCommands", &json!({})),
        commands
    );
    assert_eq!(
        result(
            api.addr(),
            TOKEN,
            "getMyCommands",
            &json!({"language_code": "de"})
        )[0]["command"],
        "preis"
    );
    let invalid = call(
        api.addr(),
        TOKEN,
        "setMyCommands",
        &json!({"commands": [{"command": "Bad Name", "description": "x"}]}),
    );
    assert_eq!(invalid.status, 400);
    assert_eq!(
        result(api.addr(), TOKEN, "deleteMyCommands", &json!({})),
        true
    );
    assert_eq!(
        result(api.addr(), TOKEN, "getMyCommands", &json!({})),
        json!([])
    );
}
