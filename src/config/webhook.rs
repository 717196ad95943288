//! How updates arrive: `mode = "polling"` (the default) or `"webhook"`, and the webhook's settings.
//!
//! Webhook mode needs `public_url` (`CRYPTOBOT_WEBHOOK_URL`): the public base URL that reaches this
//! service's HTTP listener (through a TLS-terminating proxy: Telegram calls only https URLs); the bot
//! gives Telegram `<public_url>/telegram/<path secret>`. The secret token Telegram sends back in
//! `X-Telegram-Bot-Api-Secret-Token` comes from the `webhook_secret` systemd credential, else from
//! `webhook_secret_file` (`CRYPTOBOT_WEBHOOK_SECRET_FILE`, refused when other users can read it), else it
//! is generated once and kept in the state store. It is never printed.

use std::path::PathBuf;

use super::secrets::{SecretKind, credential_or_file, read_secret_file};
use crate::exit::{Failure, Result};

/// How updates arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Long polling with `getUpdates` (no inbound connection needed).
    Polling,
    /// Telegram POSTs updates to `public_url`; needs the HTTP listener (cryptobot.socket or `listen`).
    Webhook,
}

impl std::str::FromStr for Mode {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        match s {
            "polling" => Ok(Self::Polling),
            "webhook" => Ok(Self::Webhook),
            _ => Err(()),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Polling => "polling",
            Self::Webhook => "webhook",
        })
    }
}

/// The webhook settings (`public_url` is required in webhook mode, checked at load).
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookOptions {
    pub mode: Mode,
    pub public_url: Option<url::Url>,
    pub secret_file: Option<PathBuf>,
}

/// A webhook secret token: 1–256 characters of `A-Za-z0-9_-` (the Bot API's rule). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookSecret {
    /// Checks the Bot API's rule; the error never contains the text.
    pub fn parse(text: &str) -> std::result::Result<Self, &'static str> {
        let text = text.trim();
        if text.is_empty() || text.len() > 256 {
            return Err("must be 1 to 256 characters long");
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err("may contain only A-Z, a-z, 0-9, _ and -");
        }
        Ok(Self(text.to_owned()))
    }

    /// 64 random characters from the operating system's generator.
    pub fn generate() -> Result<Self> {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
        let mut bytes = [0u8; 64];
        getrandom::fill(&mut bytes)
            .map_err(|e| Failure::software(format!("cannot generate a webhook secret: {e}")))?;
        Ok(Self(
            bytes
                .iter()
                .map(|b| char::from(ALPHABET[usize::from(b & 63)]))
                .collect(),
        ))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

const SECRET_FILE: SecretKind = SecretKind {
    name: "webhook secret file",
    fix_unreadable: "check webhook_secret_file",
    fix_empty: "write one word of A-Z, a-z, 0-9, _ and - in it",
};

/// Reads the secret from the `webhook_secret` credential or the secret file, if either is given.
pub fn load_secret(
    credentials_dir: Option<&str>,
    options: &WebhookOptions,
) -> Result<Option<WebhookSecret>> {
    let Some(at) = credential_or_file(
        credentials_dir,
        "webhook_secret",
        options.secret_file.as_deref(),
    ) else {
        return Ok(None);
    };
    let text = read_secret_file(&at, &SECRET_FILE)?;
    WebhookSecret::parse(&text).map(Some).map_err(|why| {
        Failure::config(format!(
            "webhook secret file {}: the secret {why} (Telegram's rule); write one such word",
            at.path().display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_follow_telegrams_rule_and_are_never_printed() {
        assert!(WebhookSecret::parse("abc_DEF-123").is_ok());
        assert!(WebhookSecret::parse("").is_err());
        assert!(WebhookSecret::parse("has space").is_err());
        assert!(WebhookSecret::parse(&"a".repeat(257)).is_err());
        let s = WebhookSecret::parse("topsecret").unwrap();
        assert!(!format!("{s:?}").contains("topsecret"));
    }

    #[test]
    fn generated_secrets_are_valid_and_differ() {
        let a = WebhookSecret::generate().unwrap();
        let b = WebhookSecret::generate().unwrap();
        assert_eq!(a.expose().len(), 64);
        assert!(WebhookSecret::parse(a.expose()).is_ok());
        assert_ne!(a, b);
    }

    #[test]
    fn a_secret_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let options = WebhookOptions {
            mode: Mode::Webhook,
            public_url: None,
            secret_file: Some(file.clone()),
        };
        let err = load_secret(None, &options).unwrap_err();
        assert_eq!(err.code, crate::exit::Code::Config);
        assert!(err.message.contains("chmod 600"), "{}", err.message);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let secret = load_secret(None, &options).unwrap().unwrap();
        assert_eq!(secret.expose(), "s3cret");
    }
}
