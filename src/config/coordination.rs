//! Coordination across hosts: `coordination = "none"` (the default: the flock guard alone) or
//! `"postgres"`: a PostgreSQL lease elects the one host that polls (G2, `instance::lease`).
//!
//! The database URL carries a password, so it is a secret like the token: from the `database_url`
//! systemd credential, else `database_url_file` (refused when other users can read it), else
//! `CRYPTOBOT_DATABASE_URL` (development). It is never printed: [`DatabaseUrl`]'s `Debug` and
//! [`DatabaseUrl::redacted`] hide the password.

use std::path::PathBuf;
use std::time::Duration;

use super::secrets::{SecretKind, credential_or_file, read_secret_file};
use crate::exit::{Failure, Result};

/// How this instance coordinates with instances on other hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Coordination {
    /// The flock guard only: one poller per host.
    None,
    /// A PostgreSQL lease: one poller across every host that shares the database.
    Postgres,
}

impl std::str::FromStr for Coordination {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        match s {
            "none" => Ok(Self::None),
            "postgres" => Ok(Self::Postgres),
            _ => Err(()),
        }
    }
}

impl std::fmt::Display for Coordination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Postgres => "postgres",
        })
    }
}

/// The coordination settings.
#[derive(Clone, Debug, PartialEq)]
pub struct CoordinationOptions {
    pub coordination: Coordination,
    /// How long a lease lasts without a renewal (default 10 s).
    pub lease_ttl: Duration,
    pub database_url_file: Option<PathBuf>,
}

/// A PostgreSQL URL; never printed with its password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl DatabaseUrl {
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let text = text.trim();
        let url = url::Url::parse(text).map_err(|e| {
            Failure::config(format!(
                "{origin}: not a URL ({e}); expected postgres://user:password@host:5432/database"
            ))
        })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(Failure::config(format!(
                "{origin}: expected a postgres:// URL like postgres://user:password@host:5432/database"
            )));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password replaced by `***`: the one in the authority and any given as a
    /// parameter (`?password=…`, `sslpassword=…`, which libpq and sqlx accept too).
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("***"));
                }
                if url.query_pairs().any(|(k, _)| is_password_parameter(&k)) {
                    let pairs: Vec<(String, String)> = url
                        .query_pairs()
                        .map(|(k, v)| {
                            let v = if is_password_parameter(&k) {
                                "***".to_owned()
                            } else {
                                v.into_owned()
                            };
                            (k.into_owned(), v)
                        })
                        .collect();
                    url.query_pairs_mut().clear().extend_pairs(pairs);
                }
                url.to_string().replace("%2A%2A%2A", "***")
            }
            Err(_) => "<unparsable URL>".to_owned(),
        }
    }

    /// The password, for redacting it from any text (error messages of the driver): the authority's,
    /// else a `password=` parameter's.
    pub fn password(&self) -> Option<String> {
        let url = url::Url::parse(&self.0).ok()?;
        url.password()
            .map(str::to_owned)
            .or_else(|| {
                url.query_pairs()
                    .find(|(k, _)| k == "password")
                    .map(|(_, v)| v.into_owned())
            })
            .filter(|p| !p.is_empty())
    }
}

fn is_password_parameter(key: &str) -> bool {
    key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("sslpassword")
}

/// The smallest `lease_ttl`: the leader must be able to start a poll of [`MIN_POLL`] plus the margin
/// right after a renewal (whose window is 2/3·TTL from when it was asked) that took up to a second.
/// With less, Telegram's 3 s hold of a repeated offset could outlast the window, or the leader never
/// polls at all (with 3 s it never did).
///
/// [`MIN_POLL`]: crate::instance::lease_window::MIN_POLL
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(8);
/// The largest `lease_ttl` (a takeover after a crash then takes up to 5 minutes).
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(300);

const URL_FILE: SecretKind = SecretKind {
    name: "database URL file",
    fix_unreadable: "check database_url_file",
    fix_empty: "write a URL like postgres://user:password@host:5432/database in it",
};

/// Reads the URL from the `database_url` credential, the file, or `CRYPTOBOT_DATABASE_URL`; `None`
/// when none is given. A file that other users can read is refused.
pub fn load_database_url(
    credentials_dir: Option<&str>,
    env_value: Option<&str>,
    options: &CoordinationOptions,
) -> Result<Option<DatabaseUrl>> {
    let Some(at) = credential_or_file(
        credentials_dir,
        "database_url",
        options.database_url_file.as_deref(),
    ) else {
        return env_value
            .map(|v| DatabaseUrl::parse(v, "CRYPTOBOT_DATABASE_URL (environment)"))
            .transpose();
    };
    let text = read_secret_file(&at, &URL_FILE)?;
    DatabaseUrl::parse(&text, &format!("database URL file {}", at.path().display())).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_printed() {
        let url =
            DatabaseUrl::parse("postgres://bot:s3cr3t@127.0.0.1:5432/cryptobot", "t").unwrap();
        assert!(!format!("{url:?}").contains("s3cr3t"));
        assert_eq!(
            url.redacted(),
            "postgres://bot:***@127.0.0.1:5432/cryptobot"
        );
        assert_eq!(url.password().as_deref(), Some("s3cr3t"));
        let err =
            DatabaseUrl::parse("mysql://bot:s3cr3t@h/db", "CRYPTOBOT_DATABASE_URL").unwrap_err();
        assert!(!err.message.contains("s3cr3t"), "{}", err.message);
    }

    /// check-config printed a password given as a URL parameter (sqlx and libpq accept
    /// `?password=`, and `sslpassword=` for the client key).
    #[test]
    fn a_password_given_as_a_parameter_is_never_printed() {
        let url = DatabaseUrl::parse(
            "postgres://bot@127.0.0.1:5432/cryptobot?sslmode=require&password=p%40ss&sslpassword=k3y",
            "t",
        )
        .unwrap();
        let shown = url.redacted();
        assert!(
            !shown.contains("p%40ss") && !shown.contains("p@ss"),
            "{shown}"
        );
        assert!(!shown.contains("k3y"), "{shown}");
        assert_eq!(
            shown,
            "postgres://bot@127.0.0.1:5432/cryptobot?sslmode=require&password=***&sslpassword=***"
        );
        assert_eq!(url.password().as_deref(), Some("p@ss"));
    }

    #[test]
    fn a_url_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("url");
        std::fs::write(&file, "postgres://a:b@127.0.0.1/db\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let options = CoordinationOptions {
            coordination: Coordination::Postgres,
            lease_ttl: Duration::from_secs(10),
            database_url_file: Some(file.clone()),
        };
        let err = load_database_url(None, None, &options).unwrap_err();
        assert!(err.message.contains("chmod 600"), "{}", err.message);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_database_url(None, None, &options).unwrap().is_some());
    }
}
