"""Answering a shed FrameRun: every frame refused with BUSY under its own request id.

A run of 64 single `pay` frames (what one connection's read yields in the closed loop of
`switch bench e2e --depth 64`) refused by `protocol.refusal_frames` (Python: peek, msgpack,
length prefix per frame; what the server did before) and by the compiled `Pipeline.refuse_frames`.

Run: `.venv/bin/python -m pytest bench/test_bench_refusal.py --benchmark-only`; the
nanoseconds per frame of each row are in its extra_info (from the median).
"""
from __future__ import annotations

import msgpack
import pytest

import core_ext
from core_ext.codes import Code
from switch import protocol

FRAMES = 64


def run_of_pay_frames() -> bytes:
    bodies = (msgpack.packb([request_id, "pay", [bytes(16), 1001, "upi://pay?pa=shop@bank&pn=Shop&cu=INR",
                                                 100, None, None]], use_bin_type=True)
              for request_id in range(1, FRAMES + 1))
    return b"".join(protocol.LENGTH_PREFIX.pack(len(body)) + body for body in bodies)


@pytest.mark.parametrize("refusal", ["python", "compiled"])
def test_bench_refuse_a_frame_run(benchmark, refusal):
    pipeline = core_ext.implementation("compiled").Pipeline
    if core_ext.implementation("compiled").build_info()["mode"] != "release":
        pytest.skip("benchmarks run on a release build only")
    run = run_of_pay_frames()
    if refusal == "python":
        answers = benchmark(protocol.refusal_frames, run, Code.BUSY, lambda body: pipeline.peek(body)[1])
    else:
        answers = benchmark(pipeline.refuse_frames, run, Code.BUSY)
    assert answers == protocol.refusal_frames(run, Code.BUSY, lambda body: pipeline.peek(body)[1])
    if benchmark.stats is not None:     # --benchmark-disable: run once as a test, nothing measured
        benchmark.extra_info.update(frames=FRAMES, ns_per_frame=round(benchmark.stats.stats.median * 1e9 / FRAMES))
