"""The Python client's own behaviour: automatic batching, pipelining, typed results, errors.

The engine here is a double that records the frames it receives, so the tests
can see what went over the wire; test_server_e2e.py runs the client against the
real engine.
"""
from __future__ import annotations

import asyncio
import threading

import pytest

from core_ext.codes import Code
from switch import config as config_module, protocol
from switch.client import AsyncClient, PaymentResult, SwitchError
from switch.engine import Outcome
from test_server_helpers import WALLET_ID, WALLET_SECRET, base_document, run_on, running


class RecordingEngine:
    """Approves every payment whose amount is even, refuses odd ones; records each request's op."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def process_batch(self, batch):
        outcomes = []
        for _, request in batch:
            with self.lock:
                self.ops.append((request.op, len(request.args) if request.op == "pay_batch" else 1))
            if request.error is not None:
                outcomes.append(Outcome(request.error, None))
            elif request.op == "pay":
                outcomes.append(Outcome(*self._pay(request.args)))
            elif request.op == "pay_batch":
                outcomes.append(Outcome(Code.OK, [list(self._pay(item)) for item in request.args]))
            else:
                outcomes.append(Outcome(Code.OK, None))
        return outcomes

    @staticmethod
    def _pay(item):
        if item.amount_minor % 2:
            return Code.EXCEEDS_CREDITS, None
        return Code.OK, [item.amount_minor, 1, 764, "Merchant"]


@pytest.fixture
def config():
    return config_module.parse(base_document())


def test_concurrent_pays_share_one_batch_frame_and_get_their_own_results(loop_kind, config):
    async def body():
        engine = RecordingEngine()
        async with running(engine, config) as (_, port):
            async with AsyncClient("127.0.0.1", port, WALLET_ID, WALLET_SECRET) as client:
                results = await asyncio.gather(*(client.pay(i + 1, 1001, "QR", 100 + i) for i in range(50)))
        assert engine.ops == [("pay_batch", 50)]
        assert results[0] == PaymentResult(1, Code.OK, 100, 1, 764, "Merchant") and results[0].ok
        assert results[1] == PaymentResult(2, Code.EXCEEDS_CREDITS) and not results[1].ok
        assert [result.transfer_id for result in results] == list(range(1, 51))
    run_on(loop_kind, body)


def test_a_lone_pay_travels_as_pay(loop_kind, config):
    async def body():
        engine = RecordingEngine()
        async with running(engine, config) as (_, port):
            async with AsyncClient("127.0.0.1", port, WALLET_ID, WALLET_SECRET) as client:
                assert (await client.pay(1, 1001, "QR", 2)).code == Code.OK
        assert engine.ops == [("pay", 1)]
    run_on(loop_kind, body)


def test_batches_are_split_at_the_client_limit(loop_kind, config):
    async def body():
        engine = RecordingEngine()
        async with running(engine, config) as (_, port):
            async with AsyncClient("127.0.0.1", port, WALLET_ID, WALLET_SECRET, batch_items_max=16) as client:
                results = await asyncio.gather(*(client.pay(i + 1, 1001, "QR", 2) for i in range(40)))
        assert sorted(count for _, count in engine.ops) == [8, 16, 16]
        assert all(result.ok for result in results)
    run_on(loop_kind, body)


def test_pipelined_requests_are_matched_by_request_id(loop_kind, config):
    async def body():
        async with running(RecordingEngine(), config) as (_, port):
            async with AsyncClient("127.0.0.1", port, WALLET_ID, WALLET_SECRET) as client:
                answers = await asyncio.gather(*(client.request_nowait("ping", None) for _ in range(500)))
        assert answers == [(Code.OK, None)] * 500
    run_on(loop_kind, body)


def test_a_refused_request_raises_with_its_code(loop_kind, config):
    async def body():
        async with running(RecordingEngine(), config) as (_, port):
            async with AsyncClient("127.0.0.1", port, WALLET_ID, WALLET_SECRET) as client:
                with pytest.raises(SwitchError) as error:
                    await client.request("teleport", None)
                assert error.value.code == Code.UNKNOWN_OPERATION
                await client.ping()   # the connection is still fine
    run_on(loop_kind, body)


def test_wrong_secret_fails_connect_with_authentication_failed(loop_kind, config):
    async def body():
        async with running(RecordingEngine(), config) as (_, port):
            client = AsyncClient("127.0.0.1", port, WALLET_ID, "not-the-secret-0123456789", reconnect_attempts=0)
            with pytest.raises(SwitchError) as error:
                await client.connect()
            assert error.value.code == Code.AUTHENTICATION_FAILED
    run_on(loop_kind, body)


def test_requests_fail_with_connection_lost_when_the_switch_is_gone(loop_kind, config):
    async def body():
        server_context = running(RecordingEngine(), config)
        server, port = await server_context.__aenter__()
        client = await AsyncClient("127.0.0.1", port, WALLET_ID, WALLET_SECRET, reconnect_attempts=1).connect()
        await server_context.__aexit__(None, None, None)
        with pytest.raises(SwitchError) as error:
            await client.pay(1, 1001, "QR", 2)
        assert error.value.code == Code.CONNECTION_LOST
        await client.close()
    run_on(loop_kind, body)


def test_request_ids_wrap_at_the_protocol_maximum(loop_kind, config):
    import itertools

    async def body():
        async with running(RecordingEngine(), config) as (_, port):
            async with AsyncClient("127.0.0.1", port, WALLET_ID, WALLET_SECRET) as client:
                client._request_ids = itertools.count(protocol.REQUEST_ID_MAX)
                assert await client.request_nowait("ping", None) == (Code.OK, None)   # id 2^32-1
                assert await client.request_nowait("ping", None) == (Code.OK, None)   # wraps to 1
    run_on(loop_kind, body)
