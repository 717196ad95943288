//! What the lease talks in: the holder, an acquisition's outcome, the lease as the database sees it,
//! the operator's handover requests, the errors (one line, never the URL's password) and the
//! redaction that guarantees it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::SCHEMA;

/// Who holds (or asks for) the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    /// Random per process: a restarted process, or a second process on the same host, is another holder.
    pub instance: String,
}

impl Holder {
    /// This process: the host name, its PID and a fresh random instance id.
    pub fn this_process() -> Self {
        Self {
            host: crate::instance::holder::hostname(),
            pid: std::process::id(),
            instance: new_instance_id(),
        }
    }
}

/// 32 hex digits from the operating system's generator.
pub fn new_instance_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Not expected on Linux; still unique enough per process.
        bytes[..8].copy_from_slice(&fastrand::u64(..).to_le_bytes());
        bytes[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The NOTIFY channel a release of `bot_id`'s lease is announced on.
pub fn channel(bot_id: u64) -> String {
    format!("cryptobot_lease_{bot_id}")
}

/// What [`Lease::try_acquire`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// This process holds the lease: `epoch` is its fencing token, valid for `expires_in` as measured by
    /// the database after it decided (so at least that long after an `Instant` taken before the call).
    Leader { epoch: i64, expires_in: Duration },
    /// Someone else holds an unexpired lease.
    Standby(LeaseInfo),
}

/// A lease row as the database sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub bot_id: u64,
    pub host: String,
    pub pid: u32,
    pub instance: String,
    pub epoch: i64,
    /// When the current holder acquired it (the database's clock).
    pub acquired_at: SystemTime,
    /// How long ago it was last acquired or renewed.
    pub renewed_ago: Duration,
    /// Milliseconds until it expires; negative: it expired (or was released) that long ago.
    pub expires_in_ms: i64,
}

impl LeaseInfo {
    pub fn is_expired(&self) -> bool {
        self.expires_in_ms <= 0
    }

    /// How long it is still valid, if it is.
    pub fn expires_in(&self) -> Option<Duration> {
        (self.expires_in_ms > 0).then(|| Duration::from_millis(self.expires_in_ms as u64))
    }

    /// How long ago it expired, if it did.
    pub fn expired_ago(&self) -> Option<Duration> {
        (self.expires_in_ms <= 0).then(|| Duration::from_millis(self.expires_in_ms.unsigned_abs()))
    }
}

/// `leader <host> pid <pid> epoch <n>`, the text of `STATUS=standby; …` (with `(expired)` once expired).
impl fmt::Display for LeaseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "leader {} pid {} epoch {}",
            self.host, self.pid, self.epoch
        )?;
        if self.is_expired() {
            f.write_str(" (expired)")?;
        }
        Ok(())
    }
}

pub(super) type InfoRow = (String, i64, String, i64, i64, i64, i64);

impl LeaseInfo {
    pub(super) fn from_row(bot_id: u64, row: InfoRow) -> Self {
        let (host, pid, instance, epoch, acquired_ms, renewed_ago_ms, expires_in_ms) = row;
        Self {
            bot_id,
            host,
            pid: u32::try_from(pid).unwrap_or(0),
            instance,
            epoch,
            acquired_at: UNIX_EPOCH + Duration::from_millis(acquired_ms.max(0) as u64),
            renewed_ago: Duration::from_millis(renewed_ago_ms.max(0) as u64),
            expires_in_ms,
        }
    }
}

/// Why a lease call failed: one line, the URL's password redacted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// A bad URL or TTL.
    #[error("PostgreSQL lease: {reason}")]
    Config { reason: String },
    /// The database could not be reached, or the connection was lost, or it did not answer in time.
    #[error("PostgreSQL lease: {what}: cannot reach {target}: {reason}")]
    Connection {
        what: &'static str,
        target: String,
        reason: String,
    },
    /// The database answered with an error.
    #[error("PostgreSQL lease: {what} failed: {reason}")]
    Query { what: &'static str, reason: String },
    /// The schema could not be created or migrated.
    #[error("PostgreSQL lease: cannot migrate the schema {SCHEMA} on {target}: {reason}")]
    Migration { target: String, reason: String },
}

impl LeaseError {
    /// True for [`LeaseError::Connection`]: retry later (the pool reconnects).
    pub fn is_connection(&self) -> bool {
        matches!(self, Self::Connection { .. })
    }
}

/// Removes the secrets of a database URL from any text.
#[derive(Clone)]
pub(super) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub(super) fn for_url(url: &str) -> Self {
        let mut secrets = Vec::new();
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        // userinfo: up to the last '@' before the path (tolerates an unencoded '/' or '@' in it)
        let authority_end = rest.rfind('@');
        if let Some(at) = authority_end {
            let userinfo = &rest[..at];
            if let Some((_, password)) = userinfo.split_once(':') {
                secrets.push(password.to_owned());
            }
        }
        // a `password=` query parameter
        if let Some((_, query)) = rest.split_once('?') {
            for pair in query.split('&') {
                if let Some(value) = pair.strip_prefix("password=") {
                    secrets.push(value.to_owned());
                }
            }
        }
        let decoded: Vec<String> = secrets.iter().map(|s| percent_decode(s)).collect();
        secrets.extend(decoded);
        secrets.retain(|s| !s.is_empty());
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    /// `text` on one line, every secret replaced by `***`.
    pub(super) fn clean(&self, text: &str) -> String {
        let mut out = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for secret in &self.secrets {
            out = out.replace(secret.as_str(), "***");
        }
        out
    }
}

pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL without its password or query, for messages.
pub(super) fn display_target(url: &str, redactor: &Redactor) -> String {
    let shown = match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "the database URL".to_owned(),
    };
    redactor.clean(&shown)
}

/// Is this sqlx error a lost or impossible connection (rather than an answer from the database)?
pub(super) fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // 08…: connection exception; 57P01..57P03: admin shutdown, crash shutdown, cannot connect now
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}
