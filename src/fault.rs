//! Fault points for the tests, compiled into debug builds only (`cfg(debug_assertions)`): a release
//! build, and so the .deb, has none, and reads none of these variables.
//!
//! Each models a bug that no operation of the product can produce on purpose — every call the
//! product makes is bounded — so that the guarantee meant for that bug can be shown to hold: G5, a
//! handler that never returns starves the watchdog and turns `/healthz` to 503 while the process
//! lives (tests/systemd_notify.rs). A test switches a fault on with an environment variable of the
//! process it starts.

use teloxide::types::{Update, UpdateKind};

/// `CRYPTOBOT_FAULT_HANG_ON=<text>`: the handler of a message whose text is exactly `<text>` never
/// returns.
pub const HANG_ON: &str = "CRYPTOBOT_FAULT_HANG_ON";

/// Whether the handler of `update` must hang (`CRYPTOBOT_FAULT_HANG_ON`).
pub fn hangs(update: &Update) -> bool {
    static HANG_ON_TEXT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let Some(hang_on) = HANG_ON_TEXT.get_or_init(|| std::env::var(HANG_ON).ok()) else {
        return false;
    };
    matches!(&update.kind, UpdateKind::Message(m) if m.text() == Some(hang_on.as_str()))
}
