//! Fidelity with the real client: teloxide-core (the request layer cryptobot uses) talks to the
//! fake and deserialises every answer into its own types, errors included.

mod support;

use std::time::Duration;

use fake_bot_api::{FakeBotApi, Fault};
use serde_json::json;
use support::{BOT_ID, TOKEN, call};
use teloxide_core::payloads::{GetUpdatesSetters, SetWebhookSetters};
use teloxide_core::requests::Requester;
use teloxide_core::types::{BotCommand, ChatId, MessageEntityKind, UpdateKind};
use teloxide_core::{ApiError, Bot, RequestError};

const WAIT: Duration = Duration::from_secs(10);

fn start() -> (FakeBotApi, Bot) {
    let api = FakeBotApi::start();
    api.add_bot(TOKEN, "cryptotest_bot");
    let bot = Bot::new(TOKEN).set_api_url(url::Url::parse(&api.url()).unwrap());
    (api, bot)
}

#[tokio::test]
async fn teloxide_reads_me_updates_and_sent_messages() {
    let (api, bot) = start();
    let me = bot.get_me().await.unwrap();
    assert_eq!((me.id.0, me.username()), (BOT_ID as u64, "cryptotest_bot"));

    api.inject_message(BOT_ID, 42, "/price btc");
    api.inject_message(BOT_ID, -100, "hello group");
    let updates = bot.get_updates().timeout(5).await.unwrap();
    assert_eq!(updates.len(), 2);
    let UpdateKind::Message(message) = &updates[0].kind else {
        panic!("not a message: {:?}", updates[0])
    };
    assert_eq!(
        (message.chat.id, message.text()),
        (ChatId(42), Some("/price btc"))
    );
    assert!(message.chat.is_private());
    assert!(!message.from.as_ref().unwrap().is_bot);
    let entities = message.entities().unwrap();
    assert_eq!(
        (&entities[0].kind, entities[0].offset, entities[0].length),
        (&MessageEntityKind::BotCommand, 0, 6)
    );
    let UpdateKind::Message(group) = &updates[1].kind else {
        panic!("not a message: {:?}", updates[1])
    };
    assert!(group.chat.is_group());

    let sent = bot.send_message(ChatId(42), "pong").await.unwrap();
    assert_eq!(sent.text(), Some("pong"));
    assert!(sent.from.as_ref().unwrap().is_bot);
    api.wait_for_sent(BOT_ID, |m| m.text == "pong", WAIT)
        .unwrap();

    let next = i32::try_from(updates[1].id.0).unwrap() + 1;
    assert!(
        bot.get_updates()
            .offset(next)
            .timeout(0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(api.stats(BOT_ID).pending_updates, 0);
}

#[tokio::test]
async fn teloxide_reads_commands_and_webhook_answers() {
    let (_api, bot) = start();
    bot.set_my_commands(vec![BotCommand::new("price", "Show a price")])
        .await
        .unwrap();
    let commands = bot.get_my_commands().await.unwrap();
    assert_eq!(commands, vec![BotCommand::new("price", "Show a price")]);
    bot.delete_my_commands().await.unwrap();

    let url = url::Url::parse("https://example.invalid/hook").unwrap();
    bot.set_webhook(url.clone())
        .secret_token("s3cret".to_owned())
        .await
        .unwrap();
    let info = bot.get_webhook_info().await.unwrap();
    assert_eq!(info.url, Some(url));
    let refused = bot.get_updates().await.unwrap_err();
    assert!(
        refused.to_string().contains("webhook is active"),
        "{refused:?}"
    );
    bot.delete_webhook().await.unwrap();
    assert_eq!(bot.get_webhook_info().await.unwrap().url, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teloxide_sees_the_typed_errors() {
    let (api, bot) = start();
    let empty = bot.send_message(ChatId(42), "").await.unwrap_err();
    assert!(
        matches!(empty, RequestError::Api(ApiError::MessageTextIsEmpty)),
        "{empty:?}"
    );
    let unknown_chat = bot.send_message(ChatId(7), "hi").await.unwrap_err();
    assert!(
        matches!(unknown_chat, RequestError::Api(ApiError::ChatNotFound)),
        "{unknown_chat:?}"
    );

    api.inject_fault(
        BOT_ID,
        "getMe",
        Fault::TooManyRequests { retry_after: 3 },
        1,
    );
    let limited = bot.get_me().await.unwrap_err();
    assert!(
        matches!(limited, RequestError::RetryAfter(s) if s.seconds() == 3),
        "{limited:?}"
    );

    api.inject_fault(BOT_ID, "getMe", Fault::Garbage, 1);
    let garbage = bot.get_me().await.unwrap_err();
    assert!(
        matches!(garbage, RequestError::InvalidJson { .. }),
        "{garbage:?}"
    );

    api.inject_fault(BOT_ID, "getMe", Fault::Reset, 1);
    let reset = bot.get_me().await.unwrap_err();
    assert!(matches!(reset, RequestError::Network(_)), "{reset:?}");

    let older = tokio::spawn({
        let bot = bot.clone();
        async move { bot.get_updates().timeout(10).await }
    });
    // The fake's handle is synchronous: block this worker while the other one runs the poll.
    tokio::task::block_in_place(|| api.wait_until(BOT_ID, |s| s.active_polls == 1, WAIT)).unwrap();
    let newer = tokio::task::block_in_place(|| {
        call(
            api.addr(),
            TOKEN,
            "getUpdates",
            // It will wait (a timeout, nothing to take): only such a call ends the pending one.
            &json!({"offset": 1, "timeout": 1}),
        )
    });
    assert_eq!(newer.status, 200);
    let conflict = older.await.unwrap().unwrap_err();
    assert!(
        matches!(
            conflict,
            RequestError::Api(ApiError::TerminatedByOtherGetUpdates)
        ),
        "{conflict:?}"
    );

    let wrong = Bot::new("999:nope").set_api_url(url::Url::parse(&api.url()).unwrap());
    let unauthorized = wrong.get_me().await.unwrap_err();
    assert!(
        matches!(unauthorized, RequestError::Api(ApiError::InvalidToken)),
        "{unauthorized:?}"
    );
}
