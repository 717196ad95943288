//! Telegram: the Bot API client with a deadline on every request ([`client`]), the classification of
//! its failures into kinds the policy can act on ([`errors`]), backoff with jitter ([`backoff`]), and the
//! long-polling update source ([`poller`]) that moves the offset only after a handler has finished (G3).

pub mod backoff;
pub mod client;
pub mod errors;
pub mod poller;
