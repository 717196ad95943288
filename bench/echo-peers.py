#!/usr/bin/env python3
"""Echo CPU per update: cryptobot against teloxide with its `Throttle` adaptor (the like-for-like peer:
both pace their sends under Telegram's limits) and the plain teloxide `repl` (unpaced), interleaved in
one run. Standard library only; bench/echo-peers builds the binaries and calls this.

Each round, in a rotating order: 2,000 /ping from 200 chats (10 each) injected before the bot starts,
the fake's limits off; done when the fake accepted 2,000 replies; utime+stime and VmHWM read then
(bench/measure.py's traffic_run). Prints medians of BENCH_RUNS rounds and the ratios against the goals
(CPU per update <= Throttle's and <= 2x the plain repl's; peak RSS <= 10 MiB).
"""

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import measure  # noqa: E402

KINDS = ["cryptobot", "teloxide-throttle", "teloxide"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cryptobot", required=True)
    p.add_argument("--teloxide", required=True)
    p.add_argument("--fake", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    out = Path(args.out)
    (out / "work").mkdir(parents=True, exist_ok=True)
    (out / "sockets").mkdir(exist_ok=True)
    measure.SOCKETS = str(out / "sockets")
    fake = measure.Fake(args.fake, out)
    res = {k: [] for k in KINDS}
    try:
        for n in range(runs):
            order = KINDS[n % 3:] + KINDS[:n % 3]
            for kind in order:
                r = measure.traffic_run(kind, args, fake, out / "work", n, measure.ECHO_CHATS,
                                        measure.ECHO_PER_CHAT, False)
                res[kind].append(r)
                print(f"round {n} {kind}: {r['cpu_s']:.3f} s CPU, {r['replies_per_s']:.1f} replies/s, "
                      f"VmHWM {r['hwm_mib']:.1f} MiB", file=sys.stderr)
    finally:
        fake.stop()
    (out / "echo-peers.json").write_text(json.dumps(res, indent=2))

    def med(kind, key):
        return statistics.median(r[key] for r in res[kind])

    per_k = {k: med(k, "cpu_s") / (measure.ECHO_CHATS * measure.ECHO_PER_CHAT / 1000) for k in KINDS}
    print("| measure | cryptobot | teloxide + Throttle | teloxide `repl` | goal | state |")
    print("|---|---|---|---|---|---|")
    print("| CPU s per 1,000 updates (gross, median of %d) | %.3f | %.3f | %.3f | – | – |"
          % (runs, per_k["cryptobot"], per_k["teloxide-throttle"], per_k["teloxide"]))
    vs_throttle = per_k["cryptobot"] / per_k["teloxide-throttle"]
    vs_repl = per_k["cryptobot"] / per_k["teloxide"]
    print(f"| ratio to Throttle | {vs_throttle:.2f} | | | <= 1.0 | {'met' if vs_throttle <= 1 else 'not met'} |")
    print(f"| ratio to plain repl | {vs_repl:.2f} | | | <= 2.0 | {'met' if vs_repl <= 2 else 'not met'} |")
    hwm = med("cryptobot", "hwm_mib")
    print("| peak RSS (VmHWM) MiB | %.1f | %.1f | %.1f | cryptobot <= 10 | %s |"
          % (hwm, med("teloxide-throttle", "hwm_mib"), med("teloxide", "hwm_mib"),
             "met" if hwm <= 10 else "not met"))
    print("| replies/s | %.1f | %.1f | %.1f | – | – |"
          % (med("cryptobot", "replies_per_s"), med("teloxide-throttle", "replies_per_s"),
             med("teloxide", "replies_per_s")))


if __name__ == "__main__":
    main()
