//! The webhook and command-list part of [`BotState`]: setWebhook / deleteWebhook /
//! getWebhookInfo, what the delivery task (`crate::webhook`) takes and reports back, and the
//! command lists of setMyCommands / getMyCommands / deleteMyCommands.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::BotState;
use crate::api_error::ApiError;
use crate::objects;

/// Telegram accepts one setWebhook with a url per second.
const SET_WEBHOOK_INTERVAL: Duration = Duration::from_secs(1);

/// The longest wait between two attempts to deliver an update (telegram-bot-api's
/// `WEBHOOK_MAX_RESEND_TIMEOUT`; Telegram picks between it and twice it at random, the fake keeps it).
pub const WEBHOOK_MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// The wait before the next attempt after `fails` earlier failed ones of the same update.
fn webhook_retry_delay(fails: u32) -> Duration {
    match fails {
        0 => Duration::ZERO,
        n => Duration::from_secs(1u64 << n.min(6)).min(WEBHOOK_MAX_RETRY_DELAY),
    }
}

/// A webhook set with `setWebhook`.
#[derive(Debug, Clone)]
pub(crate) struct Webhook {
    pub(crate) url: String,
    pub(crate) secret_token: Option<String>,
    pub(crate) max_connections: u32,
    /// Bumped on every `setWebhook`, so that the delivery task of a replaced webhook stops.
    pub(crate) generation: u64,
    pub(crate) last_error: Option<(i64, String)>,
}

/// A `setWebhook` with a non-empty url.
#[derive(Debug)]
pub(crate) struct SetWebhook {
    pub(crate) url: String,
    pub(crate) secret_token: Option<String>,
    pub(crate) max_connections: u32,
    pub(crate) allowed_updates: Option<Vec<String>>,
    pub(crate) drop_pending: bool,
}

/// What `setWebhook` did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WebhookSet {
    /// A new webhook: its delivery task must carry this generation.
    Set { generation: u64 },
    /// The same webhook was already set: nothing changed (but `allowed_updates`).
    AlreadySet,
}

impl BotState {
    /// `setWebhook` with a non-empty url. Like Telegram: at most one per second, whether or not
    /// the send limits are on (else 429 "retry after 1"), "Webhook is already set" when nothing
    /// changes, and a pending long poll is ended with 409 "Conflict: terminated by setWebhook
    /// request".
    pub(crate) fn set_webhook(
        &mut self,
        request: SetWebhook,
        now: Instant,
    ) -> Result<WebhookSet, ApiError> {
        if self
            .last_set_webhook
            .is_some_and(|at| now.saturating_duration_since(at) < SET_WEBHOOK_INTERVAL)
        {
            self.stats.rate_limited_429 += 1;
            return Err(ApiError::too_many_requests(1));
        }
        self.last_set_webhook = Some(now);
        let unchanged = !request.drop_pending
            && self.webhook.as_ref().is_some_and(|hook| {
                hook.url == request.url
                    && hook.secret_token == request.secret_token
                    && hook.max_connections == request.max_connections
            });
        self.set_allowed_updates(request.allowed_updates);
        if unchanged {
            return Ok(WebhookSet::AlreadySet);
        }
        if request.drop_pending {
            self.drop_pending();
        }
        self.webhook_generation += 1;
        let generation = self.webhook_generation;
        self.webhook = Some(Webhook {
            url: request.url,
            secret_token: request.secret_token,
            max_connections: request.max_connections,
            generation,
            last_error: None,
        });
        Ok(WebhookSet::Set { generation })
    }

    /// `deleteWebhook`; answers whether a webhook was set.
    pub(crate) fn delete_webhook(&mut self, drop_pending: bool) -> bool {
        if drop_pending {
            self.drop_pending();
        }
        self.webhook.take().is_some()
    }

    fn drop_pending(&mut self) {
        if let Some(last) = self.queue.back() {
            let next = last.id + 1;
            self.confirm(next);
        }
    }

    pub(crate) fn webhook_info(&self) -> Value {
        let mut info = json!({"url": "", "has_custom_certificate": false,
                              "pending_update_count": self.stats().pending_updates});
        if let (Some(hook), Value::Object(map)) = (&self.webhook, &mut info) {
            map.insert("url".into(), hook.url.clone().into());
            map.insert("max_connections".into(), hook.max_connections.into());
            if let Some(allowed) = &self.allowed_updates {
                map.insert("allowed_updates".into(), json!(allowed));
            }
            if let Some((date, message)) = &hook.last_error {
                map.insert("last_error_date".into(), (*date).into());
                map.insert("last_error_message".into(), message.clone().into());
            }
        }
        info
    }

    /// The next update for the webhook of `generation`: `Err(())` when that webhook is gone.
    pub(crate) fn next_webhook_update(
        &mut self,
        generation: u64,
    ) -> Result<Option<(i64, super::Queued)>, ()> {
        match &self.webhook {
            Some(hook) if hook.generation == generation => {}
            _ => return Err(()),
        }
        self.drop_expired(Instant::now());
        self.drop_unwanted();
        Ok(self.queue.front().map(|p| (p.id, p.update.clone())))
    }

    /// The webhook answered update `id` (`Ok(status)`) or could not be reached (`Err`): a 2xx
    /// confirms it; anything else is recorded in `getWebhookInfo` and the update is tried again
    /// after the returned delay, as Telegram's `WebhookActor::on_update_error` spaces it: at once
    /// after the first failure, then 2 s doubling to [`WEBHOOK_MAX_RETRY_DELAY`]. An update whose
    /// next attempt would come after its lifetime ends is dropped (`Stats.expired_updates`): "it
    /// gives up after a reasonable number of attempts".
    pub(crate) fn webhook_result(
        &mut self,
        generation: u64,
        id: i64,
        result: Result<u16, String>,
        now: Instant,
    ) -> Duration {
        if result.is_ok() {
            *self.stats.deliveries.entry(id).or_insert(0) += 1;
        }
        let error = match result {
            Ok(status) if (200..300).contains(&status) => {
                self.confirm(id + 1);
                return Duration::ZERO;
            }
            Ok(status) => format!("Wrong response from the webhook: {status}"),
            Err(error) => error,
        };
        if let Some(hook) = self.webhook.as_mut().filter(|h| h.generation == generation) {
            hook.last_error = Some((objects::unix_now(), error));
        }
        let Some(pending) = self.queue.front_mut().filter(|p| p.id == id) else {
            return Duration::ZERO;
        };
        let delay = webhook_retry_delay(pending.webhook_fails);
        pending.webhook_fails += 1;
        if now + delay >= pending.expires_at {
            self.queue.pop_front();
            self.stats.expired_updates += 1;
            return Duration::ZERO;
        }
        delay
    }

    pub(crate) fn set_commands(&mut self, scope_key: String, commands: Value) {
        self.commands.insert(scope_key, commands);
    }

    pub(crate) fn commands(&self, scope_key: &str) -> Value {
        self.commands
            .get(scope_key)
            .cloned()
            .unwrap_or_else(|| json!([]))
    }

    pub(crate) fn delete_commands(&mut self, scope_key: &str) {
        self.commands.remove(scope_key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_come_at_once_then_after_2_s_doubling_to_60_s() {
        let delays: Vec<u64> = (0..9).map(|n| webhook_retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [0, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
