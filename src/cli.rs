//! The command line: `cryptobot [--config PATH] run | status | stop | doctor | check-config`.
//!
//! Parses arguments, loads what each command needs, and turns every [`Failure`] into one line on stderr
//! and its exit code (README.md lists them). Usage errors exit 64. The hidden `generate-assets DIR`
//! writes the man page `cryptobot(8)` and the shell completions from these definitions ([`assets`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Config, Env, Settings};
use crate::exit::{Code, Failure, Result};
use crate::instance::control::{self, StopOptions};
use crate::instance::lease_commands;

#[derive(Debug, Parser)]
#[command(
    name = "cryptobot",
    version,
    about = "Telegram crypto bot, a systemd-native service that never polls twice"
)]
pub struct Cli {
    /// Configuration file (default: /etc/cryptobot/cryptobot.toml under systemd, else
    /// $XDG_CONFIG_HOME/cryptobot/cryptobot.toml, else /etc/cryptobot/cryptobot.toml, if present)
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum LeaseAction {
    /// Holder, host, PID, epoch and when the lease expires (exit 3 when nobody holds it)
    Show,
    /// Ask the leader on this host to resign: it stops cleanly, releases the lease (a standby takes it
    /// at once) and is restarted by systemd as a standby
    Release,
    /// Ask the leader, on any host, to hand over to this host's standby (exit 1 if this host does not
    /// lead within the TTL plus 15 s)
    Takeover,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bot (what the systemd unit starts)
    Run,
    /// Show whether an instance holds the lock: PID, unit, since, version, last poll
    Status,
    /// Stop the running instance (SIGTERM) and wait until its lock is free
    Stop {
        /// Seconds to wait for the lock to be freed (at most 86400)
        #[arg(long, default_value_t = 30, value_name = "SECS",
              value_parser = clap::value_parser!(u64).range(0..=86_400))]
        timeout: u64,
        /// Also stop an instance run by systemd, and SIGKILL it if it has not stopped after --timeout
        #[arg(long)]
        force: bool,
    },
    /// Ask the running instance to reload its configuration (SIGHUP: what `systemctl reload` does)
    Reload,
    /// Validate the configuration and print the effective values (token redacted)
    CheckConfig,
    /// Diagnose: config, token, webhook, lock holder, systemd unit, recent conflicts (exit 1 on problems)
    Doctor,
    /// The PostgreSQL lease (coordination = "postgres"): who holds it, release it, take it over
    Lease {
        #[command(subcommand)]
        action: LeaseAction,
    },
    /// Write the man page cryptobot.8 and the bash, zsh and fish completions into DIR (packaging/build-deb)
    #[command(hide = true)]
    GenerateAssets {
        /// Directory to write into (created if missing)
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { Code::Usage as u8 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let env = Env::from_process();
    // G7: the token must not reach a child's environment. Removing it is sound here: the process is
    // still single-threaded (no runtime yet), and `env` keeps the value we need.
    unsafe { std::env::remove_var("CRYPTOBOT_TOKEN") };
    match dispatch(&cli, &env) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            report(&failure);
            ExitCode::from(failure.code as u8)
        }
    }
}

/// The failure that ends the process: one line on stderr, or, when the run logs to the journal, one
/// record there with its exit code and its catalog id (`journalctl -x` explains it).
fn report(failure: &Failure) {
    use crate::systemd::logging::{Target, target};
    let code = failure.code as u8;
    match (target(), failure.message_id) {
        (Some(Target::Journal), Some(id)) => {
            tracing::error!(message_id = id, exit_status = code, "{}", failure.message);
        }
        (Some(Target::Journal), None) => tracing::error!(exit_status = code, "{}", failure.message),
        _ => eprintln!("cryptobot: {}", failure.message),
    }
}

fn dispatch(cli: &Cli, env: &Env) -> Result<u8> {
    let config_path = cli.config.as_deref();
    match &cli.command {
        Command::GenerateAssets { dir } => {
            for written in assets::write_all(dir)? {
                println!("{}", written.display());
            }
            Ok(0)
        }
        Command::Run => {
            let config = Config::load(config_path, env)?;
            crate::systemd::logging::init(&config.settings.log);
            let reload = crate::reload::ReloadSource {
                config_path: cli.config.clone(),
                env: env.clone(),
            };
            crate::app::run(config, reload)?;
            Ok(0)
        }
        Command::Lease { action } => {
            let config = Config::load(config_path, env)?;
            let (text, code) = match action {
                LeaseAction::Show => lease_commands::show(&config)?,
                LeaseAction::Release => lease_commands::release(&config)?,
                LeaseAction::Takeover => lease_commands::takeover(&config)?,
            };
            println!("{text}");
            Ok(code)
        }
        Command::CheckConfig => {
            let config = Config::load(config_path, env)?;
            print!("{}", config.render());
            Ok(0)
        }
        Command::Doctor => {
            let (dir, _) = inspect_target(config_path, env)?;
            let (text, code) =
                crate::doctor::report(&crate::doctor::examine(config_path, env, &dir));
            print!("{text}");
            Ok(code)
        }
        Command::Status => {
            let (dir, bot) = inspect_target(config_path, env)?;
            let (text, code) = control::status(&dir, bot);
            println!("{text}");
            // With the lease, this host's instance may be a standby: say who leads.
            if let Some((_, lease)) = Config::load(config_path, env)
                .ok()
                .and_then(|c| lease_commands::summary(&c))
            {
                println!("{lease}");
            }
            Ok(code)
        }
        Command::Reload => {
            // As the unit's ExecReload=, systemd names the main process in $MAINPID; the unit's
            // sandbox (ProcSubset=pid) hides /proc/locks, where the lock's holder is found otherwise.
            let report = match env.get("MAINPID").and_then(|p| p.parse::<u32>().ok()) {
                Some(pid) if pid > 1 => control::reload_pid(None, pid)?,
                _ => {
                    let (dir, bot) = inspect_target(config_path, env)?;
                    control::reload(&dir, bot)?
                }
            };
            println!("{report}");
            Ok(0)
        }
        Command::Stop { timeout, force } => {
            let (dir, bot) = inspect_target(config_path, env)?;
            let opts = StopOptions {
                timeout: Duration::from_secs(*timeout),
                force: *force,
            };
            println!("{}", control::stop(&dir, bot, opts)?);
            Ok(0)
        }
    }
}

/// The runtime dir and (when a token is configured) the bot id that `status`/`stop` look at. An operator
/// without write access to /run/cryptobot still inspects it when it exists.
fn inspect_target(config_path: Option<&Path>, env: &Env) -> Result<(PathBuf, Option<u64>)> {
    let settings = Settings::load(config_path, env)?;
    let explicit =
        env.get("CRYPTOBOT_RUNTIME_DIR").is_some() || env.get("RUNTIME_DIRECTORY").is_some();
    let system = Path::new("/run/cryptobot");
    let dir = if !explicit && system.is_dir() {
        system.to_owned()
    } else {
        settings.runtime_dir.clone()
    };
    let bot = Config::load(config_path, env)
        .ok()
        .map(|c| c.token.bot_id());
    Ok((dir, bot))
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::software(e.to_string())
    }
}

pub mod assets;
