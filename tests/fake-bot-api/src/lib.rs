//! A fake Telegram Bot API on loopback, for cryptobot's tests only (never shipped).
//!
//! Telegram is unreachable from the test machines, so every test that involves Telegram talks to
//! this server instead: in-process through [`FakeBotApi`] (plain synchronous `#[test]`s work; the
//! server runs on its own thread and tokio runtime), or as the `fake-bot-api` binary for the
//! systemd end-to-end tests, driven over its HTTP control API. The contract its users code
//! against is `CONTRACT.md` next to this crate's `Cargo.toml`.
//!
//! # Fidelity: what behaves exactly like Telegram (shared/design/telegram.md)
//!
//! - Transport: `<base>/bot<TOKEN>/<method>`, GET query or POST JSON / form-urlencoded /
//!   multipart; JSON answers `{"ok":true,"result":..}` / `{"ok":false,"error_code",
//!   "description","parameters"}`; unknown token → 401 "Unauthorized"; unknown method or path →
//!   404 "Not Found"; method names case-insensitive.
//! - `getUpdates`: `offset` confirms everything below it for ever, a negative offset keeps only
//!   the last `-offset` updates; `limit` 1–100 (default 100) and `timeout` 0–50 s are clamped; a
//!   long poll answers as soon as an update is queued, else `[]` after `timeout` seconds;
//!   `allowed_updates` is remembered. As telegram-bot-api's `do_get_updates` does, a new
//!   `getUpdates` that will itself wait (`timeout` > 0 and no update to take) ends the pending one
//!   with 409 "Conflict: terminated by other getUpdates request; …"; one with updates to take, or
//!   `timeout=0`, is answered beside it (two pollers then split the updates without a 409). As its
//!   `fail_query_conflict` does, at most one such 409 (or one from a setWebhook) is answered at once
//!   every 3 s; the others are held 3 s first. While a webhook is set,
//!   `getUpdates` answers 409 "Conflict: can't use getUpdates method while webhook is active; …",
//!   and a setWebhook ends a pending poll with 409 "Conflict: terminated by setWebhook request".
//!   As telegram-bot-api does, a call repeating the previous call's raw `offset` within 3 s of
//!   its start waits at least 3 s (a `timeout` below 3 is raised to 3), and within 0.5 s gets at
//!   most 1 update: a shutdown's final `offset=last+1, timeout=0` confirm can take 3 s.
//! - Updates and messages are real `Update` / `Message` objects (teloxide 0.17 deserialises them,
//!   which the crate's tests check with teloxide itself), with a `bot_command` entity for text
//!   starting with '/' — except an update a test injects as text ([`FakeBotApi::inject_update_text`]),
//!   which goes out verbatim, however invalid. `getMe` answers a full bot `User`.
//! - `sendMessage` answers the sent `Message`, or 400 "Bad Request: message text is empty" /
//!   "message is too long" / "chat not found" (a chat nobody wrote from), 403 "Forbidden: bot was
//!   blocked by the user" (see [`FakeBotApi::block_chat`]), and, when rate limits are on, 429
//!   "Too Many Requests: retry after N" with `parameters.retry_after` (per chat a burst of 3 then
//!   1/s, per group 20/min, overall at most 30 in any sliding second).
//! - Webhooks: `setWebhook`/`deleteWebhook`/`getWebhookInfo` with `drop_pending_updates`,
//!   `secret_token`, `max_connections`, `allowed_updates` ("Webhook was set" / "Webhook is
//!   already set" / "Webhook was deleted"; one setWebhook per second, limits on or off);
//!   pending updates are POSTed to the url with `X-Telegram-Bot-Api-Secret-Token`, confirmed on
//!   2xx, retried otherwise. `setMyCommands`/`getMyCommands`/`deleteMyCommands` per scope and
//!   language.
//! - Faults ([`Fault`], [`FakeBotApi::inject_fault`]) reproduce what the network and Telegram's
//!   front ends do: 500s, connections reset without an answer, requests never answered, 200s
//!   with an HTML body, 429s.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use fake_bot_api::{FakeBotApi, Fault};
//!
//! let api = FakeBotApi::start();
//! let bot_id = api.add_bot("123456:TEST-secret", "cryptotest_bot");
//! api.inject_message(bot_id, 42, "/price btc");
//! api.inject_fault(bot_id, "getUpdates", Fault::ServerError, 1);
//! // Point the bot at `api.url()` (teloxide: `Bot::set_api_url`), run it, then for instance:
//! // api.wait_for_sent(bot_id, |m| m.chat_id == 42, Duration::from_secs(5))?;
//! let stats = api.wait_until(bot_id, |s| s.pending_updates == 1, Duration::from_secs(1));
//! assert_eq!(stats.unwrap().conflicts_409, 0);
//! ```
//!
//! # Simplified on purpose
//!
//! Webhooks are delivered one at a time and only to `http://` urls (no TLS); `setWebhook` also
//! accepts `http://` urls; update ids start at 1 per bot; markup (`parse_mode`) is not parsed, so texts are recorded as sent; the 24-hour
//! expiry of unconfirmed updates does not exist; any `<digits>:<[A-Za-z0-9_-]+>` token is accepted
//! by [`FakeBotApi::add_bot`] (real secrets are 35 characters).
//!
//! # Map
//!
//! `types` (the public [`Stats`], [`SentMessage`], [`Fault`]), `state` (per-bot state and its
//! logic, no I/O), `api_error` (Telegram's error answers), `shared` (the mutex around the state
//! and the waits), `ratelimit` (token buckets), `objects` (Telegram JSON objects), `params`
//! (parameter parsing), `bot_api` (the Bot API routes), `control` (the control routes), `webhook`
//! (webhook delivery), `server` (the thread, runtime and connections, so a `Reset` fault can drop
//! one without an answer).

mod api_error;
mod bot_api;
mod control;
mod objects;
mod params;
mod ratelimit;
mod server;
mod shared;
mod state;
mod types;
mod webhook;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use state::UPDATE_LIFETIME;
pub use state::webhooks::WEBHOOK_MAX_RETRY_DELAY;
pub use types::{Fault, METHODS, SentMessage, Stats};

use server::Server;

/// Whether `token` has the shape [`FakeBotApi::add_bot`] accepts: `<bot id>:<[A-Za-z0-9_-]+>`.
pub fn is_valid_token(token: &str) -> bool {
    state::bot_id_of_token(token).is_ok()
}
use shared::Shared;

/// A running fake Bot API. All methods are synchronous; dropping it stops the server (pending
/// requests are dropped with their connections) and joins its thread.
///
/// Methods that take a `bot_id` panic if no bot has that id: a test bug, reported loudly.
#[derive(Debug)]
pub struct FakeBotApi {
    shared: Arc<Shared>,
    server: Server,
}

impl FakeBotApi {
    /// Starts on `127.0.0.1` on a free port. Panics with a clear message if that fails.
    pub fn start() -> Self {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        Self::start_on(addr).unwrap_or_else(|e| panic!("fake-bot-api: cannot start on {addr}: {e}"))
    }

    /// Starts on `addr` (port 0: a free port). The listener is bound when this returns.
    pub fn start_on(addr: SocketAddr) -> io::Result<Self> {
        let shared = Arc::new(Shared::new());
        let router = control::routes()
            .fallback(bot_api::handle)
            .with_state(Arc::clone(&shared));
        let server = Server::start(addr, router)?;
        Ok(Self { shared, server })
    }

    /// The Bot API base, `http://127.0.0.1:PORT` (requests go to `<url>/bot<TOKEN>/<method>`,
    /// control requests to `<url>/control/...`).
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Accepts `token` from now on and returns the bot id (the token's numeric prefix). `username`
    /// (without '@'; empty: `fake<id>_bot`) is what getMe answers. A different token for a known
    /// bot id replaces the old token, which then answers 401, like a token revoked in @BotFather.
    /// Panics if the token is not `<digits>:<[A-Za-z0-9_-]+>`.
    pub fn add_bot(&self, token: &str, username: &str) -> i64 {
        self.shared
            .mutate(|state| state.add_bot(token, username))
            .unwrap_or_else(|e| panic!("fake-bot-api: {e}"))
    }

    /// Queues a text message from the user of `chat_id` (positive: a private chat, negative: a
    /// group) and returns its update id. The bot may write to `chat_id` from now on.
    pub fn inject_message(&self, bot_id: i64, chat_id: i64, text: &str) -> i64 {
        self.on_bot(bot_id, |bot| bot.inject_message(chat_id, text))
    }

    /// Queues any update (a JSON object; its `update_id` is assigned) and returns its update id.
    /// Every `chat.id` and human `from.id` in it become chats the bot may write to.
    pub fn inject_raw_update(&self, bot_id: i64, update: Value) -> i64 {
        assert!(
            update.is_object(),
            "fake-bot-api: an update must be a JSON object, got {update}"
        );
        self.on_bot(bot_id, |bot| bot.push_update(update))
    }

    /// Queues the text of one update exactly as given, for bad-input tests: one JSON object
    /// without `update_id` (inserted after its opening brace), whose content need not make a valid
    /// `Update` nor decode to valid Unicode: `{"message": {"text": "\udc80", ...}}`, numbers out
    /// of range, wrong types. Returns its update id. Panics if the text is not one JSON object
    /// (a body that is not JSON at all is what [`Fault::Garbage`] is for).
    pub fn inject_update_text(&self, bot_id: i64, text: &str) -> i64 {
        self.on_bot(bot_id, |bot| bot.push_update_text(text))
            .unwrap_or_else(|e| panic!("fake-bot-api: {e}"))
    }

    /// Every message the bot sent successfully, oldest first.
    pub fn sent(&self, bot_id: i64) -> Vec<SentMessage> {
        self.on_bot(bot_id, |bot| bot.sent.clone())
    }

    /// The first sent message (already sent or sent within `timeout`) that `matches`; else an
    /// error saying how many were sent and which was last.
    pub fn wait_for_sent(
        &self,
        bot_id: i64,
        mut matches: impl FnMut(&SentMessage) -> bool,
        timeout: Duration,
    ) -> Result<SentMessage, String> {
        let deadline = Instant::now() + timeout;
        let mut checked = 0;
        let mut last = None;
        loop {
            let (generation, new) = self.shared.snapshot(|state| {
                state
                    .bot(bot_id)
                    .map(|bot| bot.sent.get(checked..).unwrap_or_default().to_vec())
            });
            for message in new? {
                checked += 1;
                if matches(&message) {
                    return Ok(message);
                }
                last = Some(message);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "fake-bot-api: timed out after {timeout:?} waiting for bot {bot_id} to send a matching \
                     message; it sent {checked} message(s), the last: {last:?}"
                ));
            }
            self.shared.wait_for_change(generation, deadline);
        }
    }

    /// Waits until the bot's counters satisfy `condition` (checked at once, then on every change)
    /// and returns them; after `timeout`, an error showing the last counters seen.
    pub fn wait_until(
        &self,
        bot_id: i64,
        mut condition: impl FnMut(&Stats) -> bool,
        timeout: Duration,
    ) -> Result<Stats, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let (generation, stats) = self
                .shared
                .snapshot(|state| state.bot(bot_id).map(|bot| bot.stats()));
            let stats = stats?;
            if condition(&stats) {
                return Ok(stats);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "fake-bot-api: timed out after {timeout:?} waiting for a condition on bot {bot_id}'s \
                     stats; last seen: {stats:?}"
                ));
            }
            self.shared.wait_for_change(generation, deadline);
        }
    }

    /// The bot's counters now.
    pub fn stats(&self, bot_id: i64) -> Stats {
        self.on_bot(bot_id, |bot| bot.stats())
    }

    /// Makes the next `count` calls of `method` (any case, e.g. "getUpdates", "sendMessage") by
    /// this bot fail with `fault`, after the faults already queued for it. A faulted call is
    /// counted (`get_updates_calls`, `send_message_calls`, and `rate_limited_429` for
    /// `TooManyRequests`) but not processed: a faulted getUpdates confirms nothing, is not a poll
    /// (`active_polls`) and does not 409 a pending one. Panics on a method the fake does not
    /// implement ([`METHODS`]).
    pub fn inject_fault(&self, bot_id: i64, method: &str, fault: Fault, count: u32) {
        let canonical = types::canonical_method(method).unwrap_or_else(|| {
            panic!("fake-bot-api: unknown method {method:?}; known: {METHODS:?}")
        });
        self.on_bot(bot_id, |bot| bot.add_fault(canonical, fault, count));
    }

    /// Switches Telegram's sending limits on or off for every bot (off by default); switching
    /// resets the buckets to full.
    pub fn set_rate_limits(&self, enabled: bool) {
        self.shared.mutate(|state| state.set_rate_limits(enabled));
    }

    /// An outage of `method` (any case) for this bot: every call of it in the next `duration` fails
    /// with `fault`, counted as injected faults are. A zero `duration` ends an outage early. Panics
    /// on a method the fake does not implement.
    pub fn set_outage(&self, bot_id: i64, method: &str, fault: Fault, duration: Duration) {
        let canonical = types::canonical_method(method).unwrap_or_else(|| {
            panic!("fake-bot-api: unknown method {method:?}; known: {METHODS:?}")
        });
        self.on_bot(bot_id, |bot| bot.set_outage(canonical, fault, duration));
    }

    /// Latency added to every call of `method` (any case) by this bot before it is answered: the
    /// 100–300 ms a VPS sees to Telegram. `Duration::ZERO` removes it. Panics on an unknown method.
    pub fn set_latency(&self, bot_id: i64, method: &str, latency: Duration) {
        let canonical = types::canonical_method(method).unwrap_or_else(|| {
            panic!("fake-bot-api: unknown method {method:?}; known: {METHODS:?}")
        });
        self.on_bot(bot_id, |bot| {
            if latency.is_zero() {
                bot.latency.remove(canonical);
            } else {
                bot.latency.insert(canonical, latency);
            }
        });
    }

    /// Makes `getUpdates` of this bot answer at once whatever its `timeout` (`true`), as some proxies
    /// and local Bot API servers do, or honour it again (`false`).
    pub fn set_ignore_poll_timeout(&self, bot_id: i64, ignore: bool) {
        self.on_bot(bot_id, |bot| bot.ignore_poll_timeout = ignore);
    }

    /// Makes the next update of this bot get id `next` (lower or higher than any before), as
    /// Telegram does after a week without updates ("chosen randomly instead of sequentially") or
    /// when a bot moves to another Bot API server. Updates still queued keep their ids.
    pub fn set_next_update_id(&self, bot_id: i64, next: i64) {
        self.on_bot(bot_id, |bot| bot.set_next_update_id(next));
    }

    /// How long an update of this bot waits to be confirmed before it is dropped, for the updates
    /// queued from now on (Telegram: a day, [`UPDATE_LIFETIME`]). A webhook gives an update
    /// up once its next attempt would come after that.
    pub fn set_update_lifetime(&self, bot_id: i64, lifetime: Duration) {
        self.on_bot(bot_id, |bot| bot.update_lifetime = lifetime);
    }

    /// Makes `users` the administrators of the group `chat_id` as `getChatMember` reports them
    /// (status "administrator"; anyone else is a "member"). Not in CONTRACT.md; an addition.
    pub fn set_chat_admins(&self, bot_id: i64, chat_id: i64, users: &[i64]) {
        self.on_bot(bot_id, |bot| bot.set_chat_admins(chat_id, users));
    }

    /// Makes `sendMessage` to `chat_id` answer 403 "Forbidden: bot was blocked by the user"
    /// (`blocked == true`) or work again. Not in CONTRACT.md; an addition.
    pub fn block_chat(&self, bot_id: i64, chat_id: i64, blocked: bool) {
        self.on_bot(bot_id, |bot| bot.block_chat(chat_id, blocked));
    }

    fn on_bot<R>(&self, bot_id: i64, f: impl FnOnce(&mut state::BotState) -> R) -> R {
        self.shared
            .mutate(|state| state.bot(bot_id).map(f))
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_handle_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<super::FakeBotApi>();
    }
}
