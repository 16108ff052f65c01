"""Overload: offered ten times what the switch can commit, it sheds with BUSY instead of queueing.

The engine is a double with a fixed cost per batch, so the sustainable rate is
known exactly (batch_events_max events per batch time).  Wallets pipeline ten
times that; meanwhile a client that never reads its answers and a flood of
connections past connections_max arrive.  The switch must answer every request
(OK or BUSY, in order), never hold more than queue_events_max events queued,
cut the slow reader, refuse the surplus connections, keep serving a
well-behaved client, and keep its memory within a stated bound.
"""
from __future__ import annotations

import asyncio
import resource
import threading
import time

import pytest

from core_ext.codes import Code
from switch import config as config_module, protocol
from switch.engine import Outcome
from switch.server import Server, ServerLimits
from test_server_helpers import LOOP_KINDS, OTHER_ID, OTHER_SECRET, Raw, base_document, run_on, running

BATCH_SECONDS = 0.01
BATCH_EVENTS_MAX = 64
QUEUE_EVENTS_MAX = 512
PAY_EVENTS = protocol.PAY_EVENTS
SUSTAINABLE_PAYMENTS_PER_SECOND = BATCH_EVENTS_MAX // PAY_EVENTS / BATCH_SECONDS      # 3,200
OVERLOAD_FACTOR = 10
OVERLOAD_SECONDS = 1.0
WALLETS = 4
CONNECTIONS_MAX = 16
SLOW_READER_REQUESTS = 1000
SLOW_READER_ANSWER_BYTES = 16 << 10
# Peak resident memory may grow this much during the run (the whole test process: server and clients).
# Measured: ~11 MiB for the overload alone; the slow reader adds the answers the server already
# executed for it and holds until it is cut (at most write_buffer_bytes_max, 4 MiB, plus one batch's).
RSS_GROWTH_BYTES_MAX = 64 << 20


class SlowEngine:
    """Answers pay with OK after a fixed delay per batch; records how many events waited while it ran."""

    def __init__(self) -> None:
        self.server = None
        self.queued_events_seen: list[int] = []
        self.lock = threading.Lock()

    def process_batch(self, batch):
        threading.Event().wait(BATCH_SECONDS)
        with self.lock:
            self.queued_events_seen.append(self.server._queued_events)
        return [Outcome(request.error, None) if request.error is not None else self._answer(request)
                for _, request in batch]

    @staticmethod
    def _answer(request):
        if request.op == "lookup_accounts":
            return Outcome(Code.OK, bytes(SLOW_READER_ANSWER_BYTES))    # a large answer, for the slow reader
        return Outcome(Code.OK, None)


def pay_frame(request_id: int) -> bytes:
    return protocol.pack_frame([request_id, "pay", [request_id.to_bytes(16, "big"), 1001, "QR", 5]])


async def overload_wallet(port: int, payments: int) -> list:
    """Pipeline `payments` pay requests at this wallet's share of the overload rate; every answer."""
    raw = await Raw.authenticated(port)
    per_tick = max(1, int(payments / (OVERLOAD_SECONDS / 0.01)))
    sent = 0
    reader = asyncio.ensure_future(_read_answers(raw, payments))
    while sent < payments:
        count = min(per_tick, payments - sent)
        raw.send_bytes(b"".join(pay_frame(sent + i + 1) for i in range(count)))
        sent += count
        await asyncio.sleep(0.01)
    answers = await reader
    await raw.close()
    return answers


async def _read_answers(raw: Raw, count: int) -> list:
    return [await raw.frame() for _ in range(count)]


async def slow_reader(port: int) -> bool:
    """Asks for large answers and never reads them; True when the switch cut it off."""
    raw = await Raw.authenticated(port)
    # Small requests, large answers: more than the kernel's socket buffers can hide.
    raw.send_bytes(b"".join(protocol.pack_frame([i, "lookup_accounts", [1001]])
                            for i in range(1, SLOW_READER_REQUESTS + 1)))
    raw.writer.transport.pause_reading()
    await asyncio.sleep(OVERLOAD_SECONDS + 0.5)
    raw.writer.transport.resume_reading()
    try:
        while True:
            await asyncio.wait_for(raw.reader.read(1 << 20), 5)
            if raw.reader.at_eof():
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except asyncio.TimeoutError:
        return False


async def connection_flood(port: int) -> list:
    """Connections past connections_max: each is told TOO_MANY_CONNECTIONS (or left waiting for auth)."""
    raws = [await Raw.open(port, read_challenge=False) for _ in range(CONNECTIONS_MAX + 8)]
    first_frames = [await raw.frame() for raw in raws]
    for raw in raws:
        await raw.close()
    return first_frames


async def well_behaved_client(port: int, stop: asyncio.Event) -> list:
    other = await Raw.authenticated(port, OTHER_ID, OTHER_SECRET)
    codes = []
    request_id = 0
    while not stop.is_set():
        request_id += 1
        other.send([request_id, "ping", None])
        answer = await other.frame()
        codes.append(answer[1] if answer[0] == request_id else ("out of order", answer))
        await asyncio.sleep(0.02)
    await other.close()
    return codes


# The two bounds of the queue, each alone: its events, or the time the work queued ahead would take.
EVENTS_BOUND = {"queue_events_max": QUEUE_EVENTS_MAX}
WAIT_BOUND = {"queue_events_max": 10**9, "queue_wait_ms_max": 50}
NOMINAL_EVENTS_PER_SECOND = BATCH_EVENTS_MAX / BATCH_SECONDS       # the double is never faster


@pytest.mark.parametrize("loop_kind, bound", [("asyncio", EVENTS_BOUND), ("uvloop", EVENTS_BOUND),
                                              ("uvloop", WAIT_BOUND)])
def test_ten_times_the_sustainable_rate_is_shed_with_busy_and_the_switch_stays_healthy(loop_kind, bound):
    config = config_module.parse(base_document())
    engine = SlowEngine()
    payments_per_wallet = int(SUSTAINABLE_PAYMENTS_PER_SECOND * OVERLOAD_FACTOR * OVERLOAD_SECONDS / WALLETS)
    rss_before_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    async def body():
        async with running(engine, config, batch_events_max=BATCH_EVENTS_MAX, connections_max=CONNECTIONS_MAX,
                           write_buffer_bytes_high=64 << 10, write_stall_ms_max=500, **bound) as (server, port):
            engine.server = server
            stop = asyncio.Event()
            polite = asyncio.ensure_future(well_behaved_client(port, stop))
            cut = asyncio.ensure_future(slow_reader(port))
            started = time.monotonic()
            answers = await asyncio.gather(*(overload_wallet(port, payments_per_wallet) for _ in range(WALLETS)))
            flood = await connection_flood(port)
            stop.set()
            return answers, flood, await polite, await cut, time.monotonic() - started

    answers, flood, polite_codes, slow_reader_cut, _ = run_on(loop_kind, body, timeout_seconds=60)
    for wallet_answers in answers:
        assert [answer[0] for answer in wallet_answers] == list(range(1, payments_per_wallet + 1))
    codes = [answer[1] for wallet_answers in answers for answer in wallet_answers]
    assert set(codes) == {Code.OK, Code.BUSY}
    assert codes.count(Code.BUSY) > codes.count(Code.OK)        # most of a tenfold overload is shed
    if bound is EVENTS_BOUND:
        assert max(engine.queued_events_seen) <= QUEUE_EVENTS_MAX   # the queue never grew past its bound
    else:   # never more queued than the nominal rate commits in queue_wait_ms_max (or one batch)
        wait_budget_events = max(BATCH_EVENTS_MAX, NOMINAL_EVENTS_PER_SECOND * WAIT_BOUND["queue_wait_ms_max"] / 1000)
        assert max(engine.queued_events_seen) <= wait_budget_events + PAY_EVENTS
    assert slow_reader_cut
    assert Code.TOO_MANY_CONNECTIONS in {frame[1] for frame in flood}
    assert polite_codes and set(polite_codes) == {Code.OK}      # the other client was served throughout
    rss_after_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert rss_after_bytes - rss_before_bytes < RSS_GROWTH_BYTES_MAX


def make_server(**limit_overrides) -> Server:
    return Server(SlowEngine(), config_module.parse(base_document()), ServerLimits(**limit_overrides))


def learnt(server: Server, fixed_ns: int, executed_ns: int, events: int) -> Server:
    """The server as if its batches so far cost `fixed_ns` per commit and executed `events` in `executed_ns`."""
    server.commit_fixed_ns = fixed_ns
    server._executed_ns, server._executed_events = executed_ns, events
    return server


def test_queue_wait_bound_at_the_limit_and_one_past():
    # 5 ms per commit, 20 us per event, twice that planned: 2 commits + 2,000 events = 100 ms.
    server = learnt(make_server(batch_events_max=1_000, queue_events_max=10**6, queue_wait_ms_max=100),
                    5_000_000, 20_000, 1)
    server._queued_events = 1_000
    assert server.predicted_wait_ns(2_000) == 100_000_000
    assert not server._over_queue_bounds(1_000)
    assert server._over_queue_bounds(1_001)                # a third commit and one event more
    server._running_events = 500                           # the batch committing now is work ahead too
    assert not server._over_queue_bounds(250)              # 3 commits + 1,750 events = 100 ms
    assert server._over_queue_bounds(251)


def test_what_the_next_commits_carry_is_admitted_after_one_slow_fsync():
    # A closed loop: 2,048 events committing, as many queued; one fsync of 40 ms among 2 ms ones.
    server = make_server(batch_events_max=8_190, queue_events_max=10**6, queue_wait_ms_max=100)
    for _ in range(8):
        server._note_commit_cost(2_048, 10_000_000, 2_000_000)
    server._note_commit_cost(2_048, 10_000_000, 40_000_000)
    assert server.commit_fixed_ns == 2_000_000 + 38_000_000 // 4
    server._running_events, server._queued_events = 2_048, 2_047
    assert 84_000_000 < server.predicted_wait_ns(2_048) < 88_000_000   # 2 x (2 x 11.5 ms + 4,096 x 4.9 us)
    assert not server._over_queue_bounds(1)
    server._note_commit_cost(2_048, 200_000_000, 2_000_000)  # the engine thread stalled: 20x slower, once
    assert not server._over_queue_bounds(1)
    for _ in range(12):                                    # it lasts: learnt, and the loop is shed
        server._note_commit_cost(2_048, 200_000_000, 2_000_000)
    assert server._over_queue_bounds(1)
    server._queued_events = 12_000                         # a flood: more than the budget's worth waits
    assert server._over_queue_bounds(2)


def test_an_empty_queue_takes_a_request_and_before_the_costs_are_known_one_batch_may_wait():
    server = make_server(batch_events_max=10, queue_events_max=10**6, queue_wait_ms_max=1)
    assert server._executed_events == 0                    # nothing committed yet
    assert not server._over_queue_bounds(10)
    server._queued_events = 4
    assert not server._over_queue_bounds(6)
    assert server._over_queue_bounds(7)
    learnt(server, 0, 10**12, 1)                           # absurdly slow: only an empty queue takes work
    assert server._over_queue_bounds(1)
    server._queued_events = 0
    assert not server._over_queue_bounds(10)


def test_the_events_bound_holds_whatever_the_costs():
    server = learnt(make_server(batch_events_max=10, queue_events_max=1_000, queue_wait_ms_max=100), 0, 0, 1)
    server._queued_events = 1
    assert not server._over_queue_bounds(999)
    assert server._over_queue_bounds(1_000)


def test_the_costs_are_learnt_apart_and_smoothed():
    server = make_server(batch_events_max=100)
    server._note_commit_cost(100, 1_000_000, 5_000_000)    # the first batch is believed: 10 us/event, 5 ms
    assert (server.commit_fixed_ns, server._executed_ns, server._executed_events) == (5_000_000, 1_000_000, 100)
    server._note_commit_cost(100, 1_000_000, 45_000_000)   # one slow fsync moves the fixed cost a quarter
    assert server.commit_fixed_ns == 15_000_000
    assert (server._executed_ns, server._executed_events) == (750_000 + 1_000_000, 75 + 100)
    server._note_commit_cost(10, 1_000_000, 15_000_000)    # a small slow batch: its 10 events at 2 x 10 us
    assert (server._executed_ns, server._executed_events) == (1_312_500 + 200_000, 131 + 10)
    server._note_commit_cost(50, 5_000_000, 15_000_000)    # half full and slower: believed at once
    assert (server._executed_ns, server._executed_events) == (5_000_000, 50)
    server._note_commit_cost(100, 1_000_000, 15_000_000)   # a faster full one is blended in
    assert (server._executed_ns, server._executed_events) == (3_750_000 + 1_000_000, 37 + 100)
    server._note_commit_cost(100, 1_000_000, 0)            # a failed batch (no write) teaches nothing
    assert (server._executed_ns, server._executed_events) == (4_750_000, 137)
    assert server.commit_fixed_ns == 15_000_000
