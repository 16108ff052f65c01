"""A rules reload that changes what the counters mean -- the rule set's currency, or the
structuring band observe flags payments in -- forgets the per-account and per-device counters
(amounts counted in one currency are never compared with limits in another); the dynamic QR
replay table stays. The journal stamps every blob with that meaning, so a replay forgets at the
same point and a restart with a rules file of another meaning counts none of the old amounts.
On both engines (`impl`)."""
from __future__ import annotations

import pytest

from core_ext.codes import Code
from core_ext.rules_types import (
    JOURNAL_RECORD, JOURNAL_VERSION, Action, CounterMeaning, RuleSetError, journal_meaning, load_ruleset,
)
from switch import config as config_module
from switch.engine import Engine
import test_server_helpers as fixtures
from test_pipeline_rules import pay_batch
from test_rules_engine import POSTED, SECOND, T0, ctx, dynamic, rule, toml_value

INR, IDR = 356, 360
LIMIT_MINOR = 100_000              # 1,000.00 of the rule set's currency a day


def ruleset_text_of(currency: int, name: str, *extra: dict, limit_minor: int = LIMIT_MINOR) -> str:
    """A day-amount cap and the dynamic QR rule (and `extra`) in `currency` (0: each payment's own)."""
    rules = [rule("payer_day_amount", limit_minor=limit_minor), rule("dynamic_qr"), *extra]
    lines = ["[ruleset]", f'name = "{name}"'] + ([f"currency = {currency}"] if currency else [])
    for table in rules:
        lines.append("[[rules]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def ruleset(currency: int, *extra: dict, limit_minor: int = LIMIT_MINOR, name: str = "day"):
    return load_ruleset(ruleset_text_of(currency, name, *extra, limit_minor=limit_minor))


def paid(amount_minor: int, currency: int, step: int = 0, **fields):
    """A payment already in the rule set's currency (rate 1:1), `step` seconds after T0."""
    return ctx(amount_minor=amount_minor, currency=currency, now_ns=T0 + step * SECOND, **fields)


def over_the_day_limit(engine, currency: int) -> bool:
    decision = engine.evaluate(paid(LIMIT_MINOR // 10, currency, step=100))
    return decision.action == Action.DECLINE and decision.code == Code.RISK_LIMIT_EXCEEDED


def accounts_counted(engine) -> int:
    return engine.tables()["accounts"]["size"]


def test_a_reload_that_keeps_the_currency_keeps_the_counters(impl):
    engine = impl.RuleEngine(ruleset(INR))
    engine.observe(paid(95_000, INR), POSTED)
    engine.take_journal()
    engine.reload(ruleset(INR, name="day-2"))
    assert over_the_day_limit(engine, INR)          # 950.00 + 100.00 > 1,000.00


def test_a_reload_that_changes_the_currency_forgets_the_counters(impl):
    engine = impl.RuleEngine(ruleset(INR))
    engine.observe(paid(95_000, INR), POSTED)
    engine.take_journal()
    engine.reload(ruleset(IDR))
    assert accounts_counted(engine) == 0
    assert not over_the_day_limit(engine, IDR)      # 95,000 paise are not 95,000 sen


def test_a_reload_that_changes_the_structuring_band_forgets_the_counters(impl):
    band = rule("structuring", threshold_minor=50_000, band_minor=5_000, count=2)
    engine = impl.RuleEngine(ruleset(INR, band))
    engine.observe(paid(46_000, INR), POSTED)
    engine.take_journal()
    engine.reload(ruleset(INR, rule("structuring", threshold_minor=60_000, band_minor=5_000, count=2)))
    assert accounts_counted(engine) == 0


def test_the_dynamic_qr_replay_table_survives_a_change_of_currency(impl):
    engine = impl.RuleEngine(ruleset(INR))
    engine.observe(dynamic(qr_digest=77), POSTED)
    engine.take_journal()
    engine.reload(ruleset(IDR))
    again = dynamic(qr_digest=77, currency=IDR, now_ns=T0 + SECOND)
    assert engine.evaluate(again).code == Code.RISK_QR_REJECTED


def test_a_replay_forgets_at_the_reload_and_rebuilds_the_same_state(impl):
    live = impl.RuleEngine(ruleset(INR))
    live.observe(paid(95_000, INR, payer_account_id=1), POSTED)
    live.observe(dynamic(qr_digest=77), POSTED)
    before = live.take_journal()
    live.reload(ruleset(IDR))
    live.observe(paid(30_000, IDR, step=1, payer_account_id=3), POSTED)
    after = live.take_journal()
    assert (journal_meaning(before).currency, journal_meaning(after).currency) == (INR, IDR)
    restarted = impl.RuleEngine(ruleset(IDR))
    restarted.apply_journal(before)
    restarted.apply_journal(after)
    assert restarted.state_hash() == live.state_hash()
    assert accounts_counted(restarted) == 2           # payer 3 and the merchant, not payer 1


def test_a_restart_with_a_rules_file_of_another_currency_counts_none_of_the_old_amounts(impl):
    old = impl.RuleEngine(ruleset(INR))
    old.observe(paid(95_000, INR), POSTED)
    old.observe(dynamic(qr_digest=77), POSTED)
    restarted = impl.RuleEngine(ruleset(IDR))
    restarted.apply_journal(old.take_journal())
    assert accounts_counted(restarted) == 0 and not over_the_day_limit(restarted, IDR)
    assert restarted.evaluate(dynamic(qr_digest=77, currency=IDR, now_ns=T0 + SECOND)).code == Code.RISK_QR_REJECTED


def test_a_journal_back_to_the_first_currency_counts_only_since_the_last_change(impl):
    live = impl.RuleEngine(ruleset(INR))
    blobs = []
    for currency, step in ((INR, 0), (IDR, 1), (INR, 2)):
        if currency != live.ruleset.currency:
            live.reload(ruleset(currency))
        live.observe(paid(40_000, currency, step=step), POSTED)
        blobs.append(live.take_journal())
    restarted = impl.RuleEngine(ruleset(INR))
    for blob in blobs:
        restarted.apply_journal(blob)
    assert restarted.state_hash() == live.state_hash()
    assert not over_the_day_limit(restarted, INR)      # 400.00 since the change back, not 800.00


def test_a_version_1_journal_is_replayed_as_the_running_sets(impl):
    engine = impl.RuleEngine(ruleset(INR))
    record = JOURNAL_RECORD.pack(T0, 1, 2, 7, 9, 0, 95_000, 0)
    engine.apply_journal(bytes([JOURNAL_VERSION]) + record)
    assert over_the_day_limit(engine, INR)


def test_a_version_2_journal_shorter_than_its_header_is_refused_and_changes_nothing(impl):
    engine = impl.RuleEngine(ruleset(INR))
    engine.observe(paid(95_000, INR), POSTED)
    engine.take_journal()
    state = engine.state_hash()
    with pytest.raises(ValueError, match="header"):
        engine.apply_journal(bytes([2, 1, 2, 3]))
    assert engine.state_hash() == state


def test_a_change_of_meaning_with_payments_not_yet_journaled_is_refused(impl):
    engine = impl.RuleEngine(ruleset(INR))
    engine.observe(paid(95_000, INR), POSTED)
    with pytest.raises(RuleSetError, match="between batches"):
        engine.reload(ruleset(IDR))
    assert engine.ruleset.currency == INR and over_the_day_limit(engine, INR)
    engine.reload(ruleset(INR, name="day-2"))            # the same meaning: fine mid-batch
    engine.take_journal()
    engine.reload(ruleset(IDR))
    assert engine.ruleset.currency == IDR


def test_the_meaning_is_the_currency_and_the_band_of_the_structuring_rule_that_is_on():
    assert ruleset(INR).counter_meaning() == CounterMeaning(INR, 0, 0)
    banded = ruleset(IDR, rule("structuring", threshold_minor=50_000, band_minor=5_000, count=2))
    assert banded.counter_meaning() == CounterMeaning(IDR, 45_000, 50_000)
    off = ruleset(IDR, rule("structuring", mode="off", threshold_minor=50_000, band_minor=5_000, count=2))
    assert off.counter_meaning() == CounterMeaning(IDR, 0, 0)


# ---- through the engine and its storage ------------------------------------------------------

def test_a_switch_reloaded_to_another_currency_restarts_with_the_same_counters(impl, tmp_path):
    in_baht = ruleset(fixtures.THB, name="thb")
    per_payment_text = ruleset_text_of(0, "own-currency")   # each payment's own currency: another meaning
    config = config_module.parse(fixtures.document())
    engine = Engine.open(config, str(tmp_path), durability="os", core=impl, rules=impl.RuleEngine(in_baht))
    assert [code for code, _ in pay_batch(engine, (1, fixtures.PAYER, fixtures.static_qr(), 90_000))] == [Code.OK]
    code, _ = engine.reload_rules_text(per_payment_text)
    assert code == Code.OK and accounts_counted(engine.rules) == 0
    assert [code for code, _ in pay_batch(engine, (2, fixtures.PAYER, fixtures.static_qr(), 20_000))] == [Code.OK]
    live = engine.rules.state_hash()
    engine.close()
    reopened = Engine.open(config, str(tmp_path), durability="os", core=impl,
                           rules=impl.RuleEngine(load_ruleset(per_payment_text)))
    try:
        assert reopened.rules.state_hash() == live
        assert accounts_counted(reopened.rules) == 2          # the payer and the merchant of payment 2
    finally:
        reopened.close()
