//! [`ApiError`]: an error answer of the Bot API, with the exact descriptions Telegram uses.

/// An error answer of the Bot API: `{"ok":false,"error_code":..,"description":..,"parameters":..}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) code: u16,
    pub(crate) description: String,
    pub(crate) retry_after: Option<u32>,
}

impl ApiError {
    pub(crate) fn new(code: u16, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            retry_after: None,
        }
    }

    pub(crate) fn bad_request(what: &str) -> Self {
        Self::new(400, format!("Bad Request: {what}"))
    }

    pub(crate) fn too_many_requests(retry_after: u32) -> Self {
        let description = format!("Too Many Requests: retry after {retry_after}");
        Self {
            code: 429,
            description,
            retry_after: Some(retry_after),
        }
    }

    pub(crate) fn conflict_other_poller() -> Self {
        Self::new(
            409,
            "Conflict: terminated by other getUpdates request; make sure that only one bot instance \
             is running",
        )
    }

    pub(crate) fn conflict_webhook() -> Self {
        Self::new(
            409,
            "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to \
             delete the webhook first",
        )
    }

    /// A pending long poll ended by a setWebhook.
    pub(crate) fn conflict_set_webhook() -> Self {
        Self::new(409, "Conflict: terminated by setWebhook request")
    }
}
