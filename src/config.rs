//! Configuration: a TOML file, overridden by `CRYPTOBOT_*` environment variables, plus the token from a
//! systemd credential, a token file or the environment. Validated once; every bad value becomes one line
//! naming the key and where it came from, and exit code 78.
//!
//! Which file is read (the first that applies):
//! 1. `--config PATH` (must exist);
//! 2. under systemd (`$INVOCATION_ID` set): `/etc/cryptobot/cryptobot.toml` if present;
//! 3. `$XDG_CONFIG_HOME/cryptobot/cryptobot.toml` (default `~/.config/...`) if present;
//! 4. `/etc/cryptobot/cryptobot.toml` if present, so a hand-started `cryptobot` sees the service's config;
//! 5. none: built-in defaults.
//!
//! Where the token comes from (the first that applies):
//! 1. `$CREDENTIALS_DIRECTORY/token` (systemd `LoadCredential=token:...`);
//! 2. `CRYPTOBOT_TOKEN_FILE`, else the config key `token_file`;
//! 3. `CRYPTOBOT_TOKEN` (development only: the environment is visible to the process owner);
//! 4. `/etc/cryptobot/token` if readable (an operator on the host running `cryptobot` by hand).
//!
//! A token file readable by other users is refused (G7); every secret file (token, price API key,
//! webhook secret, database URL) is read by `secrets::read_secret_file`, under the same rules.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::exit::{Failure, Result};
use crate::secret::Token;
use secrets::{SecretKind, SecretPath, credential_or_file, read_secret_file};

pub mod coordination;
mod secrets;
pub mod webhook;
pub use coordination::{Coordination, CoordinationOptions, DatabaseUrl};
pub use webhook::{Mode, WebhookOptions, WebhookSecret};

pub const SYSTEM_CONFIG: &str = "/etc/cryptobot/cryptobot.toml";
pub const SYSTEM_TOKEN: &str = "/etc/cryptobot/token";
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";
pub const DEFAULT_PRICE_API_URL: &str = "https://api.coingecko.com";
const DEFAULT_POLL_TIMEOUT: u64 = 30;
const MAX_POLL_TIMEOUT: u64 = 50;

/// The environment, captured once (so tests can pass their own).
#[derive(Clone, Debug, Default)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// Captures the process environment. Non-UTF-8 values of variables we read are an error later.
    pub fn from_process() -> Self {
        Self(
            std::env::vars_os()
                .filter_map(|(k, v)| {
                    Some((k.into_string().ok()?, v.to_string_lossy().into_owned()))
                })
                .collect(),
        )
    }
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
    fn home_relative(&self, xdg: &str, fallback: &str) -> Option<PathBuf> {
        self.get(xdg)
            .map(PathBuf::from)
            .or_else(|| self.get("HOME").map(|h| Path::new(h).join(fallback)))
    }
}

/// The file's schema. Unknown keys are refused so a typo never goes unnoticed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    api_url: Option<String>,
    token_file: Option<PathBuf>,
    runtime_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    log: Option<String>,
    poll_timeout: Option<u64>,
    on_conflict: Option<OnConflict>,
    conflict_max: Option<u64>,
    conflict_backoff_initial: Option<f64>,
    conflict_backoff_max: Option<f64>,
    delete_webhook: Option<bool>,
    concurrent_chats: Option<u64>,
    sends_in_flight: Option<u64>,
    price_api_url: Option<String>,
    price_api_key_file: Option<PathBuf>,
    price_cache_ttl: Option<u64>,
    default_currency: Option<String>,
    admin_chat_ids: Option<Vec<i64>>,
    alert_interval: Option<u64>,
    alert_hysteresis: Option<f64>,
    alert_cooldown: Option<u64>,
    max_alerts_per_chat: Option<u64>,
    coins: Option<BTreeMap<String, String>>,
    listen: Option<String>,
    mode: Option<Mode>,
    public_url: Option<String>,
    webhook_secret_file: Option<PathBuf>,
    coordination: Option<Coordination>,
    lease_ttl: Option<u64>,
    database_url_file: Option<PathBuf>,
}

/// How much the update pipeline does at once (`bot/dispatch.rs`, `bot/outbound.rs`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PipelineOptions {
    /// Chats whose updates are handled at once (each chat's in order, one at a time).
    pub concurrent_chats: usize,
    /// `sendMessage` requests in flight at once, each for a different chat. 32 keep Telegram's 30
    /// messages/s going while a request takes up to 1.1 s.
    pub sends_in_flight: usize,
}

/// The crypto bot's own settings.
#[derive(Clone, Debug, PartialEq)]
pub struct BotOptions {
    /// CoinGecko-compatible base URL.
    pub price_api_url: url::Url,
    /// File with the price API key (a `price_api_key` credential wins).
    pub price_api_key_file: Option<PathBuf>,
    pub price_cache_ttl: Duration,
    pub default_currency: String,
    /// Chats (or users) allowed to use /status and /restart.
    pub admin_chat_ids: Vec<i64>,
    pub alert_interval: Duration,
    /// How far (percent of the threshold) the price must move back before a fired alert re-arms.
    pub alert_hysteresis_percent: f64,
    /// An alert fires at most once in this long.
    pub alert_cooldown: Duration,
    pub max_alerts_per_chat: u64,
    /// Extra symbol → CoinGecko id entries.
    pub coins: BTreeMap<String, String>,
}

/// Parses `CRYPTOBOT_ADMIN_CHAT_IDS`: comma-separated chat ids.
#[derive(Debug, Clone, PartialEq)]
struct IdList(Vec<i64>);

impl std::str::FromStr for IdList {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().map_err(drop))
            .collect::<std::result::Result<_, _>>()
            .map(IdList)
    }
}

/// What to do about a 409 from another poller while this host holds its lock (G6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// Back off with jitter and keep trying, visibly (the default).
    Backoff,
    /// After `conflict_max` conflicts, exit 69 (the unit does not restart on it).
    Exit,
}

impl std::str::FromStr for OnConflict {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        match s {
            "backoff" => Ok(Self::Backoff),
            "exit" => Ok(Self::Exit),
            _ => Err(()),
        }
    }
}

/// The conflict policy's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConflictPolicy {
    pub on_conflict: OnConflict,
    /// Conflicts (without a quiet period of twice `backoff_max` between them) before exit 69.
    pub max_conflicts: u64,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

/// Where the token was read from (shown by `check-config`, never the token itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    Credential(PathBuf),
    File(PathBuf),
    Environment,
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Credential(p) => write!(f, "systemd credential {}", p.display()),
            Self::File(p) => write!(f, "file {}", p.display()),
            Self::Environment => f.write_str("environment variable CRYPTOBOT_TOKEN"),
        }
    }
}

/// The effective settings, everything but the token (operator commands need no token).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
    pub api_url: url::Url,
    pub token_file: Option<PathBuf>,
    pub runtime_dir: PathBuf,
    pub state_dir: PathBuf,
    pub log: String,
    pub poll_timeout: Duration,
    pub conflict: ConflictPolicy,
    /// Delete a webhook found at start (or met as a 409) instead of stopping with an error.
    pub delete_webhook: bool,
    /// How many chats' updates are handled at once, and `sendMessage` requests in flight.
    pub pipeline: PipelineOptions,
    pub bot: BotOptions,
    /// Address of `/healthz` and `/metrics` when systemd passes no socket (none: no HTTP server).
    pub listen: Option<std::net::SocketAddr>,
    /// Polling or webhook, and the webhook's settings.
    pub webhook: WebhookOptions,
    /// Alone (flock) or with other hosts (PostgreSQL lease).
    pub coordination: CoordinationOptions,
    /// True when started by systemd as a service (`$INVOCATION_ID`).
    pub under_systemd: bool,
}

/// Settings plus the token: what `cryptobot run` needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub settings: Settings,
    pub token: Token,
    pub token_source: TokenSource,
    /// The price API key, from the `price_api_key` credential or `price_api_key_file`. Never printed.
    pub price_api_key: Option<String>,
    /// The webhook secret from a credential or file; `None`: generated once and kept in the store.
    pub webhook_secret: Option<WebhookSecret>,
    /// The PostgreSQL URL when `coordination = "postgres"`. Never printed with its password.
    pub database_url: Option<DatabaseUrl>,
}

/// Names the place a value came from, for error messages.
fn origin(file: Option<&Path>) -> String {
    file.map_or_else(
        || "built-in defaults".to_owned(),
        |p| p.display().to_string(),
    )
}

fn choose_file(config_arg: Option<&Path>, env: &Env) -> Result<Option<PathBuf>> {
    if let Some(path) = config_arg {
        if !path.is_file() {
            return Err(Failure::config(format!(
                "config file {} does not exist or is not a file; fix the --config path",
                path.display()
            )));
        }
        return Ok(Some(path.to_owned()));
    }
    let system = Path::new(SYSTEM_CONFIG);
    if env.get("INVOCATION_ID").is_some() && system.is_file() {
        return Ok(Some(system.to_owned()));
    }
    if let Some(xdg) = env.home_relative("XDG_CONFIG_HOME", ".config") {
        let candidate = xdg.join("cryptobot/cryptobot.toml");
        if candidate.is_file() {
            return Ok(Some(candidate));
        }
    }
    Ok(system.is_file().then(|| system.to_owned()))
}

/// Turns a TOML error into one line: "<file>: line N, key `k`: <message>". toml names the key for
/// unknown keys but not for a wrong type, so the key is read back from the line the error points at.
fn toml_error(path: &Path, text: &str, err: &toml::de::Error) -> Failure {
    let mut at = String::new();
    if let Some(span) = err.span() {
        let start = span.start.min(text.len());
        let line_no = text[..start].matches('\n').count() + 1;
        at = format!(" line {line_no}");
        let line = text.lines().nth(line_no - 1).unwrap_or("");
        if let Some((key, _)) = line.split_once('=') {
            let key = key.trim();
            if !key.is_empty() && !err.message().contains(key) {
                at.push_str(&format!(", key `{key}`"));
            }
        }
        at.push(':');
    }
    let message = err.message().trim().replace('\n', " ");
    Failure::config(format!(
        "config {}:{at} {message}; fix the file (cryptobot check-config shows the result)",
        path.display()
    ))
}

fn read_file_config(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::config(format!("cannot read config {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))
}

fn parse_url(value: &str, origin: &str, example: &str) -> Result<url::Url> {
    let url = url::Url::parse(value)
        .map_err(|e| Failure::config(format!("{origin}: {e}; expected a URL like {example}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(Failure::config(format!(
            "{origin}: expected an http:// or https:// URL like {example}"
        )));
    }
    Ok(url)
}

fn check_log_filter(filter: &str, origin: &str) -> Result<()> {
    filter
        .parse::<tracing_subscriber::filter::Targets>()
        .map(drop)
        .map_err(|e| {
            Failure::config(format!(
                "{origin}: {e}; use a level like \"info\" or \"cryptobot=debug,info\""
            ))
        })
}

/// Resolves the runtime directory (see brief.md G1).
fn runtime_dir(explicit: Option<PathBuf>, env: &Env) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir);
    }
    if let Some(dirs) = env.get("RUNTIME_DIRECTORY") {
        // systemd passes a colon-separated list when several are configured; ours is the first.
        return Ok(PathBuf::from(dirs.split(':').next().unwrap_or(dirs)));
    }
    let system = Path::new("/run/cryptobot");
    if nix::unistd::access(system, nix::unistd::AccessFlags::W_OK).is_ok()
        || (!system.exists() && nix::unistd::access("/run", nix::unistd::AccessFlags::W_OK).is_ok())
    {
        return Ok(system.to_owned());
    }
    if let Some(xdg) = env.get("XDG_RUNTIME_DIR") {
        return Ok(Path::new(xdg).join("cryptobot"));
    }
    Err(Failure::config(
        "no runtime directory: /run/cryptobot is not writable and XDG_RUNTIME_DIR is unset; set CRYPTOBOT_RUNTIME_DIR",
    ))
}

fn state_dir(explicit: Option<PathBuf>, env: &Env) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir);
    }
    if let Some(dirs) = env.get("STATE_DIRECTORY") {
        return Ok(PathBuf::from(dirs.split(':').next().unwrap_or(dirs)));
    }
    env.home_relative("XDG_DATA_HOME", ".local/share")
        .map(|d| d.join("cryptobot"))
        .ok_or_else(|| {
            Failure::config("no state directory: HOME is unset; set CRYPTOBOT_STATE_DIR")
        })
}

/// One setting's value and where it came from ("CRYPTOBOT_X (environment)" or "key (file)"), so every
/// validation error names the right place.
struct Layered<T> {
    value: T,
    origin: String,
}

/// The environment variable if set (parsed from text), else the file's value, else `default`.
fn layered<T: std::str::FromStr>(
    env: &Env,
    var: &str,
    file_value: Option<T>,
    key: &str,
    from: &str,
    default: T,
    expected: &str,
) -> Result<Layered<T>> {
    if let Some(text) = env.get(var) {
        let value = text.parse().map_err(|_| {
            Failure::config(format!("{var} (environment): {text:?} is not {expected}"))
        })?;
        return Ok(Layered {
            value,
            origin: format!("{var} (environment)"),
        });
    }
    Ok(Layered {
        value: file_value.unwrap_or(default),
        origin: format!("{key} ({from})"),
    })
}

fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    l: &Layered<T>,
    min: T,
    max: T,
) -> Result<T> {
    // Not `value < min || value > max`: a NaN (`conflict_backoff_initial = nan`) passes that, and
    // Duration::from_secs_f64 then panics (found while fuzzing the config).
    if !(min..=max).contains(&l.value) {
        return Err(Failure::config(format!(
            "{}: {} is out of range; use {min} to {max}",
            l.origin, l.value
        )));
    }
    Ok(l.value)
}

impl Settings {
    /// Loads the settings: file, then environment overrides, then validation.
    pub fn load(config_arg: Option<&Path>, env: &Env) -> Result<Self> {
        let file = choose_file(config_arg, env)?;
        let fc = match &file {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        let from = origin(file.as_deref());
        let text = "a text value";

        let api_url = layered(
            env,
            "CRYPTOBOT_API_URL",
            fc.api_url,
            "api_url",
            &from,
            DEFAULT_API_URL.to_owned(),
            text,
        )?;
        let api_url = parse_url(&api_url.value, &api_url.origin, DEFAULT_API_URL)?;
        let token_file = env
            .get("CRYPTOBOT_TOKEN_FILE")
            .map(PathBuf::from)
            .or(fc.token_file);
        let runtime_dir = runtime_dir(
            env.get("CRYPTOBOT_RUNTIME_DIR")
                .map(PathBuf::from)
                .or(fc.runtime_dir),
            env,
        )?;
        let state_dir = state_dir(
            env.get("CRYPTOBOT_STATE_DIR")
                .map(PathBuf::from)
                .or(fc.state_dir),
            env,
        )?;
        let mut log = layered(
            env,
            "CRYPTOBOT_LOG",
            fc.log,
            "log",
            &from,
            "info".to_owned(),
            text,
        )?;
        // Each directive trimmed: tracing-subscriber 0.3 panics on a directive with leading blanks
        // before a multi-byte character (" é=info"; found by fuzzing), and refuses "info, x=debug".
        log.value = log
            .value
            .split(',')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(",");
        check_log_filter(&log.value, &log.origin)?;
        let seconds = "a whole number of seconds";
        let poll_timeout = layered(
            env,
            "CRYPTOBOT_POLL_TIMEOUT",
            fc.poll_timeout,
            "poll_timeout",
            &from,
            DEFAULT_POLL_TIMEOUT,
            seconds,
        )?;
        let poll_timeout = Duration::from_secs(check_range(&poll_timeout, 1, MAX_POLL_TIMEOUT)?);

        let on_conflict = layered(
            env,
            "CRYPTOBOT_ON_CONFLICT",
            fc.on_conflict,
            "on_conflict",
            &from,
            OnConflict::Backoff,
            "\"backoff\" or \"exit\"",
        )?
        .value;
        let conflict_max = layered(
            env,
            "CRYPTOBOT_CONFLICT_MAX",
            fc.conflict_max,
            "conflict_max",
            &from,
            10,
            "a whole number",
        )?;
        let conflict_max = check_range(&conflict_max, 1, 1_000_000)?;
        let backoff_secs = "a number of seconds";
        let initial = layered(
            env,
            "CRYPTOBOT_CONFLICT_BACKOFF_INITIAL",
            fc.conflict_backoff_initial,
            "conflict_backoff_initial",
            &from,
            5.0,
            backoff_secs,
        )?;
        let initial = check_range(&initial, 0.01, 3600.0)?;
        let max = layered(
            env,
            "CRYPTOBOT_CONFLICT_BACKOFF_MAX",
            fc.conflict_backoff_max,
            "conflict_backoff_max",
            &from,
            300.0,
            backoff_secs,
        )?;
        let max = check_range(&max, initial, 86_400.0)?;
        let delete_webhook = layered(
            env,
            "CRYPTOBOT_DELETE_WEBHOOK",
            fc.delete_webhook,
            "delete_webhook",
            &from,
            false,
            "true or false",
        )?
        .value;

        let price_api_url = layered(
            env,
            "CRYPTOBOT_PRICE_API_URL",
            fc.price_api_url,
            "price_api_url",
            &from,
            DEFAULT_PRICE_API_URL.to_owned(),
            text,
        )?;
        let price_api_url = parse_url(
            &price_api_url.value,
            &price_api_url.origin,
            DEFAULT_PRICE_API_URL,
        )?;
        let ttl = layered(
            env,
            "CRYPTOBOT_PRICE_CACHE_TTL",
            fc.price_cache_ttl,
            "price_cache_ttl",
            &from,
            30,
            seconds,
        )?;
        let ttl = check_range(&ttl, 0, 3600)?;
        let currency = layered(
            env,
            "CRYPTOBOT_DEFAULT_CURRENCY",
            fc.default_currency,
            "default_currency",
            &from,
            "usd".to_owned(),
            text,
        )?;
        if !crate::bot::prices::is_currency(&currency.value) {
            return Err(Failure::config(format!(
                "{}: {:?} is not a supported currency; use one of {}",
                currency.origin,
                currency.value,
                crate::bot::prices::CURRENCIES.join(", ")
            )));
        }
        let admins = layered(
            env,
            "CRYPTOBOT_ADMIN_CHAT_IDS",
            fc.admin_chat_ids.map(IdList),
            "admin_chat_ids",
            &from,
            IdList(Vec::new()),
            "a comma-separated list of chat ids",
        )?
        .value
        .0;
        let interval = layered(
            env,
            "CRYPTOBOT_ALERT_INTERVAL",
            fc.alert_interval,
            "alert_interval",
            &from,
            60,
            seconds,
        )?;
        let interval = check_range(&interval, 1, 86_400)?;
        let hysteresis = layered(
            env,
            "CRYPTOBOT_ALERT_HYSTERESIS",
            fc.alert_hysteresis,
            "alert_hysteresis",
            &from,
            0.5,
            "a percentage (a number such as 0.5)",
        )?;
        let hysteresis = check_range(&hysteresis, 0.0, 50.0)?;
        let cooldown = layered(
            env,
            "CRYPTOBOT_ALERT_COOLDOWN",
            fc.alert_cooldown,
            "alert_cooldown",
            &from,
            900,
            seconds,
        )?;
        let cooldown = check_range(&cooldown, 0, 86_400)?;
        let max_alerts = layered(
            env,
            "CRYPTOBOT_MAX_ALERTS_PER_CHAT",
            fc.max_alerts_per_chat,
            "max_alerts_per_chat",
            &from,
            20,
            "a whole number",
        )?;
        let max_alerts = check_range(&max_alerts, 1, 1000)?;
        let bot = BotOptions {
            price_api_url,
            price_api_key_file: fc.price_api_key_file,
            price_cache_ttl: Duration::from_secs(ttl),
            default_currency: currency.value.to_ascii_lowercase(),
            admin_chat_ids: admins,
            alert_interval: Duration::from_secs(interval),
            alert_hysteresis_percent: hysteresis,
            alert_cooldown: Duration::from_secs(cooldown),
            max_alerts_per_chat: max_alerts,
            coins: fc.coins.unwrap_or_default(),
        };

        let listen = match layered(
            env,
            "CRYPTOBOT_LISTEN",
            fc.listen,
            "listen",
            &from,
            String::new(),
            text,
        )? {
            l if l.value.is_empty() => None,
            l => Some(l.value.parse().map_err(|_| {
                Failure::config(format!(
                    "{}: {:?} is not an address:port like 127.0.0.1:8080",
                    l.origin, l.value
                ))
            })?),
        };

        let mode = layered(
            env,
            "CRYPTOBOT_MODE",
            fc.mode,
            "mode",
            &from,
            Mode::Polling,
            "\"polling\" or \"webhook\"",
        )?
        .value;
        let public_url = layered(
            env,
            "CRYPTOBOT_WEBHOOK_URL",
            fc.public_url,
            "public_url",
            &from,
            String::new(),
            text,
        )?;
        let public_url = if public_url.value.is_empty() {
            None
        } else {
            Some(parse_url(
                &public_url.value,
                &public_url.origin,
                "https://bot.example.com",
            )?)
        };
        if mode == Mode::Webhook && public_url.is_none() {
            return Err(Failure::config(format!(
                "mode = \"webhook\" ({from} or environment) needs public_url: set it (or CRYPTOBOT_WEBHOOK_URL) to the https URL that reaches this service"
            )));
        }
        let webhook = WebhookOptions {
            mode,
            public_url,
            secret_file: env
                .get("CRYPTOBOT_WEBHOOK_SECRET_FILE")
                .map(PathBuf::from)
                .or(fc.webhook_secret_file),
        };

        let coordination = layered(
            env,
            "CRYPTOBOT_COORDINATION",
            fc.coordination,
            "coordination",
            &from,
            Coordination::None,
            "\"none\" or \"postgres\"",
        )?
        .value;
        let lease_ttl = layered(
            env,
            "CRYPTOBOT_LEASE_TTL",
            fc.lease_ttl,
            "lease_ttl",
            &from,
            10,
            "a whole number of seconds",
        )?;
        let lease_ttl = check_range(
            &lease_ttl,
            coordination::MIN_LEASE_TTL.as_secs(),
            coordination::MAX_LEASE_TTL.as_secs(),
        )?;
        let coordination = CoordinationOptions {
            coordination,
            lease_ttl: Duration::from_secs(lease_ttl),
            database_url_file: fc.database_url_file,
        };

        for (key, dir) in [("runtime_dir", &runtime_dir), ("state_dir", &state_dir)] {
            if !dir.is_absolute() {
                return Err(Failure::config(format!(
                    "{key} ({from} or environment): {} is not an absolute path; use an absolute path",
                    dir.display()
                )));
            }
        }
        let count = "a whole number";
        let concurrent_chats = layered(
            env,
            "CRYPTOBOT_CONCURRENT_CHATS",
            fc.concurrent_chats,
            "concurrent_chats",
            &from,
            64,
            count,
        )?;
        let sends_in_flight = layered(
            env,
            "CRYPTOBOT_SENDS_IN_FLIGHT",
            fc.sends_in_flight,
            "sends_in_flight",
            &from,
            32,
            count,
        )?;
        let pipeline = PipelineOptions {
            concurrent_chats: check_range(&concurrent_chats, 1, 1024)? as usize,
            sends_in_flight: check_range(&sends_in_flight, 1, 256)? as usize,
        };
        Ok(Self {
            file,
            api_url,
            token_file,
            runtime_dir,
            state_dir,
            log: log.value,
            poll_timeout,
            conflict: ConflictPolicy {
                on_conflict,
                max_conflicts: conflict_max,
                backoff_initial: Duration::from_secs_f64(initial),
                backoff_max: Duration::from_secs_f64(max),
            },
            delete_webhook,
            pipeline,
            bot,
            listen,
            webhook,
            coordination,
            under_systemd: env.get("INVOCATION_ID").is_some(),
        })
    }
}

/// What the secret files hold, for their messages (`secrets::read_secret_file`).
const TOKEN_FILE: SecretKind = SecretKind {
    name: "token file",
    fix_unreadable: "check the path and permissions",
    fix_empty: "put the token @BotFather gave you in it",
};
const PRICE_API_KEY_FILE: SecretKind = SecretKind {
    name: "price API key file",
    fix_unreadable: "check price_api_key_file",
    fix_empty: "put the key in it, alone on one line",
};

/// Reads a token file (refused when other users can read it, unless it is a credential).
fn read_token_file(at: &SecretPath) -> Result<Token> {
    let text = read_secret_file(at, &TOKEN_FILE)?;
    Token::parse(&text)
        .map_err(|e| Failure::config(format!("token file {}: {e}", at.path().display())))
}

impl Config {
    /// Loads settings and the token. A missing token is a configuration error (exit 78).
    pub fn load(config_arg: Option<&Path>, env: &Env) -> Result<Self> {
        let settings = Settings::load(config_arg, env)?;
        let (token, token_source) = Self::load_token(&settings, env)?;
        let price_api_key = Self::load_price_api_key(&settings, env)?;
        let webhook_secret =
            webhook::load_secret(env.get("CREDENTIALS_DIRECTORY"), &settings.webhook)?;
        let database_url = coordination::load_database_url(
            env.get("CREDENTIALS_DIRECTORY"),
            env.get("CRYPTOBOT_DATABASE_URL"),
            &settings.coordination,
        )?;
        if settings.coordination.coordination == Coordination::Postgres && database_url.is_none() {
            return Err(Failure::config(
                "coordination = \"postgres\" needs the database URL: the database_url credential, database_url_file, or CRYPTOBOT_DATABASE_URL",
            ));
        }
        Ok(Self {
            settings,
            token,
            token_source,
            price_api_key,
            webhook_secret,
            database_url,
        })
    }

    fn load_price_api_key(settings: &Settings, env: &Env) -> Result<Option<String>> {
        let Some(at) = credential_or_file(
            env.get("CREDENTIALS_DIRECTORY"),
            "price_api_key",
            settings.bot.price_api_key_file.as_deref(),
        ) else {
            return Ok(None);
        };
        let key = read_secret_file(&at, &PRICE_API_KEY_FILE)?;
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Failure::config(format!(
                "price API key file {} is not one word",
                at.path().display()
            )));
        }
        Ok(Some(key))
    }

    fn load_token(settings: &Settings, env: &Env) -> Result<(Token, TokenSource)> {
        if let Some(at) = credential_or_file(
            env.get("CREDENTIALS_DIRECTORY"),
            "token",
            settings.token_file.as_deref(),
        ) {
            let token = read_token_file(&at)?;
            let source = match at {
                SecretPath::Credential(p) => TokenSource::Credential(p),
                SecretPath::File(p) => TokenSource::File(p),
            };
            return Ok((token, source));
        }
        if let Some(value) = env.get("CRYPTOBOT_TOKEN") {
            let token = Token::parse(value)
                .map_err(|e| Failure::config(format!("CRYPTOBOT_TOKEN (environment): {e}")))?;
            return Ok((token, TokenSource::Environment));
        }
        let system = Path::new(SYSTEM_TOKEN);
        if nix::unistd::access(system, nix::unistd::AccessFlags::R_OK).is_ok() {
            let at = SecretPath::File(system.to_owned());
            return Ok((read_token_file(&at)?, TokenSource::File(system.to_owned())));
        }
        Err(Failure::config(format!(
            "no bot token: write it to {SYSTEM_TOKEN} (mode 600) for the service, or set CRYPTOBOT_TOKEN_FILE or CRYPTOBOT_TOKEN"
        )))
    }

    /// The effective configuration as TOML, token redacted (for `cryptobot check-config`).
    pub fn render(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# effective configuration; file: {}",
            origin(s.file.as_deref())
        );
        let _ = writeln!(out, "api_url = {:?}", s.api_url.as_str());
        let _ = writeln!(
            out,
            "token = \"{}:<redacted>\"  # from {}",
            self.token.bot_id(),
            self.token_source
        );
        let _ = writeln!(
            out,
            "runtime_dir = {:?}",
            s.runtime_dir.display().to_string()
        );
        let _ = writeln!(out, "state_dir = {:?}", s.state_dir.display().to_string());
        let _ = writeln!(out, "log = {:?}", s.log);
        let _ = writeln!(out, "poll_timeout = {}", s.poll_timeout.as_secs());
        let c = &s.conflict;
        let _ = writeln!(
            out,
            "on_conflict = {:?}",
            format!("{:?}", c.on_conflict).to_lowercase()
        );
        let _ = writeln!(out, "conflict_max = {}", c.max_conflicts);
        let _ = writeln!(
            out,
            "conflict_backoff_initial = {}",
            c.backoff_initial.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "conflict_backoff_max = {}",
            c.backoff_max.as_secs_f64()
        );
        let _ = writeln!(out, "delete_webhook = {}", s.delete_webhook);
        let _ = writeln!(out, "concurrent_chats = {}", s.pipeline.concurrent_chats);
        let _ = writeln!(out, "sends_in_flight = {}", s.pipeline.sends_in_flight);
        if let Some(listen) = s.listen {
            let _ = writeln!(out, "listen = \"{listen}\"");
        }
        let w = &s.webhook;
        let _ = writeln!(out, "mode = \"{}\"", w.mode);
        if let Some(url) = &w.public_url {
            let _ = writeln!(out, "public_url = {:?}", url.as_str());
        }
        if let Some(f) = &w.secret_file {
            let _ = writeln!(out, "webhook_secret_file = {:?}", f.display().to_string());
        }
        let c = &s.coordination;
        let _ = writeln!(out, "coordination = \"{}\"", c.coordination);
        let _ = writeln!(out, "lease_ttl = {}", c.lease_ttl.as_secs());
        if let Some(f) = &c.database_url_file {
            let _ = writeln!(out, "database_url_file = {:?}", f.display().to_string());
        }
        if let Some(url) = &self.database_url {
            let _ = writeln!(out, "# database URL: {}", url.redacted());
        }
        let b = &s.bot;
        let _ = writeln!(out, "price_api_url = {:?}", b.price_api_url.as_str());
        if let Some(f) = &b.price_api_key_file {
            let _ = writeln!(out, "price_api_key_file = {:?}", f.display().to_string());
        }
        let _ = writeln!(out, "price_cache_ttl = {}", b.price_cache_ttl.as_secs());
        let _ = writeln!(out, "default_currency = {:?}", b.default_currency);
        let _ = writeln!(out, "admin_chat_ids = {:?}", b.admin_chat_ids);
        let _ = writeln!(out, "alert_interval = {}", b.alert_interval.as_secs());
        let _ = writeln!(out, "alert_hysteresis = {}", b.alert_hysteresis_percent);
        let _ = writeln!(out, "alert_cooldown = {}", b.alert_cooldown.as_secs());
        let _ = writeln!(out, "max_alerts_per_chat = {}", b.max_alerts_per_chat);
        if !b.coins.is_empty() {
            let _ = writeln!(out, "[coins]");
            for (symbol, id) in &b.coins {
                let _ = writeln!(out, "{symbol} = {id:?}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
