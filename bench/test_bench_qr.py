"""QR payloads validated per second: compiled core against its reference twin, on the real vectors.

* `validate_qr` over all 223 vectors of /work/shared/qr/vectors.jsonl (valid and invalid, as they come);
* `validate_qr` on one typical ~150-character payload (a Python call per payload);
* `validate_repeat`: the C function qr_validate in a C loop, as the compiled pipeline calls it;
* `parse_qr`: the full QrResult object.

Per-payload medians are in each row's extra_info (`per_payload_ns_median`).
Run: `make bench` or `.venv/bin/python -m pytest bench/test_bench_qr.py --benchmark-only`.
"""
from __future__ import annotations

import json
import pathlib

import pytest

import core_ext

ROOT = pathlib.Path(__file__).resolve().parent.parent
VECTORS = [json.loads(line)["payload"] for line in (ROOT.parent / "shared" / "qr" / "vectors.jsonl")
           .read_text(encoding="utf-8").splitlines() if line.strip()]
VECTOR_BYTES = [payload.encode("utf-8") for payload in VECTORS]
TYPICAL = min((payload for payload in VECTORS
               if core_ext.implementation("compiled").parse_qr(payload).valid and not payload.startswith("upi")),
              key=lambda payload: abs(len(payload) - 150))
TYPICAL_BYTES = TYPICAL.encode("utf-8")
REPEAT = 10_000


def core(name: str):
    implementation = core_ext.implementation(name)
    if implementation.build_info()["mode"] == "debug":
        pytest.skip("benchmarks never run on a trace/debug build")
    return implementation


def record(benchmark, payloads: int) -> None:
    median_ns = benchmark.stats.stats.median * 1e9 / payloads
    benchmark.extra_info["per_payload_ns_median"] = round(median_ns, 1)
    benchmark.extra_info["payloads_per_s_median"] = round(1e9 / median_ns)
    benchmark.extra_info["build"] = core_ext.implementation("compiled").build_info()["mode"]
    benchmark.extra_info["typical_chars"] = len(TYPICAL)


def validate_all(validate_qr) -> int:
    invalid = 0
    for data in VECTOR_BYTES:
        invalid += validate_qr(data) != 0
    return invalid


@pytest.mark.parametrize("name", ["compiled", "reference"])
def test_bench_validate_qr_all_vectors(benchmark, name):
    implementation = core(name)
    invalid = benchmark(validate_all, implementation.validate_qr)
    assert invalid == sum(not implementation.parse_qr(payload).valid for payload in VECTORS)
    record(benchmark, len(VECTOR_BYTES))


@pytest.mark.parametrize("name", ["compiled", "reference"])
def test_bench_validate_qr_typical_payload(benchmark, name):
    validate_qr = core(name).validate_qr
    repeat = 1000 if name == "compiled" else 20

    def run() -> int:
        code = 0
        for _ in range(repeat):
            code = validate_qr(TYPICAL_BYTES)
        return code

    assert benchmark(run) == 0
    record(benchmark, repeat)


def test_bench_qr_validate_c_loop(benchmark):
    core("compiled")
    from core_ext._qr import validate_repeat

    assert benchmark(validate_repeat, TYPICAL_BYTES, REPEAT) == 0
    record(benchmark, REPEAT)


@pytest.mark.parametrize("name", ["compiled", "reference"])
def test_bench_parse_qr_typical_payload(benchmark, name):
    parse_qr = core(name).parse_qr
    result = benchmark(parse_qr, TYPICAL)
    assert result.valid
    record(benchmark, 1)
