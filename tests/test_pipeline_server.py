"""The server's fast path over TCP, on both event loops: pay / pay_batch frames go to the
pipeline undecoded, everything else the Python way, and one connection's answers still come
back in request order, under their own request ids."""
from __future__ import annotations

import pytest

from core_ext.codes import Code
from switch import config as config_module, protocol
from switch.engine import Engine
import test_server_helpers as fixtures
from test_server_helpers import LOOP_KINDS, Raw, run_on, running


def pay_item(transfer_id: int, amount: int = 100) -> list:
    return [protocol.id_to_wire(transfer_id), fixtures.PAYER, fixtures.static_qr(), amount, None, None]


def open_engine(tmp_path) -> tuple[Engine, object]:
    config = config_module.parse(fixtures.document())
    return Engine.open(config, str(tmp_path / "data"), durability="os"), config


@pytest.mark.parametrize("loop_kind", LOOP_KINDS)
def test_fast_and_slow_requests_interleaved_are_answered_in_order(tmp_path, loop_kind):
    engine, config = open_engine(tmp_path)

    async def scenario():
        async with running(engine, config) as (server, port):
            raw = await Raw.authenticated(port)
            raw.send([1, "pay", pay_item(1)])
            raw.send([2, "ping", None])
            raw.send([3, "pay_batch", [pay_item(2), pay_item(3, 10**9)]])
            raw.send([4, "lookup_accounts", [fixtures.PAYER]])
            raw.send([5, "pay", [b"short", 1, "x", 1]])
            raw.send_bytes(b"\x00\x00\x00\x01\xc1")                 # malformed msgpack: request id 0
            raw.send([6, "pay", pay_item(1)])                       # a retry: EXISTS
            answers = [await raw.frame() for _ in range(7)]
            await raw.close()
            return answers

    try:
        answers = run_on(loop_kind, scenario)
    finally:
        engine.close()
    assert [answer[0] for answer in answers] == [1, 2, 3, 4, 5, 0, 6]
    assert [answer[1] for answer in answers] == [Code.OK, Code.OK, Code.OK, Code.OK, Code.INVALID_ARGUMENTS,
                                                 Code.MALFORMED_MSGPACK, Code.EXISTS]
    assert [entry[0] for entry in answers[2][2]] == [Code.OK, Code.EXCEEDS_CREDITS]
    assert answers[3][2][0][1]["debits_posted"] == 200        # the lookup saw the payments before it
    assert answers[6][2] == answers[0][2]


@pytest.mark.parametrize("loop_kind", LOOP_KINDS)
def test_a_shed_raw_payment_is_answered_busy_under_its_own_id(tmp_path, loop_kind):
    engine, config = open_engine(tmp_path)

    async def scenario():
        async with running(engine, config, queue_events_max=4) as (server, port):
            raw = await Raw.authenticated(port)
            for request_id in range(1, 9):
                raw.send([request_id, "pay_batch", [pay_item(100 + request_id)]])
            answers = [await raw.frame() for _ in range(8)]
            await raw.close()
            return answers

    try:
        answers = run_on(loop_kind, scenario)
    finally:
        engine.close()
    assert [answer[0] for answer in answers] == list(range(1, 9))
    assert {answer[1] for answer in answers} <= {Code.OK, Code.BUSY}
    assert all(answer[2] is None for answer in answers if answer[1] == Code.BUSY)
