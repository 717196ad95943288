//! The man page `cryptobot(8)` and the bash, zsh and fish completions, generated from [`super::Cli`]
//! so they cannot drift from it. `packaging/build-deb` runs the hidden `cryptobot generate-assets DIR`
//! and ships what it writes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, CommandFactory};
use clap_complete::Shell;

use crate::exit::{Failure, Result};

/// Exit statuses, as in README.md's table (the unit files act on them).
pub const EXIT_STATUS: &[(u8, &str)] = &[
    (0, "Clean stop; or the command did what was asked."),
    (
        1,
        "The command could not do what was asked (e.g. \\fBstop\\fR of a systemd unit without \\fB\\-\\-force\\fR), \
         Telegram was unreachable at start, a forced stop (second signal), or \\fBdoctor\\fR found problems. \
         The unit restarts the service.",
    ),
    (
        3,
        "\\fBstatus\\fR: no instance runs. From \\fBrun\\fR: an administrator asked for a restart; \
         the unit restarts the service (\\fBRestartForceExitStatus=3\\fR).",
    ),
    (64, "Bad command line."),
    (
        69,
        "Gave up on a poller elsewhere (\\fBon_conflict = \"exit\"\\fR after \\fBconflict_max\\fR conflicts). \
         Not restarted (\\fBRestartPreventExitStatus=\\fR).",
    ),
    (
        70,
        "Internal error: a bug or an unexpected operating system failure. Restarted.",
    ),
    (
        74,
        "The state database cannot be opened or migrated. Restarted.",
    ),
    (
        75,
        "The lock is held by another local process: the message names its PID, its unit and the command \
         that stops it. Restarted later.",
    ),
    (
        78,
        "Bad configuration, or Telegram rejected the token. Not restarted \
         (\\fBRestartPreventExitStatus=\\fR): fix the configuration or the token first.",
    ),
];

/// Files the service and the commands read or write.
pub const FILES: &[(&str, &str)] = &[
    (
        "/etc/cryptobot/cryptobot.toml",
        "The configuration (a conffile); every key is optional and documented in the file. \
         \\fBcryptobot@NAME.service\\fR reads \\fI/etc/cryptobot/NAME.toml\\fR.",
    ),
    (
        "/etc/cryptobot/token",
        "The bot token, mode 600, owned by root. The unit hands it to the service as the credential \
         \\fItoken\\fR (\\fBLoadCredential=\\fR); a token file that other users can read is refused. \
         \\fBcryptobot@NAME.service\\fR reads \\fI/etc/cryptobot/NAME.token\\fR.",
    ),
    (
        "/var/lib/cryptobot/state.db",
        "The state (SQLite): the last update each bot handled, the price alerts and the messages not \
         yet accepted by Telegram, so that a restart after a crash skips what was already answered. \
         Kept on package removal, deleted on purge.",
    ),
    (
        "/run/cryptobot/bot-<id>.lock",
        "The instance lock of the bot whose token starts with \\fI<id>\\fR: an exclusive \\fBflock\\fR(2) \
         held while an instance runs, with the holder's PID, unit, start time and version as content. \
         Never delete it: the kernel releases the lock when the holder dies.",
    ),
    (
        "/usr/lib/systemd/system/cryptobot.service",
        "The unit; \\fIcryptobot@.service\\fR is its template for more bots, and \\fIcryptobot.socket\\fR / \
         \\fIcryptobot@.socket\\fR pass it the socket for /healthz and /metrics \
         (\\fBsystemctl enable \\-\\-now cryptobot.socket\\fR). Change them with \\fBsystemctl edit\\fR.",
    ),
];

/// Environment variables: each configuration key's override (README.md's table) and the token's.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "CRYPTOBOT_API_URL",
        "Base URL of the Bot API (\\fBapi_url\\fR; default https://api.telegram.org).",
    ),
    (
        "CRYPTOBOT_TOKEN_FILE",
        "File to read the token from, when no systemd credential is given (\\fBtoken_file\\fR).",
    ),
    (
        "CRYPTOBOT_TOKEN",
        "The token itself, for development only; removed from the process environment at start. \
         \\fI$CREDENTIALS_DIRECTORY/token\\fR and \\fBCRYPTOBOT_TOKEN_FILE\\fR take precedence.",
    ),
    (
        "CRYPTOBOT_RUNTIME_DIR",
        "Directory of the lock files (\\fBruntime_dir\\fR; default \\fI$RUNTIME_DIRECTORY\\fR, else \
         \\fI/run/cryptobot\\fR if writable, else \\fI$XDG_RUNTIME_DIR/cryptobot\\fR).",
    ),
    (
        "CRYPTOBOT_STATE_DIR",
        "Directory of \\fIstate.db\\fR (\\fBstate_dir\\fR; default \\fI$STATE_DIRECTORY\\fR, else \
         \\fI$XDG_DATA_HOME/cryptobot\\fR).",
    ),
    (
        "CRYPTOBOT_LOG",
        "Log filter (\\fBlog\\fR; default \\fBinfo\\fR, e.g. \\fBcryptobot=debug,info\\fR).",
    ),
    (
        "CRYPTOBOT_POLL_TIMEOUT",
        "Long-poll timeout in seconds (\\fBpoll_timeout\\fR; default 30, capped at half the watchdog timeout).",
    ),
    (
        "CRYPTOBOT_ON_CONFLICT",
        "\\fBbackoff\\fR (default) or \\fBexit\\fR (\\fBon_conflict\\fR).",
    ),
    (
        "CRYPTOBOT_CONFLICT_MAX",
        "Conflicts before \\fBexit\\fR gives up with status 69 (\\fBconflict_max\\fR; default 10).",
    ),
    (
        "CRYPTOBOT_CONFLICT_BACKOFF_INITIAL",
        "First wait after a conflict, in seconds (\\fBconflict_backoff_initial\\fR; default 5).",
    ),
    (
        "CRYPTOBOT_CONFLICT_BACKOFF_MAX",
        "Longest wait after conflicts, in seconds (\\fBconflict_backoff_max\\fR; default 300).",
    ),
    (
        "CRYPTOBOT_DELETE_WEBHOOK",
        "\\fBtrue\\fR deletes a webhook at start instead of exiting 78 (\\fBdelete_webhook\\fR; default false).",
    ),
    (
        "CRYPTOBOT_CONCURRENT_CHATS",
        "Chats whose updates are handled at once, each chat's in order (\\fBconcurrent_chats\\fR; 1 to 1024, default 64).",
    ),
    (
        "CRYPTOBOT_SENDS_IN_FLIGHT",
        "\\fBsendMessage\\fR requests in flight at once, never two for one chat (\\fBsends_in_flight\\fR; 1 to 256, default 32).",
    ),
    (
        "CRYPTOBOT_PRICE_API_URL",
        "Base URL of the CoinGecko\\-compatible price API (\\fBprice_api_url\\fR; default https://api.coingecko.com). \
         Its key, if any, comes from the credential \\fIprice_api_key\\fR or \\fBprice_api_key_file\\fR.",
    ),
    (
        "CRYPTOBOT_PRICE_CACHE_TTL",
        "Seconds a price is reused (\\fBprice_cache_ttl\\fR; default 30).",
    ),
    (
        "CRYPTOBOT_DEFAULT_CURRENCY",
        "Currency of prices when none is asked for (\\fBdefault_currency\\fR; default usd).",
    ),
    (
        "CRYPTOBOT_ADMIN_CHAT_IDS",
        "Comma\\-separated chat ids allowed to use /status and /restart (\\fBadmin_chat_ids\\fR; default none: \
         refused to everyone).",
    ),
    (
        "CRYPTOBOT_ALERT_INTERVAL",
        "Seconds between price alert checks (\\fBalert_interval\\fR; default 60).",
    ),
    (
        "CRYPTOBOT_ALERT_HYSTERESIS",
        "Percent of its threshold the price must move back before a fired alert re\\-arms \
         (\\fBalert_hysteresis\\fR; default 0.5; 0 to 50).",
    ),
    (
        "CRYPTOBOT_ALERT_COOLDOWN",
        "Seconds an alert stays quiet after it fired (\\fBalert_cooldown\\fR; default 900; 0 to 86400).",
    ),
    (
        "CRYPTOBOT_MAX_ALERTS_PER_CHAT",
        "Price alerts one chat may have (\\fBmax_alerts_per_chat\\fR; default 20).",
    ),
    (
        "CRYPTOBOT_LISTEN",
        "Address for /healthz and /metrics when systemd passes no socket (\\fBlisten\\fR; default none). \
         \\fIcryptobot.socket\\fR passes one on 127.0.0.1:8080.",
    ),
    (
        "CRYPTOBOT_MODE",
        "\\fBpolling\\fR (default) or \\fBwebhook\\fR: Telegram POSTs updates to \\fBpublic_url\\fR \
         (\\fBmode\\fR). Going back to polling deletes the webhook this bot set.",
    ),
    (
        "CRYPTOBOT_WEBHOOK_URL",
        "Webhook mode: the public https URL that reaches the HTTP listener (\\fBpublic_url\\fR); \
         Telegram is given \\fI<public_url>/telegram/<path secret>\\fR.",
    ),
    (
        "CRYPTOBOT_COORDINATION",
        "\\fBnone\\fR (default: the lock on this host) or \\fBpostgres\\fR: one poller across hosts \
         sharing a PostgreSQL lease (\\fBcoordination\\fR).",
    ),
    (
        "CRYPTOBOT_LEASE_TTL",
        "Seconds a lease lasts without renewal (\\fBlease_ttl\\fR; 8 to 300, default 10).",
    ),
    (
        "CRYPTOBOT_DATABASE_URL",
        "The PostgreSQL URL, for development; the credential \\fIdatabase_url\\fR and \
         \\fBdatabase_url_file\\fR take precedence. Never printed with its password.",
    ),
    (
        "CRYPTOBOT_WEBHOOK_SECRET_FILE",
        "Webhook mode: file with the secret token, mode 600 (\\fBwebhook_secret_file\\fR); the \
         credential \\fIwebhook_secret\\fR wins; with neither, one is generated and kept in the state.",
    ),
];

/// Writes `cryptobot.8`, `cryptobot.bash`, `_cryptobot` (zsh) and `cryptobot.fish` into `dir`.
pub fn write_all(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |what: &Path, e: std::io::Error| Failure::io(format!("{}: {e}", what.display()));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut files = vec![(dir.join("cryptobot.8"), man_page().into_bytes())];
    for (shell, name) in [
        (Shell::Bash, "cryptobot.bash"),
        (Shell::Zsh, "_cryptobot"),
        (Shell::Fish, "cryptobot.fish"),
    ] {
        files.push((dir.join(name), completion(shell)));
    }
    for (path, bytes) in &files {
        std::fs::write(path, bytes).map_err(|e| io(path, e))?;
    }
    Ok(files.into_iter().map(|(path, _)| path).collect())
}

/// The completion script for `shell`.
pub fn completion(shell: Shell) -> Vec<u8> {
    // clap_complete offers hidden commands too: complete a copy of the CLI without them.
    let full = super::Cli::command();
    let mut visible = clap::Command::new("cryptobot")
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut visible, "cryptobot", &mut out);
    out
}

/// The man page `cryptobot(8)`, in roff: clap_mangen's title, name, synopsis and global options,
/// then one entry per command with its options, and the sections clap knows nothing of.
pub fn man_page() -> String {
    let cmd = super::Cli::command();
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("System Manager's Manual");
    let mut out = Vec::new();
    for render in [
        clap_mangen::Man::render_title,
        clap_mangen::Man::render_name_section,
    ] {
        render(&man, &mut out).expect("writing to a Vec cannot fail");
    }
    let mut page = String::from_utf8(out).expect("clap_mangen writes UTF-8");
    page.push_str(SYNOPSIS);
    page.push_str(DESCRIPTION);
    let mut out = Vec::new();
    man.render_options_section(&mut out)
        .expect("writing to a Vec cannot fail");
    page.push_str(&String::from_utf8(out).expect("clap_mangen writes UTF-8"));

    page.push_str(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let args: Vec<&Arg> = sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set())
            .filter(|a| !matches!(a.get_action(), ArgAction::Help | ArgAction::Version))
            .collect();
        let mut synopsis = format!("\\fBcryptobot {}\\fR", sub.get_name());
        for arg in &args {
            let _ = write!(synopsis, " [{}]", option_synopsis(arg));
        }
        let _ = writeln!(page, ".TP\n{synopsis}");
        if let Some(about) = sub.get_about() {
            let _ = writeln!(page, "{}", text(&about.to_string()));
        }
        for arg in args {
            let mut help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let defaults: Vec<_> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy())
                .collect();
            if !defaults.is_empty() {
                let _ = write!(help, " (default: {})", defaults.join(", "));
            }
            let _ = writeln!(
                page,
                ".RS\n.TP\n{}\n{}\n.RE",
                option_synopsis(arg),
                text(&help)
            );
        }
    }

    page.push_str(".SH EXIT STATUS\n");
    for (code, meaning) in EXIT_STATUS {
        let _ = writeln!(page, ".TP\n.B {code}\n{meaning}");
    }
    page.push_str(".SH FILES\n");
    for (path, what) in FILES {
        let _ = writeln!(page, ".TP\n.I {path}\n{what}");
    }
    page.push_str(
        ".SH ENVIRONMENT\nEach variable overrides the configuration key named in parentheses; an empty \
         value counts as unset. Under systemd, set them in a drop\\-in (\\fBsystemctl edit cryptobot\\fR).\n",
    );
    for (name, what) in ENVIRONMENT {
        let _ = writeln!(page, ".TP\n.B {name}\n{what}");
    }
    let _ = write!(
        page,
        ".SH VERSION\n{}\n.SH SEE ALSO\n\\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1), \\fBsystemd.exec\\fR(5), \
         \\fIcryptobot.service\\fR, \\fI/usr/share/doc/cryptobot/README.md\\fR\n",
        env!("CARGO_PKG_VERSION")
    );
    page
}

/// clap_mangen's synopsis shows `--config` without its value and `<subcommands>`; this one says how
/// a command line is made, and COMMANDS below gives each command's own.
const SYNOPSIS: &str = r#".SH SYNOPSIS
\fBcryptobot\fR [\fB\-\-config\fR \fIPATH\fR] \fICOMMAND\fR [\fIOPTIONS\fR]
.br
\fBcryptobot\fR \fB\-\-help\fR | \fB\-\-version\fR
"#;

const DESCRIPTION: &str = r#".SH DESCRIPTION
\fBcryptobot\fR answers Telegram commands and runs as a systemd service (\fIcryptobot.service\fR, or
\fIcryptobot@NAME.service\fR for several bots on one host). Telegram allows one \fBgetUpdates\fR poller
per bot token; cryptobot takes an exclusive lock on \fI/run/cryptobot/bot\-<id>.lock\fR before it calls
Telegram, so a second instance on the same host is refused (status 75) with the PID and unit of the one
that runs.
.PP
The service is \fBType=notify\fR: it reports READY once the lock is held and Telegram accepted the token,
keeps a \fBSTATUS=\fR line (see \fBsystemctl status cryptobot\fR), feeds the watchdog only while its update
loop makes progress, and logs to the journal (\fBjournalctl \-u cryptobot\fR).
\fBsystemctl reload cryptobot\fR re\-reads the configuration and keeps the running one if the new one is bad.
.PP
Install the token with
\fBinstall \-m 600 /dev/stdin /etc/cryptobot/token\fR, then \fBsystemctl start cryptobot\fR.
"#;

/// `--name VALUE` (or `VALUE` for a positional), in roff.
fn option_synopsis(arg: &Arg) -> String {
    let value = arg
        .get_value_names()
        .map(|v| v.join(" "))
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
    let takes_value = matches!(arg.get_action(), ArgAction::Set | ArgAction::Append);
    match arg.get_long() {
        Some(long) if takes_value => format!("\\fB\\-\\-{long}\\fR \\fI{value}\\fR"),
        Some(long) => format!("\\fB\\-\\-{long}\\fR"),
        None => format!("\\fI{value}\\fR"),
    }
}

/// Plain text as a roff text line: backslashes escaped, no control character at the start.
fn text(s: &str) -> String {
    let s = s.replace('\\', "\\e");
    if s.starts_with(['.', '\'']) {
        format!("\\&{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_page_mentions_every_command_option_and_exit_code() {
        let page = man_page();
        assert!(page.contains("\n.TH cryptobot 8 "), "{}", &page[..200]);
        for line in page.lines() {
            // A trailing backslash joins lines in roff; a leading space breaks the paragraph.
            assert!(
                !line.ends_with('\\') && !line.starts_with(' '),
                "roff line {line:?}"
            );
        }
        for section in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "COMMANDS",
            "EXIT STATUS",
            "FILES",
            "ENVIRONMENT",
            "SEE ALSO",
        ] {
            assert!(
                page.contains(&format!(".SH {section}\n"))
                    || page.contains(&format!(".SH \"{section}\"\n")),
                "no {section} section"
            );
        }
        let cmd = <super::super::Cli as CommandFactory>::command();
        for sub in cmd.get_subcommands() {
            let entry = format!("\\fBcryptobot {}\\fR", sub.get_name());
            assert_eq!(
                page.contains(&entry),
                !sub.is_hide_set(),
                "{entry} (hidden: {})",
                sub.is_hide_set()
            );
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                if let Some(long) = arg.get_long().filter(|l| *l != "help") {
                    assert!(
                        page.contains(&format!("\\-\\-{long}")),
                        "--{long} of {}",
                        sub.get_name()
                    );
                }
            }
        }
        let exit_status =
            &page[page.find(".SH EXIT STATUS").unwrap()..page.find(".SH FILES").unwrap()];
        for code in [0, 1, 3, 64, 69, 74, 75, 78] {
            assert!(
                exit_status.contains(&format!(".B {code}\n")),
                "exit status {code}"
            );
        }
        for file in [
            "/etc/cryptobot/cryptobot.toml",
            "/etc/cryptobot/token",
            "/var/lib/cryptobot/state.db",
            "/run/cryptobot/bot-<id>.lock",
        ] {
            assert!(page.contains(&format!(".I {file}\n")), "file {file}");
        }
        assert!(page.contains("\\fBsystemctl\\fR(1)") && page.contains("\\fBjournalctl\\fR(1)"));
    }

    /// README.md's exit-code table and configuration table are the documentation of record: the man
    /// page lists every code and every `CRYPTOBOT_*` variable found there.
    #[test]
    fn man_page_agrees_with_the_readme() {
        let readme = include_str!("../../README.md");
        let page = man_page();
        for line in readme.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if let [_, code, _, _, _] = cells[..]
                && let Ok(code) = code.parse::<u8>()
            {
                assert!(
                    EXIT_STATUS.iter().any(|(c, _)| *c == code),
                    "exit code {code} of README.md is not in the man page"
                );
            }
        }
        let mut rest = readme;
        while let Some(at) = rest.find("CRYPTOBOT_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            assert!(
                name == "CRYPTOBOT_" || page.contains(&format!(".B {name}\n")),
                "{name} (README.md) is not in the man page's ENVIRONMENT"
            );
            rest = &rest[at + name.len()..];
        }
    }

    #[test]
    fn completions_know_every_visible_command() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = String::from_utf8(completion(shell)).unwrap();
            for name in [
                "run",
                "status",
                "stop",
                "check-config",
                "doctor",
                "config",
                "timeout",
                "force",
            ] {
                assert!(script.contains(name), "{shell} completion lacks {name}");
            }
            assert!(
                !script.contains("generate-assets"),
                "{shell} completion offers a hidden command"
            );
        }
    }

    #[test]
    fn write_all_writes_the_four_files() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_all(dir.path()).unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "cryptobot.8",
                "cryptobot.bash",
                "_cryptobot",
                "cryptobot.fish"
            ]
        );
        for path in written {
            assert!(
                std::fs::metadata(&path).unwrap().len() > 100,
                "{}",
                path.display()
            );
        }
    }
}
