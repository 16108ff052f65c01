"""The double-entry ledger, written to be read: the rules of core_ext/_ledger.pyx.

TigerBeetle's model.  Accounts hold four u64 balances (debits/credits x
pending/posted) in minor units; transfers move an amount from a debit account to
a credit account, directly or in two phases (pending, then post or void).  Every
event gets one result code (core_ext/codes.py); 0 means applied.

Batches
    `create_accounts` and `create_transfers` take a batch of events.  A batch
    larger than limits.BATCH_EVENTS_MAX is refused as a whole: every event gets
    BATCH_TOO_LARGE and nothing is applied (a code, not an exception, so a
    server can answer it like any other result).
Linked chains
    Events with the `linked` flag join the next event into one chain that is
    applied all or none.  The failing event gets its own code, every other
    event of the chain LINKED_EVENT_FAILED.  Any nonzero code fails a chain,
    EXISTS included (as in TigerBeetle).  A chain still open at the end of the
    batch fails: its last event gets LINKED_EVENT_CHAIN_OPEN.
Idempotency
    A repeated id with the same fields gives EXISTS (the `linked` flag is not
    compared: a retry may be chained differently); with a different field,
    EXISTS_WITH_DIFFERENT_<FIELD>.  A post/void transfer may leave debit and
    credit account, ledger, code and amount zero to inherit them from the
    pending transfer; zero fields are not compared on a retry either.  A
    transfer whose first attempt failed a balance check (FAILED_FOREVER_CODES)
    is remembered and gets ID_ALREADY_FAILED forever after.
Two-phase
    A post may move part of the pending amount (amount 0 means all of it); a
    void releases all of it.  A pending transfer with a timeout expires at
    timestamp + timeout; `expire_pending(now_ns)` releases the expired ones,
    and a post/void of an expired one gets PENDING_TRANSFER_EXPIRED.
Balancing
    `balancing_debit` (`balancing_credit`) lowers the amount to what the debit
    (credit) account has available, the given amount being the most to move;
    when nothing is available the transfer fails EXCEEDS_CREDITS (EXCEEDS_DEBITS).
Time
    Nothing here reads the clock.  Each applied event (and each expiry) takes
    timestamp max(now_ns, last + 1): unique and strictly increasing.

State changes are journaled as effects, never as inputs to re-decide: one kind
byte and a fixed little-endian record per created account, applied transfer (as
stored, with its timestamp and resolved amount), remembered failed id and expiry
(the *_RECORD layouts below; the compiled core writes the same bytes), so
storage can replay them exactly without the clock.
"""
from __future__ import annotations

import hashlib
import heapq
import struct

from core_ext import limits
from core_ext.codes import Code
from core_ext.types import Account, AccountFlags, Transfer, TransferFlags
from core_ext.types import ACCOUNT_FLAGS_KNOWN, TRANSFER_FLAGS_KNOWN

U16_MAX = 2**16 - 1
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
U128_MAX = 2**128 - 1
CLOCK_NS_MAX = limits.CLOCK_NS_MAX
NS_PER_SECOND = 1_000_000_000

# A failure of these depends on balances at the time: the id may never succeed later.
FAILED_FOREVER_CODES = frozenset({
    Code.OVERFLOWS_DEBITS_PENDING, Code.OVERFLOWS_CREDITS_PENDING,
    Code.OVERFLOWS_DEBITS_POSTED, Code.OVERFLOWS_CREDITS_POSTED,
    Code.OVERFLOWS_DEBITS, Code.OVERFLOWS_CREDITS,
    Code.EXCEEDS_CREDITS, Code.EXCEEDS_DEBITS,
})

# Status of a stored transfer (journal and state hash use these numbers).
STATUS_POSTED = 0          # a single-phase transfer, or a post/void itself
STATUS_PENDING = 1
STATUS_PENDING_POSTED = 2
STATUS_PENDING_VOIDED = 3
STATUS_PENDING_EXPIRED = 4

# Journal records: one kind byte, then a fixed little-endian layout.
JOURNAL_ACCOUNT = 1
JOURNAL_TRANSFER = 2
JOURNAL_FAILED = 3
JOURNAL_EXPIRED = 4
# id, user_data_128 lo/hi, user_data_64, timestamp, ledger, user_data_32, code, flags
ACCOUNT_RECORD = struct.Struct("<QQQQQIIHH")
# id lo/hi, debit, credit, amount, pending_id lo/hi, user_data_128 lo/hi,
# user_data_64, timestamp, user_data_32, timeout, ledger, code, flags
TRANSFER_RECORD = struct.Struct("<QQQQQQQQQQQIIIHH")
FAILED_RECORD = struct.Struct("<QQ")            # id lo/hi
EXPIRED_RECORD = struct.Struct("<QQQ")          # pending id lo/hi, timestamp
# Account with balances, for state hashes and checkpoints.
ACCOUNT_STATE = struct.Struct("<QQQQQIIHHQQQQ")
TRANSFER_STATE = struct.Struct("<QQQQQQQQQQQIIIHHB")
# Full snapshots: state_bytes(), then the history accounts, each as (id, row count) and its rows.
STATE_HEADER = struct.Struct("<QQQQ")            # accounts, transfers, failed ids, timestamp_last
SNAPSHOT_COUNT = struct.Struct("<Q")
HISTORY_HEADER = struct.Struct("<QQ")            # account id, rows
HISTORY_ROW = struct.Struct("<QQQQQ")            # timestamp, debits/credits pending/posted

_LOW_64_BITS = U64_MAX


def _is_uint(value, maximum: int) -> bool:
    return isinstance(value, int) and 0 <= value <= maximum


def is_linked(flags) -> bool:
    """Whether an event joins the next one; an event with unreadable flags joins nothing."""
    return _is_uint(flags, U16_MAX) and bool(flags & 1)


def pack_account(a: Account) -> bytes:
    return ACCOUNT_RECORD.pack(
        a.id, a.user_data_128 & _LOW_64_BITS, a.user_data_128 >> 64, a.user_data_64, a.timestamp,
        a.ledger, a.user_data_32, a.code, a.flags)


def pack_account_state(a: Account) -> bytes:
    return ACCOUNT_STATE.pack(
        a.id, a.user_data_128 & _LOW_64_BITS, a.user_data_128 >> 64, a.user_data_64, a.timestamp,
        a.ledger, a.user_data_32, a.code, a.flags,
        a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)


def unpack_account_state(blob: bytes, offset: int) -> Account:
    (id_, ud128_lo, ud128_hi, ud64, timestamp, ledger, ud32, code, flags,
     dp, dpo, cp, cpo) = ACCOUNT_STATE.unpack_from(blob, offset)
    return Account(id_, ledger, code, flags, ud128_lo | ud128_hi << 64, ud64, ud32, dp, dpo, cp, cpo, timestamp)


def _transfer_fields(t: Transfer) -> tuple:
    return (t.id & _LOW_64_BITS, t.id >> 64, t.debit_account_id, t.credit_account_id, t.amount,
            t.pending_id & _LOW_64_BITS, t.pending_id >> 64, t.user_data_128 & _LOW_64_BITS, t.user_data_128 >> 64,
            t.user_data_64, t.timestamp, t.user_data_32, t.timeout, t.ledger, t.code, t.flags)


def _transfer_from_fields(fields: tuple) -> Transfer:
    (id_lo, id_hi, debit, credit, amount, pid_lo, pid_hi, ud_lo, ud_hi, ud64, timestamp,
     ud32, timeout, ledger, code, flags) = fields[:16]
    return Transfer(id_lo | id_hi << 64, debit, credit, amount, ledger, code, flags,
                    pid_lo | pid_hi << 64, timeout, ud_lo | ud_hi << 64, ud64, ud32, timestamp)


class Ledger:
    """Accounts and transfers in memory; a journaled component named "ledger"."""

    name = "ledger"

    def __init__(self, accounts_max: int = limits.ACCOUNTS_MAX):
        if not _is_uint(accounts_max, limits.ACCOUNTS_MAX) or accounts_max == 0:
            raise ValueError(f"accounts_max must be 1..{limits.ACCOUNTS_MAX}, not {accounts_max!r}")
        self.accounts_max = accounts_max
        self.reset()

    def reset(self) -> None:
        """Forget everything (storage calls this before replaying the journal)."""
        self._accounts: dict[int, Account] = {}
        self._transfers: dict[int, Transfer] = {}
        self._status: dict[int, int] = {}
        self._expires_at_ns: dict[int, int] = {}
        self._failed_ids: set[int] = set()
        self._history: dict[int, list[tuple]] = {}
        self._expiry_heap: list[tuple[int, int, int]] = []   # (expires_at_ns, timestamp, id)
        self._timestamp_last = 0
        self._journal = bytearray()
        self._undo: list = []

    # ---- counts and lookups ------------------------------------------------

    @property
    def account_count(self) -> int:
        return len(self._accounts)

    @property
    def transfer_count(self) -> int:
        return len(self._transfers)

    def lookup_accounts(self, ids) -> list[Account | None]:
        found = []
        for id_ in ids:
            account = self._accounts.get(id_) if isinstance(id_, int) else None
            found.append(None if account is None else _copy_account(account))
        return found

    def lookup_transfers(self, ids) -> list[Transfer | None]:
        found = []
        for id_ in ids:
            transfer = self._transfers.get(id_) if isinstance(id_, int) else None
            found.append(None if transfer is None else _copy_transfer(transfer))
        return found

    def account_history(self, account_id: int, limit: int) -> list[tuple]:
        """The most recent `limit` balance rows of a `history` account, oldest first:
        (timestamp, debits_pending, debits_posted, credits_pending, credits_posted)."""
        if not _is_uint(limit, limits.ACCOUNT_HISTORY_ROWS_MAX):
            raise ValueError(f"limit must be 0..{limits.ACCOUNT_HISTORY_ROWS_MAX}, not {limit!r}")
        rows = self._history.get(account_id, []) if isinstance(account_id, int) else []
        return list(rows[-limit:]) if limit else []

    # ---- timestamps and undo ----------------------------------------------

    def _next_timestamp(self, now_ns: int) -> int:
        return max(now_ns, self._timestamp_last + 1)

    def _take_timestamp(self, timestamp: int) -> None:
        previous = self._timestamp_last
        self._undo.append(lambda: setattr(self, "_timestamp_last", previous))
        self._timestamp_last = timestamp

    def _journal_append(self, record: bytes) -> None:
        mark = len(self._journal)
        self._undo.append(lambda: self._journal.__delitem__(slice(mark, None)))
        self._journal += record

    def _rollback(self) -> None:
        while self._undo:
            self._undo.pop()()

    # ---- batches and chains ------------------------------------------------

    def _run_batch(self, events: list, now_ns: int, create_one) -> list[int]:
        """Apply events in order, linked chains all or none; one code per event."""
        if len(events) > limits.BATCH_EVENTS_MAX:
            return [int(Code.BATCH_TOO_LARGE)] * len(events)
        _check_now(now_ns)
        for event in events:
            _require_fields(event)
        results = [0] * len(events)
        chain_start = 0
        chain_failed = False
        self._undo.clear()
        for index, event in enumerate(events):
            linked = is_linked(event.flags)
            if chain_failed:
                results[index] = int(Code.LINKED_EVENT_FAILED)
            else:
                if linked and index == len(events) - 1:
                    code = int(Code.LINKED_EVENT_CHAIN_OPEN)
                else:
                    code = self._create_one(create_one, event, now_ns)
                if code:
                    code = int(code)
                    self._rollback()
                    for earlier in range(chain_start, index):
                        results[earlier] = int(Code.LINKED_EVENT_FAILED)
                    results[index] = code
                    chain_failed = True
                    if code in FAILED_FOREVER_CODES:
                        self._remember_failed(event.id)
            if not linked:
                self._undo.clear()
                chain_start = index + 1
                chain_failed = False
        return results

    def _create_one(self, create_one, event, now_ns: int) -> int:
        """One event's code; if it raises (out of memory), its open chain is undone first."""
        try:
            return create_one(event, now_ns)
        except BaseException:
            self._rollback()
            raise

    def create_accounts(self, accounts: list[Account], now_ns: int) -> list[int]:
        """One code per account (0 = created); see the module docstring for batches."""
        return self._run_batch(accounts, now_ns, self._create_account)

    def create_transfers(self, transfers: list[Transfer], now_ns: int) -> list[int]:
        """One code per transfer (0 = applied); see the module docstring for batches."""
        return self._run_batch(transfers, now_ns, self._create_transfer)

    # ---- accounts ----------------------------------------------------------

    def _create_account(self, a: Account, now_ns: int) -> int:
        if not (isinstance(a.timestamp, int) and a.timestamp == 0):
            return Code.TIMESTAMP_MUST_BE_ZERO
        if not _is_uint(a.id, U64_MAX):
            return Code.FIELD_OUT_OF_RANGE
        if a.id == 0:
            return Code.ID_MUST_NOT_BE_ZERO
        if a.id == U64_MAX:
            return Code.ID_MUST_NOT_BE_INT_MAX
        if not _is_uint(a.flags, U16_MAX) or a.flags & ~ACCOUNT_FLAGS_KNOWN:
            return Code.RESERVED_FLAG
        both_limits = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS
        if a.flags & both_limits == both_limits:
            return Code.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        if (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted) != (0, 0, 0, 0):
            return Code.BALANCES_MUST_BE_ZERO
        if not (_is_uint(a.ledger, U32_MAX) and _is_uint(a.code, U16_MAX) and _is_uint(a.user_data_128, U128_MAX)
                and _is_uint(a.user_data_64, U64_MAX) and _is_uint(a.user_data_32, U32_MAX)):
            return Code.FIELD_OUT_OF_RANGE
        if a.ledger == 0:
            return Code.LEDGER_MUST_NOT_BE_ZERO
        if a.code == 0:
            return Code.CODE_MUST_NOT_BE_ZERO
        existing = self._accounts.get(a.id)
        if existing is not None:
            return _account_exists_code(existing, a)
        if len(self._accounts) >= self.accounts_max:
            return Code.ACCOUNTS_LIMIT_REACHED
        timestamp = self._next_timestamp(now_ns)
        self._take_timestamp(timestamp)
        stored = Account(a.id, a.ledger, a.code, int(a.flags), a.user_data_128, a.user_data_64, a.user_data_32,
                         timestamp=timestamp)
        self._insert_account(stored)
        self._journal_append(bytes([JOURNAL_ACCOUNT]) + pack_account(stored))
        return Code.OK

    def _insert_account(self, account: Account) -> None:
        self._accounts[account.id] = account
        self._undo.append(lambda: self._accounts.pop(account.id))

    # ---- transfers ---------------------------------------------------------

    def _create_transfer(self, t: Transfer, now_ns: int) -> int:
        code = _transfer_fields_code(t)
        if code:
            return code
        flags = t.flags
        phase_flags = flags & (TransferFlags.PENDING | TransferFlags.POST_PENDING_TRANSFER
                               | TransferFlags.VOID_PENDING_TRANSFER)
        if phase_flags & (phase_flags - 1):
            return Code.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        resolves = flags & (TransferFlags.POST_PENDING_TRANSFER | TransferFlags.VOID_PENDING_TRANSFER)
        if resolves and flags & (TransferFlags.BALANCING_DEBIT | TransferFlags.BALANCING_CREDIT):
            return Code.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        if resolves:
            return self._resolve_pending(t, now_ns)
        return self._create_single(t, now_ns)

    def _existing_code(self, t: Transfer) -> int:
        """0 when the id is new; otherwise what a retry of it gets."""
        if t.id in self._failed_ids:
            return Code.ID_ALREADY_FAILED
        existing = self._transfers.get(t.id)
        if existing is None:
            return 0
        return _transfer_exists_code(existing, t)

    def _create_single(self, t: Transfer, now_ns: int) -> int:
        if t.debit_account_id == 0:
            return Code.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
        if t.credit_account_id == 0:
            return Code.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
        if t.debit_account_id == t.credit_account_id:
            return Code.ACCOUNTS_MUST_BE_DIFFERENT
        if t.pending_id != 0:
            return Code.PENDING_ID_MUST_BE_ZERO
        pending = bool(t.flags & TransferFlags.PENDING)
        if not pending and t.timeout != 0:
            return Code.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
        if t.amount == 0:
            return Code.AMOUNT_MUST_NOT_BE_ZERO
        if t.ledger == 0:
            return Code.LEDGER_MUST_NOT_BE_ZERO
        if t.code == 0:
            return Code.CODE_MUST_NOT_BE_ZERO
        code = self._existing_code(t)
        if code:
            return code
        debit = self._accounts.get(t.debit_account_id)
        if debit is None:
            return Code.DEBIT_ACCOUNT_NOT_FOUND
        credit = self._accounts.get(t.credit_account_id)
        if credit is None:
            return Code.CREDIT_ACCOUNT_NOT_FOUND
        if debit.ledger != credit.ledger:
            return Code.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER
        if t.ledger != debit.ledger:
            return Code.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS
        timestamp = self._next_timestamp(now_ns)
        if pending and t.timeout * NS_PER_SECOND > CLOCK_NS_MAX - timestamp:
            return Code.OVERFLOWS_TIMEOUT
        amount = _balanced_amount(t, debit, credit)
        if amount == 0:
            return Code.EXCEEDS_CREDITS if t.flags & TransferFlags.BALANCING_DEBIT else Code.EXCEEDS_DEBITS
        code = _balance_code(debit, credit, amount, pending)
        if code:
            return code
        stored = _copy_transfer(t)
        stored.amount = amount
        stored.timestamp = timestamp
        self._take_timestamp(timestamp)
        self._insert_transfer(stored, STATUS_PENDING if pending else STATUS_POSTED)
        if pending:
            self._move(debit, credit, amount, pending_delta=amount, posted_delta=0, timestamp=timestamp)
            if t.timeout:
                self._schedule_expiry(stored, timestamp + t.timeout * NS_PER_SECOND)
        else:
            self._move(debit, credit, amount, pending_delta=0, posted_delta=amount, timestamp=timestamp)
        self._journal_append(bytes([JOURNAL_TRANSFER]) + TRANSFER_RECORD.pack(*_transfer_fields(stored)))
        return Code.OK

    def _resolve_pending(self, t: Transfer, now_ns: int) -> int:
        """A post_pending_transfer or void_pending_transfer."""
        if t.pending_id == 0:
            return Code.PENDING_ID_MUST_NOT_BE_ZERO
        if t.pending_id == t.id:
            return Code.PENDING_ID_MUST_BE_DIFFERENT
        if t.timeout != 0:
            return Code.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
        code = self._existing_code(t)
        if code:
            return code
        p = self._transfers.get(t.pending_id)
        if p is None:
            return Code.PENDING_TRANSFER_NOT_FOUND
        if not p.flags & TransferFlags.PENDING:
            return Code.PENDING_TRANSFER_NOT_PENDING
        code = _pending_mismatch_code(p, t)
        if code:
            return code
        status = self._status[p.id]
        if status == STATUS_PENDING_POSTED:
            return Code.PENDING_TRANSFER_ALREADY_POSTED
        if status == STATUS_PENDING_VOIDED:
            return Code.PENDING_TRANSFER_ALREADY_VOIDED
        if status == STATUS_PENDING_EXPIRED:
            return Code.PENDING_TRANSFER_EXPIRED
        timestamp = self._next_timestamp(now_ns)
        expires_at_ns = self._expires_at_ns.get(p.id, 0)
        if expires_at_ns and expires_at_ns <= timestamp:
            return Code.PENDING_TRANSFER_EXPIRED
        posting = bool(t.flags & TransferFlags.POST_PENDING_TRANSFER)
        amount = (t.amount or p.amount) if posting else p.amount
        stored = Transfer(t.id, p.debit_account_id, p.credit_account_id, amount, p.ledger, p.code, int(t.flags),
                          t.pending_id, 0, t.user_data_128, t.user_data_64, t.user_data_32, timestamp)
        self._take_timestamp(timestamp)
        self._insert_transfer(stored, STATUS_POSTED)
        self._apply_resolution(p, stored, posting)
        self._journal_append(bytes([JOURNAL_TRANSFER]) + TRANSFER_RECORD.pack(*_transfer_fields(stored)))
        return Code.OK

    def _apply_resolution(self, p: Transfer, stored: Transfer, posting: bool) -> None:
        """Release the pending amount; a post moves `stored.amount` of it to posted."""
        self._set_status(p.id, STATUS_PENDING_POSTED if posting else STATUS_PENDING_VOIDED)
        debit = self._accounts[p.debit_account_id]
        credit = self._accounts[p.credit_account_id]
        posted = stored.amount if posting else 0
        self._move(debit, credit, p.amount, pending_delta=-p.amount, posted_delta=posted, timestamp=stored.timestamp)

    def _insert_transfer(self, transfer: Transfer, status: int) -> None:
        self._transfers[transfer.id] = transfer
        self._status[transfer.id] = status

        def undo():
            del self._transfers[transfer.id]
            del self._status[transfer.id]
            self._expires_at_ns.pop(transfer.id, None)
        self._undo.append(undo)

    def _set_status(self, transfer_id: int, status: int) -> None:
        previous = self._status[transfer_id]
        self._status[transfer_id] = status
        self._undo.append(lambda: self._status.__setitem__(transfer_id, previous))

    def _schedule_expiry(self, transfer: Transfer, expires_at_ns: int) -> None:
        # A rolled-back entry stays in the heap; expire_pending skips entries that do not match.
        self._expires_at_ns[transfer.id] = expires_at_ns
        heapq.heappush(self._expiry_heap, (expires_at_ns, transfer.timestamp, transfer.id))

    def _remember_failed(self, transfer_id: int) -> None:
        self._failed_ids.add(transfer_id)
        self._journal += bytes([JOURNAL_FAILED]) + FAILED_RECORD.pack(transfer_id & _LOW_64_BITS, transfer_id >> 64)

    def _move(self, debit: Account, credit: Account, amount: int, *, pending_delta: int, posted_delta: int,
              timestamp: int) -> None:
        """Change both accounts' balances (undoably) and record their history rows."""
        for account in (debit, credit):
            before = (account.debits_pending, account.debits_posted, account.credits_pending, account.credits_posted)
            self._undo.append(lambda account=account, before=before: _set_balances(account, before))
        debit.debits_pending += pending_delta
        debit.debits_posted += posted_delta
        credit.credits_pending += pending_delta
        credit.credits_posted += posted_delta
        for account in (debit, credit):
            if account.flags & AccountFlags.HISTORY:
                rows = self._history.setdefault(account.id, [])
                rows.append((timestamp, account.debits_pending, account.debits_posted,
                             account.credits_pending, account.credits_posted))
                self._undo.append(rows.pop)

    # ---- expiry ------------------------------------------------------------

    def expire_pending(self, now_ns: int) -> int:
        """Release pending transfers whose timeout passed by now_ns, soonest first; the count released.

        At most BATCH_EVENTS_MAX per call, so that one batch's journal stays bounded:
        a caller that gets BATCH_EVENTS_MAX back calls again."""
        _check_now(now_ns)
        released = 0
        while (self._expiry_heap and self._expiry_heap[0][0] <= now_ns
               and released < limits.BATCH_EVENTS_MAX):
            expires_at_ns, timestamp, transfer_id = heapq.heappop(self._expiry_heap)
            p = self._transfers.get(transfer_id)
            if (p is None or p.timestamp != timestamp or self._status[transfer_id] != STATUS_PENDING
                    or self._expires_at_ns.get(transfer_id) != expires_at_ns):
                continue
            expiry_timestamp = self._next_timestamp(now_ns)
            self._timestamp_last = expiry_timestamp
            self._status[transfer_id] = STATUS_PENDING_EXPIRED
            debit = self._accounts[p.debit_account_id]
            credit = self._accounts[p.credit_account_id]
            self._move(debit, credit, p.amount, pending_delta=-p.amount, posted_delta=0, timestamp=expiry_timestamp)
            self._journal += bytes([JOURNAL_EXPIRED]) + EXPIRED_RECORD.pack(
                transfer_id & _LOW_64_BITS, transfer_id >> 64, expiry_timestamp)
            released += 1
        self._undo.clear()
        return released

    # ---- journaled component ----------------------------------------------

    def take_journal(self) -> bytes | None:
        """The effects applied since the last call, or None when nothing changed."""
        if len(self._journal) == 0:
            return None
        blob = bytes(self._journal)
        self._journal.clear()
        return blob

    def apply_journal(self, blob: bytes) -> None:
        """Re-apply effects recorded by take_journal (recovery); never re-decides anything."""
        try:
            self._apply_records(blob)
        except (struct.error, KeyError) as error:
            raise ValueError(f"ledger journal: truncated or inconsistent: {error!r}") from error

    def _apply_records(self, blob: bytes) -> None:
        for kind, record in iter_journal_records(blob):
            if kind == "account":
                self._replay_account(record)
            elif kind == "transfer":
                self._replay_transfer(record)
            elif kind == "failed":
                self._replay_failed(record)
            else:
                self._replay_expiry(*record)
        self._undo.clear()

    def _replay_account(self, account: Account) -> None:
        if account.id in self._accounts:
            raise ValueError(f"ledger journal: account {account.id} created twice")
        self._accounts[account.id] = account
        self._timestamp_last = max(self._timestamp_last, account.timestamp)

    def _replay_failed(self, transfer_id: int) -> None:
        if transfer_id in self._failed_ids or transfer_id in self._transfers:
            raise ValueError(f"ledger journal: failed id {transfer_id} is already known")
        self._failed_ids.add(transfer_id)

    def _replay_transfer(self, t: Transfer) -> None:
        if t.id in self._transfers or t.id in self._failed_ids:
            raise ValueError(f"ledger journal: transfer {t.id} applied twice")
        debit = self._accounts[t.debit_account_id]
        credit = self._accounts[t.credit_account_id]
        self._timestamp_last = max(self._timestamp_last, t.timestamp)
        if t.flags & (TransferFlags.POST_PENDING_TRANSFER | TransferFlags.VOID_PENDING_TRANSFER):
            if self._status.get(t.pending_id) != STATUS_PENDING:
                raise ValueError(f"ledger journal: transfer {t.id} resolves no open pending transfer")
            self._insert_transfer(t, STATUS_POSTED)
            self._apply_resolution(self._transfers[t.pending_id], t,
                                   bool(t.flags & TransferFlags.POST_PENDING_TRANSFER))
        elif t.flags & TransferFlags.PENDING:
            self._insert_transfer(t, STATUS_PENDING)
            self._move(debit, credit, t.amount, pending_delta=t.amount, posted_delta=0, timestamp=t.timestamp)
            if t.timeout:
                self._schedule_expiry(t, t.timestamp + t.timeout * NS_PER_SECOND)
        else:
            self._insert_transfer(t, STATUS_POSTED)
            self._move(debit, credit, t.amount, pending_delta=0, posted_delta=t.amount, timestamp=t.timestamp)

    def _replay_expiry(self, transfer_id: int, timestamp: int) -> None:
        p = self._transfers[transfer_id]
        if self._status[transfer_id] != STATUS_PENDING:
            raise ValueError(f"ledger journal: transfer {transfer_id} expired but is not pending")
        self._status[transfer_id] = STATUS_PENDING_EXPIRED
        self._timestamp_last = max(self._timestamp_last, timestamp)
        self._move(self._accounts[p.debit_account_id], self._accounts[p.credit_account_id], p.amount,
                   pending_delta=-p.amount, posted_delta=0, timestamp=timestamp)

    def state_bytes(self) -> bytes:
        """Canonical bytes of the whole state (the compiled core yields the same bytes)."""
        out = bytearray(struct.pack("<QQQQ", len(self._accounts), len(self._transfers), len(self._failed_ids),
                                    self._timestamp_last))
        for account in self._accounts.values():
            out += pack_account_state(account)
        for transfer in self._transfers.values():
            out += TRANSFER_STATE.pack(*_transfer_fields(transfer), self._status[transfer.id])
        for failed_id in sorted(self._failed_ids):
            out += FAILED_RECORD.pack(failed_id & _LOW_64_BITS, failed_id >> 64)
        return bytes(out)

    def state_hash(self) -> bytes:
        """A digest of the full state, equal for equal states (in both implementations)."""
        return hashlib.blake2b(self.state_bytes(), digest_size=32).digest()

    def checkpoint(self) -> bytes:
        """Every account with its balances, for storage's checkpoints and `ledger check`."""
        return b"".join(pack_account_state(account) for account in self._accounts.values())

    def snapshot(self) -> bytes:
        """The whole state, for storage's snapshots: state_bytes(), then every history account's rows
        (oldest first) in account order.  restore() of these bytes rebuilds an equal ledger."""
        out = bytearray(self.state_bytes())
        with_history = [account.id for account in self._accounts.values() if self._history.get(account.id)]
        out += SNAPSHOT_COUNT.pack(len(with_history))
        for account_id in with_history:
            rows = self._history[account_id]
            out += HISTORY_HEADER.pack(account_id, len(rows))
            for row in rows:
                out += HISTORY_ROW.pack(*row)
        return bytes(out)

    def restore(self, blob: bytes) -> None:
        """Replace the whole state by a snapshot(); ValueError (and an empty ledger) when it is malformed."""
        self.reset()
        try:
            end = self._restore(memoryview(blob))
        except (struct.error, KeyError, ValueError) as error:
            self.reset()
            raise ValueError(f"ledger snapshot: malformed: {error!r}") from error
        if end != len(blob):
            self.reset()
            raise ValueError(f"ledger snapshot: {len(blob) - end} bytes after its end")

    def _restore(self, blob: memoryview) -> int:
        accounts, transfers, failed, self._timestamp_last = STATE_HEADER.unpack_from(blob, 0)
        offset = STATE_HEADER.size
        for _ in range(accounts):
            account = unpack_account_state(blob, offset)
            if account.id in self._accounts:
                raise ValueError(f"account {account.id} twice")
            self._accounts[account.id] = account
            offset += ACCOUNT_STATE.size
        for _ in range(transfers):
            fields = TRANSFER_STATE.unpack_from(blob, offset)
            self._restore_transfer(_transfer_from_fields(fields), fields[16])
            offset += TRANSFER_STATE.size
        for _ in range(failed):
            lo, hi = FAILED_RECORD.unpack_from(blob, offset)
            self._failed_ids.add(lo | hi << 64)
            offset += FAILED_RECORD.size
        history_accounts, = SNAPSHOT_COUNT.unpack_from(blob, offset)
        offset += SNAPSHOT_COUNT.size
        for _ in range(history_accounts):
            account_id, rows = HISTORY_HEADER.unpack_from(blob, offset)
            offset += HISTORY_HEADER.size
            self._history[account_id] = [HISTORY_ROW.unpack_from(blob, offset + i * HISTORY_ROW.size)
                                         for i in range(rows)]
            offset += rows * HISTORY_ROW.size
        return offset

    def _restore_transfer(self, transfer: Transfer, status: int) -> None:
        """A transfer as replay leaves it: a pending one with a timeout keeps its expiry time."""
        if status > STATUS_PENDING_EXPIRED or transfer.id in self._transfers:
            raise ValueError(f"transfer {transfer.id} twice or with status {status}")
        self._transfers[transfer.id] = transfer
        self._status[transfer.id] = status
        if transfer.flags & TransferFlags.PENDING and transfer.timeout:
            expires_at_ns = transfer.timestamp + transfer.timeout * NS_PER_SECOND
            self._expires_at_ns[transfer.id] = expires_at_ns
            if status == STATUS_PENDING:
                heapq.heappush(self._expiry_heap, (expires_at_ns, transfer.timestamp, transfer.id))

    # ---- invariants --------------------------------------------------------

    def check_invariants(self) -> list[str]:
        """Money invariants; each broken one is a sentence.  Empty when all hold."""
        return check_accounts(self._accounts.values())


def iter_journal_records(blob: bytes):
    """Decode a ledger journal blob: ("account", Account) | ("transfer", Transfer) |
    ("failed", id) | ("expired", (pending id, timestamp)), in the order applied."""
    offset = 0
    while offset < len(blob):
        kind = blob[offset]
        offset += 1
        if kind == JOURNAL_ACCOUNT:
            id_, ud_lo, ud_hi, ud64, timestamp, ledger, ud32, code, flags = ACCOUNT_RECORD.unpack_from(blob, offset)
            yield "account", Account(id_, ledger, code, flags, ud_lo | ud_hi << 64, ud64, ud32, timestamp=timestamp)
            offset += ACCOUNT_RECORD.size
        elif kind == JOURNAL_TRANSFER:
            yield "transfer", _transfer_from_fields(TRANSFER_RECORD.unpack_from(blob, offset))
            offset += TRANSFER_RECORD.size
        elif kind == JOURNAL_FAILED:
            lo, hi = FAILED_RECORD.unpack_from(blob, offset)
            yield "failed", lo | hi << 64
            offset += FAILED_RECORD.size
        elif kind == JOURNAL_EXPIRED:
            lo, hi, timestamp = EXPIRED_RECORD.unpack_from(blob, offset)
            yield "expired", (lo | hi << 64, timestamp)
            offset += EXPIRED_RECORD.size
        else:
            raise ValueError(f"ledger journal: unknown record kind {kind} at byte {offset - 1}")


def accounts_from_checkpoint(blob: bytes) -> list[Account]:
    """The accounts of a checkpoint() blob, in creation order."""
    if len(blob) % ACCOUNT_STATE.size:
        raise ValueError(f"ledger checkpoint of {len(blob)} bytes is not a whole number of accounts")
    return [unpack_account_state(blob, offset) for offset in range(0, len(blob), ACCOUNT_STATE.size)]


def check_accounts(accounts) -> list[str]:
    """Per ledger debits equal credits (posted and pending); no account breaks its flags."""
    violations = []
    sums: dict[int, list[int]] = {}
    for a in accounts:
        totals = sums.setdefault(a.ledger, [0, 0, 0, 0])
        totals[0] += a.debits_pending
        totals[1] += a.debits_posted
        totals[2] += a.credits_pending
        totals[3] += a.credits_posted
        if a.flags & AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS and a.debits_pending + a.debits_posted > a.credits_posted:
            violations.append(f"account {a.id}: debits exceed credits_posted despite its flag")
        if a.flags & AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS and a.credits_pending + a.credits_posted > a.debits_posted:
            violations.append(f"account {a.id}: credits exceed debits_posted despite its flag")
        if max(a.debits_pending + a.debits_posted, a.credits_pending + a.credits_posted) > U64_MAX:
            violations.append(f"account {a.id}: a balance passes 2^64-1")
    for ledger, (debits_pending, debits_posted, credits_pending, credits_posted) in sorted(sums.items()):
        if debits_posted != credits_posted:
            violations.append(f"ledger {ledger}: debits_posted {debits_posted} != credits_posted {credits_posted}")
        if debits_pending != credits_pending:
            violations.append(f"ledger {ledger}: debits_pending {debits_pending} != credits_pending {credits_pending}")
    return violations


def _require_fields(event) -> None:
    """An event missing a field is a programming error, raised before anything is applied."""
    fields = Transfer.__dataclass_fields__ if hasattr(event, "debit_account_id") else Account.__dataclass_fields__
    for field in fields:
        getattr(event, field)


def _check_now(now_ns) -> None:
    if not _is_uint(now_ns, CLOCK_NS_MAX):
        raise ValueError(f"now_ns must be 0..2^63-1 nanoseconds since the epoch, not {now_ns!r}")


def _set_balances(account: Account, balances: tuple) -> None:
    account.debits_pending, account.debits_posted, account.credits_pending, account.credits_posted = balances


def _copy_account(a: Account) -> Account:
    return Account(a.id, a.ledger, a.code, int(a.flags), a.user_data_128, a.user_data_64, a.user_data_32,
                   a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted, a.timestamp)


def _copy_transfer(t: Transfer) -> Transfer:
    return Transfer(t.id, t.debit_account_id, t.credit_account_id, t.amount, t.ledger, t.code, int(t.flags),
                    t.pending_id, t.timeout, t.user_data_128, t.user_data_64, t.user_data_32, t.timestamp)


def _transfer_fields_code(t: Transfer) -> int:
    """Fields that are not the right kind of number, before any rule looks at them."""
    if not (isinstance(t.timestamp, int) and t.timestamp == 0):
        return Code.TIMESTAMP_MUST_BE_ZERO
    if not _is_uint(t.id, U128_MAX):
        return Code.FIELD_OUT_OF_RANGE
    if t.id == 0:
        return Code.ID_MUST_NOT_BE_ZERO
    if t.id == U128_MAX:
        return Code.ID_MUST_NOT_BE_INT_MAX
    if not _is_uint(t.flags, U16_MAX) or t.flags & ~TRANSFER_FLAGS_KNOWN:
        return Code.RESERVED_FLAG
    if not (_is_uint(t.debit_account_id, U64_MAX) and _is_uint(t.credit_account_id, U64_MAX)
            and _is_uint(t.pending_id, U128_MAX) and _is_uint(t.user_data_128, U128_MAX)
            and _is_uint(t.user_data_64, U64_MAX) and _is_uint(t.user_data_32, U32_MAX)
            and _is_uint(t.ledger, U32_MAX) and _is_uint(t.code, U16_MAX)):
        return Code.FIELD_OUT_OF_RANGE
    if not _is_uint(t.amount, limits.AMOUNT_MINOR_MAX):
        return Code.AMOUNT_MUST_NOT_EXCEED_BALANCE_MAX
    if not _is_uint(t.timeout, limits.TIMEOUT_SECONDS_MAX):
        return Code.TIMEOUT_MUST_NOT_EXCEED_MAX
    return 0


def _account_exists_code(existing: Account, a: Account) -> int:
    linked = AccountFlags.LINKED
    if existing.flags & ~linked != a.flags & ~linked:
        return Code.EXISTS_WITH_DIFFERENT_FLAGS
    if existing.user_data_128 != a.user_data_128:
        return Code.EXISTS_WITH_DIFFERENT_USER_DATA_128
    if existing.user_data_64 != a.user_data_64:
        return Code.EXISTS_WITH_DIFFERENT_USER_DATA_64
    if existing.user_data_32 != a.user_data_32:
        return Code.EXISTS_WITH_DIFFERENT_USER_DATA_32
    if existing.ledger != a.ledger:
        return Code.EXISTS_WITH_DIFFERENT_LEDGER
    if existing.code != a.code:
        return Code.EXISTS_WITH_DIFFERENT_CODE
    return Code.EXISTS


def _transfer_exists_code(existing: Transfer, t: Transfer) -> int:
    """A retry's verdict.  On a post/void, zero fields inherit and are not compared;
    a balancing transfer may have moved less than asked, so only asking less differs."""
    linked = TransferFlags.LINKED
    if existing.flags & ~linked != t.flags & ~linked:
        return Code.EXISTS_WITH_DIFFERENT_FLAGS
    resolves = t.flags & (TransferFlags.POST_PENDING_TRANSFER | TransferFlags.VOID_PENDING_TRANSFER)
    balancing = t.flags & (TransferFlags.BALANCING_DEBIT | TransferFlags.BALANCING_CREDIT)
    if (t.debit_account_id or not resolves) and existing.debit_account_id != t.debit_account_id:
        return Code.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
    if (t.credit_account_id or not resolves) and existing.credit_account_id != t.credit_account_id:
        return Code.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
    if balancing:
        if t.amount < existing.amount:
            return Code.EXISTS_WITH_DIFFERENT_AMOUNT
    elif (t.amount or not resolves) and existing.amount != t.amount:
        return Code.EXISTS_WITH_DIFFERENT_AMOUNT
    if existing.pending_id != t.pending_id:
        return Code.EXISTS_WITH_DIFFERENT_PENDING_ID
    if existing.timeout != t.timeout:
        return Code.EXISTS_WITH_DIFFERENT_TIMEOUT
    if (t.ledger or not resolves) and existing.ledger != t.ledger:
        return Code.EXISTS_WITH_DIFFERENT_LEDGER
    if (t.code or not resolves) and existing.code != t.code:
        return Code.EXISTS_WITH_DIFFERENT_CODE
    if existing.user_data_128 != t.user_data_128:
        return Code.EXISTS_WITH_DIFFERENT_USER_DATA_128
    if existing.user_data_64 != t.user_data_64:
        return Code.EXISTS_WITH_DIFFERENT_USER_DATA_64
    if existing.user_data_32 != t.user_data_32:
        return Code.EXISTS_WITH_DIFFERENT_USER_DATA_32
    return Code.EXISTS


def _pending_mismatch_code(p: Transfer, t: Transfer) -> int:
    """A post/void must agree with the pending transfer on every field it gives."""
    if t.debit_account_id and t.debit_account_id != p.debit_account_id:
        return Code.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID
    if t.credit_account_id and t.credit_account_id != p.credit_account_id:
        return Code.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID
    if t.ledger and t.ledger != p.ledger:
        return Code.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER
    if t.code and t.code != p.code:
        return Code.PENDING_TRANSFER_HAS_DIFFERENT_CODE
    if t.flags & TransferFlags.POST_PENDING_TRANSFER:
        if t.amount > p.amount:
            return Code.EXCEEDS_PENDING_TRANSFER_AMOUNT
    elif t.amount and t.amount != p.amount:
        return Code.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT
    return 0


def _balanced_amount(t: Transfer, debit: Account, credit: Account) -> int:
    """The amount to move: the given one, lowered by balancing flags to what is available."""
    amount = t.amount
    if t.flags & TransferFlags.BALANCING_DEBIT:
        available = debit.credits_posted - debit.debits_posted - debit.debits_pending
        amount = min(amount, max(available, 0))
    if t.flags & TransferFlags.BALANCING_CREDIT:
        available = credit.debits_posted - credit.credits_posted - credit.credits_pending
        amount = min(amount, max(available, 0))
    return amount


def _balance_code(debit: Account, credit: Account, amount: int, pending: bool) -> int:
    """Overflow and balance-limit checks, before anything moves."""
    if pending:
        if debit.debits_pending + amount > U64_MAX:
            return Code.OVERFLOWS_DEBITS_PENDING
        if credit.credits_pending + amount > U64_MAX:
            return Code.OVERFLOWS_CREDITS_PENDING
    else:
        if debit.debits_posted + amount > U64_MAX:
            return Code.OVERFLOWS_DEBITS_POSTED
        if credit.credits_posted + amount > U64_MAX:
            return Code.OVERFLOWS_CREDITS_POSTED
    debits_after = debit.debits_pending + debit.debits_posted + amount
    credits_after = credit.credits_pending + credit.credits_posted + amount
    if debits_after > U64_MAX:
        return Code.OVERFLOWS_DEBITS
    if credits_after > U64_MAX:
        return Code.OVERFLOWS_CREDITS
    if debit.flags & AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS and debits_after > debit.credits_posted:
        return Code.EXCEEDS_CREDITS
    if credit.flags & AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS and credits_after > credit.debits_posted:
        return Code.EXCEEDS_DEBITS
    return 0
