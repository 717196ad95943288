//! Everything the fake remembers, per bot: the update queue and confirmed offset, the pending
//! `getUpdates` polls (to answer the older one 409), counters, queued faults, the send limits, the
//! webhook and the command lists. Plain data and synchronous logic: no I/O and no waiting here;
//! [`crate::shared::Shared`] guards it with one mutex and wakes whoever waits on a change.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::api_error::ApiError;
use crate::objects;
use crate::ratelimit::SendLimits;
use crate::types::{Fault, SentMessage, Stats};

pub(crate) mod webhooks;

pub(crate) use webhooks::{SetWebhook, Webhook, WebhookSet};

/// Telegram's maximum text length for `sendMessage`.
const MAX_TEXT_CHARS: usize = 4096;
/// Update kinds Telegram leaves out unless `allowed_updates` names them.
const OPT_IN_UPDATES: &[&str] = &["chat_member", "message_reaction", "message_reaction_count"];

/// An offset more than this far beyond the id the next update will get is "in the future": Telegram's
/// server (its TQueue) then confirms nothing and answers from the head of the queue.
const FUTURE_OFFSET_SLACK: i64 = 10;

/// A repeated `getUpdates` offset within this long waits at least this long (see `start_poll`).
const REPEATED_OFFSET_MIN_WAIT: Duration = Duration::from_secs(3);
/// A repeated `getUpdates` offset within this long gets at most one update.
const REPEATED_OFFSET_ONE_UPDATE: Duration = Duration::from_millis(500);
/// telegram-bot-api's `fail_query_conflict`: at most one long poll is ended with 409 at once in this
/// long; any other is held this long first, then answered 409.
pub(crate) const CONFLICT_SPACING: Duration = Duration::from_secs(3);

/// The parameters of one `getUpdates`, which `start_poll` may adjust as Telegram does.
#[derive(Debug)]
pub(crate) struct PollRequest {
    /// The raw `offset` (0 when absent).
    pub(crate) offset: i64,
    pub(crate) limit: usize,
    pub(crate) timeout: Duration,
    pub(crate) allowed_updates: Option<Vec<String>>,
}

/// How a pending `getUpdates` ends.
#[derive(Debug)]
pub(crate) enum PollAnswer {
    Updates(Vec<Queued>),
    Error(ApiError),
    /// A 409 answered after [`CONFLICT_SPACING`] (another was answered less than that ago).
    HeldError(ApiError),
}

/// One queued update as it goes on the wire: a JSON object the fake built (or a test gave as a
/// `Value`), or the text of one injected as is ([`BotState::push_update_text`]), which may be no
/// valid `Update` at all (lone surrogates, numbers out of range, wrong types).
#[derive(Debug, Clone)]
pub(crate) enum Queued {
    Json(Value),
    Raw {
        /// The object's text, `update_id` included, written verbatim into the answers.
        text: Box<RawValue>,
        /// The first key other than `update_id` ("" if none could be read): the update's kind.
        kind: String,
    },
}

impl Queued {
    /// The update's kind: its first key other than `update_id` ("" if unknown).
    pub(crate) fn kind(&self) -> &str {
        match self {
            Self::Json(update) => objects::update_kind(update).unwrap_or(""),
            Self::Raw { kind, .. } => kind,
        }
    }

    /// The update as JSON text, exactly as it goes on the wire.
    pub(crate) fn to_text(&self) -> String {
        match self {
            Self::Json(update) => update.to_string(),
            Self::Raw { text, .. } => text.get().to_owned(),
        }
    }
}

/// Serialised straight into the answer's text (never through a `Value`, which cannot hold what a
/// raw update may contain).
impl Serialize for Queued {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Json(update) => update.serialize(serializer),
            Self::Raw { text, .. } => text.serialize(serializer),
        }
    }
}

/// The first key other than `update_id` of the JSON object `text`, reading no value (so anything a
/// value may contain, lone surrogates included, is fine).
fn first_key(text: &str) -> Option<String> {
    struct FirstKey;
    impl<'de> Visitor<'de> for FirstKey {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if found.is_none() && key != "update_id" {
                    found = Some(key);
                }
            }
            Ok(found)
        }
    }
    use serde::Deserializer as _;
    serde_json::Deserializer::from_str(text)
        .deserialize_map(FirstKey)
        .ok()
        .flatten()
}

/// The whole fake: bots by id, and which token belongs to which bot.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) bots: BTreeMap<i64, BotState>,
    tokens: HashMap<String, i64>,
    pub(crate) rate_limits: bool,
    /// Bumped on every change, for the waits of the synchronous handle.
    pub(crate) generation: u64,
}

impl State {
    /// Accepts `token` from now on and returns its bot id (the token's numeric prefix). A new token
    /// for a known bot id replaces the old one, which then answers 401 (like a revoked token).
    pub(crate) fn add_bot(&mut self, token: &str, username: &str) -> Result<i64, String> {
        let id = bot_id_of_token(token)?;
        let username = match username.trim_start_matches('@') {
            "" => format!("fake{id}_bot"),
            name => name.to_owned(),
        };
        let bot = self
            .bots
            .entry(id)
            .or_insert_with(|| BotState::new(id, token));
        if bot.token != token {
            self.tokens.remove(&bot.token);
            bot.token = token.to_owned();
        }
        bot.username = username;
        self.tokens.insert(token.to_owned(), id);
        Ok(id)
    }

    pub(crate) fn bot_id_for_token(&self, token: &str) -> Option<i64> {
        self.tokens.get(token).copied()
    }

    pub(crate) fn bot(&mut self, bot_id: i64) -> Result<&mut BotState, String> {
        self.bots
            .get_mut(&bot_id)
            .ok_or_else(|| format!("fake-bot-api: no bot with id {bot_id} (add_bot it first)"))
    }

    pub(crate) fn set_rate_limits(&mut self, enabled: bool) {
        self.rate_limits = enabled;
        for bot in self.bots.values_mut() {
            bot.limits = SendLimits::new();
        }
    }
}

/// `<bot id>:<secret>`, the id a positive integer and the secret made of `[A-Za-z0-9_-]`.
/// (Real secrets are 35 characters long; the fake accepts any length so tests can stay short.)
pub(crate) fn bot_id_of_token(token: &str) -> Result<i64, String> {
    // The token itself is never echoed: error messages end up in logs.
    let invalid = || "invalid bot token (expected <bot id>:<[A-Za-z0-9_-]+>)".to_owned();
    let (id, secret) = token.split_once(':').ok_or_else(invalid)?;
    let secret_ok = !secret.is_empty()
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match id.parse::<i64>() {
        Ok(n) if n > 0 && secret_ok && id.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(invalid()),
    }
}

/// How long an update waits for its confirmation before Telegram drops it: a day (telegram-bot-api
/// queues a message update with `message date + 86400 - now` left).
pub const UPDATE_LIFETIME: Duration = Duration::from_secs(86_400);

/// An update waiting to be confirmed.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) id: i64,
    pub(crate) update: Queued,
    pub(crate) expires_at: Instant,
    /// Failed webhook deliveries of it so far (they space the next attempt).
    pub(crate) webhook_fails: u32,
}

/// One bot: what it has been sent, what it sent, and how it behaved.
#[derive(Debug)]
pub(crate) struct BotState {
    pub(crate) id: i64,
    pub(crate) username: String,
    token: String,
    queue: VecDeque<Pending>,
    /// How long an update waits to be confirmed before Telegram drops it (a day).
    pub(crate) update_lifetime: Duration,
    next_update_id: i64,
    stats: Stats,
    pub(crate) sent: Vec<SentMessage>,
    /// Chats the bot may write to (someone wrote from them) → the last message id used in them.
    chats: HashMap<i64, i64>,
    blocked: HashSet<i64>,
    /// Group chat → the users getChatMember calls its administrators; anyone else is a member.
    admins: HashMap<i64, HashSet<i64>>,
    faults: HashMap<&'static str, VecDeque<(Fault, u32)>>,
    /// Outages: every call of the method fails with the fault until the instant.
    outages: HashMap<&'static str, (Fault, Instant)>,
    /// Latency added to every call of the method before it is answered.
    pub(crate) latency: HashMap<&'static str, Duration>,
    /// Answer every `getUpdates` at once, whatever its `timeout` (a proxy or a local server that does).
    pub(crate) ignore_poll_timeout: bool,
    limits: SendLimits,
    next_poll_id: u64,
    /// The raw offset and start of the last `getUpdates` (Telegram adjusts a repeated one).
    previous_poll: Option<(i64, Instant)>,
    /// The newest pending `getUpdates`; an older one still pending is in `superseded`.
    current_poll: Option<u64>,
    superseded: HashSet<u64>,
    /// Before this instant a 409 ending a long poll is held [`CONFLICT_SPACING`] first.
    next_conflict_at: Option<Instant>,
    /// The last `allowed_updates` given (Telegram remembers it across calls).
    allowed_updates: Option<Vec<String>>,
    pub(crate) webhook: Option<Webhook>,
    webhook_generation: u64,
    last_set_webhook: Option<Instant>,
    commands: BTreeMap<String, Value>,
}

impl BotState {
    fn new(id: i64, token: &str) -> Self {
        Self {
            id,
            username: String::new(),
            token: token.to_owned(),
            queue: VecDeque::new(),
            update_lifetime: UPDATE_LIFETIME,
            next_update_id: 1,
            stats: Stats::default(),
            sent: Vec::new(),
            chats: HashMap::new(),
            blocked: HashSet::new(),
            admins: HashMap::new(),
            faults: HashMap::new(),
            outages: HashMap::new(),
            latency: HashMap::new(),
            ignore_poll_timeout: false,
            limits: SendLimits::new(),
            next_poll_id: 1,
            previous_poll: None,
            current_poll: None,
            superseded: HashSet::new(),
            next_conflict_at: None,
            allowed_updates: None,
            webhook: None,
            webhook_generation: 0,
            last_set_webhook: None,
            commands: BTreeMap::new(),
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        let now = Instant::now();
        Stats {
            pending_updates: self.queue.iter().filter(|p| p.expires_at > now).count(),
            ..self.stats.clone()
        }
    }

    /// Counts a call of `method` (for the counters that exist) and takes the next queued fault.
    /// The answer to a `method` request leaves now.
    pub(crate) fn end_call(&mut self, method: &'static str) {
        *self.stats.answered.entry(method.to_owned()).or_default() += 1;
    }

    pub(crate) fn begin_call(&mut self, method: &'static str) -> Option<Fault> {
        *self.stats.calls.entry(method.to_owned()).or_default() += 1;
        match method {
            "getUpdates" => self.stats.get_updates_calls += 1,
            "sendMessage" => self.stats.send_message_calls += 1,
            _ => {}
        }
        if let Some((fault, until)) = self.outages.get(method).copied() {
            if Instant::now() < until {
                if matches!(fault, Fault::TooManyRequests { .. }) {
                    self.stats.rate_limited_429 += 1;
                }
                return Some(fault);
            }
            self.outages.remove(method);
        }
        let queue = self.faults.get_mut(method)?;
        let (fault, left) = queue.front_mut()?;
        let fault = *fault;
        *left -= 1;
        if *left == 0 {
            queue.pop_front();
        }
        if matches!(fault, Fault::TooManyRequests { .. }) {
            self.stats.rate_limited_429 += 1;
        }
        Some(fault)
    }

    /// Queues `fault` for the next `count` calls of `method`, after the faults already queued.
    pub(crate) fn add_fault(&mut self, method: &'static str, fault: Fault, count: u32) {
        if count > 0 {
            self.faults
                .entry(method)
                .or_default()
                .push_back((fault, count));
        }
    }

    /// Every call of `method` fails with `fault` for `duration` from now (an outage; a zero duration
    /// ends one). Counted like injected faults.
    pub(crate) fn set_outage(&mut self, method: &'static str, fault: Fault, duration: Duration) {
        self.outages
            .insert(method, (fault, Instant::now() + duration));
    }

    /// The id the next update will get, as Telegram picks a new one after a week without updates
    /// (lower or higher than every id before). Updates still queued keep theirs.
    pub(crate) fn set_next_update_id(&mut self, id: i64) {
        self.next_update_id = id;
    }

    pub(crate) fn block_chat(&mut self, chat_id: i64, blocked: bool) {
        if blocked {
            self.blocked.insert(chat_id);
        } else {
            self.blocked.remove(&chat_id);
        }
    }

    pub(crate) fn set_chat_admins(&mut self, chat_id: i64, users: &[i64]) {
        self.admins.insert(chat_id, users.iter().copied().collect());
    }

    /// getChatMember: the user as a member of the chat, with the status Telegram gives
    /// ("administrator" for the chat's admins, else "member"); 400 "chat not found" for a chat
    /// nobody wrote from, as for sendMessage.
    pub(crate) fn chat_member(&self, chat_id: i64, user_id: i64) -> Result<Value, ApiError> {
        if !self.chats.contains_key(&chat_id) {
            return Err(ApiError::bad_request("chat not found"));
        }
        let user = objects::human_user(user_id);
        let admin = self
            .admins
            .get(&chat_id)
            .is_some_and(|admins| admins.contains(&user_id));
        Ok(if admin {
            // Every field Telegram sends for an administrator.
            json!({"user": user, "status": "administrator", "can_be_edited": false,
                   "is_anonymous": false, "can_manage_chat": true, "can_delete_messages": true,
                   "can_manage_video_chats": true, "can_restrict_members": true,
                   "can_promote_members": false, "can_change_info": true, "can_invite_users": true,
                   "can_post_stories": false, "can_edit_stories": false, "can_delete_stories": false,
                   "can_pin_messages": true, "can_manage_topics": false})
        } else {
            json!({"user": user, "status": "member"})
        })
    }

    /// Queues a text message from the user of `chat_id`; returns its update id.
    pub(crate) fn inject_message(&mut self, chat_id: i64, text: &str) -> i64 {
        let message_id = self.next_message_id(chat_id);
        let message =
            objects::text_message(message_id, chat_id, objects::human_user(chat_id), text);
        self.push_update(json!({ "message": message }))
    }

    /// Queues any update (an object without `update_id`); assigns and returns its update id.
    pub(crate) fn push_update(&mut self, mut update: Value) -> i64 {
        let id = self.next_update_id;
        self.next_update_id += 1;
        if let Value::Object(map) = &mut update {
            map.insert("update_id".into(), id.into());
        }
        let mut chats = Vec::new();
        objects::chats_in(&update, &mut chats);
        for chat in chats {
            self.chats.entry(chat).or_insert(0);
        }
        self.enqueue(id, Queued::Json(update));
        id
    }

    /// Queues the text of one update as is: `text` must be one JSON object without `update_id`
    /// (the fake inserts `"update_id":N` after its opening brace), but its content need not make a
    /// valid `Update`, nor decode to valid Unicode (`"\udc80"`). Chats are registered only when
    /// the text parses as JSON. Returns the update id, or why the text is not one JSON object.
    pub(crate) fn push_update_text(&mut self, text: &str) -> Result<i64, String> {
        let id = self.next_update_id;
        let body = text
            .trim()
            .strip_prefix('{')
            .ok_or("a raw update must be one JSON object (text starting with '{')")?;
        let separator = if body.trim_start().starts_with('}') {
            ""
        } else {
            ","
        };
        let spliced = format!("{{\"update_id\":{id}{separator}{body}");
        let kind = first_key(&spliced).unwrap_or_default();
        let text = RawValue::from_string(spliced)
            .map_err(|e| format!("a raw update must be one JSON object: {e}"))?;
        self.next_update_id += 1;
        if let Ok(update) = serde_json::from_str::<Value>(text.get()) {
            let mut chats = Vec::new();
            objects::chats_in(&update, &mut chats);
            for chat in chats {
                self.chats.entry(chat).or_insert(0);
            }
        }
        self.enqueue(id, Queued::Raw { text, kind });
        Ok(id)
    }

    fn enqueue(&mut self, id: i64, update: Queued) {
        let expires_at = Instant::now() + self.update_lifetime;
        self.queue.push_back(Pending {
            id,
            update,
            expires_at,
            webhook_fails: 0,
        });
    }

    /// Drops the updates that waited past their lifetime, as Telegram's update queue (TQueue) does:
    /// neither getUpdates nor the webhook hands them out any more.
    pub(crate) fn drop_expired(&mut self, now: Instant) {
        let before = self.queue.len();
        self.queue.retain(|p| p.expires_at > now);
        self.stats.expired_updates += (before - self.queue.len()) as u64;
    }

    fn next_message_id(&mut self, chat_id: i64) -> i64 {
        let last = self.chats.entry(chat_id).or_insert(0);
        *last += 1;
        *last
    }

    /// getUpdates' `offset`: a positive one confirms every update below it; a negative one keeps
    /// only the last `-offset` updates and forgets the rest; 0 confirms nothing. An offset more than
    /// [`FUTURE_OFFSET_SLACK`] beyond the next update id is "in the future" (TQueue's
    /// "Specified from_id is in the future"): it confirms nothing.
    fn confirm(&mut self, offset: i64) {
        if offset > self.next_update_id + FUTURE_OFFSET_SLACK {
            self.stats.future_offsets += 1;
            return;
        }
        let keep_from = if offset < 0 {
            let keep = usize::try_from(offset.unsigned_abs()).unwrap_or(usize::MAX);
            let drop = self.queue.len().saturating_sub(keep);
            match self.queue.get(drop) {
                Some(p) => p.id,
                None => self.next_update_id,
            }
        } else {
            offset
        };
        let before = self.queue.len();
        self.queue.retain(|p| p.id >= keep_from);
        if offset > 0 || self.queue.len() < before {
            self.stats.confirmed_offset = self.stats.confirmed_offset.max(keep_from);
        }
    }

    fn is_allowed(&self, update: &Queued) -> bool {
        let kind = update.kind();
        match &self.allowed_updates {
            Some(allowed) if !allowed.is_empty() => allowed.iter().any(|a| a == kind),
            _ => !OPT_IN_UPDATES.contains(&kind),
        }
    }

    fn set_allowed_updates(&mut self, allowed: Option<Vec<String>>) {
        if allowed.is_some() {
            self.allowed_updates = allowed;
        }
    }

    /// Up to `limit` unconfirmed updates, oldest first, counted in `deliveries`. Updates of a kind
    /// the bot did not ask for are dropped, as Telegram never stores them.
    fn take_batch(&mut self, limit: usize) -> Vec<Queued> {
        self.drop_expired(Instant::now());
        self.drop_unwanted();
        let batch: Vec<(i64, Queued)> = self
            .queue
            .iter()
            .take(limit)
            .map(|p| (p.id, p.update.clone()))
            .collect();
        batch
            .into_iter()
            .map(|(id, update)| {
                *self.stats.deliveries.entry(id).or_insert(0) += 1;
                update
            })
            .collect()
    }

    /// Drops the updates of a kind the bot did not ask for, as Telegram never stores them.
    fn drop_unwanted(&mut self) {
        let queue = std::mem::take(&mut self.queue);
        self.queue = queue
            .into_iter()
            .filter(|p| self.is_allowed(&p.update))
            .collect();
    }

    /// A `getUpdates` arrives: adjust it as Telegram does, confirm its offset and make it the
    /// newest poll (an older pending one will be answered 409). Returns its poll id, or the
    /// answer when a webhook is set.
    ///
    /// Telegram's server (telegram-bot-api, `process_get_updates_query`) treats a call with the
    /// same raw `offset` as the previous call specially: within 3 s of that call's start, a
    /// `timeout` below 3 is raised to 3 s; within 0.5 s, `limit` becomes 1.
    pub(crate) fn start_poll(
        &mut self,
        request: &mut PollRequest,
        now: Instant,
    ) -> Result<u64, ApiError> {
        if self.webhook.is_some() {
            self.stats.webhook_conflicts_409 += 1;
            return Err(ApiError::conflict_webhook());
        }
        self.set_allowed_updates(request.allowed_updates.take());
        if let Some((offset, at)) = self.previous_poll
            && offset == request.offset
        {
            let since = now.saturating_duration_since(at);
            if since < REPEATED_OFFSET_MIN_WAIT && request.timeout < REPEATED_OFFSET_MIN_WAIT {
                request.timeout = REPEATED_OFFSET_MIN_WAIT;
            }
            if since < REPEATED_OFFSET_ONE_UPDATE {
                request.limit = 1;
            }
        }
        self.previous_poll = Some((request.offset, now));
        if self.ignore_poll_timeout {
            request.timeout = Duration::ZERO;
        }
        if request.offset != 0 {
            self.confirm(request.offset);
        }
        let poll = self.next_poll_id;
        self.next_poll_id += 1;
        // telegram-bot-api's do_get_updates: only a request that will itself wait (a timeout, and
        // nothing to answer now) takes the long poll's place and ends the pending one with 409; one
        // with updates to take, or timeout 0, is answered at once beside it (two pollers then split
        // the updates without any 409).
        let waits =
            !request.timeout.is_zero() && !self.queue.iter().any(|p| self.is_allowed(&p.update));
        if waits && let Some(older) = self.current_poll.replace(poll) {
            self.superseded.insert(older);
        }
        self.stats.active_polls += 1;
        self.stats.max_concurrent_polls =
            self.stats.max_concurrent_polls.max(self.stats.active_polls);
        Ok(poll)
    }

    /// The answer for pending poll `poll` if it has one now: 409 if a newer poll came, the updates
    /// if there are some, or (when `give_up`, the long-poll timeout being over) an empty list.
    pub(crate) fn poll_answer(
        &mut self,
        poll: u64,
        limit: usize,
        give_up: bool,
    ) -> Option<PollAnswer> {
        if self.superseded.remove(&poll) {
            self.stats.conflicts_409 += 1;
            return Some(self.conflict(ApiError::conflict_other_poller()));
        }
        if self.webhook.is_some() {
            self.stats.webhook_conflicts_409 += 1;
            return Some(self.conflict(ApiError::conflict_set_webhook()));
        }
        let batch = self.take_batch(limit);
        (!batch.is_empty() || give_up).then_some(PollAnswer::Updates(batch))
    }

    /// A long poll ended with 409 (`fail_query_conflict`): answered at once at most once per
    /// [`CONFLICT_SPACING`], else held that long first.
    fn conflict(&mut self, error: ApiError) -> PollAnswer {
        let now = Instant::now();
        if self.next_conflict_at.is_none_or(|at| now >= at) {
            self.next_conflict_at = Some(now + CONFLICT_SPACING);
            PollAnswer::Error(error)
        } else {
            PollAnswer::HeldError(error)
        }
    }

    /// Poll `poll` is over: answered, or its client went away.
    pub(crate) fn end_poll(&mut self, poll: u64) {
        self.stats.active_polls = self.stats.active_polls.saturating_sub(1);
        self.superseded.remove(&poll);
        if self.current_poll == Some(poll) {
            self.current_poll = None;
        }
    }

    /// `sendMessage`: validates, applies the send limits when `rate_limits`, and records the
    /// message. Returns the sent `Message` object.
    pub(crate) fn send_message(
        &mut self,
        chat_id: i64,
        text: &str,
        rate_limits: bool,
        now: Instant,
    ) -> Result<Value, ApiError> {
        if text.trim().is_empty() {
            return Err(ApiError::bad_request("message text is empty"));
        }
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(ApiError::bad_request("message is too long"));
        }
        if !self.chats.contains_key(&chat_id) {
            return Err(ApiError::bad_request("chat not found"));
        }
        if self.blocked.contains(&chat_id) {
            return Err(ApiError::new(403, "Forbidden: bot was blocked by the user"));
        }
        if rate_limits && let Err(retry_after) = self.limits.try_send(chat_id, now) {
            self.stats.rate_limited_429 += 1;
            return Err(ApiError::too_many_requests(retry_after));
        }
        let message_id = self.next_message_id(chat_id);
        let from = objects::bot_user(self.id, &self.username);
        let message = objects::text_message(message_id, chat_id, from, text);
        let at = SystemTime::now();
        self.sent.push(SentMessage {
            message_id,
            chat_id,
            text: text.to_owned(),
            at,
        });
        Ok(message)
    }
}
