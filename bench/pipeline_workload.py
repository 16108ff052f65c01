"""The in-process payment workload shared by bench/test_bench_pipeline.py and bench/profile_pipeline.py.

The demo switch (switch/demo/switch.toml, its merchants and its 26-rule set) with 20,000 full-KYC
INR wallets that pay the temple's UPI link and the kirana's Bharat QR in turn, each from its own
device; every round uses fresh transfer ids and a clock 400 s later, so no payment is a retry and
the velocity rules see a realistic spread (most payments are approved). Commit is excluded: each
component's journal is taken and dropped between rounds.
"""
from __future__ import annotations

import itertools
import pathlib
import random
import tempfile
import tomllib

import msgpack

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


class TraceBuildError(RuntimeError):
    """The compiled core is the trace/debug build: its timings say nothing about release."""


class NoStorage:
    """Commit excluded: each component's journal is taken (and dropped) between rounds."""

    def __init__(self, components) -> None:
        self.components = components

    def commit(self) -> None:
        self.write(self.prepare())

    def prepare(self) -> None:
        for component in self.components:
            component.take_journal()

    def write(self, record: None) -> None:
        """Nothing to write."""

    def reload(self) -> None:
        raise AssertionError("a workload batch failed")


def build_mode() -> str:
    """"release" or "debug": the mode the compiled core was built in."""
    return core_ext.implementation("compiled").build_info()["mode"]


def demo_document() -> dict:
    """The demo switch config with the PAYERS wallets added to participant PARTICIPANT_ID."""
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
    return document


def workload_engine(implementation: str, allow_trace_build: bool = False) -> Engine:
    """A bootstrapped demo engine on `implementation` whose commits only drop the journals.

    Raises TraceBuildError on a debug build unless allowed: its timings would mislead."""
    if build_mode() == "debug" and not allow_trace_build:
        raise TraceBuildError("the compiled core is the trace/debug build (make debug); run `make build`")
    core = core_ext.implementation(implementation)
    config = config_module.parse(demo_document())
    rules_path = config_module.load(ROOT / "switch" / "demo" / "switch.toml").rules_path
    ledger, merchants = core.Ledger(config.accounts_max), MerchantDirectory()
    rules = core.RuleEngine(load_rules_file(rules_path))
    engine = Engine(config, core, ledger, merchants, None, rules=rules, clock_ns=lambda: T0 - 10**12)
    engine.storage = NoStorage([ledger, merchants, rules, engine.audit])
    engine.bootstrap()
    return engine


class Stream:
    """Fresh pay_batch bodies: new transfer ids, payers in turn, two static codes.

    With a seed the payers come in a shuffled (but reproducible) order instead of in turn."""

    def __init__(self, size: int, seed: int | None = None) -> None:
        with tempfile.TemporaryDirectory() as directory:
            payloads = demo.make_payloads(pathlib.Path(directory))
        self.codes = [payloads["temple-varanasi"], payloads["grocery-pune"]]
        self.size = size
        self.ids = itertools.count(1)
        order = list(range(PAYERS))
        if seed is not None:
            random.Random(seed).shuffle(order)
        self.payers = itertools.cycle(order)
        self.round = 0

    def next_body(self) -> tuple[bytes, int]:
        items = []
        for _ in range(self.size):
            payer = next(self.payers)
            items.append([next(self.ids).to_bytes(16, "big"), FIRST_PAYER + payer, self.codes[payer % 2],
                          15_000 + payer % 97, f"device-{payer}", None])
        self.round += 1
        return msgpack.packb([1, "pay_batch", items], use_bin_type=True), T0 + self.round * ROUND_NS


def approved_count(frame: bytes) -> int:
    """Payments answered 0 (approved) in a pay_batch response frame."""
    answers = msgpack.unpackb(frame[4:])[2]
    return sum(1 for code, _ in answers if code == 0)
