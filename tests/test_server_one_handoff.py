"""Without write overlap (the default), a batch is executed and written in ONE hand-off to the
engine thread (Server._execute_and_write): over TCP its answer still waits for the write, a failed
write answers STORAGE_FAILED and leaves memory rebuilt from storage, and the switch goes on."""
from __future__ import annotations

import asyncio

import pytest

from core_ext.codes import Code
import test_server_helpers as fixtures
from test_pipeline_server import open_engine, pay_item
from test_server_helpers import LOOP_KINDS, Raw, run_on, running
from test_server_overlap import GatedWrites, no_answer_yet, until


@pytest.fixture(autouse=True)
def no_write_overlap(monkeypatch):
    monkeypatch.setenv("SWITCH_WRITE_OVERLAP", "0")


@pytest.mark.parametrize("loop_kind", LOOP_KINDS)
@pytest.mark.parametrize("fail_write, code, debits", [(False, Code.OK, 200), (True, Code.STORAGE_FAILED, 100)])
def test_one_handoff_answers_after_the_write_and_survives_a_failed_one(tmp_path, loop_kind, fail_write, code,
                                                                       debits):
    engine, config = open_engine(tmp_path)
    writes = GatedWrites(engine.storage)
    writes.fail = fail_write

    async def scenario():
        async with running(engine, config) as (server, port):
            raw = await Raw.authenticated(port)
            raw.send([1, "pay", pay_item(1)])
            await until(writes.writing.is_set)
            held = await no_answer_yet(raw)
            writes.gate.set()
            first = await raw.frame()
            raw.send([2, "pay", pay_item(2)])       # the write after a failed one works again
            second = await raw.frame()
            raw.send([3, "lookup_accounts", [fixtures.PAYER]])
            account = await raw.frame()
            await raw.close()
            return held, first, second, account[2][0][1]["debits_posted"]

    try:
        held, first, second, debits_after = run_on(loop_kind, scenario)
    finally:
        writes.gate.set()
        engine.close()
    assert held
    assert (first[0], first[1]) == (1, code)
    assert (second[0], second[1]) == (2, Code.OK)
    assert debits_after == debits
