"""A plain python-telegram-bot 22 echo bot: the peer cryptobot is measured against in bench/run.

Answers every text message with "pong" (the same request cryptobot sends for /ping), with PTB's
defaults: sequential update processing, long polling with run_polling().

Usage: BENCH_TOKEN=<token> BENCH_API_URL=http://127.0.0.1:PORT python ptb_echo.py
"""

import os

from telegram import Update
from telegram.ext import ApplicationBuilder, ContextTypes, MessageHandler, filters


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await context.bot.send_message(chat_id=update.effective_chat.id, text="pong")


def main() -> None:
    api = os.environ["BENCH_API_URL"]
    app = ApplicationBuilder().token(os.environ["BENCH_TOKEN"]).base_url(f"{api}/bot").build()
    app.add_handler(MessageHandler(filters.TEXT, echo))
    app.run_polling()


if __name__ == "__main__":
    main()
