//! The bot itself: what it answers and what it does on its own.
//!
//! - [`commands`]: parse a message into a typed request (pure, no I/O).
//! - [`prices`]: the price source (CoinGecko) with its cache and symbol map.
//! - [`service`]: execute a request (prices, alerts in the store) into replies.
//! - [`group_admins`]: who administers a group (getChatMember, cached): only they delete its alerts.
//! - [`alerts`]: the singleton alert checker: fires each alert once per crossing.
//! - [`dispatch`]: one update from either source, handled once and recorded with its replies.
//! - [`outbound`]: the one queue every message leaves through, within Telegram's limits.

pub mod alerts;
pub mod commands;
pub mod dispatch;
pub mod group_admins;
pub mod outbound;
pub mod prices;
pub mod service;

pub use commands::bot_commands;
pub use service::{Context, Reply, Service};
