//! The control side, on the same listener as the Bot API: what a test (or a shell script driving
//! the binary) uses to add bots, inject updates, read what the bots sent and how they behaved,
//! inject faults and switch the rate limits. JSON in and out; the body is read as JSON whatever
//! its content type. Errors: 400 or 404 with `{"error":"..."}`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::shared::Shared;
use crate::types::{Fault, canonical_method};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/control/bots", post(add_bot))
        .route("/control/bots/{bot_id}/messages", post(inject_message))
        .route("/control/bots/{bot_id}/updates", post(inject_update))
        .route(
            "/control/bots/{bot_id}/updates/raw",
            post(inject_update_text),
        )
        .route("/control/bots/{bot_id}/sent", get(sent))
        .route("/control/bots/{bot_id}/stats", get(stats))
        .route("/control/bots/{bot_id}/faults", post(inject_fault))
        .route("/control/bots/{bot_id}/blocked", post(block_chat))
        .route("/control/bots/{bot_id}/outage", post(set_outage))
        .route("/control/bots/{bot_id}/latency", post(set_latency))
        .route(
            "/control/bots/{bot_id}/next-update-id",
            post(set_next_update_id),
        )
        .route(
            "/control/bots/{bot_id}/ignore-poll-timeout",
            post(set_ignore_poll_timeout),
        )
        .route("/control/rate-limits", post(rate_limits))
}

/// A control error: `{"error": "..."}` with its status.
struct ControlError(StatusCode, String);

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type Reply = Result<Json<Value>, ControlError>;

fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ControlError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ControlError(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

fn unknown_bot(error: String) -> ControlError {
    ControlError(StatusCode::NOT_FOUND, error)
}

#[derive(Deserialize)]
struct AddBot {
    token: String,
    #[serde(default)]
    username: String,
}

async fn add_bot(State(shared): State<Arc<Shared>>, bytes: Bytes) -> Reply {
    let request: AddBot = body(&bytes)?;
    let bot_id = shared
        .mutate(|state| state.add_bot(&request.token, &request.username))
        .map_err(|e| ControlError(StatusCode::BAD_REQUEST, e))?;
    Ok(Json(json!({ "bot_id": bot_id })))
}

#[derive(Deserialize)]
struct InjectMessage {
    chat_id: i64,
    text: String,
}

async fn inject_message(
    State(shared): State<Arc<Shared>>,
    Path(bot_id): Path<i64>,
    bytes: Bytes,
) -> Reply {
    let request: InjectMessage = body(&bytes)?;
    let update_id = shared
        .mutate(|state| {
            Ok(state
                .bot(bot_id)?
                .inject_message(request.chat_id, &request.text))
        })
        .map_err(unknown_bot)?;
    Ok(Json(json!({ "update_id": update_id })))
}

async fn inject_update(
    State(shared): State<Arc<Shared>>,
    Path(bot_id): Path<i64>,
    bytes: Bytes,
) -> Reply {
    let update: Value = body(&bytes)?;
    if !update.is_object() {
        return Err(ControlError(
            StatusCode::BAD_REQUEST,
            "an update must be a JSON object".into(),
        ));
    }
    let update_id = shared
        .mutate(|state| Ok(state.bot(bot_id)?.push_update(update)))
        .map_err(unknown_bot)?;
    Ok(Json(json!({ "update_id": update_id })))
}

/// The body is the update's text, queued verbatim (see `FakeBotApi::inject_update_text`).
async fn inject_update_text(
    State(shared): State<Arc<Shared>>,
    Path(bot_id): Path<i64>,
    bytes: Bytes,
) -> Reply {
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        ControlError(
            StatusCode::BAD_REQUEST,
            "a raw update must be UTF-8 text (write invalid Unicode as \\u escapes)".into(),
        )
    })?;
    let update_id = shared.mutate(|state| {
        state
            .bot(bot_id)
            .map_err(unknown_bot)?
            .push_update_text(text)
            .map_err(|e| ControlError(StatusCode::BAD_REQUEST, e))
    })?;
    Ok(Json(json!({ "update_id": update_id })))
}

async fn sent(State(shared): State<Arc<Shared>>, Path(bot_id): Path<i64>) -> Reply {
    let sent = shared
        .with(|state| Ok(state.bot(bot_id)?.sent.clone()))
        .map_err(unknown_bot)?;
    Ok(Json(json!(sent)))
}

async fn stats(State(shared): State<Arc<Shared>>, Path(bot_id): Path<i64>) -> Reply {
    let stats = shared
        .with(|state| Ok(state.bot(bot_id)?.stats()))
        .map_err(unknown_bot)?;
    Ok(Json(json!(stats)))
}

#[derive(Deserialize)]
struct InjectFault {
    method: String,
    kind: String,
    #[serde(default = "one")]
    count: u32,
    retry_after: Option<u32>,
}

fn one() -> u32 {
    1
}

async fn inject_fault(
    State(shared): State<Arc<Shared>>,
    Path(bot_id): Path<i64>,
    bytes: Bytes,
) -> Reply {
    let request: InjectFault = body(&bytes)?;
    let bad = |e: String| ControlError(StatusCode::BAD_REQUEST, e);
    let method = canonical_method(&request.method)
        .ok_or_else(|| bad(format!("unknown Bot API method {:?}", request.method)))?;
    let fault = Fault::from_kind(&request.kind, request.retry_after).map_err(bad)?;
    shared
        .mutate(|state| {
            state
                .bot(bot_id)
                .map(|bot| bot.add_fault(method, fault, request.count))
        })
        .map_err(unknown_bot)?;
    Ok(Json(json!({ "ok": true })))
}

#[derive(Deserialize)]
struct Outage {
    method: String,
    kind: String,
    /// How long the outage lasts, from now (0 ends one).
    seconds: f64,
    retry_after: Option<u32>,
}

async fn set_outage(
    State(shared): State<Arc<Shared>>,
    Path(bot_id): Path<i64>,
    bytes: Bytes,
) -> Reply {
    let request: Outage = body(&bytes)?;
    let bad = |e: String| ControlError(StatusCode::BAD_REQUEST, e);
    let method = canonical_method(&request.method)
        .ok_or_else(|| bad(format!("unknown Bot API method {:?}", request.method)))?;
    let fault = Fault::from_kind(&request.kind, request.retry_after).map_err(bad)?;
    let duration = std::time::Duration::try_from_secs_f64(request.seconds)
        .map_err(|e| bad(format!("seconds: {e}")))?;
    shared
        .mutate(|state| {
            state
                .bot(bot_id)
                .map(|bot| bot.set_outage(method, fault, duration))
        })
        .map_err(unknown_bot)?;
    Ok(Json(json!({ "ok": true })))
}

#[derive(Deserialize)]
struct Latency {
    method: String,
    ms: u64,
}

async fn set_latency(
    State(shared): State<Arc<Shared>>,
    Path(bot_id): Path<i64>,
    bytes: Bytes,
) -> Reply {
    let request: Latency = body(&bytes)?;
    let bad = |e: String| ControlError(StatusCode::BAD_REQUEST, e);
    let method = canonical_method(&request.method)
        .ok_or_else(|| bad(format!("unknown Bot API method {:?}", request.method)))?;
    shared
        .mutate(|state| {
            state.bot(bot_id).map(|bot| {
                if request.ms == 0 {
                    bot.latency.remove(method);
                } else {
                    bot.latency
                        .insert(method, std::time::Duration::from_millis(request.ms));
                }
            })
        })
        .map_err(unknown_bot)?;
    Ok(Json(json!({ "ok": true })))
}

#[derive(Deserialize)]
struct NextUpdateId {
    next: i64,
}

async fn set_next_update_id(
    State(shared): State<Arc<Shared>>,
    Path(bot_id): Path<i64>,
    bytes: Bytes,
) -> Reply {
    let request: NextUpdateId = body(&bytes)?;
    shared
        .mutate(|state| {
            state
                .bot(bot_id)
                .map(|bot| bot.set_next_update_id(request.next))
        })
        .map_err(unknown_bot)?;
    Ok(Json(json!({ "ok": true })))
}

#[derive(Deserialize)]
struct IgnorePollTimeout {
    #[serde(default = "yes")]
    ignore: bool,
}

async fn set_ignore_poll_timeout(
    State(shared): State<Arc<Shared>>,
    Path(bot_id): Path<i64>,
    bytes: Bytes,
) -> Reply {
    let request: IgnorePollTimeout = body(&bytes)?;
    shared
        .mutate(|state| {
            state
                .bot(bot_id)
                .map(|bot| bot.ignore_poll_timeout = request.ignore)
        })
        .map_err(unknown_bot)?;
    Ok(Json(json!({ "ok": true })))
}

#[derive(Deserialize)]
struct BlockChat {
    chat_id: i64,
    #[serde(default = "yes")]
    blocked: bool,
}

fn yes() -> bool {
    true
}

async fn block_chat(
    State(shared): State<Arc<Shared>>,
    Path(bot_id): Path<i64>,
    bytes: Bytes,
) -> Reply {
    let request: BlockChat = body(&bytes)?;
    shared
        .mutate(|state| {
            let bot = state.bot(bot_id)?;
            bot.block_chat(request.chat_id, request.blocked);
            Ok(())
        })
        .map_err(unknown_bot)?;
    Ok(Json(json!({ "ok": true })))
}

#[derive(Deserialize)]
struct RateLimits {
    enabled: bool,
}

async fn rate_limits(State(shared): State<Arc<Shared>>, bytes: Bytes) -> Reply {
    let request: RateLimits = body(&bytes)?;
    shared.mutate(|state| state.set_rate_limits(request.enabled));
    Ok(Json(json!({ "ok": true })))
}
