//! The Bot API client: teloxide's typed requests, with a deadline on every call and redacted errors.
//!
//! Every request is bounded: a long poll by its own `timeout` plus [`POLL_MARGIN`], anything else by
//! [`REQUEST_DEADLINE`]. A hung connection therefore cannot freeze the update loop (G5), and the reqwest
//! client's own timeout is set just above the longest long poll so it never cuts one short.
//! The `Bot` inside holds the token and derives `Debug`: it is never formatted (G7).

use std::time::{Duration, Instant};

use teloxide::Bot;
use teloxide::payloads::GetUpdatesSetters;
use teloxide::requests::Requester;
use teloxide::types::{BotCommand, ChatId, Me, Update};

use super::errors::ApiFailure;
use crate::exit::{Failure, Result};
use crate::secret::Token;

/// Added to a long poll's `timeout` to get its deadline: Telegram answers an idle poll at `timeout`.
pub const POLL_MARGIN: Duration = Duration::from_secs(10);
/// Deadline of every other request.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(15);

/// A Bot API client for one token.
#[derive(Clone)]
pub struct Client {
    bot: Bot,
    token: Token,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("token", &self.token)
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
        let bot = Bot::with_client(token.expose(), http).set_api_url(base);
        Ok(Self {
            bot,
            token: token.clone(),
        })
    }

    async fn call<T>(
        &self,
        method: &str,
        deadline: Duration,
        request: impl std::future::IntoFuture<Output = std::result::Result<T, teloxide::RequestError>>,
    ) -> std::result::Result<T, ApiFailure> {
        match tokio::time::timeout(deadline, request.into_future()).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(ApiFailure::from_request_error(method, &e, &self.token)),
            Err(_) => Err(ApiFailure::deadline(method, deadline)),
        }
    }

    pub async fn get_me(&self) -> std::result::Result<Me, ApiFailure> {
        self.call("getMe", REQUEST_DEADLINE, self.bot.get_me())
            .await
    }

    /// One long poll. `offset` confirms every update below it.
    pub async fn get_updates(
        &self,
        offset: Option<i32>,
        timeout: Duration,
        limit: u8,
    ) -> std::result::Result<Vec<Update>, ApiFailure> {
        let mut req = self
            .bot
            .get_updates()
            .timeout(timeout.as_secs() as u32)
            .limit(limit);
        if let Some(offset) = offset {
            req = req.offset(offset);
        }
        self.call("getUpdates", timeout + POLL_MARGIN, req).await
    }

    /// The deadline of a long poll started now with `timeout`.
    pub fn poll_deadline(timeout: Duration) -> Instant {
        Instant::now() + timeout + POLL_MARGIN
    }

    pub async fn send_message(
        &self,
        chat: ChatId,
        text: &str,
    ) -> std::result::Result<(), ApiFailure> {
        self.call(
            "sendMessage",
            REQUEST_DEADLINE,
            self.bot.send_message(chat, text),
        )
        .await
        .map(drop)
    }

    pub async fn delete_webhook(&self) -> std::result::Result<(), ApiFailure> {
        self.call("deleteWebhook", REQUEST_DEADLINE, self.bot.delete_webhook())
            .await
            .map(drop)
    }

    /// The URL of the webhook set for this bot ("" when none).
    pub async fn webhook_url(&self) -> std::result::Result<String, ApiFailure> {
        self.call(
            "getWebhookInfo",
            REQUEST_DEADLINE,
            self.bot.get_webhook_info(),
        )
        .await
        .map(|info| info.url.map(|u| u.to_string()).unwrap_or_default())
    }

    pub async fn set_my_commands(
        &self,
        commands: Vec<BotCommand>,
    ) -> std::result::Result<(), ApiFailure> {
        self.call(
            "setMyCommands",
            REQUEST_DEADLINE,
            self.bot.set_my_commands(commands),
        )
        .await
        .map(drop)
    }
}
