//! Commands and their replies: `/start`, `/help`, `/ping`, `/status`.
//!
//! Parsing is teloxide's `BotCommands` derive (it also accepts `/ping@botname`). A handler here is a
//! pure function from an update and a [`Context`] to the replies to send; the update source sends them
//! and only then moves the offset.

use std::time::{Duration, Instant};

use teloxide::types::{BotCommand, ChatId, Update, UpdateKind};
use teloxide::utils::command::BotCommands;

/// The commands the bot answers.
#[derive(BotCommands, Clone, Debug, PartialEq, Eq)]
#[command(rename_rule = "lowercase")]
pub enum Command {
    #[command(description = "start talking to the bot")]
    Start,
    #[command(description = "list the commands")]
    Help,
    #[command(description = "check that the bot answers (replies pong)")]
    Ping,
    #[command(description = "version, host, PID, uptime and updates handled")]
    Status,
}

/// What a handler may know about the running instance.
#[derive(Clone, Debug)]
pub struct Context {
    pub username: String,
    pub host: String,
    pub pid: u32,
    pub version: &'static str,
    pub started: Instant,
    /// Updates handled before this one.
    pub updates_handled: u64,
}

/// A message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub chat: ChatId,
    pub text: String,
}

/// The command list for `setMyCommands`.
pub fn bot_commands() -> Vec<BotCommand> {
    Command::bot_commands()
}

fn help_text() -> String {
    let mut text = String::from("cryptobot commands:\n");
    for c in Command::bot_commands() {
        text.push_str(&format!("{} - {}\n", c.command, c.description));
    }
    text
}

fn format_uptime(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// The reply to a command.
pub fn answer(command: &Command, ctx: &Context) -> String {
    match command {
        Command::Start => format!("Hello! I am @{}. {}", ctx.username, help_text()),
        Command::Help => help_text(),
        Command::Ping => "pong".to_owned(),
        Command::Status => format!(
            "cryptobot {}\nhost: {}\npid: {}\nuptime: {}\nupdates handled: {}",
            ctx.version,
            ctx.host,
            ctx.pid,
            format_uptime(ctx.started.elapsed()),
            ctx.updates_handled
        ),
    }
}

/// The replies to one update. Non-message updates and plain text get none; an unknown or malformed
/// command gets a pointer to /help.
pub fn handle_update(update: &Update, ctx: &Context) -> Vec<Reply> {
    let UpdateKind::Message(message) = &update.kind else {
        return Vec::new();
    };
    let Some(text) = message.text() else {
        return Vec::new();
    };
    if !text.starts_with('/') {
        return Vec::new();
    }
    let reply = match Command::parse(text, &ctx.username) {
        Ok(command) => answer(&command, ctx),
        Err(_) => {
            // Commands addressed to another bot in a group are not ours to answer.
            let first = text.split_whitespace().next().unwrap_or(text);
            if let Some((_, addressee)) = first.split_once('@')
                && !addressee.eq_ignore_ascii_case(&ctx.username)
            {
                return Vec::new();
            }
            "Unknown command or wrong arguments. Send /help for the list.".to_owned()
        }
    };
    vec![Reply {
        chat: message.chat.id,
        text: reply,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            username: "crypto_test_bot".into(),
            host: "vps1".into(),
            pid: 42,
            version: "0.1.0",
            started: Instant::now(),
            updates_handled: 7,
        }
    }

    fn message(text: &str) -> Update {
        // teloxide's Update only deserialises from text (serde_json::from_value loses the kind).
        let json = serde_json::json!({
            "update_id": 10,
            "message": {
                "message_id": 1, "date": 1700000000,
                "chat": {"id": 99, "type": "private", "first_name": "A"},
                "from": {"id": 99, "is_bot": false, "first_name": "A"},
                "text": text
            }
        });
        serde_json::from_str(&json.to_string()).unwrap()
    }

    fn reply_to(text: &str) -> Vec<String> {
        handle_update(&message(text), &ctx())
            .into_iter()
            .map(|r| r.text)
            .collect()
    }

    #[test]
    fn ping_replies_pong_also_when_addressed() {
        assert_eq!(reply_to("/ping"), vec!["pong"]);
        assert_eq!(reply_to("/ping@crypto_test_bot"), vec!["pong"]);
    }

    #[test]
    fn status_shows_version_host_pid_uptime_and_count() {
        let r = reply_to("/status").join("");
        for part in ["0.1.0", "vps1", "pid: 42", "uptime:", "updates handled: 7"] {
            assert!(r.contains(part), "{part} missing in {r}");
        }
    }

    #[test]
    fn help_and_start_list_every_command() {
        for text in ["/help", "/start"] {
            let r = reply_to(text).join("");
            for c in ["/ping", "/status", "/help"] {
                assert!(r.contains(c), "{c} missing in {r}");
            }
        }
    }

    #[test]
    fn unknown_commands_get_a_pointer_and_plain_text_nothing() {
        assert_eq!(
            reply_to("/nope")[0],
            "Unknown command or wrong arguments. Send /help for the list."
        );
        assert!(reply_to("hello").is_empty());
        assert!(reply_to("/ping@other_bot").is_empty());
        let many = format!("/ping {}", "x ".repeat(10_000));
        assert_eq!(reply_to(&many).len(), 1);
    }
}
