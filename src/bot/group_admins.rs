//! Who may delete a group's alerts. Alerts set in a group belong to the group (they are stored by
//! chat), so any member may set and list them; deleting one is for the group's owner and
//! administrators (and the bot's own admins, `admin_chat_ids`), as Telegram's `getChatMember` says.
//!
//! Answers are cached for [`ADMIN_TTL`]: a busy group costs at most one request per user per ten
//! minutes, and a user made or unmade admin is seen within that time. The cache holds at most
//! [`CACHE_ENTRIES`] answers. A failed lookup is not cached and refuses nothing silently: the caller
//! tells the user to try again.
//!
//! A message sent as the group itself (an anonymous administrator: its `sender_chat` is the group)
//! comes from an administrator; [`super::commands::parse_update`] gives the group's own id as the
//! sender of such a message.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use teloxide::types::ChatId;

use crate::telegram::client::Client;

/// How long an answer of `getChatMember` is trusted.
pub const ADMIN_TTL: Duration = Duration::from_secs(600);
/// The most answers kept; past it the expired ones go, then the oldest.
pub const CACHE_ENTRIES: usize = 10_000;

/// The administrators of groups, as Telegram reports them, cached.
pub struct GroupAdmins {
    client: Client,
    cache: Mutex<HashMap<(i64, i64), (Instant, bool)>>,
}

impl GroupAdmins {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            cache: Mutex::default(),
        }
    }

    /// Whether `user` administers the group `chat`. `Err` (a text for the log) when Telegram could
    /// not be asked.
    pub async fn is_admin(&self, chat: i64, user: i64) -> Result<bool, String> {
        if user == chat {
            return Ok(true); // sent as the group: an anonymous administrator
        }
        let Ok(user_id) = u64::try_from(user) else {
            return Ok(false); // another chat (a linked channel) is nobody's administrator here
        };
        if let Some(admin) = self.cached(chat, user) {
            return Ok(admin);
        }
        let admin = self
            .client
            .is_chat_admin(ChatId(chat), user_id)
            .await
            .map_err(|e| e.to_string())?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, (at, _)| at.elapsed() < ADMIN_TTL);
            if cache.len() >= CACHE_ENTRIES {
                let mut ages: Vec<Instant> = cache.values().map(|(at, _)| *at).collect();
                ages.sort_unstable();
                let cut = ages[cache.len() - CACHE_ENTRIES / 2];
                cache.retain(|_, (at, _)| *at > cut);
            }
        }
        cache.insert((chat, user), (Instant::now(), admin));
        Ok(admin)
    }

    fn cached(&self, chat: i64, user: i64) -> Option<bool> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(&(chat, user))
            .filter(|(at, _)| at.elapsed() < ADMIN_TTL)
            .map(|(_, admin)| *admin)
    }
}
