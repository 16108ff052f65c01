"""What the operator statistics cost the switch, per batch and per payment.

* `observe_batch` runs on the event loop after every batch's answers are written: a batch
  holding one full pay_batch (4,095 payments; its cost does not grow with the payments, which
  the pipeline counts) and a batch of 64 single `pay` requests;
* a Prometheus scrape (`render`) runs on the metrics thread, with a demo-sized rule set.

Run: `make bench` or `.venv/bin/python -m pytest bench/test_bench_metrics.py --benchmark-only`.
Per-payment figures are in each row's extra_info (median / payments).
"""
from __future__ import annotations

from core_ext import limits
from core_ext.codes import Code
from switch.metrics import MetricsExporter, OpsStats
from switch.protocol import Request


def _pay_batch(payments: int) -> tuple[list, list]:
    request = Request(1, "pay_batch", [None] * payments, events=2 * payments)
    answers = [[int(Code.OK), [100, 0, 764, "m"]] if n % 10 else [int(Code.EXCEEDS_CREDITS), None]
               for n in range(payments)]
    return [(None, request)], [(Code.OK, answers)]


def _single_pays(requests: int) -> tuple[list, list]:
    batch = [(None, Request(n + 1, "pay", None, events=2)) for n in range(requests)]
    return batch, [(Code.OK, [100, 0, 764, "m"])] * requests


def _record(benchmark, payments: int) -> None:
    benchmark.extra_info["payments"] = payments
    benchmark.extra_info["ns_per_payment_median"] = round(benchmark.stats.stats.median * 1e9 / payments, 1)


def test_observe_a_full_pay_batch(benchmark):
    stats = OpsStats()
    batch, outcomes = _pay_batch(limits.BATCH_FRAME_ITEMS_MAX)
    benchmark(stats.observe_batch, batch, outcomes, 1_000_000)
    _record(benchmark, limits.BATCH_FRAME_ITEMS_MAX)


def test_observe_64_single_payments(benchmark):
    stats = OpsStats()
    batch, outcomes = _single_pays(64)
    benchmark(stats.observe_batch, batch, outcomes, 1_000_000)
    _record(benchmark, 64)


def test_scrape_with_26_rules(benchmark):
    stats = OpsStats()
    stats.observe_batch(*_pay_batch(100), 1_000_000)
    engine_view = {"build": {"implementation": "compiled", "mode": "release"}, "durability": "fsync",
                   "ruleset_hash": "ab" * 32, "rules": [[f"rule-{n}", 1000, 10, 1] for n in range(26)],
                   "reviews_pending": 0}
    exporter = MetricsExporter(stats, lambda: engine_view)
    text = benchmark(exporter.render)
    assert b"switch_rule_hits_total" in text
