//! `systemctl reload cryptobot` (SIGHUP): re-read and validate the configuration and the token without
//! touching the lock or the poll.
//!
//! systemd 252 has no `Type=notify-reload`, so the unit's `ExecReload=` sends SIGHUP and we announce
//! `RELOADING=1` … `READY=1` around the work. A configuration that does not validate is refused with one
//! log line and the running one is kept: never a crash, never a restart. What is applied live today is
//! the validation itself; the values take effect at the next restart (logged as such).

use std::path::PathBuf;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Env};
use crate::systemd::notify::Notifier;

/// What a reload needs to find the configuration again.
#[derive(Clone, Debug)]
pub struct ReloadSource {
    pub config_path: Option<PathBuf>,
    pub env: Env,
}

/// Handles SIGHUP until `cancel` fires.
pub fn spawn_reload_listener(
    source: ReloadSource,
    running: Config,
    notifier: Notifier,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                received = hup.recv() => if received.is_none() { return },
            }
            notifier.reloading();
            match Config::load(source.config_path.as_deref(), &source.env) {
                Ok(new) if new.token.bot_id() != running.token.bot_id() => tracing::error!(
                    "reload refused: the new token belongs to bot {}, this instance runs bot {}; keeping the current configuration (restart to switch bots)",
                    new.token.bot_id(),
                    running.token.bot_id()
                ),
                Ok(new) => {
                    let changed = new.render() != running.render() || new.token != running.token;
                    tracing::info!(
                        "configuration reloaded and valid{}",
                        if changed {
                            "; the changes take effect at the next restart (systemctl restart cryptobot)"
                        } else {
                            "; nothing changed"
                        }
                    );
                }
                Err(e) => tracing::error!(
                    "reload refused, keeping the current configuration: {}",
                    e.message
                ),
            }
            notifier.ready("reloaded");
        }
    });
    Ok(())
}
