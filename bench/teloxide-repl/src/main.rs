//! The teloxide peers cryptobot is measured against in bench/run and bench/echo-peers: a plain `repl`
//! echo bot, or (BENCH_THROTTLE=1) the same bot behind teloxide's `Throttle` adaptor (its default
//! limits: Telegram's 30/s overall, 1/s per chat, 20/min per group), which paces its sends as cryptobot
//! does. Answers every message with "pong", as cryptobot answers /ping.
//!
//! Usage: TELOXIDE_TOKEN=<token> BENCH_API_URL=http://127.0.0.1:PORT [BENCH_THROTTLE=1] teloxide-repl-echo

use teloxide::adaptors::Throttle;
use teloxide::adaptors::throttle::Limits;
use teloxide::prelude::*;

#[tokio::main]
async fn main() {
    let token = std::env::var("TELOXIDE_TOKEN").expect("TELOXIDE_TOKEN");
    let url = std::env::var("BENCH_API_URL").expect("BENCH_API_URL");
    let bot = Bot::new(token).set_api_url(url.parse().expect("BENCH_API_URL is a URL"));
    if std::env::var_os("BENCH_THROTTLE").is_some() {
        let bot = bot.throttle(Limits::default());
        teloxide::repl(bot, |bot: Throttle<Bot>, msg: Message| async move {
            bot.send_message(msg.chat.id, "pong").await?;
            Ok(())
        })
        .await;
    } else {
        teloxide::repl(bot, |bot: Bot, msg: Message| async move {
            bot.send_message(msg.chat.id, "pong").await?;
            Ok(())
        })
        .await;
    }
}
