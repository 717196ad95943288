//! The bot token as a type that cannot leak by accident (G7).
//!
//! [`Token`] has no `Display`, and its `Debug` prints only the bot id. Anything that may embed the token
//! (HTTP client errors carry request URLs) goes through [`Token::redact`] before it is logged or returned.

use std::fmt;

/// A validated bot token: `<bot id>:<secret part>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    raw: String,
    bot_id: u64,
}

/// Why a string is not a bot token. Never contains the string itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is empty; put the token @BotFather gave you in it")]
    Empty,
    #[error(
        "the token does not look like a bot token (<bot id>:<30-64 characters of A-Z a-z 0-9 _ ->); copy it again from @BotFather"
    )]
    Shape,
}

impl Token {
    /// Parses and validates a token. Surrounding whitespace (a trailing newline in a file) is ignored.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let raw = text.trim();
        if raw.is_empty() {
            return Err(TokenError::Empty);
        }
        let (id, secret) = raw.split_once(':').ok_or(TokenError::Shape)?;
        let id_ok = !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit());
        let secret_ok = (30..=64).contains(&secret.len())
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !id_ok || !secret_ok {
            return Err(TokenError::Shape);
        }
        let bot_id = id.parse().map_err(|_| TokenError::Shape)?;
        Ok(Self {
            raw: raw.to_owned(),
            bot_id,
        })
    }

    /// The numeric bot id (the part before the colon): public, safe to log.
    pub fn bot_id(&self) -> u64 {
        self.bot_id
    }

    /// The secret itself, for the HTTP client only.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// Replaces every occurrence of the token (and of its secret part alone) in `text`.
    pub fn redact(&self, text: &str) -> String {
        let secret = self.raw.split_once(':').map_or("", |(_, s)| s);
        let text = text.replace(&self.raw, &format!("{}:<redacted>", self.bot_id));
        if secret.is_empty() {
            text
        } else {
            text.replace(secret, "<redacted>")
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}:<redacted>)", self.bot_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1";

    #[test]
    fn accepts_a_bot_token_and_trims_the_newline() {
        let t = Token::parse(&format!("{GOOD}\n")).unwrap();
        assert_eq!(t.bot_id(), 123456);
        assert_eq!(t.expose(), GOOD);
    }

    #[test]
    fn rejects_wrong_shapes() {
        for bad in [
            "",
            "  ",
            "123456",
            ":abc",
            "abc:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1",
            "1:short",
            "1:AAHdqTcvCH1vGWJxfSeofSAs0K5PALD saw1",
        ] {
            assert!(Token::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn debug_and_redact_never_show_the_secret() {
        let t = Token::parse(GOOD).unwrap();
        assert!(!format!("{t:?}").contains("AAHdq"));
        let msg = format!("error sending request for url (http://x/bot{GOOD}/getMe)");
        let red = t.redact(&msg);
        assert!(!red.contains("AAHdq"), "{red}");
        assert!(red.contains("bot123456:<redacted>/getMe"), "{red}");
    }
}
