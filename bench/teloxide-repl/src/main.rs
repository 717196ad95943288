//! A plain teloxide `repl` echo bot, the peer cryptobot is measured against in bench/run.
//! Answers every message with "pong", as cryptobot answers /ping.
//!
//! Usage: TELOXIDE_TOKEN=<token> BENCH_API_URL=http://127.0.0.1:PORT teloxide-repl-echo

use teloxide::prelude::*;

#[tokio::main]
async fn main() {
    let token = std::env::var("TELOXIDE_TOKEN").expect("TELOXIDE_TOKEN");
    let url = std::env::var("BENCH_API_URL").expect("BENCH_API_URL");
    let bot = Bot::new(token).set_api_url(url.parse().expect("BENCH_API_URL is a URL"));
    teloxide::repl(bot, |bot: Bot, msg: Message| async move {
        bot.send_message(msg.chat.id, "pong").await?;
        Ok(())
    })
    .await;
}
