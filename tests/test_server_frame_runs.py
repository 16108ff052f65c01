"""FrameRuns: a connection's complete pay / pay_batch frames cut as ONE request (Pipeline.cut),
run in one call (Pipeline.run_frames) and answered with one bytes -- on both cores, the same
answers `run` gives frame by frame, and over TCP the same order, ids, limits and BUSY."""
from __future__ import annotations

import msgpack
import pytest

from core_ext.codes import Code
from switch import protocol
from switch.engine import OP_RAW_RUN, EncodedRun
from switch.protocol import FrameRun, refusal_frames
import test_server_helpers as fixtures
from test_pipeline import body, pay_args
from test_pipeline_rules import NOW_NS, make_engine
from test_pipeline_server import open_engine, pay_item
from test_server_helpers import LOOP_KINDS, Raw, run_on, running

FRAME_BYTES_MAX = 1 << 20
UNLIMITED = 1 << 40


def framed(*bodies: bytes) -> bytes:
    return b"".join(protocol.LENGTH_PREFIX.pack(len(raw)) + raw for raw in bodies)


def cut(impl, data: bytes, start: int = 0, frames_max: int = UNLIMITED, budget: int = UNLIMITED,
        events_max: int = UNLIMITED) -> tuple[int, int, int, int]:
    return impl.Pipeline.cut(bytearray(data), start, len(data), frames_max, budget, events_max, FRAME_BYTES_MAX)


PAY = body(1, "pay", pay_args(1))
BATCH = body(2, "pay_batch", [pay_args(2), pay_args(3), pay_args(4)])
PING = body(3, "ping", None)


# ---- Pipeline.cut -------------------------------------------------------------------------

def test_cut_takes_the_pay_frames_at_the_front_and_stops_before_any_other(impl):
    data = framed(PAY, BATCH, PING, PAY)
    assert cut(impl, data) == (2, 8 + len(PAY) + len(BATCH), 2 + 6, len(PAY) + len(BATCH))
    assert cut(impl, data, start=8 + len(PAY) + len(BATCH)) == (0, 8 + len(PAY) + len(BATCH), 0, 0)


def test_cut_leaves_an_incomplete_frame_and_a_refused_length_to_the_caller(impl):
    whole = framed(PAY, PAY)
    assert cut(impl, whole[:-1])[:2] == (1, 4 + len(PAY))
    assert cut(impl, whole[:3]) == (0, 0, 0, 0)
    assert cut(impl, b"\x00\x00\x00\x00" + PAY) == (0, 0, 0, 0)                        # FRAME_EMPTY
    too_large = protocol.LENGTH_PREFIX.pack(FRAME_BYTES_MAX + 1) + PAY
    assert cut(impl, too_large) == (0, 0, 0, 0)                                         # FRAME_TOO_LARGE


def test_cut_stops_at_each_bound_but_always_takes_one_frame(impl):
    data = framed(PAY, PAY, PAY)
    assert cut(impl, data, frames_max=2)[0] == 2
    assert cut(impl, data, frames_max=0)[0] == 0
    # The byte budget is checked before each frame, like the in-flight limit: one frame past it.
    assert cut(impl, data, budget=len(PAY))[0] == 1
    assert cut(impl, data, budget=len(PAY) + 1)[0] == 2
    assert cut(impl, data, events_max=4)[0] == 2
    assert cut(impl, data, events_max=5)[0] == 2
    assert cut(impl, data, events_max=1)[0] == 1


def test_cut_refuses_offsets_outside_the_buffer(impl):
    with pytest.raises(ValueError):
        impl.Pipeline.cut(bytearray(framed(PAY)), 0, 1000, 1, 1, 1, FRAME_BYTES_MAX)


# ---- Pipeline.run_frames ------------------------------------------------------------------

def test_run_frames_answers_what_run_answers_frame_by_frame(impl):
    bodies = [PAY, BATCH, body(4, "pay", pay_args(1)), body(5, "pay", [b"short", 1, "x", 1]),
              body(6, "pay", pay_args(5, 10**12)), body(7, "pay_batch", [pay_args(6, payload="garbage")])]
    one_by_one, together = make_engine(impl), make_engine(impl)
    participant = fixtures.WALLET_ID
    expected = [one_by_one.pipeline.run(participant, raw, NOW_NS) for raw in bodies]
    frames, counted = together.pipeline.run_frames(participant, framed(*bodies), NOW_NS)
    assert frames == b"".join(expected)
    answers = [msgpack.unpackb(frame[4:]) for frame in expected]
    codes = [answer[1] for answer in answers]
    assert codes == [Code.OK, Code.OK, Code.EXISTS, Code.INVALID_ARGUMENTS, Code.EXCEEDS_CREDITS, Code.OK]
    assert counted == {Code.OK: 3, Code.EXISTS: 1, Code.INVALID_ARGUMENTS: 1, Code.EXCEEDS_CREDITS: 1}
    assert list(counted) == [Code.OK, Code.EXISTS, Code.INVALID_ARGUMENTS, Code.EXCEEDS_CREDITS]
    assert together.ledger.lookup_accounts([fixtures.PAYER]) == one_by_one.ledger.lookup_accounts([fixtures.PAYER])


def test_run_frames_refuses_a_truncated_frame(impl):
    engine = make_engine(impl)
    with pytest.raises(ValueError):
        engine.pipeline.run_frames(fixtures.WALLET_ID, framed(PAY)[:-1], NOW_NS)


def test_the_engine_answers_a_frame_run_with_its_first_code_that_is_not_ok(impl):
    engine = make_engine(impl)
    participant = engine.config.participants[fixtures.WALLET_ID]
    run = FrameRun(framed(PAY, body(9, "pay", pay_args(1)), PAY), 3, 6, 3 * len(PAY))
    assert run.op == OP_RAW_RUN and run.count == 3
    outcome, = engine.process_batch([(participant, run)])
    assert type(outcome) is EncodedRun
    assert outcome.code == Code.EXISTS and outcome.codes == {Code.OK: 1, Code.EXISTS: 2}


def test_refusal_frames_answer_every_frame_under_its_own_id(impl):
    answers = refusal_frames(framed(PAY, BATCH), Code.BUSY, lambda raw: impl.Pipeline.peek(raw)[1])
    first_length = int.from_bytes(answers[:4], "big")
    second = answers[4 + first_length:]
    assert msgpack.unpackb(answers[4:4 + first_length]) == [1, Code.BUSY, None]
    assert msgpack.unpackb(second[4:]) == [2, Code.BUSY, None]


# Every msgpack width of a request id, 0 to 2^64-1; peek reads 1..REQUEST_ID_MAX, the others answer under 0.
REFUSAL_IDS = [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0xFFFFFFFF, 0x100000000, 2**64 - 1]


def answered_id(request_id: int) -> int:
    return request_id if 1 <= request_id <= protocol.REQUEST_ID_MAX else 0


def refusal_run(frames: int) -> bytes:
    """`frames` pay and pay_batch frames, alternating, cycling through REFUSAL_IDS."""
    bodies = []
    for index in range(frames):
        request_id = REFUSAL_IDS[index % len(REFUSAL_IDS)]
        op_args = ("pay", pay_args(index)) if index % 2 else ("pay_batch", [pay_args(index), pay_args(index + 1)])
        bodies.append(body(request_id, *op_args))
    return framed(*bodies)


@pytest.mark.parametrize("frames", [1, 2, 3, len(REFUSAL_IDS), 2 * len(REFUSAL_IDS) + 1])
def test_refuse_frames_gives_the_bytes_of_refusal_frames_on_both_cores(compiled, reference, frames):
    run = refusal_run(frames)
    for code in Code:
        expected = refusal_frames(run, code, lambda raw: reference.Pipeline.peek(raw)[1])
        assert compiled.Pipeline.refuse_frames(run, code) == expected
        assert reference.Pipeline.refuse_frames(run, code) == expected
    answers = compiled.Pipeline.refuse_frames(run, Code.BUSY)
    unpacker = msgpack.Unpacker()
    position = 0
    while position < len(answers):
        length = int.from_bytes(answers[position:position + 4], "big")
        unpacker.feed(answers[position + 4:position + 4 + length])
        position += 4 + length
    assert list(unpacker) == [[answered_id(REFUSAL_IDS[index % len(REFUSAL_IDS)]), Code.BUSY, None]
                              for index in range(frames)]


@pytest.mark.parametrize("cut_at", [1, 3, 5, len(PAY) + 3])
def test_refuse_frames_refuses_a_frame_that_runs_past_the_end(impl, cut_at):
    with pytest.raises(ValueError, match="past the end"):
        impl.Pipeline.refuse_frames(framed(PAY)[:cut_at], Code.BUSY)


def test_refuse_frames_of_nothing_is_nothing(impl):
    assert impl.Pipeline.refuse_frames(b"", Code.BUSY) == b""


# ---- over TCP -----------------------------------------------------------------------------

def pay_frame(request_id: int, transfer_id: int) -> list:
    return [request_id, "pay", pay_item(transfer_id)]


def answers_to(tmp_path, loop_kind, frames: list, **limit_overrides) -> tuple[list, dict]:
    """Every answer to `frames` sent in ONE write on a fresh switch, and its request counters."""
    engine, config = open_engine(tmp_path)

    async def scenario():
        async with running(engine, config, **limit_overrides) as (server, port):
            raw = await Raw.authenticated(port)
            raw.send_bytes(b"".join(protocol.pack_frame(frame) for frame in frames))
            answers = [await raw.frame() for _ in frames]
            await raw.close()
            return answers, dict(server.ops.requests)

    try:
        return run_on(loop_kind, scenario)
    finally:
        engine.close()


@pytest.mark.parametrize("loop_kind", LOOP_KINDS)
def test_frames_sent_in_one_write_are_answered_in_order_as_runs(tmp_path, loop_kind):
    frames = [pay_frame(request_id, request_id) for request_id in range(1, 41)]
    frames[20] = [21, "ping", None]
    answers, requests = answers_to(tmp_path, loop_kind, frames)
    assert [answer[0] for answer in answers] == list(range(1, 41))
    assert [answer[1] for answer in answers] == [Code.OK] * 40
    assert requests[("raw_pay", Code.OK)] == 39 and requests[("ping", Code.OK)] == 1


@pytest.mark.parametrize("loop_kind", LOOP_KINDS)
def test_a_run_past_the_in_flight_limit_is_cut_at_the_limit(tmp_path, loop_kind):
    frames = [pay_frame(request_id, request_id) for request_id in range(1, 11)]
    answers, _ = answers_to(tmp_path, loop_kind, frames, in_flight_requests_max=3)
    assert [answer[0] for answer in answers] == list(range(1, 11))
    assert all(answer[1] == Code.OK for answer in answers)


@pytest.mark.parametrize("loop_kind", LOOP_KINDS)
def test_a_shed_run_is_answered_busy_frame_by_frame(tmp_path, loop_kind):
    frames = [pay_frame(request_id, 200 + request_id) for request_id in range(1, 31)]
    answers, requests = answers_to(tmp_path, loop_kind, frames, queue_events_max=4, batch_events_max=8)
    assert [answer[0] for answer in answers] == list(range(1, 31))
    codes = [answer[1] for answer in answers]
    assert set(codes) == {Code.OK, Code.BUSY}
    assert all(answer[2] is None for answer in answers if answer[1] == Code.BUSY)
    assert requests[("raw_pay", Code.BUSY)] == codes.count(Code.BUSY)
