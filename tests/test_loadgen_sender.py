"""The compiled open-loop sender (core_ext/_loadsend.pyx) and what comes with it: the schedule
honoured, every frame answered once, the in-flight FIFO holding sends back, a closed socket
reported (not a hang), answers' codes peeked, the stream sized to the run, the bare-fsync probe.

Counts are checked, never timings: an open loop's count is fixed by its schedule (frames whose
intended instant falls in the window), whatever the machine's load."""
from __future__ import annotations

import json
import socket
import threading
import time

import msgpack
import pytest
from click.testing import CliRunner

from core_ext import limits
from core_ext._loadsend import OpenLoop
from switch.commands.bench import bench
from switch.loadgen import RunSettings, bare_fsync, run_load
from switch.loadgen import report as report_module
from switch.loadgen.runner import STREAM_ITEMS_CLOSED_LOOP, STREAM_ITEMS_SIZED_MAX, items_needed
from test_loadgen import _report, echo_peer, small_workload  # noqa: F401 - the fixture, shared

JOIN_TIMEOUT_S = 20.0       # a hang, not a speed: every loop below ends well within a second
DRAIN_NS = 5_000_000_000    # a sender stalled by a busy machine still catches up within this


# ---- against the echo peer -----------------------------------------------------------------

class TestAgainstTheEchoPeer:
    def test_the_schedule_is_honoured_and_every_frame_answered_once(self, small_workload):
        with echo_peer() as port:
            settings = RunSettings(port=port, mode="open", rate_per_s=3_000, connections=4, warmup_s=0.2,
                                   duration_s=1.0)
            report = run_load(small_workload, settings)
        # 3,000/s for 1 s: the frames due in the window, whatever the load (each connection's
        # first frame is staggered, so a few either way); a sender ignoring the schedule would
        # have sent tens of thousands, one answering twice would count more.
        assert report["count"] == pytest.approx(3_000, abs=8)
        assert report["by_code"] == {"OK": report["count"]}
        assert report["offered_achieved_per_s"] == pytest.approx(report["count"], rel=0.2)
        assert report["errors"] == [] and report["unanswered_frames"] == 0 and report["stream_wraps"] == 0
        assert report["settings"]["sender"] == "c"
        assert report["send_lag_us"]["p50"] <= report["send_lag_us"]["p99"] <= report["send_lag_us"]["max"]
        assert report["latency_us"]["p50"] <= report["latency_us"]["p99"] <= report["latency_us"]["max"]
        assert sum(point["count"] for point in report["timeline"]) == report["count"]

    def test_batch_frames_count_every_item_and_the_stream_does_not_wrap(self, small_workload):
        with echo_peer() as port:
            settings = RunSettings(port=port, mode="open", rate_per_s=40_000, batch_items=50, connections=2,
                                   warmup_s=0.1, duration_s=0.5)
            report = run_load(small_workload, settings)
        assert report["count"] == pytest.approx(20_000, abs=2 * 50)
        assert report["count"] % 50 == 0 and report["by_code"] == {"OK": report["count"]}
        assert report["stream_wraps"] == 0 and report["errors"] == []

    def test_a_full_in_flight_fifo_holds_sends_back_and_the_lateness_shows(self, small_workload):
        # The peer answers one frame per 20 ms (50/s); 2 connections may each have 2 in flight.
        # Offered 400/s, the sender can only write as answers free the FIFO: far fewer than offered,
        # and the frames held back are late by hundreds of milliseconds, in send lag and latency.
        # (It goes on catching up after the window, until the drain deadline: then it gives up.)
        with echo_peer(service_ms=20) as port:
            settings = RunSettings(port=port, mode="open", rate_per_s=400, connections=2, warmup_s=0.0,
                                   duration_s=1.0, in_flight_max=2, drain_timeout_s=1.0)
            report = run_load(small_workload, settings)
        assert report["offered_achieved_per_s"] < 0.5 * 400
        assert report["count"] < 0.5 * 400
        assert report["send_lag_us"]["max"] > 200_000 and report["latency_us"]["max"] > 200_000
        assert any("never written" in error for error in report["errors"])

    def test_the_python_sender_stays_available(self, small_workload):
        with echo_peer() as port:
            settings = RunSettings(port=port, mode="open", rate_per_s=1_000, connections=2, warmup_s=0.1,
                                   duration_s=0.5, sender="python")
            report = run_load(small_workload, settings)
        assert report["count"] == pytest.approx(500, abs=4) and report["settings"]["sender"] == "python"


# ---- the compiled loop on a socket pair: exact counts -------------------------------------

def _frame(request_id: int) -> bytes:
    body = msgpack.packb([request_id, "ping", None])
    return len(body).to_bytes(4, "big") + body


def _answer(request_id: int, code: int, result=None) -> bytes:
    body = msgpack.packb([request_id, code, result])
    return len(body).to_bytes(4, "big") + body


def _read_frames(peer: socket.socket, count: int) -> list:
    """`count` whole frames from the peer side, decoded."""
    unpacker, frames, buffer = msgpack.Unpacker(), [], b""
    peer.settimeout(JOIN_TIMEOUT_S)
    while len(frames) < count:
        buffer += peer.recv(65536)
        while len(buffer) >= 4 and len(buffer) >= 4 + int.from_bytes(buffer[:4], "big"):
            length = int.from_bytes(buffer[:4], "big")
            frames.append(msgpack.unpackb(buffer[4:4 + length]))
            buffer = buffer[4 + length:]
    return frames


class _Loop:
    """One OpenLoop over one end of a socket pair, sender and receiver on their threads."""

    def __init__(self, frame_count: int, rate_per_s: int, window_s: float, in_flight_max: int,
                 items_per_frame: int = 1) -> None:
        self.ours, self.peer = socket.socketpair()
        frames = b"".join(_frame(index + 1) for index in range(frame_count))
        ends, position = [], 0
        for index in range(frame_count):
            position += len(_frame(index + 1))
            ends.append(position)
        now_ns = time.monotonic_ns()
        self.end_ns = now_ns + int(window_s * 1e9)
        self.loop = OpenLoop([(self.ours.fileno(), frames, ends, [], now_ns, int(1e9 / rate_per_s))],
                             items_per_frame, now_ns, self.end_ns, int(window_s * 1e9), DRAIN_NS,
                             in_flight_max)
        self.sender = threading.Thread(target=self.loop.send, args=(self.end_ns,))
        self.receiver = threading.Thread(target=self.loop.receive)
        self.sender.start()
        self.receiver.start()

    def finish(self) -> dict:
        self.sender.join(JOIN_TIMEOUT_S)
        self.receiver.join(JOIN_TIMEOUT_S)
        assert not self.sender.is_alive() and not self.receiver.is_alive(), "the open loop hung"
        self.ours.close()        # ends a peer thread's reads
        return self.loop.export()


class TestCompiledLoop:
    def test_sends_stop_at_the_in_flight_limit_until_answers_free_it(self):
        run = _Loop(frame_count=100, rate_per_s=200, window_s=0.4, in_flight_max=3)
        first = _read_frames(run.peer, 3)
        assert [frame[0] for frame in first] == [1, 2, 3]
        time.sleep(0.05)
        run.peer.setblocking(False)
        with pytest.raises(BlockingIOError):     # 10 frames are due by now: the FIFO held them back
            run.peer.recv(1)
        run.peer.setblocking(True)
        run.peer.sendall(b"".join(_answer(request_id, 0) for request_id in (1, 2, 3)))
        more = _read_frames(run.peer, 3)
        assert [frame[0] for frame in more] == [4, 5, 6]
        # From now on every frame is answered: the sender catches up with the whole schedule.
        answering = threading.Thread(target=_answer_everything, args=(run.peer,))
        answering.start()
        run.peer.sendall(b"".join(_answer(request_id, 0) for request_id in (4, 5, 6)))
        export = run.finish()
        answering.join(JOIN_TIMEOUT_S)
        frames_due = 80        # 200/s for 0.4 s
        assert export["by_code"] == {0: frames_due} and export["frames_written_in_window"] > 6
        assert export["unanswered_frames"] == 0 and export["errors"] == []
        assert sum(count for _, count in export["send_lag"]) == frames_due
        assert max(value for value, _ in export["send_lag"]) > 5_000   # held back: late by more than a frame

    def test_a_socket_closed_by_the_peer_is_an_error_not_a_hang(self):
        run = _Loop(frame_count=100, rate_per_s=1_000, window_s=0.3, in_flight_max=5)
        _read_frames(run.peer, 5)
        run.peer.shutdown(socket.SHUT_RDWR)
        export = run.finish()
        assert any("closed by the peer" in error or "send failed" in error for error in export["errors"])
        assert export["unanswered_frames"] == 5

    def test_batch_answers_count_each_items_code(self):
        run = _Loop(frame_count=1, rate_per_s=1, window_s=0.2, in_flight_max=1, items_per_frame=3)   # one frame due
        _read_frames(run.peer, 1)
        detail = [15_000, 187, {"nested": ["a", b"\x00" * 20, 1.5, -3, None, True]}, "Merchant"]
        run.peer.sendall(_answer(1, 0, [[0, detail], [105, None], [0, {"k": 2**40}]]))
        export = run.finish()
        assert export["by_code"] == {0: 2, 105: 1} and export["errors"] == []

    def test_a_refused_batch_counts_its_whole_code_for_every_item(self):
        run = _Loop(frame_count=1, rate_per_s=1, window_s=0.2, in_flight_max=1, items_per_frame=4)
        _read_frames(run.peer, 1)
        run.peer.sendall(_answer(1, 600))
        export = run.finish()
        assert export["by_code"] == {600: 4}

    def test_an_answer_out_of_request_order_is_reported(self):
        run = _Loop(frame_count=2, rate_per_s=50, window_s=0.03, in_flight_max=2)     # frames due at 0 and 20 ms
        _read_frames(run.peer, 2)
        run.peer.sendall(_answer(2, 0) + _answer(1, 0))
        export = run.finish()
        assert any("out of request order" in error for error in export["errors"])

    def test_an_answer_with_nothing_in_flight_is_an_error(self):
        run = _Loop(frame_count=1, rate_per_s=1, window_s=0.05, in_flight_max=1)
        _read_frames(run.peer, 1)
        run.peer.sendall(_answer(1, 0) + _answer(2, 0))
        export = run.finish()
        assert any("no request in flight" in error for error in export["errors"])

    def test_in_flight_limit_at_the_protocols_limit_and_one_past(self):
        ours, _ = socket.socketpair()
        spec = [(ours.fileno(), _frame(1), [len(_frame(1))], [], 0, 1_000)]
        OpenLoop(spec, 1, 0, 1, 1, 1, limits.IN_FLIGHT_REQUESTS_MAX)
        with pytest.raises(ValueError, match="fifo_capacity"):
            OpenLoop(spec, 1, 0, 1, 1, 1, limits.IN_FLIGHT_REQUESTS_MAX + 1)
        with pytest.raises(ValueError, match="frame_ends"):
            OpenLoop([(ours.fileno(), _frame(1), [3], [], 0, 1_000)], 1, 0, 1, 1, 1, 1)

    def test_a_wrapped_ring_sends_fresh_ids(self):
        ours, peer = socket.socketpair()
        body = msgpack.packb([1, "pay", [b"\x11" * 16]])
        frame = len(body).to_bytes(4, "big") + body
        id_offset = frame.index(b"\x11" * 16)
        now_ns = time.monotonic_ns()
        loop = OpenLoop([(ours.fileno(), frame, [len(frame)], [id_offset], now_ns, 1_000_000)], 1, now_ns,
                        now_ns + 2_500_000, 2_500_000, DRAIN_NS, 8)
        loop.send(now_ns + 2_500_000)          # frames due at 0, 1 and 2 ms: the one-frame ring wraps twice
        ids = [message[2][0] for message in _read_frames(peer, 3)]
        assert len(set(ids)) == 3 and ids[0] == b"\x11" * 16 and all(i[4:] == b"\x11" * 12 for i in ids)
        assert loop.export()["wraps"] == 3
        ours.close()
        peer.close()


def _answer_everything(peer: socket.socket) -> None:
    """Answer OK to every frame until the other side closes."""
    buffer = b""
    while chunk := peer.recv(65536):
        buffer += chunk
        answers = []
        while len(buffer) >= 4 and len(buffer) >= 4 + int.from_bytes(buffer[:4], "big"):
            length = int.from_bytes(buffer[:4], "big")
            answers.append(_answer(msgpack.unpackb(buffer[4:4 + length])[0], 0))
            buffer = buffer[4 + length:]
        peer.sendall(b"".join(answers))


# ---- the stream's size -----------------------------------------------------------------------

class TestStreamSize:
    def test_open_loop_is_sized_to_what_the_schedule_sends(self):
        settings = RunSettings(mode="open", rate_per_s=50_000, batch_items=256, warmup_s=1.0, duration_s=5.0)
        assert items_needed(settings, None) >= 50_000 * 6

    def test_open_loop_sizing_stops_at_its_maximum_and_an_explicit_size_wins(self):
        at = RunSettings(mode="open", rate_per_s=STREAM_ITEMS_SIZED_MAX, warmup_s=0.0, duration_s=1.0)
        assert items_needed(at, None) == STREAM_ITEMS_SIZED_MAX
        past = RunSettings(mode="open", rate_per_s=STREAM_ITEMS_SIZED_MAX + 1_000, warmup_s=0.0, duration_s=1.0)
        assert items_needed(past, None) == STREAM_ITEMS_SIZED_MAX
        assert items_needed(at, 1_234) == 1_234

    def test_closed_loop_keeps_its_default_and_always_fills_its_depth(self):
        assert items_needed(RunSettings(), None) == STREAM_ITEMS_CLOSED_LOOP
        deep = RunSettings(connections=4, depth=8, batch_items=100)
        assert items_needed(deep, 10) == 4 * 100 * 9


# ---- the bare-fsync reference, the report, the command line -------------------------------------

class TestBareFsync:
    def test_probe_times_every_sample_and_leaves_no_file(self, tmp_path):
        timings = bare_fsync.probe(tmp_path, 4096, samples=5)
        assert len(timings) == 5 and all(timing >= 0 for timing in timings)
        assert list(tmp_path.iterdir()) == []

    def test_summary_subtracts_the_bare_p99(self):
        summary = bare_fsync.summary(list(range(1, 101)), list(range(101, 201)), 4096, 500, 12_288)
        assert (summary["p50"], summary["p99"], summary["samples"]) == (100, 198, 200)
        assert summary["switch_p99_minus_bare_p99_us"] == 500 - 198
        assert summary["before"]["p99"] == 99 and summary["after"]["p50"] == 150

    def test_written_bytes_of_this_process_is_read(self):
        import os
        assert bare_fsync.written_bytes(os.getpid()) is not None
        assert bare_fsync.written_bytes(2**22 + 12_345) is None

    def test_compare_and_the_summary_show_it(self, tmp_path):
        bare = {"bytes": 4096, "samples": 2, "p50": 300, "p99": 400, "switch_p99_minus_bare_p99_us": 100,
                "commit_bytes": 8192}
        first, second = tmp_path / "a.json", tmp_path / "b.json"
        first.write_text(json.dumps(_report(1_000.0, 500) | {"bare_fsync_us": bare}))
        second.write_text(json.dumps(_report(1_000.0, 600) | {"bare_fsync_us": bare | {"p99": 300,
                                                                                       "switch_p99_minus_bare_p99_us": 300}}))
        result = CliRunner().invoke(bench, ["compare", str(first), str(second)])
        assert result.exit_code == 0, result.output
        assert next(line for line in result.output.splitlines() if line.startswith("p99 - bare")).endswith("3.00x")
        text = report_module.summary_text(_report(1_000.0, 500) | {"connections": 1, "duration_s": 1.0,
                                                                   "bare_fsync_us": bare})
        assert "bare fsync us (4,096 bytes, the switch wrote 8,192 bytes per batch)" in text


def test_an_unknown_sender_is_a_usage_error(tmp_path):
    workload = tmp_path / "w.json"
    workload.write_text("{}")
    result = CliRunner().invoke(bench, ["run", "--workload", str(workload), "--sender", "rust"])
    assert result.exit_code == 2 and "--sender" in result.output
    with pytest.raises(ValueError, match="sender"):
        RunSettings(sender="rust").check()


def test_the_switchs_wait_percentile_is_its_buckets_upper_bound():
    from switch.loadgen.switch_stats import bucket_percentile
    histogram = {"bounds": [100, 500, 1_000], "counts": [90, 9, 0, 1], "sum": 0, "count": 100}
    assert bucket_percentile(histogram, 0.5) == 100
    assert bucket_percentile(histogram, 0.99) == 500
    assert bucket_percentile(histogram, 1.0) is None          # past the last bound: unknown
    assert bucket_percentile({"bounds": [1], "counts": [0, 0], "count": 0}, 0.5) is None
