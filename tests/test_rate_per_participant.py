"""Per-participant rate limits: a [[participants]] entry may give its own token bucket
(rate_items_per_second, rate_burst_items), each 1..its limit; absent, the [switch] values
(as before). On both cores (`impl`), through the pay flow and the `transfers` operation."""
from __future__ import annotations

import pytest

from core_ext import limits
from core_ext.codes import Code
from core_ext.pipeline_types import AuditLog
from core_ext.types import Transfer
from switch import config as config_module
from switch.engine import Engine
from switch.merchants import MerchantDirectory
from switch.protocol import Request
import test_server_helpers as fixtures
from test_pipeline_rules import NOW_NS, MemoryStorage, pay_batch

SLOW = {"rate_items_per_second": 1, "rate_burst_items": 2}


def document_with(participant_id: int, **rate) -> dict:
    document = fixtures.document()
    entry, = [entry for entry in document["participants"] if entry["id"] == participant_id]
    entry.update(rate)
    return document


def make_engine_from(impl, config):
    """An engine of `impl` on `config`, without rules, its storage kept in memory."""
    ledger, merchants, audit = impl.Ledger(config.accounts_max), MerchantDirectory(), AuditLog()
    engine = Engine(config, impl, ledger, merchants, MemoryStorage([ledger, merchants, audit]),
                    clock_ns=lambda: NOW_NS, audit=audit)
    engine.bootstrap()
    return engine


def payments(first_id: int, count: int, payer: int = fixtures.PAYER) -> list[tuple]:
    return [(first_id + index, payer, fixtures.static_qr(), 100) for index in range(count)]


def codes(answers) -> list[int]:
    return [answer[0] for answer in answers]


def test_a_participant_past_its_own_burst_is_rate_limited_and_the_others_are_not(impl):
    engine = make_engine_from(impl, config_module.parse(document_with(fixtures.WALLET_ID, **SLOW)))
    assert codes(pay_batch(engine, *payments(1, 3))) == [Code.OK, Code.OK, Code.RATE_LIMITED]
    other = pay_batch(engine, *payments(10, 3, payer=fixtures.OTHER_PAYER), participant_id=fixtures.OTHER_ID)
    assert codes(other) == [Code.OK] * 3


def test_its_bucket_refills_at_its_own_rate(impl):
    engine = make_engine_from(impl, config_module.parse(document_with(fixtures.WALLET_ID, **SLOW)))
    assert codes(pay_batch(engine, *payments(1, 3))) == [Code.OK, Code.OK, Code.RATE_LIMITED]
    engine.clock_ns = lambda: NOW_NS + 1_000_000_000          # one second: one item
    assert codes(pay_batch(engine, *payments(4, 2))) == [Code.OK, Code.RATE_LIMITED]


def test_the_transfers_operation_draws_on_the_same_bucket(impl):
    engine = make_engine_from(impl, config_module.parse(document_with(fixtures.WALLET_ID, **SLOW)))
    transfers = [Transfer(id=100 + index, debit_account_id=fixtures.PAYER, credit_account_id=fixtures.MERCHANT_ACCOUNT,
                          amount=1, ledger=fixtures.THB, code=1) for index in range(3)]
    participant = engine.config.participants[fixtures.WALLET_ID]
    outcome, = engine.process_batch([(participant, Request(1, "transfers", transfers, None, 3))])
    assert outcome.result == [Code.RATE_LIMITED] * 3           # three items at once, two tokens


def test_without_its_own_rate_a_participant_gets_the_switch_values():
    document = fixtures.document()
    document["switch"].update(rate_items_per_second=7, rate_burst_items=9)
    config = config_module.parse(document)
    assert {(p.rate_items_per_second, p.rate_burst_items) for p in config.participants.values()} == {(7, 9)}
    assert config_module.parse(fixtures.document()).participants[fixtures.WALLET_ID].rate_items_per_second \
        == limits.RATE_ITEMS_PER_SECOND


@pytest.mark.parametrize("key, maximum", [("rate_items_per_second", limits.RATE_ITEMS_PER_SECOND),
                                          ("rate_burst_items", limits.RATE_BURST_ITEMS)])
def test_a_participant_rate_is_taken_from_1_to_its_limit(key, maximum):
    for accepted in (1, maximum):
        config = config_module.parse(document_with(fixtures.WALLET_ID, **{key: accepted}))
        assert getattr(config.participants[fixtures.WALLET_ID], key) == accepted
    for refused in (0, maximum + 1, "10", 1.5):
        with pytest.raises(config_module.ConfigError, match=rf"participants\[0\]\.{key}"):
            config_module.parse(document_with(fixtures.WALLET_ID, **{key: refused}))
