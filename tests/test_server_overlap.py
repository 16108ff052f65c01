"""With SWITCH_WRITE_OVERLAP=1, one batch is written while the next executes (when at least half
a batch is waiting): over TCP, no answer leaves before its batch is written, the next batch runs
meanwhile, and a failed write fails that batch and the one that ran on top of it -- on both event
loops.  With less waiting, the next batch waits for the write, so one commit carries what arrives
meanwhile."""
from __future__ import annotations

import asyncio
import threading

import pytest

from core_ext.codes import Code
import test_server_helpers as fixtures
from test_pipeline_server import open_engine, pay_item
from test_server_helpers import LOOP_KINDS, Raw, run_on, running

WAIT_SECONDS = 5


class GatedWrites:
    """Holds every storage write until `gate` is set; `fail` makes the held write raise instead."""

    def __init__(self, storage) -> None:
        self.write = storage.write
        self.gate = threading.Event()
        self.writing = threading.Event()
        self.fail = False
        storage.write = self.held_write

    def held_write(self, record):
        self.writing.set()
        self.gate.wait(WAIT_SECONDS)
        if self.fail:
            self.fail = False
            raise OSError("disk gone (injected)")
        return self.write(record)


async def until(condition) -> None:
    for _ in range(WAIT_SECONDS * 100):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never met")


async def no_answer_yet(raw: Raw) -> bool:
    try:
        await asyncio.wait_for(raw.frame(), 0.1)
    except asyncio.TimeoutError:
        return True
    return False


@pytest.fixture(autouse=True)
def write_overlap(monkeypatch):
    """Off by default (bench/RESULTS.md section 5 says why); these tests are about it on."""
    monkeypatch.setenv("SWITCH_WRITE_OVERLAP", "1")


def two_payments_while_the_first_writes(tmp_path, loop_kind, fail_first_write: bool):
    """Pay 1, hold its write, pay 2 (it executes meanwhile); then release.  Both answers, the
    payments the pipeline ran before the release, and the payer's debits after."""
    engine, config = open_engine(tmp_path)
    writes = GatedWrites(engine.storage)
    writes.fail = fail_first_write

    async def scenario():
        # A payment (2 events) is half a batch here: enough to execute while the one before writes.
        async with running(engine, config, batch_events_max=4) as (server, port):
            raw = await Raw.authenticated(port)
            raw.send([1, "pay", pay_item(1)])
            await until(writes.writing.is_set)
            raw.send([2, "pay", pay_item(2)])
            await until(lambda: engine.pipeline.stats()["payments"] == 2)
            held = await no_answer_yet(raw)
            writes.gate.set()
            answers = [await raw.frame() for _ in range(2)]
            raw.send([3, "lookup_accounts", [fixtures.PAYER]])
            account = await raw.frame()
            await raw.close()
            return held, answers, account[2][0][1]["debits_posted"]

    try:
        return run_on(loop_kind, scenario)
    finally:
        writes.gate.set()
        engine.close()


@pytest.mark.parametrize("loop_kind", LOOP_KINDS)
@pytest.mark.parametrize("fail_first_write, code, debits", [(False, Code.OK, 200), (True, Code.STORAGE_FAILED, 0)])
def test_the_next_batch_executes_while_one_writes_and_shares_its_fate(tmp_path, loop_kind, fail_first_write,
                                                                       code, debits):
    """Nothing is answered before its write; a failed write fails the batch executed on top of it."""
    held, answers, debits_after = two_payments_while_the_first_writes(tmp_path, loop_kind, fail_first_write)
    assert held
    assert [(answer[0], answer[1]) for answer in answers] == [(1, code), (2, code)]
    assert debits_after == debits


@pytest.mark.parametrize("loop_kind", LOOP_KINDS)
def test_less_than_half_a_batch_waits_for_the_write_in_flight(tmp_path, loop_kind):
    engine, config = open_engine(tmp_path)
    writes = GatedWrites(engine.storage)

    async def scenario():
        async with running(engine, config, batch_events_max=8) as (server, port):
            raw = await Raw.authenticated(port)
            raw.send([1, "pay", pay_item(1)])
            await until(writes.writing.is_set)
            raw.send([2, "pay", pay_item(2)])
            await until(lambda: server._queued_events == 2)
            await asyncio.sleep(0.1)
            payments_while_held = engine.pipeline.stats()["payments"]
            writes.gate.set()
            answers = [await raw.frame() for _ in range(2)]
            await raw.close()
            return payments_while_held, answers

    try:
        payments_while_held, answers = run_on(loop_kind, scenario)
    finally:
        writes.gate.set()
        engine.close()
    assert payments_while_held == 1
    assert [(answer[0], answer[1]) for answer in answers] == [(1, Code.OK), (2, Code.OK)]
