"""Per-rule time in the rules' statistics: one evaluation in
RULES_TIME_SAMPLE_INTERVAL_EVALUATIONS is timed (the 1st, the 65th, ...) and the rule's
whole time is estimated from those. On both engines; times themselves are not compared
(they are measurements), only which evaluations were sampled and the arithmetic."""
from __future__ import annotations

from core_ext import limits
from core_ext.rules_types import load_ruleset, rule_stats
from test_rules_engine import ctx, engine_with, rule, ruleset_text

EVERY = limits.RULES_TIME_SAMPLE_INTERVAL_EVALUATIONS


def evaluate_times(engine, count: int) -> None:
    for _ in range(count):
        engine.evaluate(ctx())


def test_the_sampling_interval_is_a_power_of_two():
    assert EVERY >= 2 and EVERY & (EVERY - 1) == 0


def test_the_first_evaluation_of_a_rule_is_timed(impl):
    engine = engine_with(impl, rule("payment_cap_tier", "cap", limit_minor=10))
    evaluate_times(engine, 1)
    stats = engine.stats()["cap"]
    assert (stats["evaluations"], stats["samples"]) == (1, 1)
    assert stats["time_ns_sampled"] >= 0 and stats["time_ns"] == stats["time_ns_sampled"]


def test_one_evaluation_in_the_interval_is_timed_at_the_interval_and_one_past(impl):
    engine = engine_with(impl, rule("payment_cap_tier", "cap", limit_minor=10))
    evaluate_times(engine, EVERY)
    assert engine.stats()["cap"]["samples"] == 1
    evaluate_times(engine, 1)
    assert engine.stats()["cap"]["samples"] == 2
    evaluate_times(engine, EVERY - 1)
    assert engine.stats()["cap"]["samples"] == 2


def test_a_rule_that_is_off_is_neither_evaluated_nor_timed(impl):
    engine = engine_with(impl, rule("payment_cap_tier", "cap-off", mode="off", limit_minor=10))
    evaluate_times(engine, 3)
    assert engine.stats()["cap-off"] == rule_stats(0, 0, 0, 0, 0)


def test_the_estimate_scales_the_sampled_mean_to_every_evaluation():
    assert rule_stats(0, 0, 130, 3, 300)["time_ns"] == 13_000
    assert rule_stats(0, 0, 130, 3, 301)["time_ns"] == 13_043        # rounded down
    assert rule_stats(0, 0, 0, 0, 0)["time_ns"] == 0                  # never timed: no estimate


def test_sampled_time_carries_over_a_reload_like_the_other_counters(impl):
    first = rule("payment_cap_tier", "cap", limit_minor=10)
    engine = engine_with(impl, first, rule("payment_cap_tier", "other", limit_minor=10))
    evaluate_times(engine, EVERY + 1)
    before = engine.stats()
    engine.reload(load_ruleset(ruleset_text(first, {**rule("payment_cap_tier", "other", limit_minor=10),
                                                    "version": 2})))
    after = engine.stats()
    assert after["cap"] == before["cap"] and after["cap"]["samples"] == 2
    assert after["other"] == rule_stats(0, 0, 0, 0, 0)          # a new version starts afresh
