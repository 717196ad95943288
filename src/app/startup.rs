//! The calls `cryptobot run` makes to Telegram once, at start: `getMe`, and entering or leaving webhook
//! mode. Each is retried a few times on faults of Telegram or the network (exit 1 after that, so the
//! unit restarts the service later); a rejected token, or a request Telegram refuses as such, is a
//! configuration error at once (exit 78). Each returns `None` when the run is stopped meanwhile.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::{Config, WebhookSecret};
use crate::exit::{Failure, Result};
use crate::live_status::{LiveStatus, State};
use crate::store::Store;
use crate::systemd::watchdog::Liveness;
use crate::telegram::backoff::Backoff;
use crate::telegram::client::Client;
use crate::telegram::errors::FailureKind;

/// Attempts at `getMe` before giving up at start (Telegram or the network is down).
const GET_ME_ATTEMPTS: u32 = 5;

/// Polling mode: a webhook this bot set in webhook mode is deleted (going back to polling); with
/// `delete_webhook = true` any webhook is. Another webhook is left alone: the first poll then meets
/// the 409 that names it.
pub(super) async fn leave_webhook_mode(
    client: &Client,
    store: &Store,
    bot_id: u64,
    delete_any: bool,
) {
    let ours = match store.webhook_url(bot_id).await {
        Ok(url) => url,
        Err(e) => {
            tracing::warn!(bot_id, "cannot read the webhook state: {e}");
            None
        }
    };
    if ours.is_none() && !delete_any {
        return;
    }
    // Idempotent: Telegram answers ok when no webhook is set.
    match client.delete_webhook().await {
        Ok(()) => {
            if ours.is_some() {
                tracing::info!(
                    bot_id,
                    "back to polling: deleted the webhook this bot set in webhook mode"
                );
                if let Err(e) = store.set_webhook_url(bot_id, None).await {
                    tracing::warn!(bot_id, "cannot record that the webhook is deleted: {e}");
                }
            } else {
                tracing::info!(
                    bot_id,
                    "webhook deleted if one was set (delete_webhook = true)"
                );
            }
        }
        Err(e) => tracing::warn!(bot_id, "could not delete the webhook: {e}"),
    }
}

/// Webhook mode: the secret (configured, or generated once and kept in the store), then `setWebhook`
/// (retried like `getMe`; Telegram refusing the URL is a configuration error). `None` when stopped
/// before Telegram answered.
pub(super) async fn enter_webhook_mode(
    config: &Config,
    client: &Client,
    store: &Store,
    cancel: &CancellationToken,
    status: &LiveStatus,
    liveness: &Liveness,
) -> Result<Option<WebhookSecret>> {
    let bot_id = config.token.bot_id();
    let io = |e: crate::store::Error| {
        Failure::io(format!(
            "{}: cannot keep the webhook secret ({e})",
            store.describe()
        ))
    };
    let secret = match &config.webhook_secret {
        Some(secret) => secret.clone(),
        None => match store.webhook_secret(bot_id).await.map_err(io)? {
            Some(kept) => WebhookSecret::parse(&kept).map_err(|why| {
                Failure::io(format!(
                    "{}: the kept webhook secret {why}",
                    store.describe()
                ))
            })?,
            None => {
                let secret = WebhookSecret::generate()?;
                store
                    .save_webhook_secret(bot_id, secret.expose())
                    .await
                    .map_err(io)?;
                tracing::info!(
                    bot_id,
                    "generated a webhook secret, kept in the state store"
                );
                secret
            }
        },
    };
    let public_url = config
        .settings
        .webhook
        .public_url
        .as_ref()
        .ok_or_else(|| Failure::config("mode = \"webhook\" needs public_url"))?;
    let url = crate::webhook::webhook_url(public_url, &secret);
    // The log names the public part only: the path is derived from the secret.
    let shown = public_url.as_str().trim_end_matches('/').to_owned() + "/telegram/<path secret>";
    let set = with_start_retries("setWebhook", cancel, status, liveness, || {
        client.set_webhook(url.clone(), secret.expose())
    })
    .await?;
    if set.is_none() {
        return Ok(None);
    }
    if let Err(e) = store.set_webhook_url(bot_id, Some(url.as_str())).await {
        tracing::warn!(bot_id, "cannot record the webhook URL: {e}");
    }
    tracing::info!(bot_id, "webhook set: Telegram POSTs updates to {shown}");
    Ok(Some(secret))
}

/// `getMe` with a few retries for network faults; a rejected token is fatal at once.
pub(super) async fn get_me(
    client: &Client,
    cancel: &CancellationToken,
    status: &LiveStatus,
    liveness: &Liveness,
) -> Result<Option<teloxide::types::Me>> {
    with_start_retries("getMe", cancel, status, liveness, || client.get_me()).await
}

/// A call made once at start, retried ([`GET_ME_ATTEMPTS`] in all, with backoff) on faults of
/// Telegram or the network. A rejected token, or a request Telegram refuses as such (400: a bad
/// webhook URL), is a configuration error at once; still failing after the attempts is exit 1 (the
/// unit restarts the service later). `None` when stopped meanwhile.
async fn with_start_retries<T, F, Fut>(
    method: &str,
    cancel: &CancellationToken,
    status: &LiveStatus,
    liveness: &Liveness,
    mut call: F,
) -> Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, crate::telegram::errors::ApiFailure>>,
{
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
    loop {
        liveness.busy_until(Instant::now() + crate::telegram::client::REQUEST_DEADLINE);
        let failure = tokio::select! {
            () = cancel.cancelled() => return Ok(None),
            r = call() => match r {
                Ok(value) => {
                    liveness.beat();
                    return Ok(Some(value));
                }
                Err(f) => f,
            },
        };
        match failure.kind {
            FailureKind::Unauthorized => {
                return Err(Failure::config(format!(
                    "Telegram rejected the token (401 Unauthorized); check it, or get the current one from @BotFather ({failure})"
                )));
            }
            FailureKind::Api => {
                return Err(Failure::config(format!(
                    "Telegram refused {method} ({failure}); check the configuration (for setWebhook: public_url must be an https URL on port 443, 80, 88 or 8443 that reaches this service)"
                )));
            }
            _ => {}
        }
        if backoff.attempts() + 1 >= GET_ME_ATTEMPTS {
            return Err(Failure::new(
                crate::exit::Code::Problem,
                format!(
                    "cannot reach the Bot API after {GET_ME_ATTEMPTS} attempts at {method} ({failure}); check the network and CRYPTOBOT_API_URL"
                ),
            ));
        }
        let delay = backoff.next_delay();
        status.set_state(State::Degraded(failure.detail.clone()));
        tracing::warn!(
            error_kind = failure.kind.name(),
            "{failure}; retrying {method} in {:.1} s",
            delay.as_secs_f64()
        );
        liveness.busy_until(Instant::now() + delay);
        tokio::select! {
            () = cancel.cancelled() => return Ok(None),
            () = tokio::time::sleep(delay) => {}
        }
    }
}
