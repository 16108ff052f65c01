"""The pay flow step by step, on both cores: amounts, fees, the rules slot, retries, grouping."""
from __future__ import annotations

import pytest

from core_ext.codes import Code
from core_ext.types import TransferFlags
from switch import config as config_module
from core_ext.rules_types import load_ruleset
from switch.engine import Engine, fee_id_for
from switch.merchants import MerchantDirectory
from switch.protocol import PayItem, PendingItem, Request
import test_server_helpers as fixtures

NOW_NS = 1_800_000_000 * 10**9


class Storage:
    """Journals of both components in memory (the LMDB storage runs in test_server_e2e.py)."""

    def __init__(self, components) -> None:
        self.components = components
        self.records: list[list] = []

    def commit(self) -> None:
        self.write(self.prepare())

    def prepare(self) -> list:
        return [(c, c.take_journal()) for c in self.components]

    def write(self, record: list) -> None:
        self.records.append(record)

    def reload(self) -> None:
        for component in self.components:
            component.reset()
        for record in self.records:
            for component, blob in record:
                if blob:
                    component.apply_journal(blob)


def real_rules(impl, rule_toml: str):
    """The core's real rules engine with a one-rule set (tests/test_pipeline_rules.py covers more)."""
    return impl.RuleEngine(load_ruleset('[ruleset]\nname = "test"\n' + rule_toml))


DECLINE_MERCHANT = f"""
[[rules]]
id = "block-merchant"
kind = "blocklist"
mode = "enforce"
action = "decline"
reason = "BL_MERCHANT"
field = "merchant"
entries = [{fixtures.MERCHANT_ACCOUNT}]
"""
REVIEW_OVER_5000 = """
[[rules]]
id = "review-large"
kind = "payment_cap_tier"
mode = "enforce"
action = "review"
reason = "LIM_PAYMENT"
limit_minor = 5000
"""


def make_engine(impl, rules=None, **switch_overrides) -> Engine:
    document = fixtures.document()
    document["switch"].update(switch_overrides)
    config = config_module.parse(document)
    ledger, merchants = impl.Ledger(config.accounts_max), MerchantDirectory()
    engine = Engine(config, impl, ledger, merchants, Storage([ledger, merchants]), rules=rules,
                    clock_ns=lambda: NOW_NS)
    engine.bootstrap()
    return engine


def pay(engine, *items, participant_id=fixtures.WALLET_ID):
    participant = engine.config.participants[participant_id]
    requests = [(participant, Request(index + 1, "pay", PayItem(*item, None, None), None, 2))
                for index, item in enumerate(items)]
    return engine.process_batch(requests)


def account(engine, account_id):
    return engine.ledger.lookup_accounts([account_id])[0]


def test_fee_is_the_floor_of_the_rate_and_comes_from_the_merchant(impl):
    engine = make_engine(impl)
    (code, detail), = pay(engine, (1, fixtures.PAYER, fixtures.static_qr(), 199))
    assert code == Code.OK and detail == [199, 0, fixtures.THB, fixtures.MERCHANT_NAME]   # 0.5% of 199 floors to 0
    (code, detail), = pay(engine, (2, fixtures.PAYER, fixtures.static_qr(), 200))
    assert detail[1] == 1
    merchant = account(engine, fixtures.MERCHANT_ACCOUNT)
    assert merchant.credits_posted - merchant.debits_posted == 199 + 200 - 1
    assert engine.ledger.lookup_transfers([fee_id_for(2)])[0].amount == 1
    assert engine.ledger.lookup_transfers([fee_id_for(1)]) == [None]


def test_amount_comes_from_a_dynamic_qr_and_a_different_one_is_refused(impl):
    engine = make_engine(impl)
    payload = fixtures.dynamic_qr(2_500, "R1")
    assert pay(engine, (1, fixtures.PAYER, payload, 2_400))[0].code == Code.AMOUNT_MISMATCH
    assert pay(engine, (2, fixtures.PAYER, payload, 0))[0].result[0] == 2_500


def test_two_payments_of_one_dynamic_qr_in_one_batch_pay_once(impl):
    engine = make_engine(impl)
    payload = fixtures.dynamic_qr(300, "R2")
    first, second = pay(engine, (1, fixtures.PAYER, payload, 0), (2, fixtures.PAYER, payload, 0))
    assert (first.code, second.code) == (Code.OK, Code.QR_REPLAYED)
    assert account(engine, fixtures.PAYER).debits_posted == 300


def test_retry_in_the_same_batch_answers_exists(impl):
    engine = make_engine(impl)
    payload = fixtures.dynamic_qr(300, "R3")
    first, again = pay(engine, (1, fixtures.PAYER, payload, 0), (1, fixtures.PAYER, payload, 0))
    assert (first.code, again.code) == (Code.OK, Code.EXISTS)


def test_retry_with_a_fee_leg_answers_exists_with_the_same_detail(impl):
    engine = make_engine(impl)
    first, = pay(engine, (1, fixtures.PAYER, fixtures.static_qr(), 10_000))
    again, = pay(engine, (1, fixtures.PAYER, fixtures.static_qr(), 10_000))
    assert (first.code, again.code) == (Code.OK, Code.EXISTS)
    assert again.result == first.result
    assert account(engine, fixtures.PAYER).debits_posted == 10_000


def test_same_id_with_another_amount_is_refused_not_applied(impl):
    engine = make_engine(impl)
    pay(engine, (1, fixtures.PAYER, fixtures.static_qr(), 10_000))
    changed, = pay(engine, (1, fixtures.PAYER, fixtures.static_qr(), 9_000))
    assert changed.code == Code.EXISTS_WITH_DIFFERENT_AMOUNT and changed.result is None


def test_a_rules_decline_posts_nothing(impl):
    engine = make_engine(impl, rules=real_rules(impl, DECLINE_MERCHANT))
    (code, detail), = pay(engine, (1, fixtures.PAYER, fixtures.static_qr(), 700))
    assert (code, detail) == (Code.RISK_DECLINED, None)
    assert account(engine, fixtures.PAYER).debits_posted == 0
    assert engine.ledger.lookup_transfers([1]) == [None]


def test_a_review_reserves_the_funds_until_the_operator_decides(impl):
    engine = make_engine(impl, rules=real_rules(impl, REVIEW_OVER_5000))
    (code, detail), = pay(engine, (1, fixtures.PAYER, fixtures.static_qr(), 10_000))
    assert code == Code.RISK_REVIEW and detail[0] == 10_000
    payer = account(engine, fixtures.PAYER)
    assert (payer.debits_pending, payer.debits_posted) == (10_000, 0)
    assert engine.ledger.lookup_transfers([1])[0].flags & TransferFlags.PENDING
    operator = engine.config.participants[fixtures.OPERATOR_ID]
    outcome, = engine.process_batch([(operator, Request(1, "post_pending", [PendingItem(2, 1, 0)]))])
    assert outcome == (Code.OK, [Code.OK])
    payer = account(engine, fixtures.PAYER)
    assert (payer.debits_pending, payer.debits_posted) == (0, 10_000)
    # Posting the held payment took the merchant fee, exactly as an approved one would have.
    merchant, fee = account(engine, fixtures.MERCHANT_ACCOUNT), account(engine, fixtures.FEE_ACCOUNT)
    assert (merchant.credits_posted - merchant.debits_posted, fee.credits_posted) == (9_950, 50)
    assert engine.ledger.check_invariants() == []


def test_a_voided_review_returns_the_funds_and_takes_no_fee(impl):
    engine = make_engine(impl, rules=real_rules(impl, REVIEW_OVER_5000))
    pay(engine, (1, fixtures.PAYER, fixtures.static_qr(), 10_000))
    operator = engine.config.participants[fixtures.OPERATOR_ID]
    outcome, = engine.process_batch([(operator, Request(1, "void_pending", [PendingItem(2, 1, 0)]))])
    assert outcome == (Code.OK, [Code.OK])
    payer, fee = account(engine, fixtures.PAYER), account(engine, fixtures.FEE_ACCOUNT)
    assert (payer.debits_pending, payer.debits_posted, fee.credits_posted) == (0, 0, 0)


def test_approve_answers_ok(impl):
    engine = make_engine(impl, rules=real_rules(impl, REVIEW_OVER_5000))
    assert pay(engine, (1, fixtures.PAYER, fixtures.static_qr(), 10))[0].code == Code.OK


def test_rate_limited_payments_in_a_batch_are_refused_one_by_one(impl):
    engine = make_engine(impl, rate_items_per_second=1, rate_burst_items=2)
    participant = engine.config.participants[fixtures.WALLET_ID]
    items = [PayItem(id_, fixtures.PAYER, fixtures.static_qr(), 10, None, None) for id_ in (1, 2, 3)]
    outcome, = engine.process_batch([(participant, Request(1, "pay_batch", items, None, 6))])
    assert [entry[0] for entry in outcome.result] == [Code.OK, Code.OK, Code.RATE_LIMITED]


def test_payments_and_other_operations_keep_their_order_in_a_batch(impl):
    engine = make_engine(impl)
    participant = engine.config.participants[fixtures.WALLET_ID]
    item = PayItem(1, fixtures.PAYER, fixtures.static_qr(), 10, None, None)
    outcomes = engine.process_batch([
        (participant, Request(1, "lookup_accounts", [fixtures.PAYER])),
        (participant, Request(2, "pay", item, None, 2)),
        (participant, Request(3, "lookup_accounts", [fixtures.PAYER])),
    ])
    assert outcomes[0].result[0][1]["debits_posted"] == 0
    assert outcomes[1].code == Code.OK
    assert outcomes[2].result[0][1]["debits_posted"] == 10


@pytest.mark.parametrize("transfer_id, code", [(0, Code.ID_MUST_NOT_BE_ZERO), (2**128 - 1, Code.ID_MUST_NOT_BE_INT_MAX)])
def test_reserved_transfer_ids_are_refused(impl, transfer_id, code):
    engine = make_engine(impl)
    assert pay(engine, (transfer_id, fixtures.PAYER, fixtures.static_qr(), 10))[0].code == code


def test_garbage_qr_gets_a_qr_code_and_never_reaches_the_ledger(impl):
    engine = make_engine(impl)
    (code, detail), = pay(engine, (1, fixtures.PAYER, "not a qr code", 10))
    assert 300 <= code < 400 and detail is None
    assert engine.ledger.lookup_transfers([1]) == [None]


def test_the_protocol_documents_worked_example_is_what_the_engine_answers(impl, tmp_path):
    """docs/PROTOCOL.md's hex dump of a `pay` exchange: the real engine on the demo config."""
    from switch import demo, protocol

    document = config_module.tomllib.loads((demo.DEMO_DIR / demo.CONFIG_NAME).read_text())
    document["merchants"] = demo.merchant_registrations()
    config = config_module.parse(document)
    ledger, merchants = impl.Ledger(config.accounts_max), MerchantDirectory()
    engine = Engine(config, impl, ledger, merchants, Storage([ledger, merchants]), clock_ns=lambda: NOW_NS)
    engine.bootstrap()
    request = protocol.decode_request(protocol.pack_frame([1, "pay", protocol.EXAMPLE_PAY_ARGS])[4:])
    outcome, = engine.process_batch([(config.participants[protocol.EXAMPLE_PARTICIPANT_ID], request)])
    assert outcome == (Code.OK, protocol.EXAMPLE_PAY_RESULT)
