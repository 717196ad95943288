//! `systemctl reload cryptobot` (SIGHUP): re-read the configuration, the token and the webhook secret,
//! and apply what can change without dropping the lock, the lease or the poll.
//!
//! systemd 252 has no `Type=notify-reload`, so the unit's `ExecReload=` (`cryptobot reload`) sends
//! SIGHUP and we announce `RELOADING=1` … `READY=1` around the work. A configuration that does not validate is refused with one
//! log line and the running one is kept: never a crash, never a restart.
//!
//! Applied at once: `log`; the bot's `admin_chat_ids`, `default_currency`, `max_alerts_per_chat`,
//! `alert_hysteresis`, `alert_cooldown` and `coins`; a new token of the same bot (a token revoked and reissued by @BotFather), checked with
//! `getMe` before it replaces the old one; in webhook mode a new configured secret (`setWebhook` first,
//! then the route switches). Everything else (directories, `api_url`, `listen`, `mode`, timeouts, the
//! conflict policy, the price API, the alert interval) is named in the log as taking effect at the next
//! restart. Under systemd the token and the secret come from credentials, which systemd copies at start:
//! for those, edit the file and `systemctl restart`.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::bot::service::BotSettings;
use crate::config::{Config, Env, Mode};
use crate::systemd::logging;
use crate::systemd::notify::Notifier;
use crate::telegram::client::Client;
use crate::webhook::Credentials;

/// What a reload needs to find the configuration again.
#[derive(Clone, Debug)]
pub struct ReloadSource {
    pub config_path: Option<PathBuf>,
    pub env: Env,
}

/// The running parts a reload can change.
pub struct Live {
    pub client: Client,
    pub bot_settings: watch::Sender<Arc<BotSettings>>,
    /// Webhook mode: the route's secret and path.
    pub webhook: Option<Arc<RwLock<Credentials>>>,
}

/// Takes SIGHUP from now on (its default action would end the process); [`spawn`] handles it later.
pub fn take_sighup() -> std::io::Result<Signal> {
    signal(SignalKind::hangup())
}

/// Handles SIGHUP until `cancel` fires. `started` is the configuration the process started with.
pub fn spawn(
    mut hup: Signal,
    source: ReloadSource,
    started: Config,
    live: Live,
    notifier: Notifier,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        let mut current = started.clone();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                received = hup.recv() => if received.is_none() { return },
            }
            notifier.reloading();
            match Config::load(source.config_path.as_deref(), &source.env) {
                Ok(new) if new.token.bot_id() != current.token.bot_id() => tracing::error!(
                    "reload refused: the new token belongs to bot {}, this instance runs bot {}; keeping the current configuration (restart to switch bots)",
                    new.token.bot_id(),
                    current.token.bot_id()
                ),
                Ok(new) => {
                    let summary = apply(&started, &mut current, new, &live).await;
                    tracing::info!("configuration reloaded: {summary}");
                }
                Err(e) => tracing::error!(
                    "reload refused, keeping the current configuration: {}",
                    e.message
                ),
            }
            notifier.ready("reloaded");
        }
    });
}

/// Applies what can change live; returns one line saying what changed and what waits for a restart.
async fn apply(started: &Config, current: &mut Config, new: Config, live: &Live) -> String {
    let mut applied = Vec::new();
    let mut refused = Vec::new();
    if new.settings.log != current.settings.log {
        match logging::set_filter(&new.settings.log) {
            Ok(()) => applied.push("log"),
            Err(e) => refused.push(format!("log ({e})")),
        }
        current.settings.log = new.settings.log.clone();
    }
    let (old_bot, new_bot) = (&current.settings.bot, &new.settings.bot);
    if old_bot.admin_chat_ids != new_bot.admin_chat_ids
        || old_bot.default_currency != new_bot.default_currency
        || old_bot.max_alerts_per_chat != new_bot.max_alerts_per_chat
        || old_bot.alert_hysteresis_percent != new_bot.alert_hysteresis_percent
        || old_bot.alert_cooldown != new_bot.alert_cooldown
        || old_bot.coins != new_bot.coins
    {
        live.bot_settings
            .send_replace(Arc::new(BotSettings::from_options(new_bot)));
        applied.push("bot settings");
        current.settings.bot = new.settings.bot.clone();
    }
    if new.token != current.token {
        live.client.replace_token(&new.token);
        match live.client.get_me().await {
            Ok(_) => {
                applied.push("token");
                current.token = new.token.clone();
                current.token_source = new.token_source.clone();
            }
            Err(e) => {
                live.client.replace_token(&current.token);
                refused.push(format!(
                    "the new token (Telegram: {e}; the old one is kept)"
                ));
            }
        }
    }
    if let (Some(cell), Some(secret)) = (&live.webhook, &new.webhook_secret)
        && current.webhook_secret.as_ref() != Some(secret)
        && current.settings.webhook.mode == Mode::Webhook
    {
        let public_url = current.settings.webhook.public_url.clone();
        let url = public_url.map(|u| crate::webhook::webhook_url(&u, secret));
        match url {
            Some(url) => match live.client.set_webhook(url, secret.expose()).await {
                Ok(()) => {
                    *cell.write().unwrap_or_else(|e| e.into_inner()) =
                        Credentials::new(secret.clone());
                    applied.push("webhook secret");
                    current.webhook_secret = Some(secret.clone());
                }
                Err(e) => refused.push(format!(
                    "the new webhook secret (setWebhook: {e}; the old one is kept)"
                )),
            },
            None => refused.push("the new webhook secret (no public_url)".to_owned()),
        }
    }
    let at_restart = restart_only_changes(started, &new);
    let mut parts = Vec::new();
    parts.push(if applied.is_empty() {
        "nothing to apply now".to_owned()
    } else {
        format!("applied {}", applied.join(", "))
    });
    if !refused.is_empty() {
        parts.push(format!("not applied: {}", refused.join("; ")));
    }
    if !at_restart.is_empty() {
        parts.push(format!(
            "changes to {} take effect at the next restart (systemctl restart cryptobot)",
            at_restart.join(", ")
        ));
    }
    parts.join("; ")
}

/// The keys whose new value differs from the one the process started with and that only a restart
/// applies: every line of `check-config`'s rendering except those [`apply`] handles.
fn restart_only_changes(started: &Config, new: &Config) -> Vec<String> {
    const LIVE: &[&str] = &[
        "log",
        "token",
        "admin_chat_ids",
        "default_currency",
        "max_alerts_per_chat",
        "alert_hysteresis",
        "alert_cooldown",
        "webhook_secret_file",
    ];
    let key = |line: &str| line.split_once(" = ").map(|(k, _)| k.trim().to_owned());
    let old_text = started.render();
    let new_text = new.render();
    let old: Vec<&str> = old_text.lines().collect();
    let mut changed: Vec<String> = new_text
        .lines()
        .filter(|line| !line.starts_with('#') && !old.iter().any(|o| o == line))
        .filter_map(key)
        .filter(|k| !LIVE.contains(&k.as_str()))
        .collect();
    // A key that disappeared (set before, default now) changed too.
    for line in &old {
        if let Some(k) = key(line)
            && !LIVE.contains(&k.as_str())
            && !new_text
                .lines()
                .any(|l| key(l).as_deref() == Some(k.as_str()))
            && !changed.contains(&k)
        {
            changed.push(k);
        }
    }
    // Coins live in a [coins] table: their lines are "symbol = id", applied live with the bot settings.
    let coin_symbols: Vec<&String> = started
        .settings
        .bot
        .coins
        .keys()
        .chain(new.settings.bot.coins.keys())
        .collect();
    changed.retain(|k| !coin_symbols.contains(&k));
    changed.dedup();
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &[(&str, &str)]) -> Config {
        let mut pairs = vec![
            (
                "CRYPTOBOT_TOKEN",
                "123456:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ),
            ("CRYPTOBOT_RUNTIME_DIR", "/tmp/cryptobot-reload-test/run"),
            ("CRYPTOBOT_STATE_DIR", "/tmp/cryptobot-reload-test/state"),
            ("HOME", "/nonexistent"),
        ];
        pairs.extend_from_slice(extra);
        Config::load(None, &Env::from_pairs(pairs)).unwrap()
    }

    #[test]
    fn only_keys_a_reload_cannot_apply_are_named_for_the_restart() {
        let started = config(&[]);
        let same = config(&[]);
        assert!(restart_only_changes(&started, &same).is_empty());
        let new = config(&[
            ("CRYPTOBOT_POLL_TIMEOUT", "7"),
            ("CRYPTOBOT_ADMIN_CHAT_IDS", "5"),
            ("CRYPTOBOT_LOG", "debug"),
            ("CRYPTOBOT_DEFAULT_CURRENCY", "eur"),
            ("CRYPTOBOT_API_URL", "http://127.0.0.1:9"),
        ]);
        assert_eq!(
            restart_only_changes(&started, &new),
            vec!["api_url".to_owned(), "poll_timeout".to_owned()]
        );
    }
}
