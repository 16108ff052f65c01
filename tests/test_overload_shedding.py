"""Shedding without queueing: a BUSY answer never waits for a batch it is not behind, never enters one,
and keeps its place in its connection's answer order; a client that stops reading is cut once it
holds more than write_buffer_bytes_max of answers.

The engine double blocks on an event the test controls, so "while a batch is committing" is a
state the test holds, not a race it hopes to win; nothing here asserts a duration.
"""
from __future__ import annotations

import asyncio
import collections
import threading

import msgpack
import pytest

from core_ext import limits
from core_ext.codes import Code
from switch import config as config_module, protocol
from switch.engine import Outcome
from switch.server import CLOSED, OPEN, Connection, Server, ServerLimits
from test_server_helpers import (LOOP_KINDS, OTHER_ID, OTHER_SECRET, WALLET_ID, WALLET_SECRET, Raw, base_document,
                                 run_on, running)

PAY_EVENTS = protocol.PAY_EVENTS


class GatedEngine:
    """Holds every batch until the test opens the gate; records the requests each batch carried."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[int]] = []

    def process_batch(self, batch):
        self.entered.set()
        self.gate.wait(10)
        self.batches.append([request.request_id for _, request in batch])
        return [Outcome(request.error, None) if request.error is not None else Outcome(Code.OK, None)
                for _, request in batch]


def pay(request_id: int) -> list:
    return [request_id, "pay", [request_id.to_bytes(16, "big"), 1001, "QR", 5]]


async def wait_for_thread_event(event: threading.Event) -> None:
    await asyncio.get_running_loop().run_in_executor(None, event.wait, 10)


async def until(condition) -> None:
    """Until the in-process server reached a state (the test's own timeout bounds the wait)."""
    while not condition():
        await asyncio.sleep(0.001)


def shed_count(server, op: str) -> int:
    return server.ops.requests[(op, Code.BUSY)]


@pytest.mark.parametrize("loop_kind", LOOP_KINDS)
def test_busy_goes_out_while_a_batch_commits_and_keeps_its_place_behind_earlier_answers(loop_kind):
    engine = GatedEngine()
    config = config_module.parse(base_document())

    async def body():
        # One payment may queue behind the running batch (its events are the whole queue bound).
        async with running(engine, config, queue_events_max=PAY_EVENTS, batch_events_max=PAY_EVENTS) as (server, port):
            wallet = await Raw.authenticated(port)
            other = await Raw.authenticated(port, OTHER_ID, OTHER_SECRET)
            wallet.send(pay(1))
            await wait_for_thread_event(engine.entered)             # batch [1] is in the engine, held
            wallet.send_bytes(b"".join(protocol.pack_frame(pay(i)) for i in (2, 3, 4)))   # 2 queues; 3, 4 shed
            await until(lambda: shed_count(server, "pay") == 2)
            other.send(pay(50))                                     # shed: nothing of `other` is owed
            busy_while_held = await other.frame()
            held_batches = len(engine.batches)
            engine.gate.set()
            wallet_answers = [await wallet.frame() for _ in range(4)]
            wallet.send(pay(5))                                     # the queue drained: accepted again
            after = await wallet.frame()
            stats = server.ops.snapshot()
            await wallet.close()
            await other.close()
            return busy_while_held, held_batches, wallet_answers, after, stats

    busy_while_held, held_batches, wallet_answers, after, stats = run_on(loop_kind, body)
    assert busy_while_held == [50, Code.BUSY, None]
    assert held_batches == 0                # answered BUSY before the running batch finished
    assert [answer[0] for answer in wallet_answers] == [1, 2, 3, 4]
    assert [answer[1] for answer in wallet_answers] == [Code.OK, Code.OK, Code.BUSY, Code.BUSY]
    assert after[:2] == [5, Code.OK]
    # Shed requests never reach the engine, and are still counted by the statistics.
    assert engine.batches == [[1], [2], [5]]
    assert ["pay", Code.BUSY, 3] in stats["requests"]


class FakeTransport:
    def __init__(self, unsent_bytes: int) -> None:
        self.unsent_bytes = unsent_bytes
        self.written: list[bytes] = []
        self.aborted = False
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return self.unsent_bytes

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


def open_connection(unsent_bytes: int, **limit_overrides) -> Connection:
    server = Server(GatedEngine(), config_module.parse(base_document()), ServerLimits(**limit_overrides))
    connection = Connection(server)
    connection.transport = FakeTransport(unsent_bytes)
    connection.state = OPEN
    return connection


def answer_one(connection: Connection, behind_before: bool) -> None:
    """One request in flight, answered while the client was (or was not) already behind."""
    connection.in_flight, connection.in_flight_bytes = 1, 10
    connection.in_flight_sizes.append(10)
    connection.behind_at_last_answer = behind_before
    connection.answered(1, 1)


@pytest.mark.parametrize("unsent, cut", [(1_000, False), (1_001, True)])
def test_a_client_already_behind_is_cut_past_write_buffer_bytes_max(unsent, cut):
    connection = open_connection(unsent, write_buffer_bytes_max=1_000)
    answer_one(connection, behind_before=True)
    assert connection.transport.aborted is cut
    assert (connection.state == CLOSED) is cut


def test_one_burst_to_a_client_that_kept_up_is_not_cut_however_large():
    connection = open_connection(10**9, write_buffer_bytes_max=1_000)
    answer_one(connection, behind_before=False)
    assert not connection.transport.aborted


def test_the_default_cut_off_is_above_the_point_where_reading_stops():
    assert limits.WRITE_BUFFER_BYTES_HIGH < limits.WRITE_BUFFER_BYTES_MAX


def shed_behind_one_request(connection: Connection, count: int) -> None:
    """One request of `connection` in a batch, then `count` more shed behind it."""
    server = connection.server
    server.submit(connection, protocol.Request(1, "pay", None, events=PAY_EVENTS))
    server.limits.queue_events_max = 0                     # everything from now on is shed
    for request_id in range(2, count + 2):
        connection.in_flight += 1
        connection.in_flight_sizes.append(10)
        server.submit(connection, protocol.Request(request_id, "pay", None, events=PAY_EVENTS))


@pytest.mark.parametrize("held, reading_stops", [(3, False), (4, True)])
def test_busy_answers_held_behind_a_batch_stop_reading_at_busy_answers_held_max(held, reading_stops):
    connection = open_connection(0, busy_answers_held_max=4)
    connection.server._wakeup = asyncio.Event()
    shed_behind_one_request(connection, held)
    assert connection.busy_held == held
    assert connection._in_flight_full() is reading_stops
    assert connection.transport.written == []               # none may overtake the answer owed first


def test_held_busy_answers_follow_their_batch_answer_and_release_the_connection():
    connection = open_connection(0, busy_answers_held_max=4)
    connection.server._wakeup = asyncio.Event()
    connection.in_flight, connection.in_flight_sizes = 1, collections.deque([10])
    shed_behind_one_request(connection, 4)
    batch, _ = connection.server._take_batch()
    connection.server._answer(batch, [Outcome(Code.OK, None)])
    answers = msgpack.Unpacker(raw=False)
    answers.feed(b"".join(frame[4:] for frame in split_frames(b"".join(connection.transport.written))))
    assert [[answer[0], answer[1]] for answer in answers] == [[1, Code.OK]] + [[i, Code.BUSY] for i in range(2, 6)]
    assert connection.busy_held == 0 and connection.in_flight == 0
    assert not connection._in_flight_full()


def split_frames(data: bytes) -> list[bytes]:
    frames = []
    while data:
        size = 4 + int.from_bytes(data[:4], "big")
        frames.append(data[:size])
        data = data[size:]
    return frames


class FakeLoop:
    def __init__(self) -> None:
        self.soon: list = []

    def call_soon(self, callback, *args) -> None:
        self.soon.append((callback, args))


def receive(connection: Connection, data: bytes) -> None:
    buffer = connection.get_buffer(len(data))
    buffer[:len(data)] = data
    connection.buffer_updated(len(data))


@pytest.mark.parametrize("frame, sheds", [(pay(7), True), ([7, "ping", None], False)])
def test_a_read_that_sheds_lets_the_event_loop_turn_before_the_next_read(frame, sheds):
    connection = open_connection(0, queue_events_max=0)      # every payment is shed; ping never is
    connection.server.loop, connection.server._wakeup = FakeLoop(), asyncio.Event()
    receive(connection, protocol.pack_frame(frame))
    assert connection.transport.reading is not sheds
    assert len(connection.server.loop.soon) == int(sheds)
    for callback, args in connection.server.loop.soon:      # the loop's next turn
        callback(*args)
    assert connection.transport.reading


@pytest.mark.parametrize("loop_kind", LOOP_KINDS)
def test_connections_that_do_not_authenticate_are_refused_past_handshakes_max(loop_kind):
    config = config_module.parse(base_document())

    async def body():
        async with running(GatedEngine(), config, handshakes_max=3) as (_, port):
            silent = [await Raw.open(port) for _ in range(3)]           # at the limit: each is challenged
            refused = await Raw.open(port, read_challenge=False)        # one past it
            first_frame = await refused.frame()
            silent[0].send(protocol.auth_message(WALLET_ID, WALLET_SECRET.encode(), silent[0].challenge[3]))
            welcome = await silent[0].frame()                           # authenticated: a handshake slot frees
            admitted = await Raw.open(port)
            for raw in silent + [refused, admitted]:
                await raw.close()
            return [raw.challenge[0] for raw in silent], first_frame, welcome, admitted.challenge[0]

    challenges, first_frame, welcome, admitted = run_on(loop_kind, body)
    assert challenges == ["challenge"] * 3
    assert first_frame == [0, Code.TOO_MANY_CONNECTIONS, None]
    assert welcome[:2] == [0, Code.OK]
    assert admitted == "challenge"


class GatedRealEngine:
    """The real engine (pipeline, rules, ledger) behind a gate the test opens."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.pipeline = engine.pipeline           # the server's fast path peeks with it

    def process_batch(self, batch):
        self.entered.set()
        self.gate.wait(10)
        return self.engine.process_batch(batch)

    def __getattr__(self, name):
        return getattr(self.engine, name)


@pytest.mark.parametrize("loop_kind", LOOP_KINDS)
def test_with_the_real_engine_nothing_of_a_busy_payment_is_applied(tmp_path, loop_kind):
    from test_pipeline_server import open_engine, pay_item

    engine, config = open_engine(tmp_path)
    gated = GatedRealEngine(engine)

    async def scenario():
        async with running(gated, config, queue_events_max=PAY_EVENTS) as (server, port):
            raw = await Raw.authenticated(port)
            raw.send([1, "pay_batch", [pay_item(1)]])
            await wait_for_thread_event(gated.entered)           # batch [1] is in the engine, held
            raw.send_bytes(b"".join(protocol.pack_frame([i, "pay_batch", [pay_item(i)]]) for i in range(2, 7)))
            await until(lambda: shed_count(server, "raw_pay") == 4)
            gated.gate.set()
            answers = [await raw.frame() for _ in range(6)]
            retries = []
            for i in range(3, 7):                                   # the shed ones, sent again one by one
                raw.send([10 + i, "pay_batch", [pay_item(i)]])
                retries.append(await raw.frame())
            stats = server.ops.snapshot()
            await raw.close()
            return answers, retries, stats

    try:
        answers, retries, stats = run_on(loop_kind, scenario)
    finally:
        engine.close()
    assert [answer[0] for answer in answers] == [1, 2, 3, 4, 5, 6]
    assert [answer[1] for answer in answers] == [Code.OK, Code.OK] + [Code.BUSY] * 4
    assert all(answer[2] is None for answer in answers[2:])
    # Applied now, not EXISTS: nothing of the BUSY requests had reached the ledger.
    assert [(retry[0], retry[1], retry[2][0][0]) for retry in retries] == [(10 + i, Code.OK, Code.OK) for i in range(3, 7)]
    assert ["raw_pay", Code.BUSY, 4] in stats["requests"]
