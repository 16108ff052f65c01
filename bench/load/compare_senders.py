"""The open loop's two senders side by side against the echo peer: A, B, A, B, ... in one run.

    .venv/bin/python bench/load/compare_senders.py OUT_DIR [--rounds 3] [--rate 10000] [--duration 10]

The echo peer is pinned to CPU 1 and the generator to CPU 0; each round runs `switch bench run
--mode open` once with `--sender c` and once with `--sender python` (alternating which goes first),
and the medians over the rounds of send lag p50/p99 and latency p50/p99 are printed per sender.
Reports: OUT_DIR/sender-<name>-<round>.json.  The workload is OUT_DIR/fixture (made when missing).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import time

SENDERS = ("c", "python")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_listening(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("the echo peer did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=16)
    arguments = parser.parse_args()
    out = arguments.out
    out.mkdir(parents=True, exist_ok=True)
    switch = [sys.executable, "-m", "switch", "bench"]
    if not (out / "fixture" / "workload.json").exists():
        subprocess.run(switch + ["workload", "--out", str(out / "fixture"), "--payers", "1700", "--merchants", "1000",
                                 "--funding-scale", "1000"], check=True, stdout=subprocess.DEVNULL)
    port = _free_port()
    peer = subprocess.Popen(switch + ["echo", "--port", str(port), "--cpu", "1"], stdout=subprocess.DEVNULL)
    try:
        _wait_listening(port, peer)
        reports: dict[str, list[dict]] = {name: [] for name in SENDERS}
        for round_index in range(arguments.rounds):
            order = SENDERS if round_index % 2 == 0 else tuple(reversed(SENDERS))
            for name in order:
                path = out / f"sender-{name}-{round_index}.json"
                subprocess.run(switch + ["run", "--workload", str(out / "fixture" / "workload.json"),
                                         "--port", str(port), "--cpus", "0", "--target", "echo", "--durability", "none",
                                         "--mode", "open", "--rate", str(arguments.rate), "--sender", name,
                                         "--connections", str(arguments.connections), "--warmup", str(arguments.warmup),
                                         "--duration", str(arguments.duration), "--quiet", "--json", str(path)],
                               check=True, stdout=subprocess.DEVNULL)
                reports[name].append(json.loads(path.read_text()))
    finally:
        peer.terminate()
        peer.wait(10)
    print(f"{arguments.rounds} rounds, {arguments.rate:,d}/s over {arguments.connections} connections, "
          f"{arguments.duration} s each; medians (us); load {os.getloadavg()[0]:.2f}")
    print(f"{'sender':8s} {'lag p50':>8s} {'lag p99':>8s} {'lat p50':>8s} {'lat p99':>8s} {'lat max':>9s} {'answered/s':>11s}")
    for name, runs in reports.items():
        def median(pick) -> float:
            return statistics.median(pick(report) for report in runs)
        print(f"{name:8s} {median(lambda r: r['send_lag_us']['p50']):8,.0f} {median(lambda r: r['send_lag_us']['p99']):8,.0f} "
              f"{median(lambda r: r['latency_us']['p50']):8,.0f} {median(lambda r: r['latency_us']['p99']):8,.0f} "
              f"{median(lambda r: r['latency_us']['max']):9,.0f} {median(lambda r: r['throughput_per_s']):11,.0f}")


if __name__ == "__main__":
    main()
