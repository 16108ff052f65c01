"""The load generator's own hot paths: what one answer and one sent frame cost it.

* `answers_single`: 4,096 `pay` answers read by the connection's answer loop (ids checked, codes
  counted, latency recorded per send group), as after one large read;
* `answers_batch`: 16 `pay_batch` answers of 256 items each (4,096 payments);
* `send_slices`: 4,096 pre-encoded frames taken from the ring in slices of 64, as the closed loop
  refills a connection; `send_slices_after_wrap`: the same once the ring has wrapped, when every
  transfer id is re-randomised before it is sent again (what an undersized --stream-items costs).

Per-payment medians are in each row's extra_info (`per_payment_ns_median`); 1e9 over it bounds
the payments per second one generator core can drive. Run: `make bench` or
`.venv/bin/python -m pytest bench/load/test_bench_loadgen.py --benchmark-only`.
"""
from __future__ import annotations

import asyncio
import time

import msgpack
import pytest

from switch.loadgen.connection import LoadConnection
from switch.loadgen.frames import FrameRing
from switch.loadgen.recorder import Recorder
from switch.loadgen.stream import Item

PAYMENTS = 4_096
_DETAIL = [15_000, 187, 356, "Merchant 17"]


class _NullTransport:
    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False


def _items(count: int) -> list[Item]:
    args = msgpack.packb([bytes(range(16)), 100_000_001, "upi://pay?pa=m0000001@okswitch&pn=M&cu=INR", 1_000, "dev-1"],
                         use_bin_type=True)
    return [Item(0, "static", args, 3)] * count


def _frame(body: list) -> bytes:
    packed = msgpack.packb(body, use_bin_type=True)
    return len(packed).to_bytes(4, "big") + packed


@pytest.fixture
def loop():
    event_loop = asyncio.new_event_loop()
    asyncio.set_event_loop(event_loop)
    yield event_loop
    event_loop.close()


def _connection(loop, batch_items: int, ring_payments: int = 2 * PAYMENTS) -> LoadConnection:
    """A connection on a null transport; its ring is twice a round unless a test wants wraps."""
    async def make() -> LoadConnection:
        ring = FrameRing(_items(ring_payments), batch_items)
        connection = LoadConnection(ring, 1, b"secret", Recorder(0, 2**62))
        connection.transport = _NullTransport()
        connection.handshaking = False
        return connection
    return loop.run_until_complete(make())


def _answers(frame_count: int, batch_items: int) -> bytes:
    if batch_items == 1:
        return b"".join(_frame([request_id, 0, _DETAIL]) for request_id in range(1, frame_count + 1))
    return b"".join(_frame([request_id, 0, [[0, _DETAIL]] * batch_items]) for request_id in range(1, frame_count + 1))


def _rewind(connection: LoadConnection) -> None:
    """Back to the ring's start without a wrap: every round sends the same, unpatched frames."""
    connection.next_frame, connection.expected_request_id = 0, 1
    connection.groups.clear()


def _read_round(connection: LoadConnection, answers: bytes, frame_count: int) -> None:
    connection.send(frame_count, time.monotonic_ns())
    connection.data_received(answers)
    assert connection.in_flight_frames() == 0
    _rewind(connection)


def _record(benchmark) -> None:
    benchmark.extra_info["per_payment_ns_median"] = round(benchmark.stats.stats.median * 1e9 / PAYMENTS, 1)


@pytest.mark.parametrize("batch_items", [1, 256], ids=["answers_single", "answers_batch"])
def test_answer_loop(benchmark, loop, batch_items):
    connection = _connection(loop, batch_items)
    frame_count = PAYMENTS // batch_items
    answers = _answers(frame_count, batch_items)
    benchmark(_read_round, connection, answers, frame_count)
    assert connection.recorder.errors == []
    _record(benchmark)


@pytest.mark.parametrize("wrapped", [False, True], ids=["send_slices", "send_slices_after_wrap"])
def test_send_slices(benchmark, loop, wrapped):
    connection = _connection(loop, 1, PAYMENTS if wrapped else 2 * PAYMENTS)

    def send_all() -> None:
        for _ in range(PAYMENTS // 64):
            connection.send(64, 0)
        if wrapped:
            connection.groups.clear()  # the ring wrapped by itself: the next round patches every id
        else:
            _rewind(connection)

    benchmark(send_all)
    assert (connection.ring.epoch > 0) == wrapped
    _record(benchmark)
