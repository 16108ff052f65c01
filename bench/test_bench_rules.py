"""Cost of the full demo rule set (26 rules, every kind) per payment.

* compiled, rules only: `evaluate_repeat` converts the payment once and runs
  the C evaluation REPEAT times -- what the compiled pipeline pays per payment
  (it hands the engine a C struct);
* compiled and reference, `evaluate(ctx)`: the Python-level call, with the
  conversion of the PaymentContext and the Decision object;
* `observe`: applying a posted payment to the counters (and the journal).

The engine is warmed with a day of history for the payer, payee and device so
that every window, sketch and filter is read.  Run: `make bench` or
`.venv/bin/python -m pytest bench/test_bench_rules.py --benchmark-only`.
Per-payment figures are in each row's extra_info (median / REPEAT).
"""
from __future__ import annotations

import dataclasses
import pathlib

import pytest

import core_ext
from core_ext.rules_types import NS_PER_SECOND, PaymentContext, load_ruleset

ROOT = pathlib.Path(__file__).resolve().parent.parent
T0 = 1_700_000_000 * NS_PER_SECOND
REPEAT = 1_000


def demo_engine(implementation: str):
    info = core_ext.implementation(implementation).build_info()
    if info["mode"] == "debug":
        pytest.skip("benchmarks never run on a trace/debug build")
    ruleset = load_ruleset((ROOT / "switch" / "demo" / "rules.toml").read_text())
    engine = core_ext.implementation(implementation).RuleEngine(ruleset)
    for step in range(200):
        history = payment(payer_account_id=step % 20 + 1, now_ns=T0 - (200 - step) * 400 * NS_PER_SECOND,
                          amount_minor=5_000 + step)
        engine.observe(history, engine.evaluate(history))
    engine.take_journal()
    return engine


def payment(**fields) -> PaymentContext:
    base = PaymentContext(
        payer_account_id=1, payer_kyc_tier=1, payer_created_ns=T0 - 400 * 86_400 * NS_PER_SECOND,
        payer_balance_minor=10**8, merchant_account_id=5001, merchant_mcc=5411, merchant_is_personal=True,
        merchant_country=356, payer_country=356, device_id=77, qr_digest=9, qr_dynamic=False,
        amount_minor=25_000, currency=356, amount_usd_minor=300, originator_info_present=True,
        beneficiary_info_present=True, now_ns=T0, qr_merchant_account_id=5001, merchant_balance_minor=10_000)
    return dataclasses.replace(base, **fields)


def per_payment_ns(benchmark, repeat: int) -> None:
    benchmark.extra_info["per_payment_ns_median"] = round(benchmark.stats.stats.median * 1e9 / repeat, 1)
    benchmark.extra_info["build"] = core_ext.implementation("compiled").build_info()["mode"]


def test_bench_rules_compiled_struct_path(benchmark):
    engine = demo_engine("compiled")
    benchmark.group = "rules: full demo set per payment"
    decision = benchmark(engine.evaluate_repeat, payment(), REPEAT)
    assert decision.ruleset_hash
    per_payment_ns(benchmark, REPEAT)


@pytest.mark.parametrize("implementation", ["compiled", "reference"])
def test_bench_rules_evaluate_python_call(benchmark, implementation):
    engine = demo_engine(implementation)
    benchmark.group = "rules: full demo set per payment"
    context = payment()
    decision = benchmark(engine.evaluate, context)
    assert decision.ruleset_hash
    per_payment_ns(benchmark, 1)


@pytest.mark.parametrize("implementation", ["compiled", "reference"])
def test_bench_rules_observe(benchmark, implementation):
    engine = demo_engine(implementation)
    benchmark.group = "rules: observe a posted payment"
    context = payment()
    decision = engine.evaluate(context)

    def observe_and_drain():
        engine.observe(context, decision)
        if engine.take_journal() is None:
            raise AssertionError("observe journaled nothing")

    benchmark(observe_and_drain)
    per_payment_ns(benchmark, 1)


def _demo_rule_ids() -> list[str]:
    return [rule.id for rule in load_ruleset((ROOT / "switch" / "demo" / "rules.toml").read_text()).rules]


@pytest.mark.parametrize("rule_id", _demo_rule_ids())
def test_bench_rules_one_rule_compiled(benchmark, rule_id):
    """The time each rule costs (the engine counts hits, not time: a clock read per
    rule would cost more than most rules). Same warm state, only this rule on."""
    engine = demo_engine("compiled")
    demo = engine.ruleset
    engine.reload(dataclasses.replace(demo, rules=tuple(rule for rule in demo.rules if rule.id == rule_id)))
    benchmark.group = "rules: one rule per payment (compiled, x1000)"
    benchmark(engine.evaluate_repeat, payment(), REPEAT)
    per_payment_ns(benchmark, REPEAT)
