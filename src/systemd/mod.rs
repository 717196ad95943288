//! Everything that talks to systemd: readiness and watchdog notifications ([`notify`]), the liveness
//! record the watchdog is fed from ([`watchdog`]), and logging to the journal ([`logging`]).
//! Outside systemd each of these is a no-op or falls back to stderr, so the same binary runs on a laptop.

pub mod activation;
pub mod logging;
pub mod notify;
pub mod watchdog;
