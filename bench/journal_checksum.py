"""What the journal's per-record checksum costs a durable commit, side by side in one process.

    python -m bench.journal_checksum --rounds 30 --durability fsync

Posts batches of 1, 100 and 8,000 plain transfers through the storage layer and
times Storage.commit() alone, alternating A (format 2: CRC-32 over key and payload)
and B (the same commit with the checksum replaced by four zero bytes, i.e. format 1's
cost plus one copy), so machine noise hits both alike.  Prints medians per batch size
and the ratio B/A as JSON, for bench/RESULTS.md section 1.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

from core_ext import core
from core_ext.types import Account, Transfer
from switch import storage

ACCOUNT_COUNT = 10_000
NOW_NS = 1_700_000_000 * 10**9
BATCH_SIZES = (1, 100, 8000)


def _without_checksum(sequence: int, payload: bytes) -> bytes:
    return b"\0\0\0\0" + payload


def _commit_seconds(store, ledger, batch_size: int, first_id: int) -> float:
    transfers = [Transfer(first_id + i, 1 + (first_id + i) % ACCOUNT_COUNT, 1 + (first_id + i + 1) % ACCOUNT_COUNT,
                          1 + i % 5000, 356, 1) for i in range(batch_size)]
    assert set(ledger.create_transfers(transfers, NOW_NS)) == {0}
    started = time.perf_counter()
    store.commit()
    return time.perf_counter() - started


def measure(rounds: int, durability: str) -> dict:
    checksummed = storage.encode_record
    report = {}
    with tempfile.TemporaryDirectory() as directory:
        ledger = core.Ledger(accounts_max=ACCOUNT_COUNT)
        with storage.Storage.open(directory, [ledger], durability=durability) as store:
            for first in range(1, ACCOUNT_COUNT + 1, 5000):
                accounts = [Account(i, 356, 1) for i in range(first, first + 5000)]
                assert set(ledger.create_accounts(accounts, NOW_NS)) == {0}
                store.commit()
            next_id = 1
            for batch_size in BATCH_SIZES:
                times = {"crc32": [], "none": []}
                for _ in range(rounds):
                    for variant, encode in (("crc32", checksummed), ("none", _without_checksum)):
                        storage.encode_record = encode
                        try:
                            times[variant].append(_commit_seconds(store, ledger, batch_size, next_id))
                        finally:
                            storage.encode_record = checksummed
                        next_id += batch_size
                a, b = statistics.median(times["crc32"]), statistics.median(times["none"])
                report[batch_size] = {"commit_us_crc32": round(a * 1e6, 1), "commit_us_without": round(b * 1e6, 1),
                                      "crc32_over_without": round(a / b, 3)}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--durability", choices=storage.DURABILITIES, default="fsync")
    arguments = parser.parse_args(argv)
    print(json.dumps({"durability": arguments.durability, "rounds": arguments.rounds,
                      "batches": measure(arguments.rounds, arguments.durability)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
