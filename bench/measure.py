#!/usr/bin/env python3
"""The measuring half of bench/run (standard library only; bench/run builds everything and calls this).

Starts one fake-bot-api on loopback, then, for each round, interleaved:
  - start-up:  cryptobot exec -> READY=1 on a NOTIFY_SOCKET this script owns (fresh state dir, then a
               restart on the same dirs), and for every bot exec -> first getUpdates, its CPU and RSS
               once idle in its long poll (that idle start-up CPU is what "net" CPU subtracts);
  - echo:      2,000 updates (/ping from chats 1..200, 10 each, round-robin) injected FIRST, then the bot
               is started; done when the fake has accepted 2,000 sendMessage; utime+stime from
               /proc/PID/stat and VmHWM from /proc/PID/status are read then, before the bot is stopped;
               cryptobot, python-telegram-bot and teloxide in a rotating order;
  - at limit:  cryptobot, 1,000 replies to 200 chats with the fake's Telegram limits on.
Writes every sample to OUT/results.json and the summary table (Markdown) to OUT/summary.md and stdout.
"""

import argparse
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
SECRET = "BenchBenchBenchBenchBenchBench_-12345"  # 37 chars of [A-Za-z0-9_-]
ECHO_CHATS, ECHO_PER_CHAT = 200, 10
LIMIT_CHATS, LIMIT_PER_CHAT = 200, 5
SOCKETS = None  # set in main()
STOP_SIGNAL = {
    "cryptobot": signal.SIGTERM,
    "ptb": signal.SIGTERM,
    "teloxide": signal.SIGINT,
    "teloxide-throttle": signal.SIGINT,
}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- /proc
def proc_cpu(pid):
    """utime + stime of the whole process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status(pid):
    """The memory lines of /proc/PID/status (VmHWM, VmRSS, RssAnon, RssFile, ...) in MiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.startswith(("Vm", "Rss")):
                out[key] = int(value.split()[0]) / 1024
    return out


def proc_mem(pid):
    """(VmHWM, VmRSS) in MiB."""
    out = proc_status(pid)
    return out["VmHWM"], out["VmRSS"]


def machine_busy():
    """Busy CPU seconds of the whole machine (all cores) so far."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK  # minus idle and iowait; guest is inside user


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def self_cpu():
    t = os.times()
    return t.user + t.system


def serve(handler):
    """Serves `handler` (a BaseHTTPRequestHandler class) on 127.0.0.1, a free port, from daemon threads;
    returns the server and its URL. The benchmarks' fake price APIs run on it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# ---------------------------------------------------------------------------------------- fake
class Fake:
    def __init__(self, binary, workdir):
        self.proc = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=open(workdir / "fake-bot-api.log", "w"),
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("fake-bot-api listening on http://"):
            raise SystemExit(f"fake-bot-api did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[1]
        host, port = self.url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.next_bot = 810_000_000

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body)
        headers = {"content-type": "application/json"} if data else {}
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                payload = resp.read()
                break
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()  # reconnect once
                if attempt:
                    raise
        if resp.status != 200:
            raise RuntimeError(f"{method} {path}: {resp.status} {payload[:200]!r}")
        return json.loads(payload)

    def new_bot(self):
        self.next_bot += 1
        token = f"{self.next_bot}:{SECRET}"
        bot_id = self.call("POST", "/control/bots", {"token": token})["bot_id"]
        return bot_id, token

    def inject(self, bot_id, chats, per_chat, text="/ping"):
        for _ in range(per_chat):  # round-robin, as traffic from many users arrives
            for chat in range(1, chats + 1):
                self.call("POST", f"/control/bots/{bot_id}/messages", {"chat_id": chat, "text": text})

    def stats(self, bot_id):
        return self.call("GET", f"/control/bots/{bot_id}/stats")

    def sent(self, bot_id):
        return self.call("GET", f"/control/bots/{bot_id}/sent")

    def rate_limits(self, enabled):
        self.call("POST", "/control/rate-limits", {"enabled": enabled})

    def cpu(self):
        return proc_cpu(self.proc.pid)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


# ---------------------------------------------------------------------------------------- bots
class NotifySocket:
    """The NOTIFY_SOCKET systemd would own: an AF_UNIX datagram socket, read at once as systemd does.

    It must be read all the time: the notifying side's send blocks once 10 datagrams
    (net.unix.max_dgram_qlen) wait unread, and cryptobot's sd_notify send runs on its only runtime thread.
    """

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []  # (perf_counter_ns at arrival, datagram)
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return  # closed
            if not data:
                return  # shut down (sd_notify never sends an empty datagram)
            at = time.perf_counter_ns()
            with self.cond:
                self.messages.append((at, data))
                self.cond.notify_all()

    def wait_for(self, needle, timeout):
        """Blocks until a datagram with the line `needle` arrived; returns perf_counter_ns at arrival."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for at, data in self.messages:
                    if needle.encode() in data.split(b"\n"):
                        return at
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {needle} on NOTIFY_SOCKET within {timeout} s")
                self.cond.wait(left)

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.reader.join(5)
        os.unlink(self.path)


class Bot:
    def __init__(self, kind, args, fake, token, workdir, name, extra_env=None):
        self.kind, self.fake, self.workdir = kind, fake, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8"}
        self.notify = None
        if kind == "cryptobot":
            token_file = workdir / "token"
            token_file.write_text(token + "\n")
            token_file.chmod(0o600)
            for d in ("runtime", "state", "config", "data"):
                (workdir / d).mkdir(exist_ok=True)
            self.notify = NotifySocket(Path(SOCKETS) / f"{workdir.name}-{name}.sock")
            env.update(
                CRYPTOBOT_API_URL=fake.url,
                CRYPTOBOT_TOKEN_FILE=str(token_file),
                CRYPTOBOT_RUNTIME_DIR=str(workdir / "runtime"),
                CRYPTOBOT_STATE_DIR=str(workdir / "state"),
                CRYPTOBOT_PRICE_API_URL="http://127.0.0.1:9",
                XDG_CONFIG_HOME=str(workdir / "config"),  # no config file: the built-in defaults
                XDG_DATA_HOME=str(workdir / "data"),
                NOTIFY_SOCKET=self.notify.path,
                WATCHDOG_USEC="10000000",  # as under the shipped unit (WatchdogSec=10s)
            )
            env.update(extra_env or {})
            argv = [args.cryptobot, "run"]
        elif kind in ("teloxide", "teloxide-throttle"):
            env.update(TELOXIDE_TOKEN=token, BENCH_API_URL=fake.url)
            if kind == "teloxide-throttle":
                env.update(BENCH_THROTTLE="1")  # the same bot behind teloxide's Throttle adaptor
            argv = [args.teloxide]
        elif kind == "ptb":
            env.update(BENCH_TOKEN=token, BENCH_API_URL=fake.url)
            argv = [args.ptb_python, args.ptb_script]
        else:
            raise ValueError(kind)
        self.log = open(workdir / f"{name}.log", "w")
        self.t0 = time.perf_counter_ns()
        self.wall0 = time.time()
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        """Sends the bot's stop signal; returns the seconds until it exited (SIGKILL after 30 s)."""
        t = time.perf_counter_ns()
        if self.alive():
            self.proc.send_signal(STOP_SIGNAL[self.kind])
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = f"killed after 30 s ({self.proc.wait()})"
        took = (time.perf_counter_ns() - t) / 1e9
        self.log.close()
        if self.notify:
            self.notify.close()
        return took, code


def wait_until(fake, bot_id, bot, predicate, timeout, interval):
    deadline = time.monotonic() + timeout
    while True:
        stats = fake.stats(bot_id)
        if predicate(stats):
            return stats
        if not bot.alive():
            raise RuntimeError(f"{bot.kind} exited ({bot.proc.returncode}); see {bot.log.name}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{bot.kind}: condition not met in {timeout} s: {short(stats)}")
        time.sleep(interval)


def short(stats):
    return {k: v for k, v in stats.items() if k != "deliveries"}


# ---------------------------------------------------------------------------------------- runs
def startup_run(kind, args, fake, root, n):
    """exec -> READY=1 (cryptobot) / first getUpdates; idle start-up CPU and RSS; stop time."""
    bot_id, token = fake.new_bot()
    workdir = root / f"startup-{kind}-{n}"
    out = {}
    bot = Bot(kind, args, fake, token, workdir, "cold")
    if kind == "cryptobot":
        out["ready_ms"] = (bot.notify.wait_for("READY=1", 30) - bot.t0) / 1e6
        interval = 0.001
    else:
        interval = 0.002  # the peers tell nothing: poll the fake's counters
    wait_until(fake, bot_id, bot, lambda s: s["get_updates_calls"] >= 1, 60, interval)
    out["first_poll_ms"] = (time.perf_counter_ns() - bot.t0) / 1e6
    wait_until(fake, bot_id, bot, lambda s: s["active_polls"] >= 1, 30, 0.01)
    time.sleep(0.5)  # settle in the long poll
    out["idle_cpu_s"] = proc_cpu(bot.pid)
    out["idle_hwm_mib"], out["idle_rss_mib"] = proc_mem(bot.pid)
    out["stop_s"], out["exit"] = bot.stop()
    if kind == "cryptobot":
        # A restart on the same dirs: the state database exists (what a `systemctl restart` does).
        bot = Bot(kind, args, fake, token, workdir, "warm")
        out["ready_warm_ms"] = (bot.notify.wait_for("READY=1", 30) - bot.t0) / 1e6
        wait_until(fake, bot_id, bot, lambda s: s["active_polls"] >= 1, 30, 0.01)
        out["stop_warm_s"], out["exit_warm"] = bot.stop()
    return out


def floor_run(root, n):
    """The same exec -> READY=1 measurement of `systemd-notify --ready`: fork+exec+notify floor."""
    path = Path(SOCKETS) / f"floor-{n}.sock"
    sock = NotifySocket(path)
    t0 = time.perf_counter_ns()
    p = subprocess.Popen(
        ["systemd-notify", "--ready", "--no-block"], env={"NOTIFY_SOCKET": str(path), "PATH": "/usr/bin:/bin"}
    )
    at = sock.wait_for("READY=1", 10)
    p.wait(10)
    sock.close()
    return (at - t0) / 1e6


def traffic_run(kind, args, fake, root, n, chats, per_chat, limits):
    """Injects chats*per_chat /ping first, starts the bot, waits until every one is answered."""
    total = chats * per_chat
    fake.rate_limits(limits)
    bot_id, token = fake.new_bot()
    fake.inject(bot_id, chats, per_chat)
    tag = "limit" if limits else "echo"
    load = loadavg()
    m0, f0, s0 = machine_busy(), fake.cpu(), self_cpu()
    bot = Bot(kind, args, fake, token, root / f"{tag}-{kind}-{n}", tag)
    stats = wait_until(
        fake,
        bot_id,
        bot,
        lambda s: s["send_message_calls"] - s["rate_limited_429"] >= total,
        900,
        0.1,
    )
    # Read before the bot is stopped: its CPU and memory high-water mark now.
    cpu = proc_cpu(bot.pid)
    mem = proc_status(bot.pid)
    m1, f1, s1 = machine_busy(), fake.cpu(), self_cpu()
    done_ns = time.perf_counter_ns()
    stop_s, code = bot.stop()
    after = fake.stats(bot_id)
    sent = fake.sent(bot_id)
    per_chat_count = {}
    for m in sent:
        per_chat_count[m["chat_id"]] = per_chat_count.get(m["chat_id"], 0) + 1
    wrong = [m for m in sent if m["text"] != "pong"]
    if len(sent) != total or set(per_chat_count.values()) != {per_chat} or wrong:
        raise RuntimeError(f"{kind}: {len(sent)} replies, per chat {set(per_chat_count.values())}")
    at = sorted(m["at_ms"] for m in sent)
    span = (at[-1] - at[0]) / 1000
    # The rate once the first second (the senders' initial bursts) is over.
    later = [t for t in at if t >= at[0] + 1000]
    steady = (len(later) - 1) / ((later[-1] - later[0]) / 1000) if len(later) > 2 else float("nan")
    # Most replies the fake accepted in any 1 s window (the limit is 30 overall).
    peak, j = 0, 0
    for i in range(len(at)):
        while at[i] - at[j] >= 1000:
            j += 1
        peak = max(peak, i - j + 1)
    others = (m1 - m0) - cpu - (f1 - f0) - (s1 - s0)
    wall = (done_ns - bot.t0) / 1e9
    return {
        "replies": total,
        "replies_per_s": (total - 1) / span if span > 0 else float("inf"),
        "exec_to_last_reply_s": at[-1] / 1000 - bot.wall0,
        "first_reply_s": at[0] / 1000 - bot.wall0,
        "cpu_s": cpu,
        "hwm_mib": mem["VmHWM"],
        "rss_mib": mem["VmRSS"],
        "rss_anon_mib": mem["RssAnon"],
        "rss_file_mib": mem["RssFile"],
        "steady_per_s": steady,
        "fake_cpu_s": f1 - f0,
        "other_cpu_pct": 100 * max(others, 0) / wall,
        "load1_at_start": load,
        "wall_s": wall,
        "peak_1s": peak,
        "rate_limited_429": after["rate_limited_429"],
        "get_updates_calls": after["get_updates_calls"],
        "redeliveries": sum(v - 1 for v in after["deliveries"].values()),
        "confirmed_offset_ok": after["confirmed_offset"] == max(map(int, after["deliveries"])) + 1,
        "stop_s": stop_s,
        "exit": code,
        "stats_at_done": short(stats),
    }


# ---------------------------------------------------------------------------------------- summary
def med(values):
    return statistics.median(values)


def fmt(values, unit="", digits=1):
    v = sorted(values)
    f = f"{{:.{digits}f}}"
    return f"{f.format(med(v))}{unit} ({f.format(v[0])} – {f.format(v[-1])})"


def summarize(res):
    su, echo, lim = res["startup"], res["echo"], res["limit"]
    idle = {k: med([r["idle_cpu_s"] for r in su[k]]) for k in su}
    for k, runs in echo.items():
        for r in runs:
            r["net_cpu_per_1k"] = max(r["cpu_s"] - idle[k], 0) / (r["replies"] / 1000)
            r["cpu_per_1k"] = r["cpu_s"] / (r["replies"] / 1000)
    c, p, t = echo["cryptobot"], echo["ptb"], echo["teloxide"]

    def m(runs, key):
        return med([r[key] for r in runs])

    def ratio(a, b, key):
        return m(a, key) / m(b, key)

    lines = []
    add = lines.append
    n = len(c)
    add(f"Medians of {n} runs (start-up: {len(su['cryptobot'])}), min – max in parentheses.\n")
    add("| measure | cryptobot | python-telegram-bot 22 | teloxide `repl` | goal | met |")
    add("|---|---|---|---|---|---|")
    ready = [r["ready_ms"] for r in su["cryptobot"]]
    add(f"| start-up: exec → READY=1, fresh state dir | {fmt(ready, ' ms')} | – | – | ≤ 30 ms | "
        f"{'yes' if med(ready) <= 30 else 'NO'} |")
    warm = [r["ready_warm_ms"] for r in su["cryptobot"]]
    add(f"| start-up: exec → READY=1, existing state (restart) | {fmt(warm, ' ms')} | – | – | "
        f"(≤ 30 ms) | {'yes' if med(warm) <= 30 else 'NO'} |")
    add("| start-up: exec → first getUpdates | "
        + " | ".join(fmt([r["first_poll_ms"] for r in su[k]], " ms", 0) for k in ("cryptobot", "ptb", "teloxide"))
        + " | – | – |")
    add(f"| floor: `systemd-notify --ready`, exec → READY=1 | {fmt(res['floor'], ' ms')} | | | | |")
    add("| idle after start: CPU | "
        + " | ".join(fmt([r["idle_cpu_s"] * 1000 for r in su[k]], " ms", 0) for k in ("cryptobot", "ptb", "teloxide"))
        + " | – | – |")
    add("| idle after start: RSS | "
        + " | ".join(fmt([r["idle_rss_mib"] for r in su[k]], " MiB") for k in ("cryptobot", "ptb", "teloxide"))
        + " | – | – |")
    add("| stop: signal → exit (idle) | "
        + " | ".join(fmt([r["stop_s"] * 1000 for r in su[k]], " ms", 0) for k in ("cryptobot", "ptb", "teloxide"))
        + " | – | – |")
    add("| echo 2,000: replies/s (first → last reply) | "
        + " | ".join(fmt([r["replies_per_s"] for r in e]) for e in (c, p, t))
        + " | (bounded by design at 29.7/s for cryptobot) | – |")
    add("| echo 2,000: exec → last reply | "
        + " | ".join(fmt([r["exec_to_last_reply_s"] for r in e], " s", 2) for e in (c, p, t))
        + " | – | – |")
    add("| echo 2,000: CPU s per 1,000 updates, net of start-up | "
        + " | ".join(fmt([r["net_cpu_per_1k"] for r in e], " s", 3) for e in (c, p, t))
        + " | ≤ 0.1× PTB, ≤ teloxide | – |")
    add("| echo 2,000: CPU s per 1,000 updates, gross (incl. start-up) | "
        + " | ".join(fmt([r["cpu_per_1k"] for r in e], " s", 3) for e in (c, p, t))
        + " | – | – |")
    add("| echo 2,000: peak RSS (VmHWM) | "
        + " | ".join(fmt([r["hwm_mib"] for r in e], " MiB") for e in (c, p, t))
        + " | ≤ 0.15× PTB, ≤ 0.3× teloxide | – |")
    add("| echo 2,000: anonymous memory at the end (RssAnon) | "
        + " | ".join(fmt([r["rss_anon_mib"] for r in e], " MiB") for e in (c, p, t))
        + " | – | – |")
    add("| echo 2,000: file-backed resident (RssFile: the binary, libs) | "
        + " | ".join(fmt([r["rss_file_mib"] for r in e], " MiB") for e in (c, p, t))
        + " | – | – |")
    add("| stop after the echo: signal → exit | "
        + " | ".join(fmt([r["stop_s"] * 1000 for r in e], " ms", 0) for e in (c, p, t))
        + " | – | – |")
    cp, ct = ratio(c, p, "net_cpu_per_1k"), ratio(c, t, "net_cpu_per_1k")
    rp, rt = ratio(c, p, "hwm_mib"), ratio(c, t, "hwm_mib")
    gp, gt = ratio(c, p, "cpu_per_1k"), ratio(c, t, "cpu_per_1k")
    add(f"| ratio cryptobot/PTB: CPU per update (net; gross) | {cp:.3f}; {gp:.3f} | | | ≤ 0.10 | {'yes' if cp <= 0.1 else 'NO'} |")
    add(f"| ratio cryptobot/teloxide: CPU per update (net; gross) | {ct:.2f}; {gt:.2f} | | | ≤ 1.0 | {'yes' if ct <= 1 else 'NO'} |")
    add(f"| ratio cryptobot/PTB: peak RSS | {rp:.3f} | | | ≤ 0.15 | {'yes' if rp <= 0.15 else 'NO'} |")
    add(f"| ratio cryptobot/teloxide: peak RSS | {rt:.2f} | | | ≤ 0.30 | {'yes' if rt <= 0.3 else 'NO'} |")
    rate = [r["replies_per_s"] for r in lim]
    add(f"| at the limit: 1,000 replies, msg/s (first → last reply) | {fmt(rate)} = "
        f"{100 * med(rate) / 30:.1f} % of 30 | | | ≥ 95 % | {'yes' if med(rate) >= 28.5 else 'NO'} |")
    steady = [r["steady_per_s"] for r in lim]
    add(f"| at the limit: msg/s after the first second | {fmt(steady, '', 2)} | | | | |")
    n429 = [r["rate_limited_429"] for r in lim]
    add(f"| at the limit: 429s | {fmt(n429, '', 0)} | | | 0 | {'yes' if max(n429) == 0 else 'NO'} |")
    peak = [r["peak_1s"] for r in lim]
    add(f"| at the limit: most replies in any 1 s | {fmt(peak, '', 0)} | | | (≤ 30 + burst) | |")
    add("")
    others = [r["other_cpu_pct"] for runs in list(echo.values()) + [lim] for r in runs]
    loads = [r["load1_at_start"] for runs in list(echo.values()) + [lim] for r in runs]
    add(f"Machine during the traffic runs: CPU used by processes other than the bot, the fake and "
        f"the driver {fmt(others, ' % of one core')}; 1-min load average at each run's start "
        f"{fmt(loads, '', 2)}.")
    checks = []
    for k, runs in list(echo.items()) + [("cryptobot at the limit", lim)]:
        red = sum(r["redeliveries"] for r in runs)
        polls = med([r["get_updates_calls"] for r in runs])
        fakecpu = med([r["fake_cpu_s"] for r in runs])
        checks.append(f"{k}: getUpdates calls {polls:.0f}, redelivered updates {red}, "
                      f"fake-bot-api CPU {fakecpu:.2f} s, exit {sorted({str(r['exit']) for r in runs})}, "
                      f"stop {fmt([r['stop_s'] * 1000 for r in runs], ' ms', 0)}")
    add("\nPer bot (medians): " + "; ".join(checks) + ".")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cryptobot", required=True)
    ap.add_argument("--fake", required=True)
    ap.add_argument("--teloxide", required=True)
    ap.add_argument("--ptb-python", required=True)
    ap.add_argument("--ptb-script", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--startup-runs", type=int, default=10)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = out / "work"  # the bots' state/runtime dirs and logs; bench/run empties it first
    root.mkdir(exist_ok=True)
    global SOCKETS
    SOCKETS = tempfile.mkdtemp(prefix="cb-bench-")  # short: a socket path has at most 107 bytes
    fake = Fake(args.fake, out)
    res = {"startup": {"cryptobot": [], "ptb": [], "teloxide": []}, "floor": [],
           "echo": {"cryptobot": [], "ptb": [], "teloxide": []}, "limit": [],
           "api": fake.url, "load_before": loadavg()}
    kinds = ["cryptobot", "ptb", "teloxide"]
    try:
        for i in range(args.startup_runs):
            res["floor"].append(floor_run(root, i))
            for k in kinds if i < args.runs else ["cryptobot"]:
                r = startup_run(k, args, fake, root, i)
                res["startup"][k].append(r)
            c = res["startup"]["cryptobot"][-1]
            log(f"start-up {i + 1}/{args.startup_runs}: READY {c['ready_ms']:.1f} ms "
                f"(restart {c['ready_warm_ms']:.1f} ms)")
        for i in range(args.runs):
            order = kinds[i % 3:] + kinds[: i % 3]
            for k in order:
                r = traffic_run(k, args, fake, root, i, ECHO_CHATS, ECHO_PER_CHAT, False)
                res["echo"][k].append(r)
                log(f"echo {i + 1}/{args.runs} {k}: {r['replies_per_s']:.1f} replies/s, "
                    f"CPU {r['cpu_s']:.2f} s, VmHWM {r['hwm_mib']:.1f} MiB, wall {r['wall_s']:.1f} s, "
                    f"others {r['other_cpu_pct']:.0f} %")
            r = traffic_run("cryptobot", args, fake, root, i, LIMIT_CHATS, LIMIT_PER_CHAT, True)
            res["limit"].append(r)
            log(f"at the limit {i + 1}/{args.runs}: {r['replies_per_s']:.2f} msg/s, "
                f"{r['rate_limited_429']} × 429, peak {r['peak_1s']}/s")
    finally:
        fake.rate_limits(False)
        fake.stop()
        shutil.rmtree(SOCKETS, ignore_errors=True)
        res["load_after"] = loadavg()
        (out / "results.json").write_text(json.dumps(res, indent=1, default=str))
    summary = summarize(res)
    (out / "summary.md").write_text(summary + "\n")
    print(summary)


if __name__ == "__main__":
    main()
