"""Random batches through the compiled ledger and its twin: identical codes, balances and journals.

The generated events are drawn from small pools of ids, amounts and flags so that
collisions (exists, linked chains, pending transfers, overflow near 2^64) happen
often; after every batch both ledgers must agree byte for byte and keep every
money invariant, and replaying the journal must rebuild the same state.
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import core_ext
from core_ext.types import Account, Transfer

U64_MAX = 2**64 - 1
# Zero ids and codes are covered by tests/test_ledger.py; here they would crowd out the balance rules.
ACCOUNT_IDS = st.sampled_from([1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 6, 7])
TRANSFER_IDS = st.sampled_from(list(range(1, 15)))
AMOUNTS = st.sampled_from([0, 1, 2, 5, 10, 100, 1000, U64_MAX - 1, U64_MAX, 2**63])
# Mostly meaningful combinations, sometimes nonsense (reserved bits, exclusive pairs).
TRANSFER_FLAGS = st.sampled_from([0] * 8 + [1, 1, 2, 2, 2, 2, 4, 4, 4, 4, 8, 8, 16, 32, 48, 3, 5, 6, 18, 64, 12])
ACCOUNT_FLAGS = st.sampled_from([0, 0, 2, 4, 8, 10, 12, 6, 1, 16])


accounts_strategy = st.builds(
    Account,
    id=ACCOUNT_IDS,
    ledger=st.sampled_from([1, 1, 1, 2, 0]),
    code=st.sampled_from([1, 2, 0]),
    flags=ACCOUNT_FLAGS,
)

raw_transfers_strategy = st.builds(
    Transfer,
    id=TRANSFER_IDS,
    debit_account_id=ACCOUNT_IDS,
    credit_account_id=ACCOUNT_IDS,
    amount=AMOUNTS,
    ledger=st.sampled_from([1] * 12 + [2]),
    code=st.sampled_from([1] * 12 + [2]),
    flags=TRANSFER_FLAGS,
    pending_id=st.one_of(st.just(0), TRANSFER_IDS),
    timeout=st.sampled_from([0, 0, 1, 2]),
)


def _mostly_well_formed(drawn):
    """Keep a nonsense pending_id/timeout only sometimes, so most transfers reach the balance rules;
    a post/void mostly names a recent id and inherits the pending transfer's fields."""
    transfer, keep_nonsense, recent_id, inherit = drawn
    if not keep_nonsense:
        if transfer.flags & 12:
            transfer.pending_id = recent_id
            transfer.timeout = 0
            if inherit:
                transfer.debit_account_id = transfer.credit_account_id = transfer.ledger = transfer.code = 0
                transfer.amount = 0 if transfer.amount > 1000 else transfer.amount
        else:
            transfer.pending_id = 0
        if not transfer.flags & 2:
            transfer.timeout = 0
    return transfer


transfers_strategy = st.tuples(raw_transfers_strategy, st.sampled_from([False] * 5 + [True]), st.integers(1, 6),
                               st.booleans()).map(_mostly_well_formed)

steps_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("accounts"), st.lists(accounts_strategy, max_size=6)),
        st.tuples(st.just("transfers"), st.lists(transfers_strategy, max_size=12)),
        st.tuples(st.just("expire"), st.just(None)),
    ),
    min_size=1,
    max_size=12,
)


# Five accounts in ledger 1 (plain, debit-limited, credit-limited, history, debit-limited with history)
# and one in ledger 2; the seventh account a batch tries to create meets accounts_max.
SETUP_ACCOUNTS = [Account(1, 1, 1), Account(2, 1, 1, 2), Account(3, 1, 1, 4), Account(4, 1, 1, 8),
                  Account(5, 1, 1, 10), Account(6, 2, 1)]


def _run_step(ledger, kind, events, now_ns):
    if kind == "accounts":
        return ledger.create_accounts(events, now_ns)
    if kind == "transfers":
        return ledger.create_transfers(events, now_ns)
    return ledger.expire_pending(now_ns)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps_strategy, clock_steps=st.lists(st.sampled_from([0, 1, 10**9, 3 * 10**9]), min_size=12,
                                                  max_size=12))
def test_compiled_and_twin_agree_on_random_batches(steps, clock_steps):
    compiled = core_ext.implementation("compiled").Ledger(accounts_max=6)
    reference = core_ext.implementation("reference").Ledger(accounts_max=6)
    now_ns = 10**12
    assert compiled.create_accounts(SETUP_ACCOUNTS, now_ns) == reference.create_accounts(SETUP_ACCOUNTS, now_ns)
    journal = [compiled.take_journal()]
    assert journal == [reference.take_journal()]
    for (kind, events), clock_step in zip(steps, clock_steps):
        now_ns += clock_step
        compiled_result = _run_step(compiled, kind, events, now_ns)
        reference_result = _run_step(reference, kind, events, now_ns)
        assert compiled_result == reference_result, (kind, events)
        compiled_journal = compiled.take_journal()
        assert compiled_journal == reference.take_journal()
        if compiled_journal:
            journal.append(compiled_journal)
        assert compiled.state_bytes() == reference.state_bytes()
        assert compiled.check_invariants() == []
        assert reference.check_invariants() == []
    for implementation in core_ext.IMPLEMENTATIONS:
        replayed = core_ext.implementation(implementation).Ledger(accounts_max=6)
        for blob in journal:
            replayed.apply_journal(blob)
        assert replayed.state_hash() == compiled.state_hash(), implementation
        for account_id in range(1, 8):
            assert replayed.account_history(account_id, 50) == compiled.account_history(account_id, 50)
    for account_id in range(8):
        assert compiled.account_history(account_id, 50) == reference.account_history(account_id, 50)
    ids = list(range(41))
    assert compiled.lookup_transfers(ids) == reference.lookup_transfers(ids)
    assert compiled.lookup_accounts(list(range(8))) == reference.lookup_accounts(list(range(8)))


def _valid_journal() -> bytes:
    ledger = core_ext.implementation("reference").Ledger(accounts_max=6)
    ledger.create_accounts(SETUP_ACCOUNTS, 10**12)
    ledger.create_transfers([Transfer(1, 1, 2, 5, 1, 1), Transfer(2, 1, 3, 5, 1, 1, flags=2, timeout=1),
                             Transfer(3, 0, 0, 0, 0, 0, flags=4, pending_id=2), Transfer(4, 2, 1, 9, 1, 1)], 10**12)
    return ledger.take_journal()


VALID_JOURNAL = _valid_journal()


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, len(VALID_JOURNAL)), flips=st.lists(st.tuples(st.integers(0, len(VALID_JOURNAL) - 1),
                                                                        st.integers(1, 255)), max_size=3))
def test_a_damaged_journal_is_refused_or_replayed_never_crashes(cut, flips):
    """Storage trusts its own journal, but a damaged one must give ValueError, not a crash."""
    blob = bytearray(VALID_JOURNAL[:cut])
    for position, mask in flips:
        if position < len(blob):
            blob[position] ^= mask
    outcomes = []
    for implementation in core_ext.IMPLEMENTATIONS:
        ledger = core_ext.implementation(implementation).Ledger(accounts_max=6)
        try:
            ledger.apply_journal(bytes(blob))
            outcomes.append("replayed")
        except ValueError:
            outcomes.append("refused")
    if not flips:
        assert outcomes[0] == outcomes[1]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_two_phase_flows_agree_between_compiled_and_twin(data):
    """Pending transfers, then posts (full, partial, too much), voids, expiries and retries of them."""
    ledgers = [core_ext.implementation(name).Ledger(accounts_max=6) for name in core_ext.IMPLEMENTATIONS]
    now_ns = 10**12
    funding = [Transfer(100, 1, 2, 10**6, 1, 1), Transfer(101, 1, 5, 10**6, 1, 1)]
    for ledger in ledgers:
        assert ledger.create_accounts(SETUP_ACCOUNTS, now_ns) == [0] * 6
        assert ledger.create_transfers(funding, now_ns) == [0, 0]
    next_id, pending_ids, sent = 1000, [], []
    for _ in range(data.draw(st.integers(1, 8))):
        now_ns += data.draw(st.sampled_from([1, 10**9, 2 * 10**9]))
        batch = []
        for _ in range(data.draw(st.integers(1, 6))):
            choice = data.draw(st.sampled_from(["pending", "pending", "resolve", "resolve", "retry", "plain"]))
            if choice == "resolve" and pending_ids:
                flags = data.draw(st.sampled_from([4, 4, 8, 5, 9]))
                amount = data.draw(st.sampled_from([0, 1, 50, 100, 101]))
                transfer = Transfer(next_id, 0, 0, amount, 0, 0, flags, pending_id=data.draw(st.sampled_from(pending_ids)))
            elif choice == "retry" and sent:
                original = data.draw(st.sampled_from(sent))
                transfer = Transfer(original.id, original.debit_account_id, original.credit_account_id,
                                    original.amount, original.ledger, original.code, original.flags,
                                    original.pending_id, original.timeout)
            else:
                debit, credit = data.draw(st.sampled_from([(2, 3), (5, 4), (1, 4), (2, 1), (3, 2)]))
                pending = choice != "plain"
                transfer = Transfer(next_id, debit, credit, 100, 1, 1, 2 if pending else 0,
                                    timeout=data.draw(st.sampled_from([0, 1, 3])) if pending else 0)
                if pending:
                    pending_ids.append(next_id)
            next_id += 1
            batch.append(transfer)
        batch[-1].flags &= ~1                  # close any chain inside the batch
        results = [ledger.create_transfers(batch, now_ns) for ledger in ledgers]
        assert results[0] == results[1], batch
        sent += batch
        if data.draw(st.booleans()):
            assert ledgers[0].expire_pending(now_ns) == ledgers[1].expire_pending(now_ns)
        assert ledgers[0].state_bytes() == ledgers[1].state_bytes()
        assert ledgers[0].take_journal() == ledgers[1].take_journal()
        for ledger in ledgers:
            assert ledger.check_invariants() == []
