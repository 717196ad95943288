//! Telegram failures, named by what the bot should do about them.
//!
//! teloxide already types most of the Bot API's answers; this module folds them (and our own request
//! deadline) into a few [`FailureKind`]s and keeps a description that never contains the token (G7).

use std::time::Duration;

use teloxide::{ApiError, RequestError};

use crate::secret::Token;

/// What went wrong, as far as the update loop's policy is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// 401/404 on the token: Telegram does not know this bot (revoked or mistyped token).
    Unauthorized,
    /// 409: another `getUpdates` for this token was made elsewhere (G6).
    ConflictOtherPoller,
    /// 409: a webhook is set, so `getUpdates` cannot be used.
    ConflictWebhook,
    /// 429: wait this long before the next request of that kind.
    RetryAfter(Duration),
    /// Connection refused/reset, DNS failure, TLS error, or our own deadline expired.
    Network,
    /// A reply that is not the Bot API's JSON (a proxy's HTML page, a truncated body).
    BadResponse,
    /// 403: the user blocked the bot, deactivated, or the bot was kicked: stop writing to that chat.
    Blocked,
    /// A server-side error (5xx and other answers that are not about the request): retry later.
    Server,
    /// Any other error the Bot API reported about the request ("chat not found", "bot was blocked", ...).
    Api,
}

impl FailureKind {
    /// The short name used in logs (`CONFLICT=`/`ERROR_KIND=` fields) and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::ConflictOtherPoller => "other_poller",
            Self::ConflictWebhook => "webhook_active",
            Self::RetryAfter(_) => "rate_limited",
            Self::Network => "network",
            Self::BadResponse => "bad_response",
            Self::Server => "server",
            Self::Blocked => "blocked",
            Self::Api => "api",
        }
    }
}

/// True for the descriptions Telegram gives to 4xx answers, which retrying cannot fix. Everything else
/// teloxide does not know ("Internal Server Error", "Bad Gateway", ...) is the server's problem.
fn is_request_error(description: &str) -> bool {
    [
        "Bad Request",
        "Forbidden",
        "Unauthorized",
        "Not Found",
        "Conflict",
        "Too Many Requests",
    ]
    .iter()
    .any(|prefix| description.starts_with(prefix))
}

/// A failed Bot API call: its kind and a redacted, one-line description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiFailure {
    pub kind: FailureKind,
    pub detail: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl ApiFailure {
    /// Our own deadline expired before Telegram answered.
    pub fn deadline(method: &str, after: Duration) -> Self {
        Self {
            kind: FailureKind::Network,
            detail: format!("{method}: no answer within {:.0} s", after.as_secs_f64()),
        }
    }

    /// Classifies a teloxide error; `token` is used to redact anything that might embed it.
    pub fn from_request_error(method: &str, err: &RequestError, token: &Token) -> Self {
        let kind = match err {
            RequestError::Api(ApiError::InvalidToken) => FailureKind::Unauthorized,
            RequestError::Api(ApiError::TerminatedByOtherGetUpdates) => {
                FailureKind::ConflictOtherPoller
            }
            RequestError::Api(ApiError::CantGetUpdates) => FailureKind::ConflictWebhook,
            RequestError::Api(ApiError::Unknown(text))
                if text.contains("terminated by other getUpdates") =>
            {
                FailureKind::ConflictOtherPoller
            }
            RequestError::Api(ApiError::Unknown(text)) if text.contains("webhook is active") => {
                FailureKind::ConflictWebhook
            }
            RequestError::Api(
                ApiError::BotBlocked
                | ApiError::UserDeactivated
                | ApiError::BotKicked
                | ApiError::BotKickedFromSupergroup,
            ) => FailureKind::Blocked,
            RequestError::Api(ApiError::Unknown(text)) if text.starts_with("Forbidden") => {
                FailureKind::Blocked
            }
            RequestError::Api(ApiError::Unknown(text)) if !is_request_error(text) => {
                FailureKind::Server
            }
            RequestError::RetryAfter(secs) => FailureKind::RetryAfter(secs.duration()),
            RequestError::Network(_) | RequestError::Io(_) => FailureKind::Network,
            RequestError::InvalidJson { .. } => FailureKind::BadResponse,
            RequestError::Api(_) | RequestError::MigrateToChatId(_) => FailureKind::Api,
        };
        // InvalidJson carries the raw body: keep the description short and single-line.
        let text = match err {
            RequestError::InvalidJson { source, raw } => {
                // Redact, then cut: a token cut in two by the cut would no longer be found whole.
                let head: String = token.redact(raw).chars().take(60).collect();
                format!("not a Bot API answer ({source}): {head:?}")
            }
            RequestError::Network(e) => {
                // reqwest's Display omits the cause ("error sending request"); the chain says why.
                let mut s = e.to_string();
                let mut source = std::error::Error::source(e.as_ref());
                while let Some(cause) = source {
                    s.push_str(": ");
                    s.push_str(&cause.to_string());
                    source = cause.source();
                }
                s
            }
            other => other.to_string(),
        };
        let detail = token
            .redact(&format!("{method}: {text}"))
            .replace('\n', " ");
        Self { kind, detail }
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    /// A body that is not the Bot API's JSON is quoted (its first 60 characters) in the error: the token
    /// in it must be redacted *before* the cut, or the part of it before the cut survives (19 of 36
    /// secret characters reached stderr, STATUS=, /healthz and the status file).
    #[test]
    fn a_token_in_a_garbage_body_is_redacted_before_the_body_is_cut() {
        let token = Token::parse("123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw").unwrap();
        // The token starts 30 characters in: a cut at 60 splits its secret.
        let raw = format!(
            "<html>proxy error for /bot{}/getUpdates</html>",
            "123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
        );
        let err = RequestError::InvalidJson {
            source: std::sync::Arc::new(
                serde_json::from_str::<serde_json::Value>("<").unwrap_err(),
            ),
            raw: raw.into_boxed_str(),
        };
        let failure = ApiFailure::from_request_error("getUpdates", &err, &token);
        for part in ["AAHdqTcvCH1vGWJxfSe", "AAHdqTcvCH", "AAHdq"] {
            assert!(!failure.detail.contains(part), "{}", failure.detail);
        }
        assert!(failure.detail.contains("<redacted>"), "{}", failure.detail);
    }
}
