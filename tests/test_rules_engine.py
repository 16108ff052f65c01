"""The rules engine, rule by rule: just under, at and just past each threshold,
window expiry, shadow mode, hot reload, restart from the journal, full tables.
Every test runs against the compiled engine and its reference twin (`impl`)."""
from __future__ import annotations

import dataclasses

import pytest

from core_ext import limits
from core_ext.codes import Code
from core_ext.rules_types import (
    DAY, DAYS_30, HOUR, NS_PER_SECOND, SKETCH_BUCKET_NS, Action, Decision, PaymentContext, load_ruleset, mix64,
)

T0 = 1_700_000_000 * NS_PER_SECOND          # an ordinary instant (2023-11-14)
SECOND = NS_PER_SECOND
HOUR_NS = 3_600 * SECOND
DAY_NS = 86_400 * SECOND
POSTED = Decision(int(Action.APPROVE), 0, (), "")


def toml_value(value) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{key}" = {toml_value(item)}' for key, item in value.items()) + " }"
    return str(value)


def ruleset_text(*rules: dict) -> str:
    lines = ['[ruleset]', 'name = "test"']
    for rule in rules:
        lines.append("[[rules]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in rule.items()]
    return "\n".join(lines) + "\n"


def rule(kind: str, rule_id: str | None = None, mode="enforce", action="decline", **params) -> dict:
    return {"id": rule_id or kind.replace("_", "-"), "kind": kind, "version": 1, "mode": mode,
            "action": action, "reason": kind.upper(), **params}


def engine_with(impl, *rules: dict, capacity=None):
    return impl.RuleEngine(load_ruleset(ruleset_text(*rules)), capacity=capacity)


def ctx(**fields) -> PaymentContext:
    base = dict(
        payer_account_id=1, payer_kyc_tier=1, payer_created_ns=T0 - 365 * DAY_NS, payer_balance_minor=10**9,
        merchant_account_id=2, merchant_mcc=5411, merchant_is_personal=False, merchant_country=356,
        payer_country=356, device_id=7, qr_digest=9, qr_dynamic=False, amount_minor=100, currency=356,
        amount_usd_minor=1, originator_info_present=True, beneficiary_info_present=True, now_ns=T0,
        qr_merchant_account_id=2,
    )
    base.update(fields)
    return PaymentContext(**base)


def posted(engine, *contexts) -> None:
    """Apply payments as if the ledger had posted them, whatever the rules say."""
    for context in contexts:
        engine.observe(context, POSTED)


def declined(decision) -> bool:
    return decision.action == Action.DECLINE


# ---- per payment caps, lists -----------------------------------------------------------

def test_payment_cap_follows_the_payers_kyc_tier(impl):
    engine = engine_with(impl, rule("payment_cap_tier", limit_minor=[100, 200, 300]))
    assert engine.evaluate(ctx(payer_kyc_tier=0, amount_minor=99)).action == Action.APPROVE
    assert engine.evaluate(ctx(payer_kyc_tier=0, amount_minor=100)).action == Action.APPROVE
    decision = engine.evaluate(ctx(payer_kyc_tier=0, amount_minor=101))
    assert decision.action == Action.DECLINE and decision.code == Code.RISK_LIMIT_EXCEEDED
    assert decision.fired == (("payment-cap-tier", "PAYMENT_CAP_TIER", "enforce"),)
    assert engine.evaluate(ctx(payer_kyc_tier=2, amount_minor=300)).action == Action.APPROVE
    assert declined(engine.evaluate(ctx(payer_kyc_tier=2, amount_minor=301)))


def test_payment_cap_by_merchant_category_applies_only_to_that_category(impl):
    engine = engine_with(impl, rule("payment_cap_mcc", caps_minor={"4829": 500, "6051": 0}))
    assert not declined(engine.evaluate(ctx(merchant_mcc=4829, amount_minor=499)))
    assert not declined(engine.evaluate(ctx(merchant_mcc=4829, amount_minor=500)))
    assert engine.evaluate(ctx(merchant_mcc=4829, amount_minor=501)).code == Code.RISK_LIMIT_EXCEEDED
    assert declined(engine.evaluate(ctx(merchant_mcc=6051, amount_minor=1)))
    assert not declined(engine.evaluate(ctx(merchant_mcc=5411, amount_minor=10**12)))


@pytest.mark.parametrize("field, context_field", [
    ("payer", "payer_account_id"), ("merchant", "merchant_account_id"),
    ("device", "device_id"), ("qr", "qr_digest"),
])
def test_blocklist_declines_a_listed_party_without_saying_why(impl, field, context_field):
    engine = engine_with(impl, rule("blocklist", field=field, entries=[5000, 2**64 - 1]))
    listed = engine.evaluate(ctx(**{context_field: 2**64 - 1}))
    assert listed.action == Action.DECLINE and listed.code == Code.RISK_DECLINED
    assert not declined(engine.evaluate(ctx(**{context_field: 5001})))


def test_merchant_category_deny_list(impl):
    engine = engine_with(impl, rule("merchant_category_deny", mccs=[7995]))
    assert engine.evaluate(ctx(merchant_mcc=7995)).code == Code.RISK_CATEGORY_NOT_ALLOWED
    assert engine.evaluate(ctx(merchant_mcc=7994)).code == Code.OK


def test_balance_cap_applies_to_personal_receiving_accounts_by_their_tier(impl):
    engine = engine_with(impl, rule("balance_cap", limit_minor=[1000, 5000, 5000]))
    personal = dict(merchant_is_personal=True, merchant_kyc_tier=0, merchant_balance_minor=900)
    assert not declined(engine.evaluate(ctx(amount_minor=99, **personal)))
    assert not declined(engine.evaluate(ctx(amount_minor=100, **personal)))
    assert engine.evaluate(ctx(amount_minor=101, **personal)).code == Code.RISK_LIMIT_EXCEEDED
    assert not declined(engine.evaluate(ctx(amount_minor=101, **{**personal, "merchant_is_personal": False})))
    assert not declined(engine.evaluate(ctx(amount_minor=101, **{**personal, "merchant_kyc_tier": 1})))


# ---- windows -----------------------------------------------------------------------------

def test_payer_daily_count_counts_this_payment_and_forgets_after_the_window(impl):
    engine = engine_with(impl, rule("payer_day_count", limit=3))
    posted(engine, ctx(), ctx())
    assert not declined(engine.evaluate(ctx()))                   # the 3rd: at the limit
    posted(engine, ctx())
    assert engine.evaluate(ctx()).code == Code.RISK_LIMIT_EXCEEDED   # the 4th: one past
    assert declined(engine.evaluate(ctx(now_ns=T0 + DAY_NS - 1)))    # still inside 24 h
    expired = T0 + DAY.length_ns + DAY.bucket_ns                      # the window plus one bucket
    assert not declined(engine.evaluate(ctx(now_ns=expired)))
    assert not declined(engine.evaluate(ctx(payer_account_id=3)))     # other payers are untouched


def test_payer_daily_amount(impl):
    engine = engine_with(impl, rule("payer_day_amount", limit_minor=1000))
    posted(engine, ctx(amount_minor=600))
    assert not declined(engine.evaluate(ctx(amount_minor=399)))
    assert not declined(engine.evaluate(ctx(amount_minor=400)))
    assert declined(engine.evaluate(ctx(amount_minor=401)))
    assert not declined(engine.evaluate(ctx(amount_minor=401, now_ns=T0 + DAY.length_ns + DAY.bucket_ns)))


def test_payer_hourly_amount_can_send_to_review(impl):
    engine = engine_with(impl, rule("payer_hour_amount", action="review", limit_minor=1000))
    posted(engine, ctx(amount_minor=1000))
    assert engine.evaluate(ctx(amount_minor=1, now_ns=T0 + HOUR_NS - 1)).code == Code.RISK_REVIEW
    assert engine.evaluate(ctx(amount_minor=1, now_ns=T0 + HOUR.length_ns + HOUR.bucket_ns)).code == Code.OK


def test_new_account_cooling_limits_only_the_first_day(impl):
    engine = engine_with(impl, rule("new_account_cooling", cooling_seconds=86_400, limit_minor=500))
    young = T0 - HOUR_NS
    posted(engine, ctx(payer_created_ns=young, amount_minor=300))
    assert not declined(engine.evaluate(ctx(payer_created_ns=young, amount_minor=200)))
    assert declined(engine.evaluate(ctx(payer_created_ns=young, amount_minor=201)))
    assert declined(engine.evaluate(ctx(payer_created_ns=T0 - DAY_NS + 1, amount_minor=201)))
    assert not declined(engine.evaluate(ctx(payer_created_ns=T0 - DAY_NS, amount_minor=201)))


def test_monthly_aggregate_flags_without_declining(impl):
    engine = engine_with(impl, rule("monthly_aggregate", action="flag", threshold_minor=1000))
    posted(engine, ctx(amount_minor=600))
    assert engine.evaluate(ctx(amount_minor=399)).fired == ()
    at = engine.evaluate(ctx(amount_minor=400))
    assert at.action == Action.APPROVE and at.code == Code.OK
    assert at.fired == (("monthly-aggregate", "MONTHLY_AGGREGATE", "enforce"),)
    later = T0 + DAYS_30.length_ns + DAYS_30.bucket_ns
    assert engine.evaluate(ctx(amount_minor=400, now_ns=later)).fired == ()


def test_structuring_counts_payments_just_under_the_threshold(impl):
    engine = engine_with(impl, rule("structuring", action="review", threshold_minor=1000, band_minor=100, count=3))
    posted(engine, ctx(amount_minor=900), ctx(amount_minor=1000), ctx(amount_minor=899))   # one in the band
    assert engine.evaluate(ctx(amount_minor=999)).fired == ()        # 2nd in the band: under
    posted(engine, ctx(amount_minor=950))
    assert engine.evaluate(ctx(amount_minor=999)).code == Code.RISK_REVIEW   # 3rd: at the count
    assert engine.evaluate(ctx(amount_minor=1000)).fired == ()       # at the threshold is not "under"
    later = T0 + DAYS_30.length_ns + DAYS_30.bucket_ns
    assert engine.evaluate(ctx(amount_minor=999, now_ns=later)).fired == ()


def test_pass_through_compares_outflow_with_inflow_of_the_day(impl):
    engine = engine_with(impl, rule("pass_through", action="review", percent=90, inflow_min_minor=1000))
    posted(engine, ctx(payer_account_id=50, merchant_account_id=1, amount_minor=1000))   # 1 receives 1000
    assert engine.evaluate(ctx(amount_minor=899)).fired == ()
    assert engine.evaluate(ctx(amount_minor=900)).code == Code.RISK_REVIEW
    small = engine_with(impl, rule("pass_through", percent=90, inflow_min_minor=1001))
    posted(small, ctx(payer_account_id=50, merchant_account_id=1, amount_minor=1000))
    assert small.evaluate(ctx(amount_minor=1000)).fired == ()        # inflow under the minimum


def test_device_velocity(impl):
    engine = engine_with(impl, rule("device_velocity", limit=3))
    posted(engine, ctx(payer_account_id=1), ctx(payer_account_id=2))
    assert not declined(engine.evaluate(ctx(payer_account_id=3)))
    posted(engine, ctx(payer_account_id=3))
    assert declined(engine.evaluate(ctx(payer_account_id=4)))
    assert not declined(engine.evaluate(ctx(payer_account_id=4, device_id=0)))   # unknown device: skipped
    assert not declined(engine.evaluate(ctx(now_ns=T0 + HOUR.length_ns + HOUR.bucket_ns)))


def distinct_sketch_ids(count: int) -> list[int]:
    """Payer ids that land on different sketch bits, so counts are exact in a test."""
    ids, bits = [], set()
    candidate = 1000
    while len(ids) < count:
        bit = (mix64(candidate) >> 16) % limits.RULES_SKETCH_BITS
        if bit not in bits:
            ids.append(candidate)
            bits.add(bit)
        candidate += 1
    return ids


def test_distinct_payers_per_device(impl):
    engine = engine_with(impl, rule("device_distinct_payers", action="review", limit=2))
    first, second, third = distinct_sketch_ids(3)
    posted(engine, ctx(payer_account_id=first))
    assert engine.evaluate(ctx(payer_account_id=second)).fired == ()     # 2 distinct: at the limit
    posted(engine, ctx(payer_account_id=second))
    assert engine.evaluate(ctx(payer_account_id=first)).fired == ()      # a known payer adds nothing
    assert engine.evaluate(ctx(payer_account_id=third)).code == Code.RISK_REVIEW
    expired = (T0 // SKETCH_BUCKET_NS + 3) * SKETCH_BUCKET_NS
    assert engine.evaluate(ctx(payer_account_id=third, now_ns=expired)).fired == ()


def test_fan_in_into_a_personal_account(impl):
    engine = engine_with(impl, rule("fan_in", action="review", limit=2))
    first, second, third = distinct_sketch_ids(3)
    personal = dict(merchant_account_id=900, merchant_is_personal=True)
    posted(engine, ctx(payer_account_id=first, **personal), ctx(payer_account_id=second, **personal))
    assert engine.evaluate(ctx(payer_account_id=second, **personal)).fired == ()
    assert engine.evaluate(ctx(payer_account_id=third, **personal)).code == Code.RISK_REVIEW
    assert engine.evaluate(ctx(payer_account_id=third, merchant_account_id=900)).fired == ()   # a shop


def test_dormant_account_reactivation(impl):
    engine = engine_with(impl, rule("dormant_reactivation", action="review", dormant_seconds=180 * 86_400,
                                    amount_min_minor=1000))
    posted(engine, ctx())
    dormant = T0 + 180 * DAY_NS
    assert engine.evaluate(ctx(now_ns=dormant - 1, amount_minor=1000)).fired == ()
    assert engine.evaluate(ctx(now_ns=dormant, amount_minor=1000)).code == Code.RISK_REVIEW
    assert engine.evaluate(ctx(now_ns=dormant, amount_minor=999)).fired == ()
    # Without any payment on record, the account's opening is its last activity.
    assert engine.evaluate(ctx(payer_account_id=8, payer_created_ns=T0 - 180 * DAY_NS, amount_minor=1000)).fired


def test_burst_of_payments_under_the_interval(impl):
    engine = engine_with(impl, rule("burst", action="review", interval_seconds=300, count=3))
    posted(engine, ctx(now_ns=T0), ctx(now_ns=T0 + 299 * SECOND))
    assert engine.evaluate(ctx(now_ns=T0 + 598 * SECOND)).code == Code.RISK_REVIEW
    assert engine.evaluate(ctx(now_ns=T0 + 599 * SECOND)).fired == ()     # gap of exactly 300 s breaks it
    slow = engine_with(impl, rule("burst", interval_seconds=300, count=3))
    posted(slow, ctx(now_ns=T0), ctx(now_ns=T0 + 300 * SECOND))
    assert slow.evaluate(ctx(now_ns=T0 + 301 * SECOND)).fired == ()


def test_first_payment_to_a_payee_above_an_amount(impl):
    engine = engine_with(impl, rule("first_payee", action="flag", amount_min_minor=1000))
    assert engine.evaluate(ctx(amount_minor=999)).fired == ()
    assert engine.evaluate(ctx(amount_minor=1000)).fired
    posted(engine, ctx(amount_minor=5))
    assert engine.evaluate(ctx(amount_minor=1000)).fired == ()            # paid this payee before
    assert engine.evaluate(ctx(amount_minor=1000, merchant_account_id=3)).fired


def test_amount_far_above_the_payers_history(impl):
    engine = engine_with(impl, rule("history_outlier", action="flag", mean_percent=1000, max_percent=300,
                                    history_min=3))
    posted(engine, ctx(amount_minor=100), ctx(amount_minor=100))
    assert engine.evaluate(ctx(amount_minor=10**9)).fired == ()          # too little history
    posted(engine, ctx(amount_minor=100))
    assert engine.evaluate(ctx(amount_minor=1000)).fired == ()           # 10x the mean exactly
    assert engine.evaluate(ctx(amount_minor=1001)).fired


def test_merchant_volume_spike_against_its_daily_average(impl):
    engine = engine_with(impl, rule("merchant_spike", action="review", percent=200, average_min_minor=100))
    day = T0 - T0 % DAY_NS
    posted(engine, ctx(now_ns=day, amount_minor=800))                    # average becomes 800/8 = 100
    tomorrow = day + DAY_NS
    assert engine.evaluate(ctx(now_ns=tomorrow, amount_minor=200)).fired == ()
    assert engine.evaluate(ctx(now_ns=tomorrow, amount_minor=201)).code == Code.RISK_REVIEW
    young = engine_with(impl, rule("merchant_spike", percent=200, average_min_minor=101))
    posted(young, ctx(now_ns=day, amount_minor=800))
    assert young.evaluate(ctx(now_ns=tomorrow, amount_minor=10**6)).fired == ()


# ---- QR and cross-border ------------------------------------------------------------------

def test_static_qr_must_be_registered_to_the_merchant_it_pays(impl):
    engine = engine_with(impl, rule("static_qr_merchant"))
    assert engine.evaluate(ctx(qr_merchant_account_id=2)).code == Code.OK
    assert engine.evaluate(ctx(qr_merchant_account_id=3)).code == Code.RISK_QR_REJECTED
    assert engine.evaluate(ctx(qr_merchant_account_id=0)).code == Code.RISK_QR_REJECTED


def dynamic(**fields) -> PaymentContext:
    return ctx(qr_dynamic=True, qr_expires_ns=T0 + 600 * SECOND, qr_amount_minor=100, **fields)


def test_dynamic_qr_is_single_use_unexpired_and_amount_bound(impl):
    engine = engine_with(impl, rule("dynamic_qr"))
    assert engine.evaluate(dynamic()).code == Code.OK
    assert engine.evaluate(dynamic(now_ns=T0 + 600 * SECOND - 1)).code == Code.OK
    assert engine.evaluate(dynamic(now_ns=T0 + 600 * SECOND)).code == Code.RISK_QR_REJECTED
    assert engine.evaluate(dynamic(amount_minor=101)).code == Code.RISK_QR_REJECTED
    assert engine.evaluate(ctx(qr_dynamic=True, qr_expires_ns=0)).code == Code.RISK_QR_REJECTED
    posted(engine, dynamic())
    assert engine.evaluate(dynamic()).code == Code.RISK_QR_REJECTED          # replay
    assert engine.evaluate(dynamic(qr_digest=10)).code == Code.OK


def test_a_full_dynamic_qr_table_refuses_new_codes_until_the_oldest_expires(impl):
    engine = engine_with(impl, rule("dynamic_qr"), capacity={"dynamic_qr": 2})
    posted(engine, dynamic(qr_digest=1))
    assert engine.evaluate(dynamic(qr_digest=2)).code == Code.OK
    posted(engine, dynamic(qr_digest=2))                                      # at the limit
    assert engine.tables()["dynamic_qr"]["size"] == 2
    assert engine.evaluate(dynamic(qr_digest=3)).code == Code.RISK_STATE_FULL  # one past, all live
    later = T0 + 600 * SECOND
    fresh = dynamic(qr_digest=3, now_ns=later)
    fresh.qr_expires_ns = later + 600 * SECOND
    assert engine.evaluate(fresh).code == Code.OK                             # the oldest has expired
    posted(engine, fresh)
    assert engine.tables()["dynamic_qr"] == {"size": 2, "capacity": 2, "evictions": 1}


def test_travel_rule_needs_both_parties_data_on_large_cross_border_payments(impl):
    engine = engine_with(impl, rule("travel_rule", threshold_usd_minor=100_000))
    abroad = dict(payer_country=356, merchant_country=764)
    assert engine.evaluate(ctx(amount_usd_minor=99_999, originator_info_present=False, **abroad)).code == Code.OK
    missing = ctx(amount_usd_minor=100_000, originator_info_present=False, **abroad)
    assert engine.evaluate(missing).code == Code.RISK_TRAVEL_RULE_DATA_MISSING
    assert engine.evaluate(ctx(amount_usd_minor=100_000, beneficiary_info_present=False, **abroad)).code != Code.OK
    assert engine.evaluate(ctx(amount_usd_minor=100_000, **abroad)).code == Code.OK
    assert engine.evaluate(ctx(amount_usd_minor=10**9, originator_info_present=False)).code == Code.OK  # domestic


# ---- decisions, modes, stats ----------------------------------------------------------------

def test_shadow_rules_decide_nothing_but_are_counted(impl):
    engine = engine_with(impl, rule("payment_cap_tier", "cap-shadow", mode="shadow", limit_minor=10),
                         rule("payment_cap_tier", "cap-off", mode="off", limit_minor=10))
    decision = engine.evaluate(ctx(amount_minor=11))
    assert decision.action == Action.APPROVE and decision.code == Code.OK
    assert decision.fired == (("cap-shadow", "PAYMENT_CAP_TIER", "shadow"),)
    stats = engine.stats()
    counted = {rule_id: (counters["hits"], counters["shadow_hits"], counters["evaluations"], counters["samples"])
               for rule_id, counters in stats.items()}
    assert counted == {"cap-shadow": (0, 1, 1, 1), "cap-off": (0, 0, 0, 0)}


def test_decline_outranks_review_and_the_first_decline_names_the_code(impl):
    engine = engine_with(impl,
                         rule("payment_cap_tier", "review-cap", action="review", limit_minor=10),
                         rule("merchant_category_deny", "deny", mccs=[5411]),
                         rule("payment_cap_tier", "cap", limit_minor=10),
                         rule("monthly_aggregate", "flag", action="flag", threshold_minor=1))
    decision = engine.evaluate(ctx(amount_minor=11))
    assert decision.action == Action.DECLINE and decision.code == Code.RISK_CATEGORY_NOT_ALLOWED
    assert [fired[0] for fired in decision.fired] == ["review-cap", "deny", "cap", "flag"]
    assert engine.evaluate(ctx(amount_minor=11, merchant_mcc=1)).code == Code.RISK_LIMIT_EXCEEDED
    only_review = engine.evaluate(ctx(amount_minor=11, merchant_mcc=1, payer_kyc_tier=0))
    assert only_review.action == Action.DECLINE
    assert engine.stats()["review-cap"]["hits"] == 3


def test_every_decision_carries_the_rule_set_hash(impl):
    ruleset = load_ruleset(ruleset_text(rule("payment_cap_tier", limit_minor=10)))
    engine = impl.RuleEngine(ruleset)
    assert engine.evaluate(ctx(amount_minor=1)).ruleset_hash == ruleset.hash
    assert engine.evaluate(ctx(amount_minor=11)).ruleset_hash == ruleset.hash
    assert len(ruleset.hash) == 64 and engine.name == "rules"


def test_a_declined_payment_changes_no_counter(impl):
    engine = engine_with(impl, rule("payer_day_count", limit=1))
    before = engine.state_hash()
    decision = engine.evaluate(ctx())
    engine.observe(ctx(), Decision(int(Action.DECLINE), int(Code.RISK_DECLINED), (), ""))
    assert engine.state_hash() == before and engine.take_journal() is None
    engine.observe(ctx(), decision)
    assert engine.state_hash() != before


# ---- invalid input ----------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("amount_minor", 0), ("amount_minor", 2**64), ("amount_minor", -1), ("amount_minor", 1.5),
    ("payer_kyc_tier", limits.RULES_KYC_TIERS), ("payer_account_id", 2**64), ("payer_account_id", True),
    ("now_ns", -1), ("now_ns", 2**63), ("merchant_mcc", 10_000), ("device_id", None), ("currency", "356"),
    ("qr_dynamic", None), ("merchant_is_personal", "no"), ("originator_info_present", 1.0),
])
def test_an_invalid_field_is_declined_with_a_stable_code(impl, field, value):
    engine = engine_with(impl, rule("payment_cap_tier", limit_minor=10))
    decision = engine.evaluate(ctx(**{field: value}))
    assert decision.action == Action.DECLINE and decision.code == Code.RISK_CONTEXT_INVALID
    with pytest.raises(ValueError):
        engine.observe(ctx(**{field: value}), POSTED)


def test_the_largest_amount_and_ids_are_valid(impl):
    engine = engine_with(impl, rule("payer_day_amount", limit_minor=2**64 - 2))
    biggest = ctx(amount_minor=2**64 - 2, payer_account_id=2**64 - 1, now_ns=2**63 - 1,
                  payer_kyc_tier=limits.RULES_KYC_TIERS - 1)
    assert engine.evaluate(biggest).code == Code.OK
    assert engine.evaluate(dataclasses.replace(biggest, amount_minor=2**64 - 1)).code == Code.RISK_LIMIT_EXCEEDED
    posted(engine, biggest)
    # The day's total saturates at u64 max instead of wrapping round to a small number.
    assert engine.evaluate(dataclasses.replace(biggest, amount_minor=2)).code == Code.RISK_LIMIT_EXCEEDED


# ---- hot reload, restart ---------------------------------------------------------------------

def test_hot_reload_changes_decisions_from_the_next_batch_and_keeps_counters(impl):
    loose = load_ruleset(ruleset_text(rule("payer_day_count", limit=5)))
    strict = load_ruleset(ruleset_text(rule("payer_day_count", limit=2),
                                       rule("merchant_category_deny", mccs=[5411])))
    engine = impl.RuleEngine(loose)
    batch = [engine.evaluate(ctx()) for _ in range(2)]
    assert all(decision.ruleset_hash == loose.hash and decision.code == Code.OK for decision in batch)
    posted(engine, ctx(), ctx())
    engine.reload(strict)
    decision = engine.evaluate(ctx(merchant_mcc=1))
    assert decision.code == Code.RISK_LIMIT_EXCEEDED and decision.ruleset_hash == strict.hash
    assert engine.stats()["payer-day-count"]["evaluations"] == 3       # same id and version: kept
    engine.reload(loose)
    assert engine.evaluate(ctx(merchant_mcc=1)).code == Code.OK
    assert set(engine.stats()) == {"payer-day-count"}


def payment_stream():
    personal = dict(merchant_account_id=40, merchant_is_personal=True)
    return [ctx(now_ns=T0 + step * 97 * SECOND, amount_minor=50 + step * 13, payer_account_id=step % 5 + 1,
                device_id=step % 3, **(personal if step % 4 == 0 else {}))
            for step in range(40)] + [dynamic(qr_digest=77, now_ns=T0 + 5000 * SECOND)]


def test_restart_from_the_journal_rebuilds_the_same_state(impl):
    demo = load_ruleset(open("switch/demo/rules.toml").read())
    engine = impl.RuleEngine(demo)
    for payment in payment_stream():
        engine.observe(payment, engine.evaluate(payment))
    journal = engine.take_journal()
    assert engine.take_journal() is None
    # Replay needs neither the clock nor the same rules, only counters of the same meaning
    # (currency, structuring band: tests/test_rules_reload.py).
    other_rules = dataclasses.replace(demo, name="other", rules=demo.rules[7:])
    assert other_rules.counter_meaning() == demo.counter_meaning()
    restarted = impl.RuleEngine(other_rules)
    restarted.apply_journal(journal)
    assert restarted.state_hash() == engine.state_hash()
    restarted.reload(demo)
    after = dynamic(qr_digest=77, now_ns=T0 + 5001 * SECOND)
    assert restarted.evaluate(after).fired == engine.evaluate(after).fired != ()


def test_a_corrupt_journal_is_refused(impl):
    engine = engine_with(impl, rule("payer_day_count", limit=1))
    with pytest.raises(ValueError):
        engine.apply_journal(b"\x09" + b"\0" * 57)
    with pytest.raises(ValueError):
        engine.apply_journal(b"\x01" + b"\0" * 56)


# ---- bounded tables ----------------------------------------------------------------------------

def test_a_full_account_table_evicts_the_least_recently_used_and_counts_it(impl):
    engine = engine_with(impl, rule("payer_day_count", limit=1), capacity={"accounts": 4})
    shop = dict(merchant_account_id=100)
    posted(engine, ctx(payer_account_id=1, **shop), ctx(payer_account_id=2, **shop),
           ctx(payer_account_id=3, **shop))
    assert engine.tables()["accounts"] == {"size": 4, "capacity": 4, "evictions": 0}     # at the limit
    assert declined(engine.evaluate(ctx(payer_account_id=1, **shop)))                     # still known
    posted(engine, ctx(payer_account_id=4, **shop))                                       # one past
    assert engine.tables()["accounts"] == {"size": 4, "capacity": 4, "evictions": 1}
    assert not declined(engine.evaluate(ctx(payer_account_id=1, **shop)))                 # 1 was evicted
    assert declined(engine.evaluate(ctx(payer_account_id=2, **shop)))


def test_a_full_device_table_evicts_too(impl):
    engine = engine_with(impl, rule("device_velocity", limit=1), capacity={"devices": 1})
    posted(engine, ctx(device_id=1))
    assert declined(engine.evaluate(ctx(device_id=1)))
    posted(engine, ctx(device_id=2))
    assert engine.tables()["devices"] == {"size": 1, "capacity": 1, "evictions": 1}
    assert not declined(engine.evaluate(ctx(device_id=1)))


@pytest.mark.parametrize("table, maximum", [
    ("accounts", limits.RULES_ACCOUNTS_TRACKED_MAX), ("devices", limits.RULES_DEVICES_TRACKED_MAX),
    ("dynamic_qr", limits.RULES_DYNAMIC_QR_TRACKED_MAX),
])
def test_table_capacity_is_bounded_by_its_limit(impl, table, maximum):
    ruleset = load_ruleset(ruleset_text())
    assert impl.RuleEngine(ruleset, capacity={table: maximum}).tables()[table]["capacity"] == maximum
    with pytest.raises(ValueError):
        impl.RuleEngine(ruleset, capacity={table: maximum + 1})
    with pytest.raises(ValueError):
        impl.RuleEngine(ruleset, capacity={table: 0})


def test_evaluate_changes_no_state_and_repeat_needs_a_positive_count(impl):
    engine = impl.RuleEngine(load_ruleset(open("switch/demo/rules.toml").read()))
    posted(engine, *payment_stream())
    engine.take_journal()
    before = engine.state_hash()
    for payment in payment_stream():
        engine.evaluate(payment)
    assert engine.evaluate_repeat(ctx(), 3) == engine.evaluate(ctx())
    assert engine.state_hash() == before and engine.take_journal() is None
    with pytest.raises(ValueError):
        engine.evaluate_repeat(ctx(), 0)


def test_reset_empties_the_state_for_a_replay_from_storage(impl):
    demo = load_ruleset(open("switch/demo/rules.toml").read())
    engine = impl.RuleEngine(demo, capacity={"accounts": 3})
    empty = engine.state_hash()
    posted(engine, *payment_stream())
    journal = engine.take_journal()
    full = engine.state_hash()
    posted(engine, ctx(payer_account_id=99))                 # applied but never committed
    engine.reset()
    assert engine.state_hash() == empty and engine.take_journal() is None
    assert engine.tables()["accounts"] == {"size": 0, "capacity": 3, "evictions": 0}
    engine.apply_journal(journal)
    assert engine.state_hash() == full


def test_the_longest_burst_a_rule_may_ask_about(impl):
    longest = limits.RULES_BURST_COUNT_MAX
    engine = engine_with(impl, rule("burst", action="review", interval_seconds=300, count=longest))
    posted(engine, *[ctx(now_ns=T0 + step * SECOND) for step in range(longest - 2)])
    assert engine.evaluate(ctx(now_ns=T0 + longest * SECOND)).fired == ()       # one short of the count
    posted(engine, ctx(now_ns=T0 + (longest - 2) * SECOND))
    assert engine.evaluate(ctx(now_ns=T0 + longest * SECOND)).code == Code.RISK_REVIEW
    posted(engine, *[ctx(now_ns=T0 + (longest + step) * SECOND) for step in range(longest)])
    assert engine.evaluate(ctx(now_ns=T0 + 3 * longest * SECOND)).code == Code.RISK_REVIEW   # ring wrapped


def test_flags_may_be_zero_or_one_from_a_decoder(impl):
    engine = engine_with(impl, rule("static_qr_merchant"))
    assert engine.evaluate(ctx(qr_dynamic=1, qr_merchant_account_id=0)).code == Code.OK
    assert engine.evaluate(ctx(qr_dynamic=0, qr_merchant_account_id=0)).code == Code.RISK_QR_REJECTED


def test_a_hand_built_rule_set_past_the_rule_limit_is_refused(impl):
    ruleset = load_ruleset(ruleset_text(*[rule("payer_day_count", f"r{index}", limit=1)
                                          for index in range(limits.RULES_PER_SET_MAX)]))
    engine = impl.RuleEngine(ruleset)
    too_many = dataclasses.replace(ruleset, rules=ruleset.rules + ruleset.rules[:1])
    with pytest.raises(ValueError, match="more than"):
        engine.reload(too_many)
    assert engine.evaluate(ctx()).ruleset_hash == ruleset.hash        # the old set stays in force
    posted(engine, ctx())
    assert len(engine.evaluate(ctx()).fired) == limits.RULES_PER_SET_MAX
