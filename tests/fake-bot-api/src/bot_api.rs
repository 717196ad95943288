//! The Bot API side: `<base>/bot<TOKEN>/<method>`. Checks the token (401) and the method (404),
//! counts the call, applies a queued fault if there is one, parses the parameters and runs the
//! method. Answers are Telegram's JSON: `{"ok":true,"result":..}` or
//! `{"ok":false,"error_code":N,"description":"..","parameters":{..}}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::api_error::ApiError;
use crate::params::{Params, percent_decode};
use crate::server::ConnectionKill;
use crate::shared::Shared;
use crate::state::{PollAnswer, PollRequest, Queued, SetWebhook, WebhookSet};
use crate::types::{Fault, canonical_method};
use crate::webhook;

/// Bodies above this are refused (Telegram's own upload limit is 50 MB).
const MAX_BODY_BYTES: usize = 50 * 1024 * 1024;
/// Telegram cuts long polls to 50 seconds (telegram-bot-api's `LONG_POLL_MAX_TIMEOUT`).
const MAX_POLL_SECONDS: i64 = 50;

type Answer = Result<Value, ApiError>;

/// The fallback route: every path that is not a control route is a Bot API call.
pub(crate) async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some((token, method)) = parts
        .uri
        .path()
        .strip_prefix("/bot")
        .and_then(|rest| rest.split_once('/'))
    else {
        return error_response(&ApiError::new(404, "Not Found"));
    };
    let token = percent_decode(token);
    let Some(bot_id) = shared.with(|state| state.bot_id_for_token(&token)) else {
        return error_response(&ApiError::new(401, "Unauthorized"));
    };
    let Some(method) = canonical_method(method) else {
        return error_response(&ApiError::new(404, "Not Found"));
    };
    let response = answer_call(&shared, bot_id, method, parts, body).await;
    shared.mutate(|state| {
        if let Ok(bot) = state.bot(bot_id) {
            bot.end_call(method);
        }
    });
    response
}

/// One Bot API call of `bot_id`, counted in its stats when it arrives (`Stats::calls`); the caller
/// counts the answer.
async fn answer_call(
    shared: &Arc<Shared>,
    bot_id: i64,
    method: &'static str,
    parts: axum::http::request::Parts,
    body: axum::body::Body,
) -> Response {
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return error_response(&ApiError::new(413, "Request Entity Too Large"));
    };
    let (fault, latency) = shared
        .mutate(|state| {
            let bot = state.bot(bot_id).ok()?;
            Some((bot.begin_call(method), bot.latency.get(method).copied()))
        })
        .unwrap_or((None, None));
    if let Some(latency) = latency {
        tokio::time::sleep(latency).await;
    }
    if let Some(fault) = fault {
        return fault_response(fault, parts.extensions.get::<ConnectionKill>()).await;
    }
    let params = match Params::parse(&parts.uri, &parts.headers, &body) {
        Ok(params) => params,
        Err(error) => return error_response(&ApiError::bad_request(&error)),
    };
    let answer = match method {
        "getMe" => shared.with(|state| {
            let bot = state.bot(bot_id).map_err(internal)?;
            Ok(crate::objects::me(bot.id, &bot.username))
        }),
        "getUpdates" => {
            return match get_updates(shared, bot_id, &params).await {
                Ok(updates) => updates_response(&updates),
                Err(error) => error_response(&error),
            };
        }
        "sendMessage" => send_message(shared, bot_id, &params),
        "getChatMember" => get_chat_member(shared, bot_id, &params),
        "setWebhook" => return set_webhook(shared, bot_id, &params),
        "deleteWebhook" => return delete_webhook(shared, bot_id, &params),
        "getWebhookInfo" => {
            shared.with(|state| Ok(state.bot(bot_id).map_err(internal)?.webhook_info()))
        }
        "setMyCommands" | "getMyCommands" | "deleteMyCommands" => {
            commands(shared, bot_id, method, &params)
        }
        _ => Err(ApiError::new(404, "Not Found")),
    };
    match answer {
        Ok(result) => ok_response(result, None),
        Err(error) => error_response(&error),
    }
}

fn internal(error: String) -> ApiError {
    ApiError::new(500, format!("Internal Server Error: {error}"))
}

fn ok_response(result: Value, description: Option<&str>) -> Response {
    let mut body = json!({"ok": true, "result": result});
    if let (Some(text), Value::Object(map)) = (description, &mut body) {
        map.insert("description".into(), text.into());
    }
    Json(body).into_response()
}

/// getUpdates' answer, written straight as text: a raw update may hold what a `Value` cannot.
fn updates_response(updates: &[Queued]) -> Response {
    #[derive(serde::Serialize)]
    struct Answer<'a> {
        ok: bool,
        result: &'a [Queued],
    }
    Json(Answer {
        ok: true,
        result: updates,
    })
    .into_response()
}

fn error_response(error: &ApiError) -> Response {
    let mut body = json!({"ok": false, "error_code": error.code, "description": error.description});
    if let (Some(retry_after), Value::Object(map)) = (error.retry_after, &mut body) {
        map.insert("parameters".into(), json!({ "retry_after": retry_after }));
    }
    let status = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

async fn fault_response(fault: Fault, kill: Option<&ConnectionKill>) -> Response {
    match fault {
        Fault::ServerError => error_response(&ApiError::new(500, "Internal Server Error")),
        Fault::Garbage => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<html>bad gateway</html>",
        )
            .into_response(),
        Fault::TooManyRequests { retry_after } => {
            error_response(&ApiError::too_many_requests(retry_after))
        }
        Fault::Reset | Fault::Hang => {
            if fault == Fault::Reset
                && let Some(kill) = kill
            {
                kill.reset();
            }
            // Never answered: the connection task drops this future when the client goes away,
            // on a reset, or when the server stops.
            std::future::pending().await
        }
    }
}

/// Ends a poll when its request ends, however it ends (answered, or dropped with its client).
struct PollGuard {
    shared: Arc<Shared>,
    bot_id: i64,
    poll: u64,
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        self.shared.mutate(|state| {
            if let Ok(bot) = state.bot(self.bot_id) {
                bot.end_poll(self.poll);
            }
        });
    }
}

async fn get_updates(
    shared: &Arc<Shared>,
    bot_id: i64,
    params: &Params,
) -> Result<Vec<Queued>, ApiError> {
    let bad = |e: String| ApiError::bad_request(&e);
    // Out-of-range values are clamped, as telegram-bot-api does.
    let limit = params
        .int("limit")
        .map_err(bad)?
        .unwrap_or(100)
        .clamp(1, 100);
    let timeout = params.int("timeout").map_err(bad)?.unwrap_or(0);
    let mut request = PollRequest {
        offset: params.int("offset").map_err(bad)?.unwrap_or(0),
        limit: usize::try_from(limit).unwrap_or(100),
        timeout: Duration::from_secs(timeout.clamp(0, MAX_POLL_SECONDS).unsigned_abs()),
        allowed_updates: params.string_list("allowed_updates").map_err(bad)?,
    };

    let mut changes = shared.subscribe();
    let poll = shared.mutate(|state| {
        let bot = state.bot(bot_id).map_err(internal)?;
        bot.start_poll(&mut request, Instant::now())
    })?;
    let _guard = PollGuard {
        shared: Arc::clone(shared),
        bot_id,
        poll,
    };
    let deadline = tokio::time::Instant::now() + request.timeout;
    loop {
        changes.borrow_and_update();
        let give_up = tokio::time::Instant::now() >= deadline;
        let answer = shared.mutate_if(|state| {
            let bot = state.bot(bot_id).ok()?;
            bot.poll_answer(poll, request.limit, give_up)
        });
        match answer {
            Some(PollAnswer::Updates(updates)) => return Ok(updates),
            Some(PollAnswer::Error(error)) => return Err(error),
            Some(PollAnswer::HeldError(error)) => {
                tokio::time::sleep(crate::state::CONFLICT_SPACING).await;
                return Err(error);
            }
            None => {}
        }
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

fn send_message(shared: &Shared, bot_id: i64, params: &Params) -> Answer {
    let chat_id = params
        .string("chat_id")
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("chat_id is empty"))?;
    // "@channelusername" targets are never known to the fake.
    let chat_id = chat_id
        .trim()
        .parse::<i64>()
        .map_err(|_| ApiError::bad_request("chat not found"))?;
    let text = params.string("text").unwrap_or_default();
    shared.mutate(|state| {
        let rate_limits = state.rate_limits;
        let bot = state.bot(bot_id).map_err(internal)?;
        bot.send_message(chat_id, &text, rate_limits, Instant::now())
    })
}

fn get_chat_member(shared: &Shared, bot_id: i64, params: &Params) -> Answer {
    let bad = |e: String| ApiError::bad_request(&e);
    let chat_id = params
        .int("chat_id")
        .map_err(|_| ApiError::bad_request("chat not found"))?
        .ok_or_else(|| ApiError::bad_request("chat_id is empty"))?;
    let user_id = params
        .int("user_id")
        .map_err(bad)?
        .ok_or_else(|| ApiError::bad_request("user_id is empty"))?;
    shared.with(|state| {
        state
            .bot(bot_id)
            .map_err(internal)?
            .chat_member(chat_id, user_id)
    })
}

fn set_webhook(shared: &Arc<Shared>, bot_id: i64, params: &Params) -> Response {
    match try_set_webhook(shared, bot_id, params) {
        Ok(description) => ok_response(Value::Bool(true), Some(description)),
        Err(error) => error_response(&error),
    }
}

fn try_set_webhook(
    shared: &Arc<Shared>,
    bot_id: i64,
    params: &Params,
) -> Result<&'static str, ApiError> {
    let bad = |e: String| ApiError::bad_request(&e);
    let url = params.string("url").unwrap_or_default();
    let drop_pending = params
        .boolean("drop_pending_updates")
        .map_err(bad)?
        .unwrap_or(false);
    if url.trim().is_empty() {
        let was_set = shared.mutate(|state| {
            Ok(state
                .bot(bot_id)
                .map_err(internal)?
                .delete_webhook(drop_pending))
        })?;
        return Ok(if was_set {
            "Webhook was deleted"
        } else {
            "Webhook is already deleted"
        });
    }
    // Telegram insists on https; the fake cannot serve TLS, so it accepts http too.
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(ApiError::bad_request(
            "bad webhook: An HTTPS URL must be provided for webhook",
        ));
    }
    let secret_token = params.string("secret_token").filter(|s| !s.is_empty());
    if let Some(secret) = &secret_token {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        if secret.len() > 256 || !secret.bytes().all(allowed) {
            return Err(ApiError::bad_request(
                "secret token contains unallowed characters",
            ));
        }
    }
    let max_connections = params
        .int("max_connections")
        .map_err(bad)?
        .unwrap_or(40)
        .clamp(1, 100);
    let max_connections = u32::try_from(max_connections).unwrap_or(40);
    let request = SetWebhook {
        url,
        secret_token,
        max_connections,
        allowed_updates: params.string_list("allowed_updates").map_err(bad)?,
        drop_pending,
    };
    let set = shared.mutate(|state| {
        let bot = state.bot(bot_id).map_err(internal)?;
        bot.set_webhook(request, Instant::now())
    })?;
    match set {
        WebhookSet::Set { generation } => {
            tokio::spawn(webhook::deliver(Arc::clone(shared), bot_id, generation));
            Ok("Webhook was set")
        }
        WebhookSet::AlreadySet => Ok("Webhook is already set"),
    }
}

fn delete_webhook(shared: &Shared, bot_id: i64, params: &Params) -> Response {
    let drop_pending = match params.boolean("drop_pending_updates") {
        Ok(drop_pending) => drop_pending.unwrap_or(false),
        Err(error) => return error_response(&ApiError::bad_request(&error)),
    };
    let was_set = shared.mutate(|state| {
        state
            .bot(bot_id)
            .map(|bot| bot.delete_webhook(drop_pending))
    });
    match was_set {
        Ok(true) => ok_response(Value::Bool(true), Some("Webhook was deleted")),
        Ok(false) => ok_response(Value::Bool(true), Some("Webhook is already deleted")),
        Err(error) => error_response(&internal(error)),
    }
}

/// setMyCommands / getMyCommands / deleteMyCommands, one list per (scope, language_code).
fn commands(shared: &Shared, bot_id: i64, method: &str, params: &Params) -> Answer {
    let bad = |e: String| ApiError::bad_request(&e);
    let scope = params
        .json("scope")
        .map_err(bad)?
        .unwrap_or_else(|| json!({"type": "default"}));
    let language = params.string("language_code").unwrap_or_default();
    let key = format!("{scope}|{language}");
    match method {
        "setMyCommands" => {
            let commands = params
                .json("commands")
                .map_err(bad)?
                .ok_or_else(|| ApiError::bad_request("parameter \"commands\" is required"))?;
            let commands = validate_commands(&commands)?;
            shared
                .mutate(|state| state.bot(bot_id).map(|bot| bot.set_commands(key, commands)))
                .map_err(internal)?;
            Ok(Value::Bool(true))
        }
        "getMyCommands" => {
            shared.with(|state| Ok(state.bot(bot_id).map_err(internal)?.commands(&key)))
        }
        _ => {
            shared
                .mutate(|state| state.bot(bot_id).map(|bot| bot.delete_commands(&key)))
                .map_err(internal)?;
            Ok(Value::Bool(true))
        }
    }
}

/// Telegram's rules: at most 100 commands; a command is 1–32 of `[a-z0-9_]`, a description
/// 1–256 characters. Keeps only `command` and `description`, as getMyCommands shows them.
fn validate_commands(commands: &Value) -> Result<Value, ApiError> {
    let list = commands
        .as_array()
        .ok_or_else(|| ApiError::bad_request("can't parse commands JSON object"))?;
    if list.len() > 100 {
        return Err(ApiError::bad_request("too many commands"));
    }
    let mut valid = Vec::with_capacity(list.len());
    for item in list {
        let command = item.get("command").and_then(Value::as_str).unwrap_or("");
        let command = command.strip_prefix('/').unwrap_or(command);
        let command_ok = (1..=32).contains(&command.len())
            && command
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !command_ok {
            return Err(ApiError::bad_request("BOT_COMMAND_INVALID"));
        }
        let description = item
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !(1..=256).contains(&description.chars().count()) {
            return Err(ApiError::bad_request("command description is empty"));
        }
        valid.push(json!({"command": command, "description": description}));
    }
    Ok(Value::Array(valid))
}
