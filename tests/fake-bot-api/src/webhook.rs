//! Webhook delivery: while a webhook is set, POSTs each pending update, oldest first and one at a
//! time, as a JSON body to its url, with `X-Telegram-Bot-Api-Secret-Token` when a secret was set.
//! A 2xx answer confirms the update; anything else (or no answer) is recorded for getWebhookInfo
//! and the same update is retried as Telegram does (`BotState::webhook_result`: at once, then 2 s
//! doubling to 60 s, dropped once its day is over). Only `http://` urls can be reached (the fake has
//! no TLS client); an `https://` webhook just records the error and keeps retrying.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::shared::Shared;
use crate::state::Queued;

/// How long one delivery may take, connection included.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The delivery task of the webhook set with `generation`; ends when that webhook is deleted or
/// replaced (or when the server stops and drops it).
pub(crate) async fn deliver(shared: Arc<Shared>, bot_id: i64, generation: u64) {
    let mut changes = shared.subscribe();
    loop {
        changes.borrow_and_update();
        let next = shared.with(|state| {
            let bot = state.bot(bot_id).map_err(|_| ())?;
            let update = bot.next_webhook_update(generation)?;
            let hook = bot.webhook.as_ref().ok_or(())?;
            Ok::<_, ()>(update.map(|u| (u, hook.url.clone(), hook.secret_token.clone())))
        });
        let Ok(next) = next else { return };
        let Some(((update_id, update), url, secret)) = next else {
            if changes.changed().await.is_err() {
                return;
            }
            continue;
        };
        let result =
            match tokio::time::timeout(DELIVERY_TIMEOUT, post(&url, secret.as_deref(), &update))
                .await
            {
                Ok(result) => result,
                Err(_) => Err("Read timeout expired".to_owned()),
            };
        let retry_in = shared.mutate(|state| match state.bot(bot_id) {
            Ok(bot) => bot.webhook_result(generation, update_id, result, Instant::now()),
            Err(_) => Duration::ZERO,
        });
        // A webhook deleted or replaced meanwhile: the next round returns.
        tokio::time::sleep(retry_in).await;
    }
}

/// POSTs `update` to `url`; answers the HTTP status, or why there was none.
async fn post(url: &str, secret: Option<&str>, update: &Queued) -> Result<u16, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("fake-bot-api delivers webhooks only to http:// urls")?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let address = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let stream = TcpStream::connect(&address)
        .await
        .map_err(|e| format!("Connection refused ({e})"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("Connection failed ({e})"))?;
    tokio::spawn(connection);
    let mut request = Request::post(path)
        .header(header::HOST, authority)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(secret) = secret {
        request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
    }
    let request = request
        .body(Body::from(update.to_text()))
        .map_err(|e| format!("bad webhook request ({e})"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("Connection reset by peer ({e})"))?;
    Ok(response.status().as_u16())
}
