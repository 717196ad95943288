//! `cryptobot doctor`: one report in plain words, each line a finding and, for a problem, the command
//! that fixes it. Exit 0 when healthy, 1 when a problem was found.
//!
//! It reads, never changes: the configuration, Telegram's view of the token and webhook (`getMe`,
//! `getWebhookInfo`: neither conflicts with a running poller), the local lock and its holder, the
//! PostgreSQL lease when coordinated, the systemd unit's state, and the running instance's status file
//! (its recent conflicts).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::config::{Config, Env, Settings};
use crate::instance::control;
use crate::instance::holder::unix_now;
use crate::instance::status_file::StatusFile;
use crate::telegram::client::Client;
use crate::telegram::errors::FailureKind;

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
    pub text: String,
}

impl Finding {
    fn ok(text: impl Into<String>) -> Self {
        Self {
            ok: true,
            text: text.into(),
        }
    }
    fn problem(text: impl Into<String>) -> Self {
        Self {
            ok: false,
            text: text.into(),
        }
    }
}

/// Conflicts within this window count as "recent".
const RECENT: Duration = Duration::from_secs(3600);

const EXTERNAL_CHECKLIST: &str = "another instance polls this token elsewhere; look for it on your other hosts \
(systemctl status cryptobot, ps aux | grep -i bot), in containers (docker ps, podman ps), in PaaS deployments \
(an old release still running, or a new one started before the old stopped) and on developer machines; \
as a last resort revoke the token with @BotFather (/revoke) and install the new one in /etc/cryptobot/token";

/// Runs every check and returns the findings in report order.
pub fn examine(config_path: Option<&Path>, env: &Env, runtime_dir: &Path) -> Vec<Finding> {
    let mut findings = Vec::new();
    let config = match Config::load(config_path, env) {
        Ok(config) => {
            let file = config
                .settings
                .file
                .as_ref()
                .map_or("built-in defaults".to_owned(), |f| f.display().to_string());
            findings.push(Finding::ok(format!(
                "configuration valid ({file}); token from {}",
                config.token_source
            )));
            Some(config)
        }
        Err(e) => {
            let hint = match Settings::load(config_path, env) {
                Ok(_) => {
                    "write the token to /etc/cryptobot/token (mode 600), then run: cryptobot check-config"
                }
                Err(_) => "fix the file, then run: cryptobot check-config",
            };
            findings.push(Finding::problem(format!(
                "configuration: {} → {hint}",
                e.message
            )));
            None
        }
    };
    let bot_id = config.as_ref().map(|c| c.token.bot_id());
    if let Some(config) = &config {
        findings.extend(telegram_checks(config));
    }
    findings.extend(lock_checks(runtime_dir, bot_id));
    if let Some((healthy, text)) = config
        .as_ref()
        .and_then(crate::instance::lease_commands::summary)
    {
        findings.push(Finding { ok: healthy, text });
    }
    findings.extend(unit_check());
    findings
}

/// getMe and getWebhookInfo, on a small runtime of their own.
fn telegram_checks(config: &Config) -> Vec<Finding> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return vec![Finding::problem(format!(
                "cannot start the async runtime: {e}"
            ))];
        }
    };
    runtime.block_on(async {
        let client = match Client::new(&config.token, &config.settings.api_url, Duration::from_secs(1)) {
            Ok(c) => c,
            Err(e) => return vec![Finding::problem(e.message)],
        };
        let mut out = Vec::new();
        match client.get_me().await {
            Ok(me) => out.push(Finding::ok(format!("token accepted by Telegram: @{} (bot {})", me.username(), me.id))),
            Err(e) if e.kind == FailureKind::Unauthorized => {
                out.push(Finding::problem(
                    "Telegram rejected the token (401) → get the current token from @BotFather and write it to /etc/cryptobot/token",
                ));
                return out;
            }
            Err(e) => {
                out.push(Finding::problem(format!(
                    "cannot reach the Bot API at {} ({e}) → check the network, a proxy or firewall, and api_url / CRYPTOBOT_API_URL",
                    config.settings.api_url
                )));
                return out;
            }
        }
        match client.webhook_url().await {
            Ok(url) if url.is_empty() => out.push(Finding::ok("no webhook set (long polling can work)")),
            Ok(url) => out.push(Finding::problem(format!(
                "a webhook is set ({url}), so getUpdates answers 409 → delete it: curl -s https://api.telegram.org/bot<TOKEN>/deleteWebhook, or set delete_webhook = true"
            ))),
            Err(e) => out.push(Finding::problem(format!("cannot read the webhook (getWebhookInfo): {e}"))),
        }
        out
    })
}

/// The local lock holder, and the running instance's recent conflicts.
fn lock_checks(runtime_dir: &Path, bot_id: Option<u64>) -> Vec<Finding> {
    let states = match bot_id {
        Some(id) => vec![control::lock_state(runtime_dir, id)],
        None => control::all_lock_states(runtime_dir),
    };
    if states.iter().all(|s| s.holder_pid.is_none()) {
        return vec![Finding::ok(format!(
            "no cryptobot instance runs on this host (no lock held in {}); start it with: systemctl start cryptobot",
            runtime_dir.display()
        ))];
    }
    let mut out = Vec::new();
    for state in states.iter().filter(|s| s.holder_pid.is_some()) {
        out.push(Finding::ok(
            control::describe(state, runtime_dir).replace("\n  ", "; "),
        ));
        let Some(snap) =
            StatusFile::read(runtime_dir, state.bot_id).filter(|s| Some(s.pid) == state.holder_pid)
        else {
            continue;
        };
        let now_ms = unix_now().as_millis() as u64;
        if snap.conflicts > 0
            && now_ms.saturating_sub(snap.last_conflict_ms) < RECENT.as_millis() as u64
        {
            out.push(Finding::problem(format!(
                "bot {}: {} conflicts (409) with another poller while this host holds the lock → {EXTERNAL_CHECKLIST}",
                state.bot_id, snap.conflicts
            )));
        }
    }
    out
}

/// `systemctl show cryptobot.service`, when systemd runs.
fn unit_check() -> Option<Finding> {
    if !Path::new("/run/systemd/system").is_dir() {
        return None;
    }
    let out = Command::new("systemctl")
        .args([
            "show",
            "cryptobot.service",
            "-p",
            "LoadState,ActiveState,SubState,NRestarts,Result,StatusText",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or("")
            .to_owned()
    };
    if get("LoadState") != "loaded" {
        return Some(Finding::ok(
            "cryptobot.service is not installed on this host",
        ));
    }
    let summary = format!(
        "cryptobot.service {}/{} (result {}, {} restarts){}",
        get("ActiveState"),
        get("SubState"),
        get("Result"),
        get("NRestarts"),
        Some(get("StatusText"))
            .filter(|s| !s.is_empty())
            .map(|s| format!(": {s}"))
            .unwrap_or_default()
    );
    Some(match get("ActiveState").as_str() {
        "active" | "reloading" | "activating" | "inactive" => Finding::ok(summary),
        _ => Finding::problem(format!("{summary} → see: journalctl -u cryptobot -n 50")),
    })
}

/// Formats the report; returns it with the exit code (0 healthy, 1 problems).
pub fn report(findings: &[Finding]) -> (String, u8) {
    let mut text = String::new();
    for f in findings {
        text.push_str(if f.ok { "ok       " } else { "PROBLEM  " });
        text.push_str(&f.text);
        text.push('\n');
    }
    let problems = findings.iter().filter(|f| !f.ok).count();
    if problems == 0 {
        text.push_str("healthy\n");
        (text, 0)
    } else {
        text.push_str(&format!("{problems} problem(s) found\n"));
        (text, 1)
    }
}
