"""The risk rules in the pay flow, on both cores: decisions, review holds, audit records,
rules state committed with the postings, and the configuration that feeds them."""
from __future__ import annotations

import dataclasses
import pathlib

import pytest

from core_ext import limits
from core_ext.codes import Code
from core_ext.pipeline_types import (
    AUDIT_VERSION, AuditLog, AuditRecord, FiredRule, device_digest, encode_audit_record, iter_audit_records, qr_digest,
    usd_minor,
)
from core_ext.rules_types import Action, load_ruleset
from core_ext.types import TransferFlags
from switch import config as config_module
from switch.engine import Engine
from switch.merchants import MerchantDirectory
from switch.protocol import PayItem, Request
from switch.storage import iterate_journal
import test_server_helpers as fixtures

NOW_NS = 1_800_000_000 * 10**9


def rule(rule_id: str, kind: str, action: str, mode: str = "enforce", **params) -> str:
    lines = [f'[[rules]]\nid = "{rule_id}"\nkind = "{kind}"\nmode = "{mode}"\naction = "{action}"\nreason = "R_{rule_id}"']
    lines += [f"{name} = {value!r}".replace("'", '"') for name, value in params.items()]
    return "\n".join(lines) + "\n"


def rules_engine(impl, *rules: str):
    return impl.RuleEngine(load_ruleset('[ruleset]\nname = "test"\n' + "".join(rules)))


class MemoryStorage:
    """Every component's journal kept per batch, so a test can read what a commit would write."""

    def __init__(self, components) -> None:
        self.components = components
        self.records: list[dict] = []

    def commit(self) -> None:
        self.write(self.prepare())

    def prepare(self) -> dict:
        return {c.name: c.take_journal() for c in self.components}

    def write(self, record: dict) -> None:
        self.records.append(record)

    def reload(self) -> None:
        for component in self.components:
            component.reset()
        for record in self.records:
            for component in self.components:
                if record.get(component.name):
                    component.apply_journal(record[component.name])


def make_engine(impl, *rules: str, **switch_overrides) -> Engine:
    document = fixtures.document()
    document["switch"].update(switch_overrides)
    config = config_module.parse(document)
    ledger, merchants = impl.Ledger(config.accounts_max), MerchantDirectory()
    engine_rules = rules_engine(impl, *rules) if rules else None
    audit = AuditLog()
    components = [ledger, merchants, audit] + ([engine_rules] if engine_rules is not None else [])
    engine = Engine(config, impl, ledger, merchants, MemoryStorage(components), rules=engine_rules,
                    clock_ns=lambda: NOW_NS, audit=audit)
    engine.bootstrap()
    return engine


def pay_batch(engine, *items, participant_id=fixtures.WALLET_ID):
    participant = engine.config.participants[participant_id]
    pay_items = [PayItem(*item) if len(item) == 6 else PayItem(*item, None, None) for item in items]
    outcome, = engine.process_batch([(participant, Request(1, "pay_batch", pay_items, None, 2 * len(pay_items)))])
    assert outcome.code == Code.OK
    return [tuple(entry) for entry in outcome.result]


def audit_records(engine) -> list[AuditRecord]:
    return [record for batch in engine.storage.records if batch.get("audit")
            for record in iter_audit_records(batch["audit"])]


def payer(engine):
    return engine.ledger.lookup_accounts([fixtures.PAYER])[0]


BLOCK_MERCHANT = rule("block-merchant", "blocklist", "decline", field="merchant", entries=[fixtures.MERCHANT_ACCOUNT])
REVIEW_OVER_5000 = rule("review-large", "payment_cap_tier", "review", limit_minor=5000)
TWO_A_DAY = rule("two-a-day", "payer_day_count", "decline", limit=2)
FLAG_ALL = rule("flag-all", "first_payee", "flag", amount_min_minor=0)


def test_a_decline_posts_nothing_observes_nothing_and_is_audited(impl):
    engine = make_engine(impl, BLOCK_MERCHANT)
    assert pay_batch(engine, (1, fixtures.PAYER, fixtures.static_qr(), 700)) == [(Code.RISK_DECLINED, None)]
    assert engine.ledger.lookup_transfers([1]) == [None] and payer(engine).debits_posted == 0
    assert [batch.get("rules") for batch in engine.storage.records[-1:]] == [None]
    record, = audit_records(engine)
    assert (record.payment_id, record.payer_account_id, record.merchant_account_id, record.amount_minor) == (
        1, fixtures.PAYER, fixtures.MERCHANT_ACCOUNT, 700)
    assert (record.action, record.code, record.timestamp_ns, record.ledger) == (
        Action.DECLINE, Code.RISK_DECLINED, NOW_NS, fixtures.THB)
    assert record.fired == (FiredRule("block-merchant", "R_block-merchant", "enforce"),)
    assert record.ruleset_hash == engine.rules.ruleset.hash


def test_a_review_holds_the_amount_pending_with_the_configured_timeout(impl):
    engine = make_engine(impl, REVIEW_OVER_5000, review_timeout_seconds=600)
    (code, detail), = pay_batch(engine, (1, fixtures.PAYER, fixtures.static_qr(), 10_000))
    assert code == Code.RISK_REVIEW and detail == [10_000, 50, fixtures.THB, fixtures.MERCHANT_NAME]
    held = engine.ledger.lookup_transfers([1])[0]
    assert held.flags & TransferFlags.PENDING and held.timeout == 600
    assert (payer(engine).debits_pending, payer(engine).debits_posted) == (10_000, 0)
    record, = audit_records(engine)
    assert (record.action, record.code) == (Action.REVIEW, Code.RISK_REVIEW)
    assert engine.storage.records[-1]["rules"] is not None      # a reservation counts against the limits


def test_an_approval_is_audited_only_when_a_rule_fired(impl):
    quiet = make_engine(impl, REVIEW_OVER_5000)
    assert pay_batch(quiet, (1, fixtures.PAYER, fixtures.static_qr(), 100))[0][0] == Code.OK
    assert audit_records(quiet) == []
    flagged = make_engine(impl, FLAG_ALL)
    assert pay_batch(flagged, (1, fixtures.PAYER, fixtures.static_qr(), 100))[0][0] == Code.OK
    record, = audit_records(flagged)
    assert (record.action, record.code, record.fired[0].rule_id) == (Action.APPROVE, Code.OK, "flag-all")


def test_rules_see_the_earlier_payments_of_the_same_batch(impl):
    engine = make_engine(impl, TWO_A_DAY)
    codes = [code for code, _ in pay_batch(engine, *[(id_, fixtures.PAYER, fixtures.static_qr(), 10) for id_ in (1, 2, 3)])]
    assert codes == [Code.OK, Code.OK, Code.RISK_LIMIT_EXCEEDED]
    assert payer(engine).debits_posted == 20


def test_a_retry_of_a_posted_payment_is_answered_by_the_ledger_not_decided_again(impl):
    engine = make_engine(impl, rule("one-a-day", "payer_day_count", "decline", limit=1))
    first, = pay_batch(engine, (1, fixtures.PAYER, fixtures.static_qr(), 10))
    again, = pay_batch(engine, (1, fixtures.PAYER, fixtures.static_qr(), 10))
    assert (first[0], again[0], again[1]) == (Code.OK, Code.EXISTS, first[1])
    assert pay_batch(engine, (2, fixtures.PAYER, fixtures.static_qr(), 10))[0][0] == Code.RISK_LIMIT_EXCEEDED


def test_a_retry_of_a_held_payment_answers_exists_and_reserves_once(impl):
    engine = make_engine(impl, REVIEW_OVER_5000)
    pay_batch(engine, (1, fixtures.PAYER, fixtures.static_qr(), 10_000))
    assert pay_batch(engine, (1, fixtures.PAYER, fixtures.static_qr(), 10_000))[0][0] == Code.EXISTS
    assert payer(engine).debits_pending == 10_000


def test_a_payment_the_ledger_refuses_is_not_observed(impl):
    engine = make_engine(impl, TWO_A_DAY)
    too_much = fixtures.PAYER_OPENING_MINOR + 1
    assert pay_batch(engine, (1, fixtures.PAYER, fixtures.static_qr(), too_much))[0][0] == Code.EXCEEDS_CREDITS
    codes = [code for code, _ in pay_batch(engine, (2, fixtures.PAYER, fixtures.static_qr(), 1),
                                           (3, fixtures.PAYER, fixtures.static_qr(), 1))]
    assert codes == [Code.OK, Code.OK]


def test_rules_see_the_payment_as_the_switch_knows_it(reference):
    """The twin's context, field by field (the compiled one fills a C struct; the property test
    in test_pipeline_properties.py compares their decisions on generated payments)."""
    impl = reference
    seen = []

    class Recording:
        def __init__(self, inner) -> None:
            self.inner = inner
            self.ruleset = inner.ruleset

        def evaluate(self, ctx):
            seen.append(ctx)
            return self.inner.evaluate(ctx)

        def observe(self, ctx, decision):
            self.inner.observe(ctx, decision)

    engine = make_engine(impl)
    engine.rules = Recording(rules_engine(impl, REVIEW_OVER_5000))
    payload = fixtures.dynamic_qr(300, "CTX1")
    pay_batch(engine, (1, fixtures.PAYER, payload, 0, "phone-1", "ref"))
    ctx, = seen
    account = payer(engine)
    assert (ctx.payer_account_id, ctx.payer_kyc_tier, ctx.payer_created_ns) == (fixtures.PAYER, 0, account.timestamp)
    assert ctx.payer_balance_minor == fixtures.PAYER_OPENING_MINOR
    assert (ctx.merchant_account_id, ctx.merchant_mcc, ctx.merchant_is_personal) == (fixtures.MERCHANT_ACCOUNT, 4121, False)
    assert (ctx.merchant_country, ctx.payer_country, ctx.currency) == (764, 764, fixtures.THB)
    assert (ctx.device_id, ctx.qr_digest) == (device_digest("phone-1"), qr_digest(payload))
    assert (ctx.qr_dynamic, ctx.qr_amount_minor, ctx.amount_minor, ctx.now_ns) == (True, 300, 300, NOW_NS)
    # The fixture's dynamic code states no expiry: the rules hold it for the undated lifetime.
    assert ctx.qr_expires_ns == NOW_NS + limits.QR_UNDATED_DYNAMIC_LIFETIME_SECONDS * 10**9
    assert ctx.qr_merchant_account_id == fixtures.MERCHANT_ACCOUNT
    # The test rule set names no currency: amounts are compared as the payment states them.
    assert (ctx.reference_rate_numerator, ctx.reference_rate_denominator) == (1, 1)


def test_rules_state_and_audit_commit_with_the_postings_and_survive_a_restart(impl, tmp_path):
    document = fixtures.document()
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text('[ruleset]\nname = "t"\n' + TWO_A_DAY + FLAG_ALL)
    document["switch"]["rules"] = "rules.toml"
    config = dataclasses.replace(config_module.parse(document), rules_path=str(rules_file))
    engine = Engine.open(config, str(tmp_path / "data"), durability="os", core=impl)
    participant = config.participants[fixtures.WALLET_ID]
    items = [PayItem(id_, fixtures.PAYER, fixtures.static_qr(), 10, None, None) for id_ in (1, 2)]
    engine.process_batch([(participant, Request(1, "pay_batch", items, None, 4))])
    rules_hash, audit_hash = engine.rules.state_hash(), engine.audit.state_hash()
    engine.close()
    engine = Engine.open(config, str(tmp_path / "data"), durability="os", core=impl)
    try:
        assert (engine.rules.state_hash(), engine.audit.state_hash()) == (rules_hash, audit_hash)
        assert engine.audit.records_total == 1            # only the first payment to the payee fired
        item = PayItem(3, fixtures.PAYER, fixtures.static_qr(), 10, None, None)
        (code, _), = engine.process_batch([(participant, Request(2, "pay", item, None, 2))])
        assert code == Code.RISK_LIMIT_EXCEEDED          # the counters came back from the journal
        sections = [dict(record) for _, record in iterate_journal(engine.storage.env)]
        assert any("audit" in section and "rules" in section and "ledger" in section for section in sections)
    finally:
        engine.close()


def test_an_unreadable_rule_set_stops_the_switch_before_it_serves(impl, tmp_path):
    (tmp_path / "rules.toml").write_text('[[rules]]\nid = "x"\nkind = "no-such-kind"\n')
    config = dataclasses.replace(config_module.parse(fixtures.document()), rules_path=str(tmp_path / "rules.toml"))
    with pytest.raises(config_module.ConfigError, match="rules .*rules.toml.*no-such-kind"):
        Engine.open(config, str(tmp_path / "data"), durability="os", core=impl)


def test_a_bad_merchant_entry_stops_the_switch_with_its_code(impl):
    document = fixtures.document()
    document["merchants"][0]["mcc"] = "41X1"
    with pytest.raises(config_module.ConfigError, match=r"merchants\[0\] \(promptpay 0066812345678\): MERCHANT_FIELD_INVALID"):
        make_engine_from(impl, document)


def make_engine_from(impl, document) -> Engine:
    config = config_module.parse(document)
    ledger, merchants = impl.Ledger(config.accounts_max), MerchantDirectory()
    engine = Engine(config, impl, ledger, merchants, MemoryStorage([ledger, merchants]), clock_ns=lambda: NOW_NS)
    engine.bootstrap()
    return engine


# ---- configuration --------------------------------------------------------------

def test_the_rules_path_is_relative_to_the_config_file(tmp_path):
    document = "[switch]\nrules = \"policy/rules.toml\"\n"
    (tmp_path / "switch.toml").write_text(document)
    assert config_module.load(tmp_path / "switch.toml").rules_path == str(tmp_path / "policy" / "rules.toml")
    assert config_module.parse({}).rules_path is None


@pytest.mark.parametrize("seconds, ok", [(1, True), (0, False), (limits.TIMEOUT_SECONDS_MAX, True),
                                         (limits.TIMEOUT_SECONDS_MAX + 1, False)])
def test_review_timeout_is_bounded(seconds, ok):
    document = {"switch": {"review_timeout_seconds": seconds}}
    if ok:
        assert config_module.parse(document).review_timeout_seconds == seconds
    else:
        with pytest.raises(config_module.ConfigError, match="review_timeout_seconds"):
            config_module.parse(document)


@pytest.mark.parametrize("rate, ok", [(limits.USD_RATE_PER_MILLION_MAX, True), (limits.USD_RATE_PER_MILLION_MAX + 1, False)])
def test_usd_rate_is_bounded(rate, ok):
    document = fixtures.document()
    document["ledgers"][0]["usd_minor_per_million_minor"] = rate
    if ok:
        assert config_module.parse(document).ledgers[fixtures.THB].usd_minor_per_million_minor == rate
    else:
        with pytest.raises(config_module.ConfigError, match="usd_minor_per_million_minor"):
            config_module.parse(document)


def test_usd_conversion_is_integer_floored_and_saturates():
    assert usd_minor(1_000_000, 28_000) == 28_000          # THB 10,000.00 ~ USD 280.00
    assert usd_minor(35, 28_000) == 0                       # floored, never rounded up
    assert usd_minor(2**64 - 1, limits.USD_RATE_PER_MILLION_MAX) == 2**64 - 1


def test_travel_rule_sees_the_converted_amount_of_a_cross_border_payment(impl):
    document = fixtures.document()
    document["merchants"][0]["country"] = "SG"            # a Singapore merchant taking THB: cross-border
    document["ledgers"][0]["usd_minor_per_million_minor"] = 10**9   # 1 satang = USD 10.00 (makes the test short)
    config = config_module.parse(document)
    ledger, merchants = impl.Ledger(config.accounts_max), MerchantDirectory()
    engine_rules = rules_engine(impl, rule("r16", "travel_rule", "decline", threshold_usd_minor=100_000))
    engine = Engine(config, impl, ledger, merchants, MemoryStorage([ledger, merchants]), rules=engine_rules,
                    clock_ns=lambda: NOW_NS)
    engine.bootstrap()
    # 99 satang = USD 990.00: under the threshold; 100 satang = USD 1,000.00: at it, and the
    # minimum-KYC payer's wallet carries no originator address.
    codes = [code for code, _ in pay_batch(engine, (1, fixtures.PAYER, fixtures.static_qr(), 99),
                                           (2, fixtures.PAYER, fixtures.static_qr(), 100))]
    assert codes == [Code.OK, Code.RISK_TRAVEL_RULE_DATA_MISSING]


# ---- the audit record format ------------------------------------------------------

def test_audit_records_round_trip_and_malformed_sections_are_refused():
    record = AuditRecord(2**128 - 2, 1001, 5001, 2**64 - 1, 764, NOW_NS, 1, 451, "ab" * 32,
                         (FiredRule("r" * limits.RULES_NAME_BYTES_MAX, "why", "shadow"), FiredRule("b", "c", "enforce")))
    blob = bytes([AUDIT_VERSION]) + encode_audit_record(record) + encode_audit_record(record._replace(fired=()))
    assert list(iter_audit_records(blob)) == [record, record._replace(fired=())]
    for broken in (b"", b"\x02" + blob[1:], blob[:-1], blob[:40], blob + b"\x00"):
        with pytest.raises(ValueError):
            list(iter_audit_records(broken))
    with pytest.raises(ValueError, match="longer than"):
        encode_audit_record(record._replace(fired=(FiredRule("r" * (limits.RULES_NAME_BYTES_MAX + 1), "x", "shadow"),)))


def test_audit_log_replays_to_the_same_state():
    log = AuditLog()
    log.append(AuditRecord(1, 2, 3, 4, 764, NOW_NS, 2, 450, "00" * 32, ()))
    blob = log.take_journal()
    assert log.take_journal() is None
    replayed = AuditLog()
    replayed.apply_journal(blob)
    assert replayed.state_hash() == log.state_hash() and replayed.records_total == 1


def test_a_merchant_entry_with_an_unknown_key_stops_the_switch(impl):
    document = fixtures.document()
    document["merchants"][0]["colour"] = "red"
    with pytest.raises(config_module.ConfigError, match=r"merchants\[0\].*colour"):
        make_engine_from(impl, document)


def test_switch_serve_refuses_a_bad_rule_set_with_a_message_not_a_traceback(tmp_path):
    import subprocess
    import sys

    (tmp_path / "switch.toml").write_text('[switch]\nname = "t"\nrules = "rules.toml"\n')
    (tmp_path / "rules.toml").write_text('[[rules]]\nid = "x"\nkind = "no-such-kind"\n')
    completed = subprocess.run(
        [sys.executable, "-m", "switch", "serve", "--config", str(tmp_path / "switch.toml"),
         "--data", str(tmp_path / "data"), "--port", "0"],
        capture_output=True, text=True, timeout=60, cwd=pathlib.Path(__file__).resolve().parent.parent)
    assert completed.returncode != 0
    assert "no-such-kind" in completed.stderr and "Traceback" not in completed.stderr


# ---- the rule set's currency -------------------------------------------------------

def engine_with_inr_rules(impl, thb_rate: int, ruleset_currency: int, *rules: str) -> Engine:
    """The THB fixture switch with an INR ledger beside it and a rule set in `ruleset_currency`."""
    document = fixtures.document()
    document["ledgers"][0]["usd_minor_per_million_minor"] = thb_rate
    document["ledgers"].append({"ledger": 356, "fee_account_id": 9356, "settlement_account_id": 8356,
                                "fee_bps": 0, "usd_minor_per_million_minor": 12_000})
    document["accounts"] += [{"id": 9356, "ledger": 356, "code": 3}, {"id": 8356, "ledger": 356, "code": 4}]
    config = config_module.parse(document)
    ledger, merchants = impl.Ledger(config.accounts_max), MerchantDirectory()
    ruleset = load_ruleset(f'[ruleset]\nname = "inr"\ncurrency = {ruleset_currency}\n' + "".join(rules))
    engine = Engine(config, impl, ledger, merchants, MemoryStorage([ledger, merchants]),
                    rules=impl.RuleEngine(ruleset), clock_ns=lambda: NOW_NS)
    engine.bootstrap()
    return engine


INR_1000_CAP = rule("cap", "payment_cap_tier", "decline", limit_minor=100_000)


def test_a_thb_payment_is_judged_against_inr_limits_at_the_ledgers_rates(impl):
    # THB 428.57 = INR 999.99 (and a third of a paisa, rounded down); THB 428.58 = INR 1,000.02.
    engine = engine_with_inr_rules(impl, 28_000, 356, INR_1000_CAP)
    codes = [code for code, _ in pay_batch(engine, (1, fixtures.PAYER, fixtures.static_qr(), 42_857),
                                           (2, fixtures.PAYER, fixtures.static_qr(), 42_858))]
    assert codes == [Code.OK, Code.RISK_LIMIT_EXCEEDED]


@pytest.mark.parametrize("thb_rate, ruleset_currency", [(0, 356), (28_000, 360)])
def test_a_payment_without_a_rate_to_the_rule_sets_currency_is_refused(impl, thb_rate, ruleset_currency):
    # No THB rate, or a rule set in a currency the switch has no ledger (so no rate) for.
    engine = engine_with_inr_rules(impl, thb_rate, ruleset_currency, INR_1000_CAP)
    assert pay_batch(engine, (1, fixtures.PAYER, fixtures.static_qr(), 100)) == [(Code.RISK_CONTEXT_INVALID, None)]


def test_a_payment_in_the_rule_sets_currency_needs_no_rate(impl):
    engine = engine_with_inr_rules(impl, 0, 764, rule("cap", "payment_cap_tier", "decline", limit_minor=500))
    codes = [code for code, _ in pay_batch(engine, (1, fixtures.PAYER, fixtures.static_qr(), 500),
                                           (2, fixtures.PAYER, fixtures.static_qr(), 501))]
    assert codes == [Code.OK, Code.RISK_LIMIT_EXCEEDED]
