//! The public types tests read and write: [`Stats`], [`SentMessage`] and [`Fault`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Counters of one bot, as `stats()`, `wait_until()` and `GET /control/bots/{id}/stats` show them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Every `getUpdates` request with this bot's token, faulted ones included.
    pub get_updates_calls: u64,
    /// Older `getUpdates` requests answered 409 "terminated by other getUpdates request" because a
    /// newer one arrived while they were pending.
    pub conflicts_409: u64,
    /// `getUpdates` requests answered 409 because a webhook is set.
    pub webhook_conflicts_409: u64,
    /// Every 429 answered: by the rate limiter or by an injected `TooManyRequests` fault.
    pub rate_limited_429: u64,
    /// update id → how many times it was handed out (returned by `getUpdates` or POSTed to the
    /// webhook). Exactly 1 everywhere means nothing was handled twice.
    pub deliveries: BTreeMap<i64, u32>,
    /// Updates with an id below this are confirmed and never returned again (0: nothing confirmed).
    pub confirmed_offset: i64,
    /// Updates queued and not yet confirmed.
    pub pending_updates: usize,
    /// `getUpdates` requests in flight right now (a healthy single bot: 0 or 1).
    pub active_polls: u32,
    /// The most `getUpdates` requests ever in flight at once (a healthy single bot: at most 1).
    pub max_concurrent_polls: u32,
    /// Every `sendMessage` request with this bot's token, faulted and refused ones included.
    pub send_message_calls: u64,
    /// Updates dropped unconfirmed because they waited past their lifetime (a day, or
    /// `set_update_lifetime`): for a webhook, once the next attempt would come after it.
    #[serde(default)]
    pub expired_updates: u64,
    /// `getUpdates` calls whose offset was "in the future" (more than 10 beyond the next update
    /// id): they confirmed nothing and were answered from the head of the queue.
    #[serde(default)]
    pub future_offsets: u64,
    /// Every Bot API request with this bot's token, by method (`getMe`, `getUpdates`, ...), counted
    /// when it arrives, faulted and refused ones included.
    #[serde(default)]
    pub calls: BTreeMap<String, u64>,
    /// The requests answered, by method: counted when the answer leaves, after any latency set for
    /// the method (a request still held, or whose client went away, is not counted).
    #[serde(default)]
    pub answered: BTreeMap<String, u64>,
}

/// A message the bot sent successfully (`sendMessage` answered 200).
/// JSON: `{"message_id":1,"chat_id":42,"text":"pong","at_ms":<unix ms>}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "SentMessageJson", from = "SentMessageJson")]
pub struct SentMessage {
    /// The id the fake gave the message (message ids count per chat, shared with incoming ones).
    pub message_id: i64,
    pub chat_id: i64,
    /// The text exactly as the bot sent it (markup is not parsed).
    pub text: String,
    /// When the fake accepted it.
    pub at: SystemTime,
}

#[derive(Serialize, Deserialize)]
struct SentMessageJson {
    message_id: i64,
    chat_id: i64,
    text: String,
    at_ms: u64,
}

impl From<SentMessage> for SentMessageJson {
    fn from(sent: SentMessage) -> Self {
        let at_ms = sent
            .at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            message_id: sent.message_id,
            chat_id: sent.chat_id,
            text: sent.text,
            at_ms,
        }
    }
}

impl From<SentMessageJson> for SentMessage {
    fn from(json: SentMessageJson) -> Self {
        Self {
            message_id: json.message_id,
            chat_id: json.chat_id,
            text: json.text,
            at: UNIX_EPOCH + Duration::from_millis(json.at_ms),
        }
    }
}

/// A failure injected into the next calls of one method (see `FakeBotApi::inject_fault`). A faulted
/// call is answered before it is processed: nothing is confirmed, sent or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 500 with a Telegram-style JSON error.
    ServerError,
    /// The TCP connection is closed (with a RST) and no HTTP response is written at all.
    Reset,
    /// The request is never answered: held until the client disconnects or the server stops.
    Hang,
    /// HTTP 200 with the body `<html>bad gateway</html>` (content-type text/html).
    Garbage,
    /// HTTP 429 "Too Many Requests: retry after N" with `parameters.retry_after` = N.
    TooManyRequests { retry_after: u32 },
}

impl Fault {
    /// Parses the control API's `kind` (`server_error`, `reset`, `hang`, `garbage`,
    /// `too_many_requests`); `retry_after` defaults to 1 second.
    pub fn from_kind(kind: &str, retry_after: Option<u32>) -> Result<Self, String> {
        Ok(match kind {
            "server_error" => Self::ServerError,
            "reset" => Self::Reset,
            "hang" => Self::Hang,
            "garbage" => Self::Garbage,
            "too_many_requests" => Self::TooManyRequests {
                retry_after: retry_after.unwrap_or(1),
            },
            other => {
                return Err(format!(
                    "unknown fault kind {other:?}: expected server_error, reset, hang, garbage or \
                     too_many_requests"
                ));
            }
        })
    }
}

/// The Bot API methods the fake implements, spelled as Telegram documents them. Telegram matches
/// method names case-insensitively, and so does the fake.
pub const METHODS: &[&str] = &[
    "getMe",
    "getUpdates",
    "sendMessage",
    "getChatMember",
    "setWebhook",
    "deleteWebhook",
    "getWebhookInfo",
    "setMyCommands",
    "getMyCommands",
    "deleteMyCommands",
];

/// The documented spelling of a method name given in any case, if the fake implements it.
pub(crate) fn canonical_method(name: &str) -> Option<&'static str> {
    METHODS
        .iter()
        .copied()
        .find(|m| m.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_message_json_uses_unix_milliseconds() {
        let sent = SentMessage {
            message_id: 1,
            chat_id: 42,
            text: "pong".into(),
            at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        };
        let json = serde_json::to_value(&sent).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"message_id":1,"chat_id":42,"text":"pong","at_ms":1_700_000_000_123_u64})
        );
        assert_eq!(serde_json::from_value::<SentMessage>(json).unwrap(), sent);
    }

    #[test]
    fn method_names_are_case_insensitive() {
        assert_eq!(canonical_method("getupdates"), Some("getUpdates"));
        assert_eq!(canonical_method("SENDMESSAGE"), Some("sendMessage"));
        assert_eq!(canonical_method("sendPhoto"), None);
    }
}
