//! Webhook mode: `POST /telegram/<path secret>` on the HTTP listener (cryptobot.socket or `listen`).
//!
//! Guarantees:
//! - A request is accepted only on the path derived from the secret (else 404) and with the secret in
//!   `X-Telegram-Bot-Api-Secret-Token`, compared in constant time (else 401). Both are checked from
//!   the request head, before a byte of the body is read: a refused request is answered at once and
//!   its connection closed, so a stranger's body never costs memory or time. A body over
//!   [`MAX_BODY`] is 413 (by its `Content-Length` before reading, else when the limit is passed), one
//!   not complete within [`BODY_READ_TIMEOUT`] 408, one without an `update_id` 400 (an update with an
//!   id that does not decode is accepted and skipped, as in polling mode). None of them is logged
//!   with the secret or the body, and none reaches the bot.
//! - 200 is answered only once the update is durably accepted: written to the state store's inbox
//!   ([`Dispatcher::accept`], one short transaction), or recognised as one accepted or handled before.
//!   A store that refuses is 503: Telegram keeps the update and delivers it again. So a crash or a
//!   restart loses nothing; with cryptobot.socket, systemd keeps the socket open meanwhile.
//! - Handling happens behind the answer, concurrently across chats and in arrival order within one
//!   (the dispatcher's workers): one chat's slow handler holds back no other chat's updates, and
//!   Telegram's next delivery waits only for the inbox write. The webhook stays set with
//!   `max_connections = 1`: Telegram delivers in order over one connection, and with several it may
//!   deliver two updates of one chat at once, in either order; the concurrency that matters is the
//!   dispatcher's, which more connections would not add to.
//! - G5 in webhook mode: [`keep_alive`] beats the watchdog's [`Liveness`] only while the dispatcher's
//!   handlers make progress (nothing waiting, or an update recorded recently).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use teloxide::types::Update;
use tokio_util::sync::CancellationToken;

use crate::bot::dispatch::{Dispatcher, Outcome};
use crate::config::WebhookSecret;
use crate::live_status::LiveStatus;
use crate::systemd::watchdog::Liveness;

/// Where Telegram POSTs: `/telegram/<path secret>`.
pub const PATH_PREFIX: &str = "/telegram/";

/// The largest update body accepted. Telegram's updates are far smaller (a message's text is at most
/// 4096 characters); anything bigger is not from Telegram.
pub const MAX_BODY: usize = 1 << 20;

/// The header Telegram sends the secret token in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// How long the whole body of a request that passed the secret checks may take to arrive. Telegram
/// sends an update's few kilobytes in one go; a body still incomplete after this is cut (408) and its
/// connection closed, so a stalled sender does not hold a connection or the memory read so far.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request is refused (never says more to the caller than its status).
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    /// 401: the secret header is missing or wrong.
    WrongSecret,
    /// 413: the body is over [`MAX_BODY`].
    TooLarge,
    /// 400: the body is not an update's JSON.
    Malformed,
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::WrongSecret => StatusCode::UNAUTHORIZED,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Malformed => StatusCode::BAD_REQUEST,
        }
    }
}

/// The path component derived from the secret: 32 hex digits of SHA-256 over a fixed label and the
/// secret. The URL (which proxies log) therefore never contains the secret itself, and a request to
/// another path learns nothing about it.
pub fn path_secret(secret: &WebhookSecret) -> String {
    let digest = Sha256::new()
        .chain_update(b"cryptobot webhook path\0")
        .chain_update(secret.expose().as_bytes())
        .finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The URL given to `setWebhook`: `<public_url>/telegram/<path secret>`.
pub fn webhook_url(public_url: &url::Url, secret: &WebhookSecret) -> url::Url {
    let mut url = public_url.clone();
    let base = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{base}{PATH_PREFIX}{}", path_secret(secret)));
    url
}

/// Checks the secret header, the size and the JSON of one request: the update, or why not. Pure (no
/// I/O), so it is fuzzed as it is.
pub fn decode(
    secret_header: Option<&[u8]>,
    expected: &WebhookSecret,
    body: &[u8],
) -> Result<Update, Rejection> {
    if !secret_matches(secret_header, expected) {
        return Err(Rejection::WrongSecret);
    }
    if body.len() > MAX_BODY {
        return Err(Rejection::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|_| Rejection::Malformed)?;
    // An update Telegram sent that does not decode (a lone surrogate in a text) still has its id: it
    // is accepted as an "undecodable" update, skipped by the handler and answered 200. A 400 would
    // make Telegram send it again for ever, holding back every update behind it.
    crate::telegram::client::decode_update(text).ok_or(Rejection::Malformed)
}

/// Whether the secret header holds `expected`, compared in constant time.
fn secret_matches(secret_header: Option<&[u8]>, expected: &WebhookSecret) -> bool {
    secret_header.is_some_and(|given| {
        let expected = expected.expose().as_bytes();
        // Lengths may differ; ct_eq is false then, after a comparison whose time depends only on them.
        bool::from(given.ct_eq(expected))
    })
}

/// The secret and the path derived from it; a reload may replace both (after `setWebhook`).
#[derive(Clone, Debug)]
pub struct Credentials {
    pub secret: WebhookSecret,
    pub path: String,
}

impl Credentials {
    pub fn new(secret: WebhookSecret) -> Self {
        let path = path_secret(&secret);
        Self { secret, path }
    }
}

/// What the webhook route needs.
#[derive(Clone)]
pub struct Inbound {
    pub dispatcher: Dispatcher,
    pub credentials: Arc<std::sync::RwLock<Credentials>>,
    pub status: Arc<LiveStatus>,
    pub liveness: Arc<Liveness>,
    pub bot_id: u64,
}

/// The webhook route, to merge into the HTTP router. It reads the body itself (bounded in size and
/// time), so axum's body limit does not apply.
pub fn router(inbound: Inbound) -> Router {
    Router::new()
        .route(&format!("{PATH_PREFIX}{{path}}"), post(receive))
        .with_state(inbound)
}

/// An answer that also closes the connection: for a request whose body was not read (hyper could
/// not tell where the next request starts) or that broke off.
fn closing(status: StatusCode) -> Response {
    (status, [(header::CONNECTION, "close")]).into_response()
}

/// Checks the head (path, secret, announced size), only then reads the body (bounded), decodes it
/// and hands the update to the dispatcher.
async fn receive(
    State(inbound): State<Inbound>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let credentials = inbound
        .credentials
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if !bool::from(path.as_bytes().ct_eq(credentials.path.as_bytes())) {
        return closing(StatusCode::NOT_FOUND);
    }
    let secret_header = headers.get(SECRET_HEADER).map(|v| v.as_bytes());
    if !secret_matches(secret_header, &credentials.secret) {
        return refuse(&inbound, Rejection::WrongSecret, 0);
    }
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|length| length > MAX_BODY as u64) {
        return refuse(&inbound, Rejection::TooLarge, 0);
    }
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, MAX_BODY).collect());
    let body = match read.await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            return refuse(&inbound, Rejection::TooLarge, MAX_BODY);
        }
        Ok(Err(e)) => {
            tracing::debug!(
                bot_id = inbound.bot_id,
                "webhook request: the body broke off ({e}): answered 400"
            );
            return closing(StatusCode::BAD_REQUEST);
        }
        Err(_elapsed) => {
            inbound.status.metrics.api_error("webhook_body_timeout");
            tracing::warn!(
                bot_id = inbound.bot_id,
                "webhook request refused (its body was not complete within {} s): answered 408",
                BODY_READ_TIMEOUT.as_secs()
            );
            return closing(StatusCode::REQUEST_TIMEOUT);
        }
    };
    let update = match decode(secret_header, &credentials.secret, &body) {
        Ok(update) => update,
        Err(rejection) => return refuse(&inbound, rejection, body.len()),
    };
    inbound.status.metrics.updates_received.inc();
    inbound.status.webhook_received();
    let outcome = inbound
        .dispatcher
        .accept(std::slice::from_ref(&update))
        .await;
    match outcome {
        Outcome::Accepted => StatusCode::OK.into_response(),
        Outcome::NotRecorded | Outcome::Fenced => {
            tracing::error!(
                bot_id = inbound.bot_id,
                update_id = update.id.0,
                "cannot record the update: answered 503, Telegram will deliver it again"
            );
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// Counts and logs a refusal (never with the secret or the body) and answers its status. A refusal
/// before the body was read closes the connection: its unread body is not worth reading.
fn refuse(inbound: &Inbound, rejection: Rejection, body_read: usize) -> Response {
    inbound.status.metrics.api_error(match rejection {
        Rejection::WrongSecret => "webhook_unauthorized",
        Rejection::TooLarge => "webhook_too_large",
        Rejection::Malformed => "webhook_malformed",
    });
    tracing::warn!(
        bot_id = inbound.bot_id,
        "webhook request refused ({rejection:?}, {body_read} bytes read): answered {}",
        rejection.status().as_u16()
    );
    match rejection {
        Rejection::WrongSecret | Rejection::TooLarge => closing(rejection.status()),
        Rejection::Malformed => rejection.status().into_response(),
    }
}

/// Feeds the watchdog in webhook mode, where no loop of ours goes round: a beat every `period` says
/// the runtime runs; the handlers report their own progress to the same [`Liveness`] (the
/// dispatcher), so a stuck handler still stops the pings (G5). Runs until `cancel`.
pub async fn keep_alive(liveness: Arc<Liveness>, period: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        liveness.beat();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> WebhookSecret {
        WebhookSecret::parse("the-secret_1").unwrap()
    }

    const UPDATE: &str = r#"{"update_id":7,"message":{"message_id":1,"date":0,"chat":{"id":5,"type":"private","first_name":"a"},"from":{"id":5,"is_bot":false,"first_name":"a"},"text":"/ping"}}"#;

    #[test]
    fn only_the_right_secret_and_a_real_update_pass() {
        let s = secret();
        let ok = decode(Some(b"the-secret_1"), &s, UPDATE.as_bytes()).unwrap();
        assert_eq!(ok.id.0, 7);
        assert_eq!(
            decode(None, &s, UPDATE.as_bytes()).unwrap_err(),
            Rejection::WrongSecret
        );
        assert_eq!(
            decode(Some(b"the-secret_"), &s, UPDATE.as_bytes()).unwrap_err(),
            Rejection::WrongSecret
        );
        assert_eq!(
            decode(Some(b"the-secret_1"), &s, b"{not json").unwrap_err(),
            Rejection::Malformed
        );
        assert_eq!(
            decode(Some(b"the-secret_1"), &s, b"\xff\xfe").unwrap_err(),
            Rejection::Malformed
        );
        let big = vec![b' '; MAX_BODY + 1];
        assert_eq!(
            decode(Some(b"the-secret_1"), &s, &big).unwrap_err(),
            Rejection::TooLarge
        );
    }

    #[test]
    fn the_url_carries_a_path_derived_from_the_secret_not_the_secret() {
        let s = secret();
        let url = webhook_url(
            &url::Url::parse("https://bot.example.com/hook/").unwrap(),
            &s,
        );
        let path = path_secret(&s);
        assert_eq!(path.len(), 32);
        assert_eq!(
            url.as_str(),
            format!("https://bot.example.com/hook/telegram/{path}")
        );
        assert!(!url.as_str().contains(s.expose()));
        let other = WebhookSecret::parse("another").unwrap();
        assert_ne!(path_secret(&other), path);
    }
}
