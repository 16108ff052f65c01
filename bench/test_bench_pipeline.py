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

import itertools
import pathlib
import tempfile
import tomllib

import msgpack
import pytest

import core_ext
from core_ext.rules_types import NS_PER_SECOND
from switch import config as config_module, demo
from switch.engine import Engine, load_rules_file
from switch.merchants import MerchantDirectory

ROOT = pathlib.Path(__file__).resolve().parent.parent
T0 = 1_800_000_000 * NS_PER_SECOND
PAYERS = 20_000
FIRST_PAYER = 300_000
PARTICIPANT_ID = 3
ROUND_NS = 400 * NS_PER_SECOND
SIZES = (1, 100, 1_000, 4_095)


class NoStorage:
    """Commit excluded: each component's journal is taken (and dropped) between rounds."""

    def __init__(self, components) -> None:
        self.components = components

    def commit(self) -> None:
        for component in self.components:
            component.take_journal()

    def reload(self) -> None:
        raise AssertionError("a benchmark batch failed")


def bench_engine(implementation: str) -> Engine:
    core = core_ext.implementation(implementation)
    if core_ext.implementation("compiled").build_info()["mode"] == "debug":
        pytest.skip("benchmarks never run on a trace/debug build")
    document = tomllib.loads((ROOT / "switch" / "demo" / "switch.toml").read_text())
    document["switch"]["accounts_max"] = 100_000
    document["merchants"] = demo.merchant_registrations()
    for participant in document["participants"]:
        if participant["id"] == PARTICIPANT_ID:
            participant["accounts"] = participant["accounts"] + [[FIRST_PAYER, FIRST_PAYER + PAYERS - 1]]
    document["accounts"] += [
        {"id": FIRST_PAYER + index, "ledger": 356, "code": 1, "owner": PARTICIPANT_ID, "kyc_tier": 1,
         "flags": ["debits_must_not_exceed_credits"], "opening_balance_minor": 10**10}
        for index in range(PAYERS)]
    config = config_module.parse(document)
    rules_path = config_module.load(ROOT / "switch" / "demo" / "switch.toml").rules_path
    ledger, merchants = core.Ledger(config.accounts_max), MerchantDirectory()
    rules = core.RuleEngine(load_rules_file(rules_path))
    engine = Engine(config, core, ledger, merchants, None, rules=rules, clock_ns=lambda: T0 - 10**12)
    engine.storage = NoStorage([ledger, merchants, rules, engine.audit])
    engine.bootstrap()
    return engine


class Stream:
    """Fresh pay_batch bodies: new transfer ids, payers in turn, two static codes."""

    def __init__(self, size: int) -> None:
        with tempfile.TemporaryDirectory() as directory:
            payloads = demo.make_payloads(pathlib.Path(directory))
        self.codes = [payloads["temple-varanasi"], payloads["grocery-pune"]]
        self.size = size
        self.ids = itertools.count(1)
        self.payers = itertools.cycle(range(PAYERS))
        self.round = 0

    def next_body(self) -> tuple[bytes, int]:
        items = []
        for _ in range(self.size):
            payer = next(self.payers)
            items.append([next(self.ids).to_bytes(16, "big"), FIRST_PAYER + payer, self.codes[payer % 2],
                          15_000 + payer % 97, f"device-{payer}", None])
        self.round += 1
        return msgpack.packb([1, "pay_batch", items], use_bin_type=True), T0 + self.round * ROUND_NS


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
    answers = msgpack.unpackb(frame[4:])[2]
    approved = sum(1 for code, _ in answers if code == 0)
    assert approved / size > 0.9, answers[:5]
    if benchmark.stats is None:         # --benchmark-disable: run once as a test, nothing measured
        return
    benchmark.extra_info.update(
        payments=size, payments_per_second=round(size / benchmark.stats.stats.median),
        approved_share=round(approved / size, 3), build=core_ext.implementation("compiled").build_info()["mode"],
        stages_ns={key: value for key, value in pipeline.stats().items() if key.endswith("_ns")})
