//! Everything that talks to systemd: readiness and watchdog notifications ([`notify`]), the liveness
//! record the watchdog is fed from ([`watchdog`]), logging to the journal ([`logging`]) and the journal
//! catalog's message ids of the events an operator must act on ([`catalog`]).
//! Outside systemd each of these is a no-op or falls back to stderr, so the same binary runs on a laptop.

pub mod activation;
pub mod catalog;
pub mod logging;
pub mod notify;
pub mod watchdog;
