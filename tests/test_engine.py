"""The engine without sockets: authorization, the rare operations, rate limits, commit failure.

Runs on the real ledger of both core implementations.  The storage here is a
small journal-keeping double so a commit failure can be injected; the real
LMDB storage runs in test_server_e2e.py.
"""
from __future__ import annotations

import pytest

from core_ext.codes import Code
from core_ext.types import Account, AccountFlags, Transfer, TransferFlags
from switch import config as config_module, engine as engine_module, protocol
from switch.engine import Engine, TokenBucket
from switch.protocol import HistoryQuery, PendingItem, Request
from test_server_helpers import OPERATOR_ID, OTHER_ID, WALLET_ID, base_document

NOW_NS = 1_800_000_000 * 10**9
THB = 764


class JournalStorage:
    """Keeps each commit's journal in memory; `fail_next` makes the next commit raise."""

    def __init__(self, ledger) -> None:
        self.ledger = ledger
        self.blobs: list[bytes] = []
        self.fail_next = False
        self.commits = 0

    def commit(self) -> None:
        self.write(self.prepare())

    def prepare(self) -> bytes | None:
        return self.ledger.take_journal()

    def write(self, blob: bytes | None) -> None:
        if self.fail_next:
            self.fail_next = False
            raise OSError("disk full (injected)")
        if blob:
            self.blobs.append(blob)
        self.commits += 1

    def reload(self) -> None:
        self.ledger.reset()
        for blob in self.blobs:
            self.ledger.apply_journal(blob)


def document() -> dict:
    doc = base_document()
    doc["ledgers"] = [{"ledger": THB, "fee_account_id": 9764, "settlement_account_id": 8764, "fee_bps": 50}]
    doc["accounts"] = [
        {"id": 8764, "ledger": THB, "code": 4},
        {"id": 9764, "ledger": THB, "code": 3},
        {"id": 1001, "ledger": THB, "code": 1, "owner": WALLET_ID,
         "flags": ["debits_must_not_exceed_credits", "history"], "opening_balance_minor": 10_000},
        {"id": 2001, "ledger": THB, "code": 1, "owner": OTHER_ID,
         "flags": ["debits_must_not_exceed_credits"], "opening_balance_minor": 10_000},
    ]
    return doc


@pytest.fixture
def engine(impl):
    config = config_module.parse(document())
    ledger = impl.Ledger(config.accounts_max)
    clock = iter(range(NOW_NS, NOW_NS + 10**15, 10**6))
    engine = Engine(config, impl, ledger, merchants=None, storage=JournalStorage(ledger), clock_ns=lambda: next(clock))
    engine.bootstrap()
    return engine


def participant(engine, participant_id):
    return engine.config.participants[participant_id]


def run(engine, participant_id, op, args, events=1):
    outcome, = engine.process_batch([(participant(engine, participant_id), Request(1, op, args, None, events))])
    return outcome


def transfer(id_, debit, credit, amount, flags=0, pending_id=0):
    return Transfer(id=id_, debit_account_id=debit, credit_account_id=credit, amount=amount, ledger=THB, code=7,
                    flags=flags, pending_id=pending_id)


def balance(engine, account_id):
    account = engine.ledger.lookup_accounts([account_id])[0]
    return account.credits_posted - account.debits_posted


class TestBootstrap:
    def test_configured_accounts_exist_with_their_opening_balances(self, engine):
        assert balance(engine, 1001) == 10_000
        assert engine.ledger.lookup_accounts([1001])[0].user_data_64 == WALLET_ID

    def test_bootstrap_twice_changes_nothing(self, engine):
        before = engine.ledger.state_hash()
        engine.bootstrap()
        assert engine.ledger.state_hash() == before and balance(engine, 1001) == 10_000


class TestTransfers:
    def test_wallet_moves_money_from_its_own_account(self, engine):
        assert run(engine, WALLET_ID, "transfers", [transfer(1, 1001, 2001, 500)]) == (Code.OK, [Code.OK])
        assert balance(engine, 1001) == 9_500

    def test_wallet_cannot_debit_another_wallets_account(self, engine):
        assert run(engine, WALLET_ID, "transfers", [transfer(1, 2001, 1001, 500)]) == (Code.OK, [Code.ACCOUNT_NOT_OWNED])
        assert balance(engine, 2001) == 10_000

    def test_an_unauthorized_transfer_fails_its_linked_chain_only(self, engine):
        batch = [transfer(1, 1001, 2001, 100, flags=TransferFlags.LINKED), transfer(2, 2001, 1001, 100),
                 transfer(3, 1001, 2001, 7)]
        code, codes = run(engine, WALLET_ID, "transfers", batch)
        assert codes == [Code.LINKED_EVENT_FAILED, Code.ACCOUNT_NOT_OWNED, Code.OK]
        assert balance(engine, 1001) == 10_000 - 7

    def test_operator_may_move_any_account(self, engine):
        assert run(engine, OPERATOR_ID, "transfers", [transfer(1, 2001, 1001, 5)]) == (Code.OK, [Code.OK])

    def test_retry_with_the_same_id_is_not_applied_twice(self, engine):
        run(engine, WALLET_ID, "transfers", [transfer(1, 1001, 2001, 500)])
        assert run(engine, WALLET_ID, "transfers", [transfer(1, 1001, 2001, 500)]) == (Code.OK, [Code.EXISTS])
        assert balance(engine, 1001) == 9_500


class TestAccounts:
    def test_only_an_operator_creates_accounts(self, engine):
        new = Account(id=1500, ledger=THB, code=1)
        assert run(engine, WALLET_ID, "accounts", [new]) == (Code.OK, [Code.OPERATOR_ROLE_REQUIRED])
        assert engine.ledger.lookup_accounts([1500]) == [None]
        assert run(engine, OPERATOR_ID, "accounts", [new]) == (Code.OK, [Code.OK])


class TestLookups:
    def test_wallet_sees_its_accounts_and_not_others(self, engine):
        code, results = run(engine, WALLET_ID, "lookup_accounts", [1001, 2001, 4242])
        assert [entry[0] for entry in results] == [Code.OK, Code.ACCOUNT_NOT_FOUND, Code.ACCOUNT_NOT_FOUND]
        assert results[0][1]["credits_posted"] == 10_000
        assert results[1][1] is None   # another wallet's account: a code, never data

    def test_wallet_sees_transfers_touching_its_accounts_only(self, engine):
        run(engine, OTHER_ID, "transfers", [transfer(5, 2001, 1001, 1)])
        run(engine, OPERATOR_ID, "transfers", [transfer(6, 2001, 8764, 1)])
        code, results = run(engine, WALLET_ID, "lookup_transfers", [5, 6])
        assert [entry[0] for entry in results] == [Code.OK, Code.TRANSFER_NOT_FOUND]
        assert results[0][1]["id"] == protocol.id_to_wire(5)

    def test_history_of_own_account_only(self, engine):
        run(engine, WALLET_ID, "transfers", [transfer(1, 1001, 2001, 500)])
        code, rows = run(engine, WALLET_ID, "account_history", HistoryQuery(1001, 10))
        assert code == Code.OK and rows[-1][2:] == [500, 0, 10_000]
        assert run(engine, OTHER_ID, "account_history", HistoryQuery(1001, 10)) == (Code.ACCOUNT_NOT_FOUND, None)

    def test_a_lookup_sees_the_payments_queued_before_it_in_the_same_batch(self, engine):
        wallet = participant(engine, WALLET_ID)
        outcomes = engine.process_batch([
            (wallet, Request(1, "transfers", [transfer(9, 1001, 2001, 300)])),
            (wallet, Request(2, "lookup_accounts", [1001])),
        ])
        assert outcomes[1].result[0][1]["debits_posted"] == 300


class TestPending:
    def test_post_and_void_copy_the_pending_transfer(self, engine):
        run(engine, WALLET_ID, "transfers", [transfer(1, 1001, 2001, 400, flags=TransferFlags.PENDING),
                                             transfer(2, 1001, 2001, 300, flags=TransferFlags.PENDING)])
        assert run(engine, WALLET_ID, "post_pending", [PendingItem(3, 1, 0)]) == (Code.OK, [Code.OK])
        assert run(engine, WALLET_ID, "void_pending", [PendingItem(4, 2, 0)]) == (Code.OK, [Code.OK])
        assert balance(engine, 1001) == 10_000 - 400

    def test_another_wallets_pending_transfer_looks_absent(self, engine):
        run(engine, OTHER_ID, "transfers", [transfer(1, 2001, 1001, 400, flags=TransferFlags.PENDING)])
        assert run(engine, WALLET_ID, "void_pending", [PendingItem(4, 1, 0)]) == (Code.OK, [Code.PENDING_TRANSFER_NOT_FOUND])
        assert run(engine, WALLET_ID, "post_pending", [PendingItem(4, 77, 0)]) == (Code.OK, [Code.PENDING_TRANSFER_NOT_FOUND])


class TestFailures:
    def test_a_failed_commit_answers_storage_failed_and_keeps_nothing_in_memory(self, engine):
        engine.storage.fail_next = True
        assert run(engine, WALLET_ID, "transfers", [transfer(1, 1001, 2001, 500)]) == (Code.STORAGE_FAILED, None)
        assert balance(engine, 1001) == 10_000
        assert engine.ledger.lookup_transfers([1]) == [None]
        # The same ids succeed once the disk is back.
        assert run(engine, WALLET_ID, "transfers", [transfer(1, 1001, 2001, 500)]) == (Code.OK, [Code.OK])

    def test_a_failed_write_also_fails_the_batch_executed_on_top_of_it(self, engine):
        wallet = participant(engine, WALLET_ID)
        first = engine.execute_batch([(wallet, Request(1, "transfers", [transfer(1, 1001, 2001, 500)], None, 1))])
        second = engine.execute_batch([(wallet, Request(2, "transfers", [transfer(2, 1001, 2001, 700)], None, 1))])
        assert balance(engine, 1001) == 10_000 - 1_200          # both ran in memory, neither is written
        engine.storage.fail_next = True
        assert engine.write_batch(first) is None
        engine.recover()
        assert engine.write_batch(second) == [(Code.STORAGE_FAILED, None)]
        assert balance(engine, 1001) == 10_000 and engine.ledger.lookup_transfers([1, 2]) == [None, None]
        assert len(engine.storage.blobs) == 2                     # the bootstrap's two commits only
        assert run(engine, WALLET_ID, "transfers", [transfer(2, 1001, 2001, 700)]) == (Code.OK, [Code.OK])

    def test_batches_are_written_in_the_order_they_executed(self, engine):
        wallet = participant(engine, WALLET_ID)
        executed = [engine.execute_batch([(wallet, Request(n, "transfers", [transfer(n, 1001, 2001, n)], None, 1))])
                    for n in (1, 2)]
        assert [engine.write_batch(batch) for batch in executed] == [[(Code.OK, [Code.OK])]] * 2
        replayed = JournalStorage(engine.ledger)
        replayed.blobs = list(engine.storage.blobs)
        replayed.reload()
        assert balance(engine, 1001) == 10_000 - 3

    def test_a_bug_in_one_batch_answers_internal_error_and_keeps_serving(self, engine, monkeypatch):
        def broken(*args):
            raise RuntimeError("a bug")
        monkeypatch.setitem(Engine._HANDLERS, "lookup_accounts", broken)
        wallet = participant(engine, WALLET_ID)
        outcomes = engine.process_batch([(wallet, Request(1, "transfers", [transfer(1, 1001, 2001, 5)])),
                                         (wallet, Request(2, "lookup_accounts", [1001]))])
        assert [outcome.code for outcome in outcomes] == [Code.INTERNAL_ERROR] * 2
        assert balance(engine, 1001) == 10_000
        monkeypatch.undo()
        assert run(engine, WALLET_ID, "transfers", [transfer(1, 1001, 2001, 5)]) == (Code.OK, [Code.OK])

    def test_requests_refused_by_the_decoder_are_answered_with_their_code(self, engine):
        outcome, = engine.process_batch([(participant(engine, WALLET_ID), Request(3, "x", None, Code.UNKNOWN_OPERATION))])
        assert outcome == (Code.UNKNOWN_OPERATION, None)


class TestRateLimit:
    def test_bucket_allows_the_burst_and_refuses_one_past(self):
        bucket = TokenBucket(rate_per_second=10, burst=5, now_ns=0)
        assert bucket.take(5, 0)
        assert not bucket.take(1, 0)
        assert bucket.take(1, 100_000_000)        # 0.1 s refills one token
        assert not bucket.take(1, 100_000_000)

    def test_bucket_never_exceeds_its_burst(self):
        bucket = TokenBucket(rate_per_second=10, burst=5, now_ns=0)
        assert bucket.take(5, 3600 * 10**9)
        assert not bucket.take(1, 3600 * 10**9)

    def test_items_over_the_participant_rate_are_refused(self, impl):
        doc = document()
        doc["switch"].update(rate_items_per_second=1, rate_burst_items=2)
        config = config_module.parse(doc)
        ledger = impl.Ledger(config.accounts_max)
        engine = Engine(config, impl, ledger, None, JournalStorage(ledger), clock_ns=lambda: NOW_NS)
        engine.bootstrap()
        assert run(engine, WALLET_ID, "transfers", [transfer(1, 1001, 2001, 1), transfer(2, 1001, 2001, 1)])[1] == [0, 0]
        assert run(engine, WALLET_ID, "transfers", [transfer(3, 1001, 2001, 1)])[1] == [Code.RATE_LIMITED]
        # Another participant has its own bucket.
        assert run(engine, OTHER_ID, "transfers", [transfer(4, 2001, 1001, 1)])[1] == [Code.OK]


def test_fee_leg_id_is_derived_deterministically_and_differs_from_the_payment():
    assert engine_module.fee_id_for(12345) == engine_module.fee_id_for(12345)
    assert engine_module.fee_id_for(12345) not in (12345, engine_module.fee_id_for(12346))
    assert 0 < engine_module.fee_id_for(1) < 2**128 - 1


def test_bootstrap_of_more_accounts_than_one_ledger_batch(impl):
    doc = document()
    doc["accounts"] += [{"id": 10_000 + index, "ledger": THB, "code": 1, "owner": WALLET_ID, "opening_balance_minor": 1}
                        for index in range(engine_module.limits.BATCH_EVENTS_MAX + 1)]
    config = config_module.parse(doc)
    ledger = impl.Ledger(config.accounts_max)
    engine = Engine(config, impl, ledger, None, JournalStorage(ledger), clock_ns=lambda: NOW_NS)
    engine.bootstrap()
    last = 10_000 + engine_module.limits.BATCH_EVENTS_MAX
    assert engine.ledger.lookup_accounts([last])[0].credits_posted == 1
    assert len(engine.storage.blobs) == 4   # two account batches, two funding batches
