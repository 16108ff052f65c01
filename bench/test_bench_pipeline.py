"""The payment pipeline in process: request bytes in, response bytes out (commit excluded).

A `pay_batch` frame of 1, 100, 1,000 or 4,095 payments goes through `Pipeline.run` --
decode, QR validation, merchant lookup, the demo rule set (26 rules, switch/demo/rules.toml),
posting, observe, audit, the response frame -- on the compiled core and on its twin.
The demo switch (switch/demo/switch.toml and its merchants) with 20,000 full-KYC INR
wallets that pay the temple's UPI link and the kirana's Bharat QR in turn, each from its
own device; every round uses fresh transfer ids and a clock 400 s later, so no payment is a
retry and the velocity rules see a realistic spread (most payments are approved).

Run: `.venv/bin/python -m pytest bench/test_bench_pipeline.py --benchmark-only`; the
payments per second of each row are in its extra_info (payments_per_second, from the median).
"""
from __future__ import annotations

import pytest

import core_ext
from bench.pipeline_workload import PARTICIPANT_ID, Stream, TraceBuildError, approved_count, workload_engine

SIZES = (1, 100, 1_000, 4_095)


def bench_engine(implementation: str):
    try:
        return workload_engine(implementation)
    except TraceBuildError:
        pytest.skip("benchmarks never run on a trace/debug build")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("implementation", core_ext.IMPLEMENTATIONS)
def test_bench_pipeline_run(benchmark, implementation, size):
    if implementation == "reference" and size == 4_095:
        pytest.skip("the twin at 4,095: the 1,000 row already gives its rate")
    engine = bench_engine(implementation)
    pipeline, stream = engine.pipeline, Stream(size)
    rounds = max(5, min(200, 20_000 // size)) if implementation == "compiled" else 5

    def setup():
        engine.storage.commit()
        body, now_ns = stream.next_body()
        return (PARTICIPANT_ID, body, now_ns), {}

    frame = benchmark.pedantic(pipeline.run, setup=setup, rounds=rounds, warmup_rounds=1)
    approved = approved_count(frame)
    assert approved / size > 0.9, frame[:200]
    if benchmark.stats is None:         # --benchmark-disable: run once as a test, nothing measured
        return
    benchmark.extra_info.update(
        payments=size, payments_per_second=round(size / benchmark.stats.stats.median),
        approved_share=round(approved / size, 3), build=core_ext.implementation("compiled").build_info()["mode"],
        stages_ns={key: value for key, value in pipeline.stats().items() if key.endswith("_ns")})
