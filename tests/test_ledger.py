"""Every ledger result code, every ledger limit at the limit and one past, on both implementations."""
from __future__ import annotations

import pytest

from core_ext import limits
from core_ext.codes import Code
from core_ext.types import Account, AccountFlags, Transfer, TransferFlags

U64_MAX = 2**64 - 1
U128_MAX = 2**128 - 1
NOW_NS = 1_700_000_000 * 10**9
SECOND_NS = 10**9

LINKED = TransferFlags.LINKED
PENDING = TransferFlags.PENDING
POST = TransferFlags.POST_PENDING_TRANSFER
VOID = TransferFlags.VOID_PENDING_TRANSFER

PLAIN, OTHER, DEBIT_LIMITED, CREDIT_LIMITED, OTHER_LEDGER, WITH_HISTORY = 1, 2, 3, 4, 5, 6


def T(id_, debit, credit, amount, **fields) -> Transfer:
    fields.setdefault("ledger", 1)
    fields.setdefault("code", 1)
    return Transfer(id_, debit, credit, amount, **fields)


@pytest.fixture
def ledger(impl):
    """Six accounts: two plain, one that may not overdraw, one that may not over-credit,
    one in another currency, one with history."""
    ledger = impl.Ledger(accounts_max=10)
    codes = ledger.create_accounts([
        Account(PLAIN, 1, 1), Account(OTHER, 1, 1),
        Account(DEBIT_LIMITED, 1, 1, AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS),
        Account(CREDIT_LIMITED, 1, 1, AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS),
        Account(OTHER_LEDGER, 2, 1), Account(WITH_HISTORY, 1, 1, AccountFlags.HISTORY),
    ], NOW_NS)
    assert codes == [Code.OK] * 6
    yield ledger
    assert ledger.check_invariants() == []


def balances(ledger, account_id):
    a = ledger.lookup_accounts([account_id])[0]
    return a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted


def post_one(ledger, transfer, now_ns=NOW_NS):
    return ledger.create_transfers([transfer], now_ns)[0]


# ---- single-event codes: (what is posted first, the event, the code it gets) ------------

SINGLE_CASES = {
    "ID_MUST_NOT_BE_ZERO": ([], T(0, 1, 2, 10)),
    "ID_MUST_NOT_BE_INT_MAX": ([], T(U128_MAX, 1, 2, 10)),
    "FLAGS_ARE_MUTUALLY_EXCLUSIVE": ([], T(1, 1, 2, 10, flags=PENDING | POST, pending_id=9)),
    "RESERVED_FLAG": ([], T(1, 1, 2, 10, flags=1 << 6)),
    "LEDGER_MUST_NOT_BE_ZERO": ([], T(1, 1, 2, 10, ledger=0)),
    "CODE_MUST_NOT_BE_ZERO": ([], T(1, 1, 2, 10, code=0)),
    "EXISTS": ([T(1, 1, 2, 10)], T(1, 1, 2, 10)),
    "EXISTS_WITH_DIFFERENT_FLAGS": ([T(1, 1, 2, 10)], T(1, 1, 2, 10, flags=PENDING)),
    "EXISTS_WITH_DIFFERENT_LEDGER": ([T(1, 1, 2, 10)], T(1, 1, 2, 10, ledger=2)),
    "EXISTS_WITH_DIFFERENT_CODE": ([T(1, 1, 2, 10)], T(1, 1, 2, 10, code=2)),
    "EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID": ([T(1, 1, 2, 10)], T(1, 6, 2, 10)),
    "EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID": ([T(1, 1, 2, 10)], T(1, 1, 6, 10)),
    "EXISTS_WITH_DIFFERENT_AMOUNT": ([T(1, 1, 2, 10)], T(1, 1, 2, 11)),
    "EXISTS_WITH_DIFFERENT_PENDING_ID": ([T(1, 1, 2, 10, flags=PENDING), T(2, 1, 2, 10, flags=PENDING),
                                          T(3, 0, 0, 0, flags=VOID, pending_id=1)],
                                         T(3, 0, 0, 0, flags=VOID, pending_id=2)),
    "EXISTS_WITH_DIFFERENT_TIMEOUT": ([T(1, 1, 2, 10, flags=PENDING)], T(1, 1, 2, 10, flags=PENDING, timeout=5)),
    "EXISTS_WITH_DIFFERENT_USER_DATA_128": ([T(1, 1, 2, 10)], T(1, 1, 2, 10, user_data_128=2**100)),
    "EXISTS_WITH_DIFFERENT_USER_DATA_64": ([T(1, 1, 2, 10)], T(1, 1, 2, 10, user_data_64=7)),
    "EXISTS_WITH_DIFFERENT_USER_DATA_32": ([T(1, 1, 2, 10)], T(1, 1, 2, 10, user_data_32=7)),
    "DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO": ([], T(1, 0, 2, 10)),
    "CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO": ([], T(1, 1, 0, 10)),
    "ACCOUNTS_MUST_BE_DIFFERENT": ([], T(1, 1, 1, 10)),
    "PENDING_ID_MUST_BE_ZERO": ([], T(1, 1, 2, 10, pending_id=5)),
    "PENDING_ID_MUST_NOT_BE_ZERO": ([], T(1, 0, 0, 0, flags=POST)),
    "PENDING_ID_MUST_BE_DIFFERENT": ([], T(1, 0, 0, 0, flags=POST, pending_id=1)),
    "TIMEOUT_RESERVED_FOR_PENDING_TRANSFER": ([], T(1, 1, 2, 10, timeout=5)),
    "AMOUNT_MUST_NOT_BE_ZERO": ([], T(1, 1, 2, 0)),
    "DEBIT_ACCOUNT_NOT_FOUND": ([], T(1, 99, 2, 10)),
    "CREDIT_ACCOUNT_NOT_FOUND": ([], T(1, 1, 99, 10)),
    "ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER": ([], T(1, 1, 5, 10)),
    "TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS": ([], T(1, 1, 2, 10, ledger=2)),
    "PENDING_TRANSFER_NOT_FOUND": ([], T(1, 0, 0, 0, flags=POST, pending_id=42)),
    "PENDING_TRANSFER_NOT_PENDING": ([T(1, 1, 2, 10)], T(2, 0, 0, 0, flags=POST, pending_id=1)),
    "PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID": ([T(1, 1, 2, 10, flags=PENDING)],
                                                        T(2, 6, 0, 0, flags=POST, pending_id=1)),
    "PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID": ([T(1, 1, 2, 10, flags=PENDING)],
                                                         T(2, 0, 6, 0, flags=POST, pending_id=1)),
    "PENDING_TRANSFER_HAS_DIFFERENT_LEDGER": ([T(1, 1, 2, 10, flags=PENDING)],
                                              T(2, 0, 0, 0, flags=POST, pending_id=1, ledger=2)),
    "PENDING_TRANSFER_HAS_DIFFERENT_CODE": ([T(1, 1, 2, 10, flags=PENDING)],
                                            T(2, 0, 0, 0, flags=POST, pending_id=1, code=2)),
    "EXCEEDS_PENDING_TRANSFER_AMOUNT": ([T(1, 1, 2, 10, flags=PENDING)], T(2, 0, 0, 11, flags=POST, pending_id=1)),
    "PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT": ([T(1, 1, 2, 10, flags=PENDING)],
                                              T(2, 0, 0, 9, flags=VOID, pending_id=1)),
    "PENDING_TRANSFER_ALREADY_POSTED": ([T(1, 1, 2, 10, flags=PENDING), T(2, 0, 0, 0, flags=POST, pending_id=1)],
                                        T(3, 0, 0, 0, flags=VOID, pending_id=1)),
    "PENDING_TRANSFER_ALREADY_VOIDED": ([T(1, 1, 2, 10, flags=PENDING), T(2, 0, 0, 0, flags=VOID, pending_id=1)],
                                        T(3, 0, 0, 0, flags=POST, pending_id=1)),
    "OVERFLOWS_DEBITS_PENDING": ([T(1, 1, 2, U64_MAX, flags=PENDING)], T(2, 1, 6, 1, flags=PENDING)),
    "OVERFLOWS_CREDITS_PENDING": ([T(1, 1, 2, U64_MAX, flags=PENDING)], T(2, 6, 2, 1, flags=PENDING)),
    "OVERFLOWS_DEBITS_POSTED": ([T(1, 1, 2, U64_MAX)], T(2, 1, 6, 1)),
    "OVERFLOWS_CREDITS_POSTED": ([T(1, 1, 2, U64_MAX)], T(2, 6, 2, 1)),
    "OVERFLOWS_DEBITS": ([T(1, 1, 2, U64_MAX, flags=PENDING)], T(2, 1, 6, 1)),
    "OVERFLOWS_CREDITS": ([T(1, 1, 2, U64_MAX, flags=PENDING)], T(2, 6, 2, 1)),
    "EXCEEDS_CREDITS": ([T(1, 1, 3, 100)], T(2, 3, 2, 101)),
    "EXCEEDS_DEBITS": ([T(1, 4, 1, 100)], T(2, 2, 4, 101)),
    "AMOUNT_MUST_NOT_EXCEED_BALANCE_MAX": ([], T(1, 1, 2, -1)),
    "FIELD_OUT_OF_RANGE": ([], T(1, 1, 2, 10, code=2**16)),
    "TIMEOUT_MUST_NOT_EXCEED_MAX": ([], T(1, 1, 2, 10, flags=PENDING, timeout=-1)),
    "TIMESTAMP_MUST_BE_ZERO": ([], T(1, 1, 2, 10, timestamp=5)),
}


@pytest.mark.parametrize("name", sorted(SINGLE_CASES))
def test_a_transfer_gets_its_own_code(ledger, name):
    setup, event = SINGLE_CASES[name]
    assert ledger.create_transfers(setup, NOW_NS) == [Code.OK] * len(setup)
    before = [balances(ledger, account_id) for account_id in range(1, 7)]
    assert post_one(ledger, event, NOW_NS + 1) == Code[name]
    if name != "EXISTS":
        assert [balances(ledger, account_id) for account_id in range(1, 7)] == before, "a failed event moved money"


def test_a_retried_transfer_that_failed_a_balance_check_fails_forever(ledger):
    assert post_one(ledger, T(1, DEBIT_LIMITED, OTHER, 50)) == Code.EXCEEDS_CREDITS
    assert post_one(ledger, T(2, PLAIN, DEBIT_LIMITED, 500)) == Code.OK
    assert post_one(ledger, T(1, DEBIT_LIMITED, OTHER, 50)) == Code.ID_ALREADY_FAILED
    assert ledger.lookup_transfers([1]) == [None]


def test_a_linked_chain_is_applied_all_or_none(ledger):
    codes = ledger.create_transfers([
        T(1, PLAIN, OTHER, 10, flags=LINKED), T(2, OTHER, WITH_HISTORY, 5, flags=LINKED), T(3, PLAIN, PLAIN, 1),
        T(4, PLAIN, OTHER, 7),
    ], NOW_NS)
    assert codes == [Code.LINKED_EVENT_FAILED, Code.LINKED_EVENT_FAILED, Code.ACCOUNTS_MUST_BE_DIFFERENT, Code.OK]
    assert balances(ledger, PLAIN) == (0, 7, 0, 0)
    assert balances(ledger, WITH_HISTORY) == (0, 0, 0, 0)
    assert ledger.lookup_transfers([1, 2, 3]) == [None, None, None]
    assert ledger.account_history(WITH_HISTORY, 10) == []


def test_events_after_the_failure_in_a_chain_fail_too(ledger):
    codes = ledger.create_transfers([
        T(1, PLAIN, PLAIN, 10, flags=LINKED), T(2, PLAIN, OTHER, 5, flags=LINKED), T(3, PLAIN, OTHER, 1),
    ], NOW_NS)
    assert codes == [Code.ACCOUNTS_MUST_BE_DIFFERENT, Code.LINKED_EVENT_FAILED, Code.LINKED_EVENT_FAILED]
    assert ledger.transfer_count == 0


def test_a_chain_left_open_at_the_end_of_the_batch_fails(ledger):
    codes = ledger.create_transfers([T(1, PLAIN, OTHER, 10), T(2, PLAIN, OTHER, 1, flags=LINKED),
                                     T(3, PLAIN, OTHER, 1, flags=LINKED)], NOW_NS)
    assert codes == [Code.OK, Code.LINKED_EVENT_FAILED, Code.LINKED_EVENT_CHAIN_OPEN]
    assert balances(ledger, OTHER) == (0, 0, 0, 10)


def test_a_pending_transfer_posts_in_part_and_releases_the_rest(ledger):
    assert post_one(ledger, T(1, PLAIN, OTHER, 100, flags=PENDING)) == Code.OK
    assert balances(ledger, PLAIN) == (100, 0, 0, 0)
    assert post_one(ledger, T(2, 0, 0, 60, flags=POST, pending_id=1)) == Code.OK
    assert balances(ledger, PLAIN) == (0, 60, 0, 0)
    assert balances(ledger, OTHER) == (0, 0, 0, 60)
    assert ledger.lookup_transfers([2])[0].amount == 60


def test_a_post_without_amount_posts_in_full_and_a_void_releases(ledger):
    assert ledger.create_transfers([T(1, PLAIN, OTHER, 100, flags=PENDING), T(2, PLAIN, OTHER, 30, flags=PENDING),
                                    T(3, 0, 0, 0, flags=POST, pending_id=1),
                                    T(4, 0, 0, 0, flags=VOID, pending_id=2)], NOW_NS) == [Code.OK] * 4
    assert balances(ledger, PLAIN) == (0, 100, 0, 0)
    assert post_one(ledger, T(3, 0, 0, 0, flags=POST, pending_id=1)) == Code.EXISTS


def test_an_expired_pending_transfer_releases_its_amounts(ledger):
    assert post_one(ledger, T(1, PLAIN, OTHER, 100, flags=PENDING, timeout=2)) == Code.OK
    expires_at_ns = ledger.lookup_transfers([1])[0].timestamp + 2 * SECOND_NS
    assert ledger.expire_pending(expires_at_ns - 1) == 0
    assert post_one(ledger, T(2, 0, 0, 0, flags=POST, pending_id=1), expires_at_ns) == Code.PENDING_TRANSFER_EXPIRED
    assert balances(ledger, PLAIN) == (100, 0, 0, 0)
    assert ledger.expire_pending(expires_at_ns) == 1
    assert balances(ledger, PLAIN) == (0, 0, 0, 0)
    assert post_one(ledger, T(3, 0, 0, 0, flags=VOID, pending_id=1), expires_at_ns + 1) \
        == Code.PENDING_TRANSFER_EXPIRED
    assert ledger.expire_pending(expires_at_ns + 10 * SECOND_NS) == 0


def test_a_pending_transfer_posted_just_before_it_expires_is_posted(ledger):
    assert post_one(ledger, T(1, PLAIN, OTHER, 100, flags=PENDING, timeout=2)) == Code.OK
    expires_at_ns = ledger.lookup_transfers([1])[0].timestamp + 2 * SECOND_NS
    assert post_one(ledger, T(2, 0, 0, 0, flags=POST, pending_id=1), expires_at_ns - 1) == Code.OK
    assert ledger.expire_pending(expires_at_ns) == 0
    assert balances(ledger, PLAIN) == (0, 100, 0, 0)


def test_a_timeout_past_the_clock_overflows(ledger):
    clock_end_ns = 2**63 - 1
    assert post_one(ledger, T(1, PLAIN, OTHER, 1, flags=PENDING, timeout=1), clock_end_ns - SECOND_NS) == Code.OK
    assert post_one(ledger, T(2, PLAIN, OTHER, 1, flags=PENDING, timeout=1), clock_end_ns - SECOND_NS) \
        == Code.OVERFLOWS_TIMEOUT


def test_balancing_debit_moves_what_is_available(ledger):
    assert post_one(ledger, T(1, PLAIN, DEBIT_LIMITED, 70)) == Code.OK
    assert post_one(ledger, T(2, DEBIT_LIMITED, OTHER, 1000, flags=TransferFlags.BALANCING_DEBIT)) == Code.OK
    assert ledger.lookup_transfers([2])[0].amount == 70
    assert post_one(ledger, T(2, DEBIT_LIMITED, OTHER, 1000, flags=TransferFlags.BALANCING_DEBIT)) == Code.EXISTS
    assert post_one(ledger, T(3, DEBIT_LIMITED, OTHER, 5, flags=TransferFlags.BALANCING_DEBIT)) \
        == Code.EXCEEDS_CREDITS


def test_balancing_credit_moves_what_the_credit_account_may_take(ledger):
    assert post_one(ledger, T(1, CREDIT_LIMITED, PLAIN, 40)) == Code.OK
    assert post_one(ledger, T(2, OTHER, CREDIT_LIMITED, 100, flags=TransferFlags.BALANCING_CREDIT)) == Code.OK
    assert ledger.lookup_transfers([2])[0].amount == 40
    assert balances(ledger, CREDIT_LIMITED) == (0, 40, 0, 40)
    assert post_one(ledger, T(3, OTHER, CREDIT_LIMITED, 1, flags=TransferFlags.BALANCING_CREDIT)) \
        == Code.EXCEEDS_DEBITS


def test_a_pending_amount_counts_against_the_balance_limit(ledger):
    assert post_one(ledger, T(1, PLAIN, DEBIT_LIMITED, 100)) == Code.OK
    assert post_one(ledger, T(2, DEBIT_LIMITED, OTHER, 80, flags=PENDING)) == Code.OK
    assert post_one(ledger, T(3, DEBIT_LIMITED, OTHER, 21)) == Code.EXCEEDS_CREDITS
    assert post_one(ledger, T(4, 0, 0, 0, flags=VOID, pending_id=2)) == Code.OK
    assert post_one(ledger, T(5, DEBIT_LIMITED, OTHER, 21)) == Code.OK


def test_a_chained_transfer_retried_alone_is_recognised(ledger):
    assert ledger.create_transfers([T(1, PLAIN, OTHER, 10, flags=LINKED), T(2, OTHER, WITH_HISTORY, 1)],
                                   NOW_NS) == [0, 0]
    assert post_one(ledger, T(1, PLAIN, OTHER, 10)) == Code.EXISTS


def test_a_balance_failure_inside_a_chain_is_remembered_after_the_rollback(ledger):
    codes = ledger.create_transfers([T(1, PLAIN, OTHER, 10, flags=LINKED), T(2, DEBIT_LIMITED, OTHER, 5)], NOW_NS)
    assert codes == [Code.LINKED_EVENT_FAILED, Code.EXCEEDS_CREDITS]
    assert post_one(ledger, T(1, PLAIN, OTHER, 10)) == Code.OK
    assert post_one(ledger, T(2, DEBIT_LIMITED, OTHER, 5)) == Code.ID_ALREADY_FAILED


def test_timestamps_are_unique_and_increase_even_when_the_clock_stands_still(ledger):
    assert ledger.create_transfers([T(i, PLAIN, OTHER, 1) for i in range(1, 6)], NOW_NS - 10**12) == [0] * 5
    stamps = [t.timestamp for t in ledger.lookup_transfers(range(1, 6))]
    assert stamps == sorted(set(stamps)) and stamps[0] > NOW_NS
    assert post_one(ledger, T(9, PLAIN, OTHER, 1), NOW_NS + 10**12) == Code.OK
    assert ledger.lookup_transfers([9])[0].timestamp == NOW_NS + 10**12


def test_history_records_the_balance_after_each_posting(ledger):
    ledger.create_transfers([T(1, PLAIN, WITH_HISTORY, 10), T(2, WITH_HISTORY, OTHER, 3, flags=PENDING)], NOW_NS)
    stamps = [t.timestamp for t in ledger.lookup_transfers([1, 2])]
    assert ledger.account_history(WITH_HISTORY, 10) == [(stamps[0], 0, 0, 0, 10), (stamps[1], 3, 0, 0, 10)]
    assert ledger.account_history(WITH_HISTORY, 1) == [(stamps[1], 3, 0, 0, 10)]
    assert ledger.account_history(PLAIN, 10) == []


def test_lookups_return_copies_and_none_for_unknown_ids(ledger):
    post_one(ledger, T(2**100, PLAIN, OTHER, 5, user_data_128=2**127, user_data_64=U64_MAX, user_data_32=7))
    transfer, missing = ledger.lookup_transfers([2**100, 3])
    assert (transfer.id, transfer.user_data_128, transfer.user_data_64, transfer.user_data_32) \
        == (2**100, 2**127, U64_MAX, 7)
    assert missing is None
    assert ledger.lookup_accounts([PLAIN, 77, -1])[1:] == [None, None]
    assert ledger.transfer_count == 1 and ledger.account_count == 6


# ---- accounts ---------------------------------------------------------------------------

ACCOUNT_CASES = {
    "ID_MUST_NOT_BE_ZERO": Account(0, 1, 1),
    "ID_MUST_NOT_BE_INT_MAX": Account(U64_MAX, 1, 1),
    "FIELD_OUT_OF_RANGE": Account(U64_MAX + 1, 1, 1),
    "FLAGS_ARE_MUTUALLY_EXCLUSIVE": Account(20, 1, 1, AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
                                            | AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS),
    "RESERVED_FLAG": Account(20, 1, 1, 1 << 4),
    "LEDGER_MUST_NOT_BE_ZERO": Account(20, 0, 1),
    "CODE_MUST_NOT_BE_ZERO": Account(20, 1, 0),
    "BALANCES_MUST_BE_ZERO": Account(20, 1, 1, credits_posted=5),
    "TIMESTAMP_MUST_BE_ZERO": Account(20, 1, 1, timestamp=1),
    "EXISTS": Account(PLAIN, 1, 1),
    "EXISTS_WITH_DIFFERENT_FLAGS": Account(PLAIN, 1, 1, AccountFlags.HISTORY),
    "EXISTS_WITH_DIFFERENT_LEDGER": Account(PLAIN, 2, 1),
    "EXISTS_WITH_DIFFERENT_CODE": Account(PLAIN, 1, 2),
    "EXISTS_WITH_DIFFERENT_USER_DATA_128": Account(PLAIN, 1, 1, user_data_128=1),
    "EXISTS_WITH_DIFFERENT_USER_DATA_64": Account(PLAIN, 1, 1, user_data_64=1),
    "EXISTS_WITH_DIFFERENT_USER_DATA_32": Account(PLAIN, 1, 1, user_data_32=1),
}


@pytest.mark.parametrize("name", sorted(ACCOUNT_CASES))
def test_an_account_gets_its_own_code(ledger, name):
    assert ledger.create_accounts([ACCOUNT_CASES[name]], NOW_NS) == [Code[name]]
    assert ledger.account_count == 6


def test_linked_accounts_are_created_all_or_none(ledger):
    codes = ledger.create_accounts([Account(20, 1, 1, AccountFlags.LINKED), Account(21, 0, 1)], NOW_NS)
    assert codes == [Code.LINKED_EVENT_FAILED, Code.LEDGER_MUST_NOT_BE_ZERO]
    assert ledger.lookup_accounts([20]) == [None]


def test_accounts_max_holds_at_the_limit_and_refuses_one_past(impl):
    ledger = impl.Ledger(accounts_max=3)
    assert ledger.create_accounts([Account(i, 1, 1) for i in (1, 2, 3, 4)], NOW_NS) \
        == [0, 0, 0, Code.ACCOUNTS_LIMIT_REACHED]
    impl.Ledger(accounts_max=limits.ACCOUNTS_MAX)
    with pytest.raises(ValueError):
        impl.Ledger(accounts_max=limits.ACCOUNTS_MAX + 1)


# ---- limits -----------------------------------------------------------------------------

def test_a_batch_at_batch_events_max_is_applied(ledger):
    batch = [T(i, PLAIN, OTHER, 1) for i in range(1, limits.BATCH_EVENTS_MAX + 1)]
    assert ledger.create_transfers(batch, NOW_NS) == [Code.OK] * limits.BATCH_EVENTS_MAX
    assert balances(ledger, OTHER) == (0, 0, 0, limits.BATCH_EVENTS_MAX)


def test_a_batch_one_past_batch_events_max_is_refused_whole(ledger):
    batch = [T(i, PLAIN, OTHER, 1) for i in range(1, limits.BATCH_EVENTS_MAX + 2)]
    assert ledger.create_transfers(batch, NOW_NS) == [Code.BATCH_TOO_LARGE] * (limits.BATCH_EVENTS_MAX + 1)
    accounts = [Account(100 + i, 1, 1) for i in range(limits.BATCH_EVENTS_MAX + 1)]
    assert set(ledger.create_accounts(accounts, NOW_NS)) == {Code.BATCH_TOO_LARGE}
    assert ledger.transfer_count == 0 and ledger.account_count == 6


def test_amount_at_amount_minor_max_posts_and_one_past_is_refused(ledger):
    assert post_one(ledger, T(1, PLAIN, OTHER, limits.AMOUNT_MINOR_MAX)) == Code.OK
    assert post_one(ledger, T(2, PLAIN, OTHER, limits.AMOUNT_MINOR_MAX + 1)) \
        == Code.AMOUNT_MUST_NOT_EXCEED_BALANCE_MAX


def test_timeout_at_timeout_seconds_max_is_taken_and_one_past_is_refused(ledger):
    assert post_one(ledger, T(1, PLAIN, OTHER, 1, flags=PENDING, timeout=limits.TIMEOUT_SECONDS_MAX)) == Code.OK
    assert post_one(ledger, T(2, PLAIN, OTHER, 1, flags=PENDING, timeout=limits.TIMEOUT_SECONDS_MAX + 1)) \
        == Code.TIMEOUT_MUST_NOT_EXCEED_MAX


def test_expiry_releases_batch_events_max_per_call_and_the_rest_on_the_next(ledger):
    pending = [T(i, PLAIN, OTHER, 1, flags=PENDING, timeout=1) for i in range(1, limits.BATCH_EVENTS_MAX + 2)]
    assert ledger.create_transfers(pending[:-1], NOW_NS) == [Code.OK] * limits.BATCH_EVENTS_MAX
    assert ledger.create_transfers(pending[-1:], NOW_NS) == [Code.OK]
    later_ns = NOW_NS + 10 * SECOND_NS
    assert ledger.expire_pending(later_ns) == limits.BATCH_EVENTS_MAX
    assert balances(ledger, PLAIN) == (1, 0, 0, 0)
    assert ledger.expire_pending(later_ns) == 1
    assert balances(ledger, PLAIN) == (0, 0, 0, 0)


def test_history_rows_at_the_limit_are_served_and_one_past_is_refused(ledger):
    assert ledger.account_history(WITH_HISTORY, limits.ACCOUNT_HISTORY_ROWS_MAX) == []
    with pytest.raises(ValueError):
        ledger.account_history(WITH_HISTORY, limits.ACCOUNT_HISTORY_ROWS_MAX + 1)


@pytest.mark.parametrize("field,value", [("id", 2**128), ("debit_account_id", 2**64), ("pending_id", -1),
                                         ("user_data_32", 2**32), ("ledger", 2**32), ("amount", 1.5),
                                         ("user_data_64", None)])
def test_fields_of_the_wrong_kind_get_a_code_not_a_crash(ledger, field, value):
    transfer = T(1, PLAIN, OTHER, 10)
    setattr(transfer, field, value)
    assert post_one(ledger, transfer) in (Code.FIELD_OUT_OF_RANGE, Code.AMOUNT_MUST_NOT_EXCEED_BALANCE_MAX)


def test_the_clock_is_taken_up_to_clock_ns_max_and_refused_one_past(ledger):
    assert post_one(ledger, T(1, PLAIN, OTHER, 1), limits.CLOCK_NS_MAX) == Code.OK
    assert ledger.lookup_transfers([1])[0].timestamp == limits.CLOCK_NS_MAX
    assert ledger.expire_pending(limits.CLOCK_NS_MAX) == 0
    with pytest.raises(ValueError):
        ledger.create_transfers([], limits.CLOCK_NS_MAX + 1)
    with pytest.raises(ValueError):
        ledger.expire_pending(limits.CLOCK_NS_MAX + 1)
    with pytest.raises(ValueError):
        ledger.create_accounts([], -1)


def test_a_corrupt_journal_is_refused(impl):
    with pytest.raises(ValueError):
        impl.Ledger().apply_journal(b"\x07garbage")
    with pytest.raises(ValueError):
        impl.Ledger().apply_journal(b"\x02short")


class _TransferLike:
    """Not a Transfer: the compiled core reads it by attribute instead of by slot."""

    def __init__(self, transfer: Transfer):
        for field in Transfer.__dataclass_fields__:
            setattr(self, field, getattr(transfer, field))


def test_objects_shaped_like_transfers_get_the_same_results_as_transfers(impl):
    events = [T(1, PLAIN, OTHER, 10), T(2, PLAIN, PLAIN, 10), T(3, PLAIN, OTHER, 10, code=2**16),
              T(4, PLAIN, OTHER, 5, flags=LINKED), T(5, PLAIN, OTHER, 0)]
    results = []
    for wrap in (lambda t: t, _TransferLike):
        ledger = impl.Ledger(accounts_max=10)
        ledger.create_accounts([Account(PLAIN, 1, 1), Account(OTHER, 1, 1)], NOW_NS)
        results.append((ledger.create_transfers([wrap(t) for t in events], NOW_NS), ledger.state_hash()))
    assert results[0] == results[1]
    assert results[0][0] == [0, Code.ACCOUNTS_MUST_BE_DIFFERENT, Code.FIELD_OUT_OF_RANGE, Code.LINKED_EVENT_FAILED,
                             Code.AMOUNT_MUST_NOT_BE_ZERO]


def test_an_object_missing_a_field_is_a_programming_error(impl):
    broken = _TransferLike(T(1, PLAIN, OTHER, 10))
    del broken.amount
    ledger = impl.Ledger()
    ledger.create_accounts([Account(PLAIN, 1, 1), Account(OTHER, 1, 1)], NOW_NS)
    before = ledger.state_hash()
    with pytest.raises(AttributeError):
        ledger.create_transfers([T(7, PLAIN, OTHER, 10), broken], NOW_NS)
    assert ledger.state_hash() == before, "nothing of a refused batch is applied"
    assert ledger.take_journal() is not None and ledger.take_journal() is None
