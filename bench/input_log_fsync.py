"""What `switch serve --input-log` costs per batch at each durability, side by side in one process.

    python -m bench.input_log_fsync --rounds 200 --requests 100

Appends batch records of REQUESTS pay requests through switch.inputlog.InputLog, alternating
a log opened at `fsync` (each record fsynced) and one at `os` (flushed to the page cache),
and prints the median seconds per record of each as JSON, for bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time

from switch import inputlog, protocol


class _Participant:
    id = 1


def _batch(requests: int, first_id: int) -> list:
    return [(_Participant, protocol.Request(first_id + i, "pay", [first_id + i, 1000 + i, "0002010102" + "x" * 90, 500,
                                                                  "device-1", None], None, 1))
            for i in range(requests)]


def measure(rounds: int, requests: int) -> dict:
    outcomes = [(0, None)] * requests
    seconds: dict[str, list[float]] = {"fsync": [], "os": []}
    with tempfile.TemporaryDirectory() as directory:
        logs = {durability: inputlog.InputLog.start(str(pathlib.Path(directory) / durability), "", b"", None,
                                                    durability=durability) for durability in seconds}
        for round_index in range(rounds):
            for durability, log in logs.items():
                batch = _batch(requests, round_index * requests)
                started = time.perf_counter()
                log.record(round_index, batch, outcomes)
                seconds[durability].append(time.perf_counter() - started)
        for log in logs.values():
            assert not log.failed
            log.close()
    return {f"record_us_{durability}": round(statistics.median(times) * 1e6, 1) for durability, times in seconds.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--requests", type=int, default=100)
    arguments = parser.parse_args(argv)
    print(json.dumps({"rounds": arguments.rounds, "requests_per_batch": arguments.requests,
                      **measure(arguments.rounds, arguments.requests)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
