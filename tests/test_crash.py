"""kill -9 at seeded random moments: reopening yields exactly the committed state.

A child process (tests/crash_child.py) posts batches and acknowledges each one
after its commit; the parent kills it with SIGKILL at a random moment, reopens
the data directory and requires the money invariants, a clean `ledger check`,
and every acknowledged transfer present exactly once.  Each round restarts the
child on the same directory, so recovery is also tested after recovery.
"""
from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest

from core_ext import core
from core_ext.reference.ledger import iter_journal_records
from switch import storage
from switch.commands.ledger import run_check

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHILD = ROOT / "tests" / "crash_child.py"
IDS_PER_ROUND = 10**9
# A soak runs more rounds: SWITCH_CRASH_ROUNDS=200 pytest tests/test_crash.py
ROUNDS = int(os.environ.get("SWITCH_CRASH_ROUNDS", "4"))


def _run_child_until_killed(data_dir, seed, durability, first_id, rng) -> set[int]:
    """Start the child, let it commit for a random while, SIGKILL it; the ids it acknowledged."""
    child = subprocess.Popen([sys.executable, str(CHILD), str(data_dir), str(seed), durability, str(first_id)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    acknowledged: set[int] = set()
    try:
        ready = child.stdout.readline()
        assert ready == "ready\n", child.stderr.read()
        for _ in range(rng.randint(1, 12)):
            line = child.stdout.readline()
            assert line.startswith("ack "), line + child.stderr.read()
            acknowledged.update(_ids_of(line))
        # Land the kill anywhere: right after an acknowledgement (in the next batch's
        # commit, often), or after a random pause (mid-batch, mid-commit, mid-print).
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0, 0.02))
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    for line in rest.splitlines():               # acknowledged before the kill, still in the pipe
        if line.startswith("ack "):
            acknowledged.update(_ids_of(line))
    assert child.returncode == -signal.SIGKILL
    return acknowledged


def _ids_of(ack_line: str) -> list[int]:
    parts = ack_line.split()
    return [int(i) for i in parts[2].split(",")] if len(parts) > 2 else []


def _journaled_transfer_ids(data_dir) -> list[int]:
    env = storage.open_environment(data_dir, readonly=True)
    try:
        return [record.id for _, sections in storage.iterate_journal(env) for name, blob in sections
                if name == "ledger" for kind, record in iter_journal_records(blob) if kind == "transfer"]
    finally:
        env.close()


def _check_recovered(data_dir, acknowledged: set[int]) -> None:
    ledger = core.Ledger(accounts_max=1000)
    with storage.Storage.open(data_dir, [ledger], durability="os") as reopened:
        assert reopened.sequence > 0
        assert ledger.check_invariants() == []
        found = ledger.lookup_transfers(sorted(acknowledged))
        assert all(t is not None for t in found), "an acknowledged transfer was lost"
    journaled = _journaled_transfer_ids(data_dir)
    assert len(journaled) == len(set(journaled)), "a transfer was applied twice"
    assert acknowledged <= set(journaled)
    report = run_check(str(data_dir))
    assert report["ok"], report["violations"]


@pytest.mark.parametrize("durability", ["os", "fsync"])
def test_kill_9_at_random_moments_loses_no_acknowledged_transfer(tmp_path, durability):
    rng = random.Random(f"crash-{durability}")
    acknowledged: set[int] = set()
    for round_index in range(ROUNDS):
        acknowledged |= _run_child_until_killed(tmp_path, rng.randrange(2**32), durability,
                                                1 + round_index * IDS_PER_ROUND, rng)
        _check_recovered(tmp_path, acknowledged)
