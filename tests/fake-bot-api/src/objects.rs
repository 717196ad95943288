//! Builders for the Telegram objects the fake answers with (`User`, `Chat`, `Message`, `Update`),
//! shaped like the real Bot API's so that teloxide 0.17 deserialises them.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Supergroup and channel ids are below this (`-100…` followed by 10 digits).
const SUPERGROUP_ID_LIMIT: i64 = -1_000_000_000_000;

/// Seconds since the Unix epoch, as Telegram's `date` fields.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The `User` object of a bot, as `getMe` and `Message.from` of sent messages show it.
pub(crate) fn bot_user(bot_id: i64, username: &str) -> Value {
    json!({"id": bot_id, "is_bot": true, "first_name": username, "username": username})
}

/// `getMe`'s answer: the bot's `User` plus the bot-only flags (teloxide requires all of them).
pub(crate) fn me(bot_id: i64, username: &str) -> Value {
    let mut me = bot_user(bot_id, username);
    let extra = json!({
        "can_join_groups": true,
        "can_read_all_group_messages": false,
        "supports_inline_queries": false,
        "can_connect_to_business": false,
        "has_main_web_app": false,
    });
    merge(&mut me, extra);
    me
}

/// The human who writes in `chat_id`: in a private chat the user id is the chat id; in a group the
/// fake uses the absolute value of the chat id.
pub(crate) fn human_user(chat_id: i64) -> Value {
    let id = chat_id.checked_abs().unwrap_or(i64::MAX);
    json!({"id": id, "is_bot": false, "first_name": "Test", "last_name": format!("User{id}"),
           "language_code": "en"})
}

/// The `Chat` object for `chat_id`: positive ids are private chats, negative ones groups.
pub(crate) fn chat(chat_id: i64) -> Value {
    if chat_id > 0 {
        json!({"id": chat_id, "type": "private", "first_name": "Test", "last_name": format!("User{chat_id}")})
    } else if chat_id > SUPERGROUP_ID_LIMIT {
        json!({"id": chat_id, "type": "group", "title": format!("Group {chat_id}")})
    } else {
        json!({"id": chat_id, "type": "supergroup", "title": format!("Supergroup {chat_id}")})
    }
}

/// A text `Message` from `from` in `chat_id`, with a `bot_command` entity when the text starts with
/// '/' (offset 0, length up to the first whitespace, counted in UTF-16 code units like Telegram).
pub(crate) fn text_message(message_id: i64, chat_id: i64, from: Value, text: &str) -> Value {
    let mut message = json!({
        "message_id": message_id,
        "date": unix_now(),
        "chat": chat(chat_id),
        "from": from,
        "text": text,
    });
    if let Some(entity) = command_entity(text) {
        merge(&mut message, json!({"entities": [entity]}));
    }
    message
}

fn command_entity(text: &str) -> Option<Value> {
    if !text.starts_with('/') {
        return None;
    }
    let command = text.split(char::is_whitespace).next().unwrap_or(text);
    let length = command.encode_utf16().count();
    (length > 1).then(|| json!({"type": "bot_command", "offset": 0, "length": length}))
}

/// The kind of an update: its first field other than `update_id` (`message`, `callback_query`, …).
pub(crate) fn update_kind(update: &Value) -> Option<&str> {
    update
        .as_object()?
        .keys()
        .map(String::as_str)
        .find(|key| *key != "update_id")
}

/// Every chat id an update mentions (`chat.id`, and `from.id` of humans, whose private chat it is):
/// the chats the bot may write to afterwards.
pub(crate) fn chats_in(update: &Value, found: &mut Vec<i64>) {
    match update {
        Value::Object(map) => {
            for (key, value) in map {
                if key == "chat" {
                    found.extend(value.get("id").and_then(Value::as_i64));
                }
                if key == "from" && value.get("is_bot") != Some(&Value::Bool(true)) {
                    found.extend(value.get("id").and_then(Value::as_i64));
                }
                chats_in(value, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| chats_in(item, found)),
        _ => {}
    }
}

fn merge(target: &mut Value, extra: Value) {
    if let (Value::Object(target), Value::Object(extra)) = (target, extra) {
        target.extend(extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_entity_covers_the_first_word_in_utf16_units() {
        let message = text_message(1, 42, human_user(42), "/price@bot btc");
        assert_eq!(
            message["entities"],
            json!([{"type": "bot_command", "offset": 0, "length": 10}])
        );
        let plain = text_message(2, 42, human_user(42), "hello");
        assert!(plain.get("entities").is_none());
    }

    #[test]
    fn chats_in_finds_chat_and_human_ids() {
        let mut found = Vec::new();
        let update = json!({"callback_query": {"from": {"id": 7, "is_bot": false},
            "message": {"chat": {"id": -5}, "from": {"id": 1, "is_bot": true}}}});
        chats_in(&update, &mut found);
        found.sort_unstable();
        assert_eq!(found, vec![-5, 7]);
    }
}
