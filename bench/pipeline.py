#!/usr/bin/env python3
"""The update pipeline's benchmark (issue "concurrency without giving up a guarantee"), standard library
only. Usage (bench/pipeline builds the release binaries and calls this):

    bench/pipeline.py --cryptobot target/release/cryptobot --fake target/release/fake-bot-api --out DIR

Against the project's fake Bot API and a fake price API of its own, both on 127.0.0.1:
  1. pong behind a slow price: chat A sends /price while the price API takes 3 s to answer; once that
     request is in flight, chat B sends /ping. Measured: the fake's acceptance time of the pong minus
     the moment /ping was handed to the bot's pending long poll (the fake answers that poll at once),
     medians of BENCH_RUNS. Goal: <= 200 ms.
  2. idle against a server that answers getUpdates at once (ignores `timeout`, as some proxies and
     local Bot API servers do): polls per second and the share of one core over BENCH_IDLE_S seconds.
     Goal: <= 2 polls/s and <= 1 % of a core.
  3. memory against the number of chats: RSS after 1,000 and after 100,000 distinct chats have each
     sent one update (plain text, no reply: the path through the dispatcher's per-chat queues; the
     outbound queue's per-chat state is measured by its unit test, 100,000 replies at 30/s would take
     55 minutes). Goal: within 1 MiB.
Prints a Markdown table and writes the samples to OUT/pipeline.json.
"""

import argparse
import http.server
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import measure  # noqa: E402  (the bench harness: Fake, Bot, NotifySocket, /proc readers)


class SlowPrices:
    """A CoinGecko /api/v3/simple/price that answers bitcoin in usd after `delay` seconds."""

    def __init__(self):
        self.delay = 0.0
        self.requests = 0
        self.cond = threading.Condition()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the stdlib's name)
                with owner.cond:
                    owner.requests += 1
                    owner.cond.notify_all()
                time.sleep(owner.delay)
                body = b'{"bitcoin":{"usd":67187.12}}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server, self.url = measure.serve(Handler)

    def wait_requests(self, n, timeout=30):
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.requests < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the price API got {self.requests} of {n} requests")
                self.cond.wait(left)


def start_bot(args, fake, workdir, name, extra_env):
    bot_id, token = fake.new_bot()
    bot = measure.Bot("cryptobot", args, fake, token, workdir / name, name, extra_env)
    bot.notify.wait_for("READY=1", 30)
    return bot_id, bot


def wait_sent(fake, bot_id, predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        sent = fake.sent(bot_id)
        found = [m for m in sent if predicate(m)]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise TimeoutError("no such message sent")
        time.sleep(0.005)


def pong_behind_slow_price(args, fake, prices, workdir, runs):
    samples = []
    for run in range(runs):
        bot_id, bot = start_bot(
            args, fake, workdir, f"slow-price-{run}",
            {"CRYPTOBOT_PRICE_API_URL": prices.url, "CRYPTOBOT_PRICE_CACHE_TTL": "0"},
        )
        prices.delay = 3.0
        before = prices.requests
        fake.call("POST", f"/control/bots/{bot_id}/messages", {"chat_id": 1, "text": "/price btc"})
        prices.wait_requests(before + 1)
        asked_ms = time.time() * 1000
        fake.call("POST", f"/control/bots/{bot_id}/messages", {"chat_id": 2, "text": "/ping"})
        pong = wait_sent(fake, bot_id, lambda m: m["chat_id"] == 2)
        samples.append(pong["at_ms"] - asked_ms)
        wait_sent(fake, bot_id, lambda m: m["chat_id"] == 1)
        prices.delay = 0.0
        bot.stop()
    return samples


def idle_against_an_at_once_server(args, fake, workdir, seconds):
    bot_id, bot = start_bot(args, fake, workdir, "idle", {})
    fake.call("POST", f"/control/bots/{bot_id}/ignore-poll-timeout", {"ignore": True})
    time.sleep(1)  # let the poll in progress (started before the switch) end
    calls0, cpu0, t0 = fake.stats(bot_id)["get_updates_calls"], measure.proc_cpu(bot.pid), time.monotonic()
    time.sleep(seconds)  # the measurement window
    calls1, cpu1, t1 = fake.stats(bot_id)["get_updates_calls"], measure.proc_cpu(bot.pid), time.monotonic()
    bot.stop()
    span = t1 - t0
    return {"polls_per_s": (calls1 - calls0) / span, "core_share": (cpu1 - cpu0) / span}


def memory_against_chats(args, fake, workdir):
    bot_id, bot = start_bot(args, fake, workdir, "chats", {})
    points = {}
    chat = 0
    for target in (1_000, 10_000, 30_000, 100_000):
        while chat < target:
            chat += 1
            fake.call("POST", f"/control/bots/{bot_id}/messages", {"chat_id": chat, "text": "hello"})
        deadline = time.monotonic() + 600
        while fake.stats(bot_id)["pending_updates"] > 0 or fake.stats(bot_id)["confirmed_offset"] <= chat:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{chat} updates not all taken")
            time.sleep(0.1)
        time.sleep(1)  # the last handlers and records (no reply: nothing else to wait for)
        points[target] = measure.proc_status(bot.pid)
    bot.stop()
    return points


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cryptobot", required=True)
    p.add_argument("--fake", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    runs = int(os.environ.get("BENCH_RUNS", "5"))
    idle_s = float(os.environ.get("BENCH_IDLE_S", "10"))
    out = Path(args.out)
    workdir = out / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    sockets = out / "sockets"
    sockets.mkdir(exist_ok=True)
    measure.SOCKETS = str(sockets)

    fake = measure.Fake(args.fake, out)
    prices = SlowPrices()
    try:
        pong = pong_behind_slow_price(args, fake, prices, workdir, runs)
        idle = idle_against_an_at_once_server(args, fake, workdir, idle_s)
        memory = memory_against_chats(args, fake, workdir)
    finally:
        fake.stop()
    results = {"pong_ms": pong, "idle": idle, "memory": memory}
    (out / "pipeline.json").write_text(json.dumps(results, indent=2))
    rss1, rss2 = memory[1_000]["VmRSS"], memory[100_000]["VmRSS"]
    print("| what | goal | measured | state |")
    print("|---|---|---|---|")
    med = statistics.median(pong)
    print(f"| /ping behind another chat's 3 s /price: pong after | <= 200 ms | median {med:.0f} ms "
          f"({min(pong):.0f} - {max(pong):.0f}), {len(pong)} runs | {'met' if med <= 200 else 'not met'} |")
    ok = idle["polls_per_s"] <= 2 and idle["core_share"] <= 0.01
    print(f"| idle, getUpdates answered at once | <= 2 polls/s, <= 1 % of a core | "
          f"{idle['polls_per_s']:.2f} polls/s, {100 * idle['core_share']:.2f} % over {idle_s:.0f} s | "
          f"{'met' if ok else 'not met'} |")
    print(f"| RSS after 1,000 / 100,000 distinct chats | within 1 MiB | {rss1:.2f} / {rss2:.2f} MiB "
          f"(+{rss2 - rss1:.2f}; VmHWM {memory[100_000]['VmHWM']:.2f}) | "
          f"{'met' if rss2 - rss1 <= 1 else 'not met'} |")


if __name__ == "__main__":
    main()
