"""The compiled rules engine and its reference twin agree on random payment
streams: the same decisions, statistics, journals and state, including when the
bounded tables overflow and when the clock jumps over windows."""
from __future__ import annotations

import pathlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import core_ext
from core_ext.rules_types import NS_PER_SECOND, Action, Decision, PaymentContext, load_ruleset

ROOT = pathlib.Path(__file__).resolve().parent.parent
T0 = 1_700_000_000 * NS_PER_SECOND
POSTED = Decision(int(Action.APPROVE), 0, (), "")

# Small thresholds so that every rule fires often on short streams.
TIGHT = """
[ruleset]
name = "tight"
[[rules]]
id = "bl"
kind = "blocklist"
mode = "enforce"
action = "decline"
reason = "BL"
field = "device"
entries = [3]
[[rules]]
id = "cap"
kind = "payment_cap_tier"
mode = "shadow"
action = "decline"
reason = "CAP"
limit_minor = [300, 600, 900]
[[rules]]
id = "mcc-cap"
kind = "payment_cap_mcc"
mode = "enforce"
action = "review"
reason = "MCC"
caps_minor = { "4829" = 200 }
[[rules]]
id = "day-count"
kind = "payer_day_count"
mode = "enforce"
action = "decline"
reason = "DC"
limit = [3, 5, 7]
[[rules]]
id = "day-amount"
kind = "payer_day_amount"
mode = "enforce"
action = "review"
reason = "DA"
limit_minor = 1500
[[rules]]
id = "hour-amount"
kind = "payer_hour_amount"
mode = "shadow"
action = "decline"
reason = "HA"
limit_minor = 700
[[rules]]
id = "cooling"
kind = "new_account_cooling"
mode = "enforce"
action = "decline"
reason = "NEW"
cooling_seconds = 86400
limit_minor = 400
[[rules]]
id = "balance"
kind = "balance_cap"
mode = "enforce"
action = "decline"
reason = "BAL"
limit_minor = [1000, 2000, 3000]
[[rules]]
id = "dev-velocity"
kind = "device_velocity"
mode = "enforce"
action = "review"
reason = "DV"
limit = 4
[[rules]]
id = "dev-distinct"
kind = "device_distinct_payers"
mode = "enforce"
action = "flag"
reason = "DD"
limit = 2
[[rules]]
id = "structuring"
kind = "structuring"
mode = "enforce"
action = "review"
reason = "ST"
threshold_minor = 500
band_minor = 100
count = 2
[[rules]]
id = "monthly"
kind = "monthly_aggregate"
mode = "enforce"
action = "flag"
reason = "MO"
threshold_minor = 2000
[[rules]]
id = "pass-through"
kind = "pass_through"
mode = "enforce"
action = "review"
reason = "PT"
percent = 90
inflow_min_minor = 100
[[rules]]
id = "dormant"
kind = "dormant_reactivation"
mode = "enforce"
action = "flag"
reason = "DO"
dormant_seconds = 20000
amount_min_minor = 50
[[rules]]
id = "burst"
kind = "burst"
mode = "enforce"
action = "review"
reason = "BU"
interval_seconds = 300
count = 3
[[rules]]
id = "first-payee"
kind = "first_payee"
mode = "enforce"
action = "flag"
reason = "FP"
amount_min_minor = 400
[[rules]]
id = "fan-in"
kind = "fan_in"
mode = "enforce"
action = "review"
reason = "FI"
limit = 2
[[rules]]
id = "outlier"
kind = "history_outlier"
mode = "enforce"
action = "flag"
reason = "HO"
mean_percent = 200
max_percent = 110
history_min = 2
[[rules]]
id = "deny"
kind = "merchant_category_deny"
mode = "enforce"
action = "decline"
reason = "MD"
mccs = [7995]
[[rules]]
id = "static-qr"
kind = "static_qr_merchant"
mode = "enforce"
action = "decline"
reason = "SQ"
[[rules]]
id = "dynamic-qr"
kind = "dynamic_qr"
mode = "enforce"
action = "decline"
reason = "DQ"
[[rules]]
id = "spike"
kind = "merchant_spike"
mode = "enforce"
action = "review"
reason = "SP"
percent = 150
average_min_minor = 10
[[rules]]
id = "r16"
kind = "travel_rule"
mode = "enforce"
action = "decline"
reason = "R16"
threshold_usd_minor = 500
"""

payments = st.builds(
    dict,
    advance_seconds=st.sampled_from([0, 0, 1, 1, 60, 60, 299, 300, 3_000, 20_000, 86_400, 40 * 86_400]),
    payer=st.integers(1, 6),
    tier=st.integers(0, 2),
    created_ago_seconds=st.sampled_from([10, 80_000, 90_000, 10**8, 10**8, 10**8, 10**8, 10**8]),
    payee=st.integers(1, 8),
    mcc=st.sampled_from([5411, 5411, 5411, 4829, 7995]),
    personal=st.booleans(),
    countries=st.sampled_from([(356, 356), (356, 356), (356, 764)]),
    device=st.sampled_from([0, 1, 1, 2, 2, 3, 4]),
    qr=st.integers(0, 5),
    dynamic=st.sampled_from([False, False, False, True]),
    expires_in_seconds=st.sampled_from([0, 1, 600]),
    bound=st.sampled_from([0, 100, 450]),
    amount=st.sampled_from([1, 1, 50, 99, 99, 100, 100, 399, 400, 401, 450, 499, 500, 901, 2**64 - 1]),
    info=st.sampled_from([True, True, True, False]),
    balance=st.sampled_from([0, 0, 0, 0, 900, 2**64 - 1]),
    registered=st.sampled_from([0, 1, 1, 1, 1]),
    # The payment's currency over the rule set's (numerator, denominator): the same, the demo's
    # IDR and THB over INR, and both extremes (saturation, everything rounded to 0).
    rate=st.sampled_from([(1, 1), (1, 1), (63, 12_000), (28_000, 12_000), (2**64 - 1, 1), (1, 2**64 - 1)]),
    # Apply it even if declined (a ledger-side override): drives the counters harder.
    post_anyway=st.booleans(),
)


def to_context(now_ns: int, payment: dict) -> PaymentContext:
    payer_country, merchant_country = payment["countries"]
    return PaymentContext(
        payer_account_id=payment["payer"], payer_kyc_tier=payment["tier"],
        payer_created_ns=max(now_ns - payment["created_ago_seconds"] * NS_PER_SECOND, 0),
        payer_balance_minor=10**6, merchant_account_id=payment["payee"], merchant_mcc=payment["mcc"],
        merchant_is_personal=payment["personal"], merchant_country=merchant_country, payer_country=payer_country,
        device_id=payment["device"], qr_digest=payment["qr"], qr_dynamic=payment["dynamic"],
        amount_minor=payment["amount"], currency=356, amount_usd_minor=payment["amount"],
        originator_info_present=payment["info"], beneficiary_info_present=True, now_ns=now_ns,
        qr_merchant_account_id=payment["payee"] if payment["registered"] else 99,
        qr_expires_ns=now_ns + payment["expires_in_seconds"] * NS_PER_SECOND if payment["expires_in_seconds"] else 0,
        qr_amount_minor=payment["bound"], merchant_kyc_tier=payment["tier"], merchant_balance_minor=payment["balance"],
        reference_rate_numerator=payment["rate"][0], reference_rate_denominator=payment["rate"][1],
    )


def counted(engine) -> dict:
    """The statistics both engines must agree on: everything but the measured times."""
    return {rule_id: (counters["hits"], counters["shadow_hits"], counters["evaluations"], counters["samples"])
            for rule_id, counters in engine.stats().items()}


def run_both(ruleset, stream, capacity):
    compiled = core_ext.implementation("compiled").RuleEngine(ruleset, capacity=capacity)
    reference = core_ext.implementation("reference").RuleEngine(ruleset, capacity=capacity)
    now_ns = T0
    for payment in stream:
        now_ns += payment["advance_seconds"] * NS_PER_SECOND
        context = to_context(now_ns, payment)
        decision = compiled.evaluate(context)
        assert decision == reference.evaluate(context), context
        applied = POSTED if payment["post_anyway"] else decision
        compiled.observe(context, applied)
        reference.observe(context, applied)
    assert counted(compiled) == counted(reference)
    assert compiled.tables() == reference.tables()
    assert compiled.state_hash() == reference.state_hash()
    return compiled, reference


SMALL_TABLES = {"accounts": 6, "devices": 2, "dynamic_qr": 3}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payments, min_size=1, max_size=40))
def test_compiled_and_reference_agree_on_a_tight_rule_set(stream):
    run_both(load_ruleset(TIGHT), stream, SMALL_TABLES)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payments, min_size=1, max_size=40))
def test_compiled_and_reference_agree_on_the_demo_rule_set(stream):
    run_both(load_ruleset((ROOT / "switch" / "demo" / "rules.toml").read_text()), stream, None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payments, min_size=1, max_size=30))
def test_either_journal_restores_the_other_implementations_state(stream):
    compiled, reference = run_both(load_ruleset(TIGHT), stream, SMALL_TABLES)
    journal = compiled.take_journal()
    assert journal == reference.take_journal()
    restored = core_ext.implementation("reference").RuleEngine(load_ruleset(TIGHT), capacity=SMALL_TABLES)
    if journal is not None:                      # None: every payment was declined, nothing applied
        restored.apply_journal(journal)
    assert restored.state_hash() == compiled.state_hash()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payments, min_size=2, max_size=30), st.data())
def test_compiled_and_reference_agree_across_hot_reloads(stream, data):
    tight = load_ruleset(TIGHT)
    demo = load_ruleset((ROOT / "switch" / "demo" / "rules.toml").read_text())
    engines = [core_ext.implementation(name).RuleEngine(tight, capacity=SMALL_TABLES)
               for name in ("compiled", "reference")]
    reload_at = data.draw(st.integers(1, len(stream) - 1))
    now_ns = T0
    for index, payment in enumerate(stream):
        if index in (reload_at, reload_at + 3):
            for engine in engines:
                engine.take_journal()       # a reload comes between batches, after a commit
                engine.reload(demo if index == reload_at else tight)
        now_ns += payment["advance_seconds"] * NS_PER_SECOND
        context = to_context(now_ns, payment)
        decisions = [engine.evaluate(context) for engine in engines]
        assert decisions[0] == decisions[1]
        expected = demo.hash if reload_at <= index < reload_at + 3 else tight.hash
        assert decisions[0].ruleset_hash == expected
        for engine in engines:
            engine.observe(context, POSTED if payment["post_anyway"] else decisions[0])
    assert counted(engines[0]) == counted(engines[1])
    assert engines[0].state_hash() == engines[1].state_hash()
