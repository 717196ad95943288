//! The Bot API client: teloxide's typed requests, with a deadline on every call and redacted errors.
//!
//! Every request is bounded: a long poll by its own `timeout` plus [`POLL_MARGIN`], anything else by
//! [`REQUEST_DEADLINE`]. A hung connection therefore cannot freeze the update loop (G5), and the reqwest
//! client's own timeout is set just above the longest long poll so it never cuts one short.
//! The `Bot` inside holds the token and derives `Debug`: it is never formatted (G7).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use teloxide::Bot;
use teloxide::payloads::GetUpdatesSetters;
use teloxide::requests::{JsonRequest, Payload, Requester};
use teloxide::types::{BotCommand, ChatId, Me, Update, UpdateId, UpdateKind};

use super::errors::ApiFailure;
use crate::exit::{Failure, Result};
use crate::secret::Token;

/// Added to a long poll's `timeout` to get its deadline: Telegram answers an idle poll at `timeout`.
pub const POLL_MARGIN: Duration = Duration::from_secs(10);
/// Deadline of every other request.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(15);

/// The key of the `UpdateKind::Error` value that stands for an update that did not decode at all;
/// its value is the decoding error (one line, no content of the update).
pub const UNDECODABLE: &str = "undecodable";

/// A Bot API client for one bot. Clones share the token, which a reload may replace (a token revoked
/// and reissued by @BotFather keeps its bot id): every request uses the token current when it starts,
/// and its errors are redacted with that token.
#[derive(Clone)]
pub struct Client {
    current: Arc<RwLock<Current>>,
    http: reqwest::Client,
    base: url::Url,
}

#[derive(Clone)]
struct Current {
    bot: Bot,
    token: Token,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("token", &self.current().token)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `longest_poll` is the largest long-poll timeout this client will be asked for.
    pub fn new(token: &Token, api_url: &url::Url, longest_poll: Duration) -> Result<Self> {
        let http = teloxide::net::default_reqwest_settings()
            .timeout(longest_poll + POLL_MARGIN + Duration::from_secs(5))
            .build()
            .map_err(|e| Failure::software(format!("cannot create the HTTP client: {e}")))?;
        let mut base = api_url.clone();
        if let Ok(mut segments) = base.path_segments_mut() {
            // "https://host/" would otherwise become "https://host//bot<token>/getMe".
            segments.pop_if_empty();
        }
        let current = Current {
            bot: Bot::with_client(token.expose(), http.clone()).set_api_url(base.clone()),
            token: token.clone(),
        };
        Ok(Self {
            current: Arc::new(RwLock::new(current)),
            http,
            base,
        })
    }

    fn current(&self) -> Current {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Uses `token` for every request from now on (all clones). The caller checked it is this bot's.
    pub fn replace_token(&self, token: &Token) {
        let bot =
            Bot::with_client(token.expose(), self.http.clone()).set_api_url(self.base.clone());
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Current {
            bot,
            token: token.clone(),
        };
    }

    async fn call<T, R>(
        &self,
        method: &str,
        deadline: Duration,
        request: impl FnOnce(&Bot) -> R,
    ) -> std::result::Result<T, ApiFailure>
    where
        R: std::future::IntoFuture<Output = std::result::Result<T, teloxide::RequestError>>,
    {
        let Current { bot, token } = self.current();
        match tokio::time::timeout(deadline, request(&bot).into_future()).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(ApiFailure::from_request_error(method, &e, &token)),
            Err(_) => Err(ApiFailure::deadline(method, deadline)),
        }
    }

    pub async fn get_me(&self) -> std::result::Result<Me, ApiFailure> {
        self.call("getMe", REQUEST_DEADLINE, |bot| bot.get_me())
            .await
    }

    /// One long poll. `offset` confirms every update below it.
    ///
    /// One update that does not decode (a lone surrogate in a text, a number out of range, ...) must
    /// not fail its whole batch: the offset would then never move past it and every poll would fetch
    /// it again, blocking the queue for ever. Such a batch is decoded again one update at a time
    /// ([`decode_each`]): an undecodable update comes back as `UpdateKind::Error` with its id, as
    /// teloxide itself does for an update kind it does not know, so the handler skips it and the
    /// offset moves past it.
    pub async fn get_updates(
        &self,
        offset: Option<i32>,
        timeout: Duration,
        limit: u8,
    ) -> std::result::Result<Vec<Update>, ApiFailure> {
        let Current { bot, token } = self.current();
        let mut req = bot
            .get_updates()
            .timeout(timeout.as_secs() as u32)
            .limit(limit);
        if let Some(offset) = offset {
            req = req.offset(offset);
        }
        let deadline = timeout + POLL_MARGIN;
        match tokio::time::timeout(deadline, req.into_future()).await {
            Ok(Ok(updates)) => Ok(updates),
            Ok(Err(e)) => {
                if let teloxide::RequestError::InvalidJson { raw, .. } = &e
                    && let Some(updates) = decode_each(raw)
                {
                    return Ok(updates);
                }
                Err(ApiFailure::from_request_error("getUpdates", &e, &token))
            }
            Err(_) => Err(ApiFailure::deadline("getUpdates", deadline)),
        }
    }

    /// The deadline of a long poll started now with `timeout`.
    pub fn poll_deadline(timeout: Duration) -> Instant {
        Instant::now() + timeout + POLL_MARGIN
    }

    /// `sendMessage` with a plain text. The answer's `Message` is not decoded (see [`SendText`]).
    pub async fn send_message(
        &self,
        chat: ChatId,
        text: &str,
    ) -> std::result::Result<(), ApiFailure> {
        self.call("sendMessage", REQUEST_DEADLINE, |bot| {
            JsonRequest::new(
                bot.clone(),
                SendText {
                    chat_id: chat.0,
                    text: text.to_owned(),
                },
            )
        })
        .await
        .map(drop)
    }

    /// `getChatMember`: whether `user` is the owner or an administrator of the group `chat`.
    pub async fn is_chat_admin(
        &self,
        chat: ChatId,
        user: u64,
    ) -> std::result::Result<bool, ApiFailure> {
        self.call("getChatMember", REQUEST_DEADLINE, |bot| {
            bot.get_chat_member(chat, teloxide::types::UserId(user))
        })
        .await
        .map(|member| member.is_privileged())
    }

    pub async fn delete_webhook(&self) -> std::result::Result<(), ApiFailure> {
        self.call("deleteWebhook", REQUEST_DEADLINE, |bot| {
            bot.delete_webhook()
        })
        .await
        .map(drop)
    }

    /// The URL of the webhook set for this bot ("" when none).
    pub async fn webhook_url(&self) -> std::result::Result<String, ApiFailure> {
        self.call("getWebhookInfo", REQUEST_DEADLINE, |bot| {
            bot.get_webhook_info()
        })
        .await
        .map(|info| info.url.map(|u| u.to_string()).unwrap_or_default())
    }

    pub async fn set_my_commands(
        &self,
        commands: Vec<BotCommand>,
    ) -> std::result::Result<(), ApiFailure> {
        self.call("setMyCommands", REQUEST_DEADLINE, |bot| {
            bot.set_my_commands(commands)
        })
        .await
        .map(drop)
    }

    /// Webhook mode: Telegram POSTs updates to `url`, one at a time (`max_connections = 1`, so update
    /// ids arrive in order), with `secret` in `X-Telegram-Bot-Api-Secret-Token`. Pending updates are
    /// kept: they are delivered to the webhook.
    pub async fn set_webhook(
        &self,
        url: url::Url,
        secret: &str,
    ) -> std::result::Result<(), ApiFailure> {
        use teloxide::payloads::SetWebhookSetters;
        self.call("setWebhook", REQUEST_DEADLINE, |bot| {
            bot.set_webhook(url)
                .secret_token(secret.to_owned())
                .max_connections(1)
        })
        .await
        .map(drop)
    }
}

/// The payload of `sendMessage` as the outbound queue sends it: a chat and a plain text. teloxide's own
/// `SendMessage` decodes the answer into a full `Message` (through serde's buffered `Content`, as its
/// types are flattened), which nothing here reads; this one skips the answer's `result` unread
/// ([`serde::de::IgnoredAny`]). Errors (`ok: false`, 429's `retry_after`, ...) are decoded by teloxide
/// as for any request, so [`ApiFailure`] classifies them the same way.
#[derive(serde::Serialize)]
struct SendText {
    chat_id: i64,
    text: String,
}

impl Payload for SendText {
    type Output = serde::de::IgnoredAny;
    const NAME: &'static str = "sendMessage";
}

/// Decodes one update's JSON text. An update that does not decode but has a readable `update_id`
/// becomes `UpdateKind::Error({"undecodable": "<the error>"})` (see [`UNDECODABLE`]), so that it can be
/// skipped by id; `None` when not even the id can be read.
pub fn decode_update(text: &str) -> Option<Update> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        update_id: u32,
    }
    match serde_json::from_str::<Update>(text) {
        Ok(update) => Some(update),
        Err(error) => {
            // Only the id is read: every other value is skipped unread (lone surrogates included).
            let IdOnly { update_id } = serde_json::from_str(text).ok()?;
            Some(Update {
                id: UpdateId(update_id),
                kind: UpdateKind::Error(serde_json::json!({ UNDECODABLE: error.to_string() })),
            })
        }
    }
}

/// Decodes a `getUpdates` answer whose batch did not decode as a whole, one update at a time
/// ([`decode_update`]). An update without a readable id (Telegram always sends one) is logged and
/// left out: the offset of a later update confirms it. `None` when `body` is not a successful answer
/// with a list of JSON values (then the batch's own error stands: a garbage body is retried).
fn decode_each(body: &str) -> Option<Vec<Update>> {
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        ok: bool,
        #[serde(borrow)]
        result: Vec<&'a serde_json::value::RawValue>,
    }
    let answer: Answer<'_> = serde_json::from_str(body).ok().filter(|a: &Answer| a.ok)?;
    let mut updates = Vec::with_capacity(answer.result.len());
    for raw in answer.result {
        match decode_update(raw.get()) {
            Some(update) => updates.push(update),
            None => tracing::warn!(
                "getUpdates: skipping an update without a readable update_id ({} bytes)",
                raw.get().len()
            ),
        }
    }
    Some(updates)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"update_id":7,"message":{"message_id":1,"date":1700000000,"chat":{"id":5,"type":"private","first_name":"A"},"text":"/ping"}}"#;

    fn undecodable(update: &Update) -> Option<&str> {
        match &update.kind {
            UpdateKind::Error(value) => value.get(UNDECODABLE)?.as_str(),
            _ => None,
        }
    }

    #[test]
    fn one_bad_update_does_not_fail_its_batch() {
        let lone = GOOD.replace("7,", "8,").replace("/ping", r"/ping \udc80");
        let out_of_range = GOOD.replace("7,", "9,").replace("1700000000", "1e400");
        let body = format!(
            r#"{{"ok":true,"result":[{GOOD},{lone},{out_of_range},{{"no_id":"\ud800"}},42]}}"#
        );
        // teloxide alone fails the whole batch...
        assert!(serde_json::from_str::<Vec<Update>>(&format!("[{GOOD},{lone}]")).is_err());
        // ...decoded one by one, the good one is intact and the bad ones keep their ids.
        let updates = decode_each(&body).unwrap();
        let ids: Vec<u32> = updates.iter().map(|u| u.id.0).collect();
        assert_eq!(ids, [7, 8, 9]);
        assert!(matches!(updates[0].kind, UpdateKind::Message(_)));
        assert!(undecodable(&updates[1]).unwrap().contains("surrogate"));
        assert!(undecodable(&updates[2]).unwrap().contains("out of range"));
        assert!(!undecodable(&updates[1]).unwrap().contains('\n'));
    }

    #[test]
    fn answers_that_are_no_successful_list_are_left_to_the_caller() {
        for body in [
            "<html>bad gateway</html>",
            r#"{"ok":false,"error_code":500,"description":"Internal Server Error"}"#,
            r#"{"ok":true,"result":{"update_id":1}}"#,
            r#"{"ok":true,"result":[{"update_id":1}"#,
        ] {
            assert!(decode_each(body).is_none(), "{body}");
        }
    }
}
