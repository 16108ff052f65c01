"""The largest ledger tested: build one, time recovery on open and `switch ledger check`, then compact it
and time both again.

    python -m bench.large_ledger --accounts 1000000 --transfers 10000000 --work-dir /var/tmp/large

Builds the ledger through the storage layer exactly as the switch commits it (one
LMDB write transaction per batch of batch_events_max events, durability `os`),
closes it, then reopens it as a restarting switch would (replaying the whole
journal) and runs the offline check; then `switch ledger compact` (snapshot, journal
deleted) and the same reopen and check from the snapshot.  Prints accounts,
transfers, data size, build rate, recovery and check seconds before and after
compaction, compaction seconds and the size of a compacted backup as JSON, for
bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import random
import sys
import time

from core_ext import core, limits
from core_ext.types import Account, Transfer
from switch import storage
from switch.storage import Storage

LEDGER_INR = 356
TRANSFER_CODE = 1


def build(data_dir: pathlib.Path, accounts: int, transfers: int, seed: int) -> dict:
    rng = random.Random(seed)
    ledger = core.Ledger(accounts_max=accounts)
    started = time.monotonic()
    with Storage.open(data_dir, [ledger], durability="os") as storage:
        for first in range(1, accounts + 1, limits.BATCH_EVENTS_MAX):
            batch = [Account(id=i, ledger=LEDGER_INR, code=1)
                     for i in range(first, min(first + limits.BATCH_EVENTS_MAX, accounts + 1))]
            assert not any(ledger.create_accounts(batch, time.time_ns()))
            storage.commit()
        for first in range(1, transfers + 1, limits.BATCH_EVENTS_MAX):
            batch = [Transfer(id=i, debit_account_id=rng.randint(1, accounts), credit_account_id=0,
                              amount=rng.randint(1, 100_000), ledger=LEDGER_INR, code=TRANSFER_CODE)
                     for i in range(first, min(first + limits.BATCH_EVENTS_MAX, transfers + 1))]
            for transfer in batch:   # never the same account on both sides
                transfer.credit_account_id = transfer.debit_account_id % accounts + 1
            assert not any(ledger.create_transfers(batch, time.time_ns()))
            storage.commit()
        state_hash = ledger.state_hash()
        batches = storage.sequence
    return {"build_seconds": round(time.monotonic() - started, 1), "batches": batches,
            "state_hash": state_hash.hex()}


def recover(data_dir: pathlib.Path, accounts: int) -> dict:
    ledger = core.Ledger(accounts_max=accounts)
    started = time.monotonic()
    storage = Storage.open(data_dir, [ledger], durability="os")
    seconds = time.monotonic() - started
    try:
        return {"recovery_seconds": round(seconds, 2), "recovered_state_hash": ledger.state_hash().hex(),
                "transfers": ledger.transfer_count, "accounts": ledger.account_count}
    finally:
        storage.close(checkpoint=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--transfers", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work-dir", type=pathlib.Path, required=True, help="An empty directory (kept).")
    parser.add_argument("--built", action="store_true",
                        help="Measure the ledger an earlier run built in --work-dir/data (never compacted): "
                             "the build is skipped, and the journal replay's state hash is the reference.")
    arguments = parser.parse_args(argv)
    data_dir = arguments.work_dir / "data"
    if data_dir.exists() != arguments.built:
        parser.error(f"{data_dir}: give an empty --work-dir, or --built with the data of an earlier run")
    report = {"accounts_requested": arguments.accounts, "transfers_requested": arguments.transfers}
    if not arguments.built:
        report.update(build(data_dir, arguments.accounts, arguments.transfers, arguments.seed))
    report["data_bytes"] = _bytes_of(data_dir)
    report.update(recover(data_dir, arguments.accounts))
    if arguments.built:               # no build hash to compare with: the journal replay is the reference
        report.update(state_hash=report["recovered_state_hash"], state_hash_from="journal replay (--built)")
    report.update(_checked(data_dir, report, ""))
    report.update(_compacted(data_dir, arguments.work_dir / "backup"))
    after = recover(data_dir, arguments.accounts)
    report.update({f"{key}_after_compaction": value for key, value in after.items()})
    report.update(_checked(data_dir, report, "_after_compaction"))
    print(json.dumps(report, indent=2))
    return 0 if all(report[key] for key in ("check_ok", "recovered_exactly", "check_ok_after_compaction",
                                             "recovered_exactly_after_compaction")) else 1


def _checked(data_dir: pathlib.Path, report: dict, suffix: str) -> dict:
    """`switch ledger check` seconds and verdict, and whether the last recovery was exact."""
    from switch.commands.ledger import run_check

    started = time.monotonic()
    check = run_check(str(data_dir))
    return {f"check_seconds{suffix}": round(time.monotonic() - started, 1), f"check_ok{suffix}": check["ok"],
            f"recovered_exactly{suffix}": report[f"recovered_state_hash{suffix}"] == report["state_hash"]}


def _compacted(data_dir: pathlib.Path, backup_dir: pathlib.Path) -> dict:
    """`switch ledger compact` seconds, then the size of a compacted copy (the file itself keeps its size)."""
    from switch.commands.ledger import run_compact

    started = time.monotonic()
    compact = run_compact(str(data_dir))
    seconds = time.monotonic() - started
    storage.backup(data_dir, backup_dir)
    return {"compact_seconds": round(seconds, 1), "snapshot_sequence": compact["snapshot_sequence"],
            "data_bytes_after_compaction": _bytes_of(data_dir), "backup_bytes_after_compaction": _bytes_of(backup_dir)}


def _bytes_of(directory: pathlib.Path) -> int:
    return sum(path.stat().st_blocks * 512 for path in directory.iterdir() if path.is_file())


if __name__ == "__main__":
    sys.exit(main())
