"""Rule amounts are in the rule set's reference currency ([ruleset] currency): every
amount-based rule compares and accumulates the payment converted to it, rounded down,
with integer arithmetic. Each rule at, just under and just past its threshold, in the
reference currency itself and in a second one; on both engines (`impl`)."""
from __future__ import annotations

import pytest

from core_ext.codes import Code
from core_ext.rules_types import (
    Action, RuleSetError, U64_MAX, load_ruleset, reference_minor,
)
from test_rules_engine import DAY_NS, HOUR_NS, POSTED, T0, ctx, rule, toml_value

# (numerator, denominator): the payment's ledger rate over the reference ledger's, as the
# pipeline forms them from usd_minor_per_million_minor (demo: IDR 63, INR 12000).
INR = (1, 1)
IDR = (63, 12_000)
CURRENCIES = {"INR": (356, INR), "IDR": (360, IDR)}
THRESHOLD_MINOR = 100_000          # INR 1,000.00 in every rule below


def ruleset_in_inr(*rules: dict):
    lines = ['[ruleset]', 'name = "inr"', 'currency = 356']
    for table in rules:
        lines.append("[[rules]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
    return load_ruleset("\n".join(lines) + "\n")


def minor_for(reference: int, rate: tuple[int, int]) -> int:
    """The smallest amount of the payment's currency that converts to `reference` (ceil)."""
    numerator, denominator = rate
    return -(-reference * denominator // numerator)


def paying(rate: tuple[int, int], reference: int, currency: int, **fields):
    numerator, denominator = rate
    return ctx(amount_minor=minor_for(reference, rate), currency=currency, reference_rate_numerator=numerator,
               reference_rate_denominator=denominator, **fields)


NEW_PAYER = {"payer_created_ns": T0 - HOUR_NS}
DORMANT_PAYER = {"payer_created_ns": T0 - 10 * DAY_NS}
PERSONAL_PAYEE = {"merchant_is_personal": True, "merchant_kyc_tier": 1, "merchant_balance_minor": 0}

# (rule, context fields, fires (just under, at, just past) the threshold)
STRICT = (False, False, True)           # "more than the limit"
INCLUSIVE = (False, True, True)         # "at least the threshold"
AMOUNT_RULES = [
    pytest.param(rule("payment_cap_tier", limit_minor=THRESHOLD_MINOR), {}, STRICT, id="payment_cap_tier"),
    pytest.param(rule("payment_cap_mcc", caps_minor={"5411": THRESHOLD_MINOR}), {}, STRICT, id="payment_cap_mcc"),
    pytest.param(rule("payer_day_amount", limit_minor=THRESHOLD_MINOR), {}, STRICT, id="payer_day_amount"),
    pytest.param(rule("payer_hour_amount", limit_minor=THRESHOLD_MINOR), {}, STRICT, id="payer_hour_amount"),
    pytest.param(rule("new_account_cooling", cooling_seconds=86_400, limit_minor=THRESHOLD_MINOR), NEW_PAYER,
                 STRICT, id="new_account_cooling"),
    pytest.param(rule("balance_cap", limit_minor=THRESHOLD_MINOR), PERSONAL_PAYEE, STRICT, id="balance_cap"),
    pytest.param(rule("monthly_aggregate", threshold_minor=THRESHOLD_MINOR), {}, INCLUSIVE, id="monthly_aggregate"),
    pytest.param(rule("dormant_reactivation", dormant_seconds=86_400, amount_min_minor=THRESHOLD_MINOR),
                 DORMANT_PAYER, INCLUSIVE, id="dormant_reactivation"),
    pytest.param(rule("first_payee", amount_min_minor=THRESHOLD_MINOR), {}, INCLUSIVE, id="first_payee"),
    # Structuring counts payments in [threshold - band, threshold): just under is in, at is out.
    pytest.param(rule("structuring", threshold_minor=THRESHOLD_MINOR, band_minor=1_000, count=1), {},
                 (True, False, False), id="structuring"),
]


@pytest.mark.parametrize("currency_name", sorted(CURRENCIES))
@pytest.mark.parametrize("table, fields, expected", AMOUNT_RULES)
def test_each_amount_rule_compares_the_payment_in_the_rule_sets_currency(impl, table, fields, expected,
                                                                         currency_name):
    currency, rate = CURRENCIES[currency_name]
    engine = impl.RuleEngine(ruleset_in_inr(table))
    fired = tuple(bool(engine.evaluate(paying(rate, reference, currency, **fields)).fired)
                  for reference in (THRESHOLD_MINOR - 1, THRESHOLD_MINOR, THRESHOLD_MINOR + 1))
    assert fired == expected


@pytest.mark.parametrize("table, fields, expected", AMOUNT_RULES)
def test_a_fraction_of_a_reference_minor_unit_is_rounded_down(impl, table, fields, expected):
    # One sen less than the first amount past the threshold converts to the threshold itself.
    engine = impl.RuleEngine(ruleset_in_inr(table))
    numerator, denominator = IDR
    amount_minor = minor_for(THRESHOLD_MINOR + 1, IDR) - 1
    assert reference_minor(amount_minor, numerator, denominator) == THRESHOLD_MINOR
    context = ctx(amount_minor=amount_minor, currency=360, reference_rate_numerator=numerator,
                  reference_rate_denominator=denominator, **fields)
    assert bool(engine.evaluate(context).fired) == expected[1]


def test_the_idr_payment_of_the_issue_is_judged_in_inr_not_as_paise(impl):
    # IDR 45,000.00 is INR 236.25 at the demo's rates: far under a INR 10,000 cap.
    engine = impl.RuleEngine(ruleset_in_inr(rule("payment_cap_tier", limit_minor=1_000_000)))
    groceries = ctx(amount_minor=4_500_000, currency=360, reference_rate_numerator=63,
                    reference_rate_denominator=12_000)
    assert reference_minor(4_500_000, 63, 12_000) == 23_625
    assert engine.evaluate(groceries).action == Action.APPROVE


def test_windows_accumulate_payments_of_several_currencies_in_the_reference_currency(impl):
    engine = impl.RuleEngine(ruleset_in_inr(rule("payer_day_amount", limit_minor=THRESHOLD_MINOR)))
    engine.observe(paying(IDR, 60_000, 360), POSTED)                # INR 600.00 paid in IDR
    engine.observe(paying(INR, 30_000, 356, now_ns=T0 + 1), POSTED)   # INR 300.00
    later = {"now_ns": T0 + 2}
    assert not engine.evaluate(paying(IDR, 10_000, 360, **later)).fired        # INR 1,000.00 in the day: at
    decision = engine.evaluate(paying(IDR, 10_001, 360, **later))
    assert decision.action == Action.DECLINE and decision.code == Code.RISK_LIMIT_EXCEEDED


def test_the_journal_replays_the_converted_amounts(impl):
    table = rule("payer_day_amount", limit_minor=THRESHOLD_MINOR)
    engine = impl.RuleEngine(ruleset_in_inr(table))
    engine.observe(paying(IDR, 99_000, 360), POSTED)
    restarted = impl.RuleEngine(ruleset_in_inr(table))
    restarted.apply_journal(engine.take_journal())
    assert restarted.state_hash() == engine.state_hash()
    assert not restarted.evaluate(paying(INR, 1_000, 356, now_ns=T0 + 1)).fired
    assert restarted.evaluate(paying(INR, 1_001, 356, now_ns=T0 + 1)).fired


def test_conversion_saturates_instead_of_overflowing(impl):
    engine = impl.RuleEngine(ruleset_in_inr(rule("payment_cap_tier", limit_minor=U64_MAX - 1)))
    huge = ctx(amount_minor=U64_MAX, reference_rate_numerator=U64_MAX, reference_rate_denominator=1)
    assert reference_minor(U64_MAX, U64_MAX, 1) == U64_MAX
    assert engine.evaluate(huge).code == Code.RISK_LIMIT_EXCEEDED
    engine.observe(huge, POSTED)
    engine.observe(huge, POSTED)        # the window total saturates too
    assert engine.evaluate(ctx(amount_minor=1)).action == Action.APPROVE


@pytest.mark.parametrize("field, value", [
    ("reference_rate_numerator", 0), ("reference_rate_denominator", 0),
    ("reference_rate_numerator", U64_MAX + 1), ("reference_rate_denominator", -1),
])
def test_a_missing_or_out_of_range_rate_is_refused_as_an_invalid_context(impl, field, value):
    engine = impl.RuleEngine(ruleset_in_inr(rule("payment_cap_tier", limit_minor=THRESHOLD_MINOR)))
    decision = engine.evaluate(ctx(**{field: value}))
    assert (decision.action, decision.code) == (Action.DECLINE, Code.RISK_CONTEXT_INVALID)
    with pytest.raises(ValueError):
        engine.observe(ctx(**{field: value}), POSTED)


def test_the_rule_set_states_its_currency_as_an_iso_4217_number():
    assert load_ruleset('[ruleset]\nname = "a"\ncurrency = 356\n').currency == 356
    assert load_ruleset('[ruleset]\nname = "a"\ncurrency = 999\n').currency == 999
    assert load_ruleset('[ruleset]\nname = "a"\n').currency == 0          # each payment's own
    for bad in ('1000', '-1', '"INR"', '356.0'):
        with pytest.raises(RuleSetError, match="ruleset.currency"):
            load_ruleset(f'[ruleset]\nname = "a"\ncurrency = {bad}\n')
    with pytest.raises(RuleSetError, match="unknown field"):
        load_ruleset('[ruleset]\nname = "a"\ncurency = 356\n')
