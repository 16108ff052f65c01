"""Ledger throughput: transfers posted per second, compiled and twin, in memory and durably.

    make bench PYTEST_ARGS="-k ledger"

Each round posts one fresh batch (1, 100 or 8,000 plain transfers among 10,000
accounts); `extra_info["transfers_per_second"]` is batch size / that round's
median.  "memory" excludes the commit; "fsync" and "os" include one LMDB write
transaction per batch at that durability.  Batches are built in the setup, not
timed: in the switch they are decoded by the compiled pipeline.
"""
from __future__ import annotations

import itertools

import pytest

import core_ext
from core_ext.types import Account, Transfer
from switch.storage import Storage

ACCOUNT_COUNT = 10_000
NOW_NS = 1_700_000_000 * 10**9
BATCH_SIZES = (1, 100, 8000)
ROUNDS = {1: 2000, 100: 300, 8000: 20}


@pytest.fixture(autouse=True)
def _refuse_trace_builds():
    if core_ext.implementation("compiled").build_info()["mode"] != "release":
        pytest.skip("benchmarks run on a release build only")


def _ledger(implementation: str):
    return core_ext.implementation(implementation).Ledger(accounts_max=ACCOUNT_COUNT)


def _open_accounts(ledger):
    for first in range(1, ACCOUNT_COUNT + 1, 8000):
        accounts = [Account(i, 356, 1) for i in range(first, min(first + 8000, ACCOUNT_COUNT + 1))]
        assert set(ledger.create_accounts(accounts, NOW_NS)) == {0}


def _batches(batch_size: int):
    """An endless supply of fresh batches (new ids each time)."""
    ids = itertools.count(1)
    while True:
        batch = []
        for _ in range(batch_size):
            transfer_id = next(ids)
            debit = 1 + (transfer_id * 7919) % ACCOUNT_COUNT
            credit = 1 + (debit + 1 + transfer_id % 97) % ACCOUNT_COUNT
            batch.append(Transfer(transfer_id, debit, credit, 1 + transfer_id % 5000, 356, 1))
        yield batch


def _run(benchmark, ledger, batch_size, store=None):
    batches = _batches(batch_size)

    def setup():
        return (next(batches),), {}

    def post(batch):
        codes = ledger.create_transfers(batch, NOW_NS)
        if store is not None:
            store.commit()
        return codes

    codes = benchmark.pedantic(post, setup=setup, rounds=ROUNDS[batch_size], iterations=1, warmup_rounds=1)
    assert codes == [0] * batch_size
    benchmark.extra_info["transfers_per_second"] = round(batch_size / benchmark.stats.stats.median)
    benchmark.extra_info["batch_size"] = batch_size


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("implementation", core_ext.IMPLEMENTATIONS)
def test_post_in_memory(benchmark, implementation, batch_size):
    benchmark.group = f"ledger memory batch={batch_size}"
    ledger = _ledger(implementation)
    _open_accounts(ledger)
    _run(benchmark, ledger, batch_size)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("durability", ["fsync", "os"])
@pytest.mark.parametrize("implementation", core_ext.IMPLEMENTATIONS)
def test_post_and_commit(benchmark, tmp_path, implementation, durability, batch_size):
    benchmark.group = f"ledger {durability} batch={batch_size}"
    ledger = _ledger(implementation)
    with Storage.open(tmp_path, [ledger], durability=durability) as store:
        _open_accounts(ledger)      # after the open: opening replays the (empty) journal into a reset ledger
        store.commit()
        _run(benchmark, ledger, batch_size, store)
