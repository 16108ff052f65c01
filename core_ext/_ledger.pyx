# cython: language_level=3
"""The double-entry ledger, compiled: the rules of core_ext/reference/ledger.py over C arrays.

Accounts and transfers live in C arrays of structs (_ledger.pxd) found through
open-addressing hash indexes (linear probing, load at most 1/2).  A linked chain
is undone through an undo log: inserted rows are truncated and their index slots
cleared in reverse order, which restores a linear-probing table exactly because
the table is grown only between batches (`_reserve`), never inside one.

The module docstring of the reference twin states the rules (batches, chains,
idempotency, two-phase, balancing, time); this module must give the same codes,
the same balances, the same journal bytes and the same state_bytes().
"""
cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memcpy, memset

import hashlib
import struct

from core_ext.types import Account, Transfer

include "codes.pxi"
include "limits.pxi"

cdef extern from *:
    """
    #define LEDGER_U64_MAX 0xFFFFFFFFFFFFFFFFULL
    """
    const uint64_t LEDGER_U64_MAX

cdef extern from *:
    """
    #define LEDGER_PREFETCH(address) __builtin_prefetch((const void*)(address), 0, 1)
    """
    void LEDGER_PREFETCH(const void* address) noexcept nogil

cdef enum:
    # Events ahead of the current one whose index slots are fetched into cache early:
    # an id lookup in a large table is a cache (and TLB) miss that would otherwise stall.
    PREFETCH_DISTANCE = 8

cdef enum:
    ACCOUNT_LINKED = 1
    ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS = 2
    ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS = 4
    ACCOUNT_HISTORY = 8
    ACCOUNT_FLAGS_KNOWN = 15

    TRANSFER_LINKED = 1
    TRANSFER_PENDING = 2
    TRANSFER_POST_PENDING = 4
    TRANSFER_VOID_PENDING = 8
    TRANSFER_BALANCING_DEBIT = 16
    TRANSFER_BALANCING_CREDIT = 32
    TRANSFER_FLAGS_KNOWN = 63

    STATUS_POSTED = 0
    STATUS_PENDING = 1
    STATUS_PENDING_POSTED = 2
    STATUS_PENDING_VOIDED = 3
    STATUS_PENDING_EXPIRED = 4
    STATUS_FAILED = 5

    JOURNAL_ACCOUNT = 1
    JOURNAL_TRANSFER = 2
    JOURNAL_FAILED = 3
    JOURNAL_EXPIRED = 4

    UNDO_BALANCES = 1
    UNDO_STATUS = 2
    UNDO_ACCOUNT_INSERT = 3
    UNDO_TRANSFER_INSERT = 4

cdef enum:
    NS_PER_SECOND = 1000000000

cdef object U128_MAX = 2**128 - 1
cdef object U64_MASK = 2**64 - 1
cdef object _ACCOUNT_STATE_TAIL = struct.Struct("<QQQQ")
cdef object _HEADER = struct.Struct("<QQQQ")
cdef object _FAILED = struct.Struct("<QQ")
cdef object _SNAPSHOT_COUNT = struct.Struct("<Q")
cdef object _HISTORY_HEADER = struct.Struct("<QQ")
cdef object _HISTORY_ROW = struct.Struct("<QQQQQ")


cdef packed struct AccountStateC:
    # One account of state_bytes()/checkpoint(): the journal record, then the four balances.
    AccountRecordC record
    uint64_t debits_pending
    uint64_t debits_posted
    uint64_t credits_pending
    uint64_t credits_posted


cdef packed struct TransferStateC:
    # One transfer of state_bytes(): the journal record, then its status.
    TransferRecordC record
    uint8_t status


# ---- hashing ------------------------------------------------------------------

cdef inline uint64_t _mix(uint64_t x) noexcept nogil:
    # splitmix64's finalizer: ids are often sequential, so spread them over the table.
    x ^= x >> 30
    x *= 0xbf58476d1ce4e5b9ULL
    x ^= x >> 27
    x *= 0x94d049bb133111ebULL
    x ^= x >> 31
    return x


cdef inline uint64_t _hash128(uint64_t lo, uint64_t hi) noexcept nogil:
    return _mix(lo ^ _mix(hi + 0x9e3779b97f4a7c15ULL))


# An index slot holds row + 1 in its low 40 bits and 24 bits of the key's hash above
# them, so a probe rejects most other keys without touching their row (a cache miss).
cdef enum:
    SLOT_ROW_BITS = 40

cdef inline int64_t _slot(uint64_t hash_value, int64_t row) noexcept nogil:
    return <int64_t>(((hash_value >> SLOT_ROW_BITS) << SLOT_ROW_BITS) | <uint64_t>(row + 1))


cdef inline bint _slot_may_hold(int64_t slot, uint64_t hash_value) noexcept nogil:
    return ((<uint64_t>slot ^ hash_value) >> SLOT_ROW_BITS) == 0


cdef inline int64_t _slot_row(int64_t slot) noexcept nogil:
    return <int64_t>((<uint64_t>slot & ((1ULL << SLOT_ROW_BITS) - 1)) - 1)


cdef inline bint _is_failure_forever(int code) noexcept nogil:
    return (CODE_OVERFLOWS_DEBITS_PENDING <= code <= CODE_OVERFLOWS_CREDITS
            or code == CODE_EXCEEDS_CREDITS or code == CODE_EXCEEDS_DEBITS)


cdef inline uint64_t _next_timestamp(uint64_t last, uint64_t now_ns) noexcept nogil:
    return now_ns if now_ns > last else last + 1


cdef extern from "<sys/mman.h>" nogil:
    int madvise(void* address, size_t length, int advice)
    enum: MADV_HUGEPAGE

cdef enum:
    HUGE_PAGE_BYTES = 2 * 1024 * 1024


cdef void _advise_huge_pages(void* address, size_t size) noexcept nogil:
    """Ask for 2 MiB pages on a large table: random probes then miss the TLB far less."""
    cdef size_t start = (<size_t>address + HUGE_PAGE_BYTES - 1) & ~(<size_t>HUGE_PAGE_BYTES - 1)
    cdef size_t end = (<size_t>address + size) & ~(<size_t>HUGE_PAGE_BYTES - 1)
    if end > start:
        madvise(<void*>start, end - start, MADV_HUGEPAGE)    # advice only: failure changes nothing


cdef inline int _grow(void** array, Py_ssize_t* capacity, Py_ssize_t needed, size_t item_size) noexcept nogil:
    """Make room for `needed` items, doubling; -1 when out of memory (the array is unchanged).
    Inline for the common case, room already: it is asked several times per transfer."""
    if needed <= capacity[0]:
        return 0
    return _grow_by_doubling(array, capacity, needed, item_size)


cdef int _grow_by_doubling(void** array, Py_ssize_t* capacity, Py_ssize_t needed, size_t item_size) noexcept nogil:
    cdef Py_ssize_t new_capacity = capacity[0] * 2 if capacity[0] else 64
    while new_capacity < needed:
        new_capacity *= 2
    cdef void* grown = realloc(array[0], new_capacity * item_size)
    if grown == NULL:
        return -1
    array[0] = grown
    capacity[0] = new_capacity
    _advise_huge_pages(grown, new_capacity * item_size)
    return 0


# ---- Python <-> C conversion (the only place Python objects are read) ------------

cdef extern from "Python.h":
    # Declared here without an exception spec: a failed conversion is an answer
    # (FIELD_OUT_OF_RANGE), not an exception, and this keeps try/except frames
    # out of the per-field path.
    unsigned long _long_as_u64 "PyLong_AsUnsignedLong"(object value)
    void* PyErr_Occurred()
    void PyErr_Clear()


cdef inline bint _u64(object value, uint64_t* out):
    if not isinstance(value, int):
        return False
    out[0] = _long_as_u64(value)
    if out[0] == <uint64_t>-1 and PyErr_Occurred() != NULL:
        PyErr_Clear()                       # negative, or wider than 64 bits
        return False
    return True


cdef inline bint _u128(object value, uint64_t* lo, uint64_t* hi):
    if _u64(value, lo):
        hi[0] = 0
        return True
    if not isinstance(value, int) or value < 0 or value > U128_MAX:
        return False
    lo[0] = value & U64_MASK
    hi[0] = value >> 64
    return True


# ---- reading a Transfer's fields without attribute lookups ----------------------
# Transfer is a slots dataclass: each field is a member descriptor holding the
# offset of its slot in the instance.  For an object whose type is exactly
# Transfer, reading the slot directly skips the attribute machinery (the larger
# part of converting a transfer); any other object is read with getattr.

cdef extern from "structmember.h":
    ctypedef struct PyMemberDef:
        Py_ssize_t offset

cdef extern from "Python.h":
    ctypedef struct PyObject
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member
    ctypedef struct PyTypeObject
    PyTypeObject* Py_TYPE(object value)
    PyTypeObject* PyMemberDescr_Type_ptr "(&PyMemberDescr_Type)"

cdef enum:
    FIELD_TIMESTAMP, FIELD_ID, FIELD_FLAGS, FIELD_DEBIT_ACCOUNT_ID, FIELD_CREDIT_ACCOUNT_ID, FIELD_PENDING_ID,
    FIELD_USER_DATA_128, FIELD_USER_DATA_64, FIELD_USER_DATA_32, FIELD_LEDGER, FIELD_CODE, FIELD_AMOUNT,
    FIELD_TIMEOUT, TRANSFER_FIELD_COUNT

cdef tuple TRANSFER_FIELD_NAMES = (
    "timestamp", "id", "flags", "debit_account_id", "credit_account_id", "pending_id", "user_data_128",
    "user_data_64", "user_data_32", "ledger", "code", "amount", "timeout")
cdef Py_ssize_t transfer_slot_offsets[TRANSFER_FIELD_COUNT]
cdef PyTypeObject* transfer_type = NULL


cdef void _learn_transfer_slots() noexcept:
    """Record each field's slot offset; on any surprise keep the getattr path for every object."""
    global transfer_type
    cdef int field
    for field in range(TRANSFER_FIELD_COUNT):
        descriptor = Transfer.__dict__.get(TRANSFER_FIELD_NAMES[field])
        if descriptor is None or Py_TYPE(descriptor) != PyMemberDescr_Type_ptr:
            return
        transfer_slot_offsets[field] = (<PyMemberDescrObject*>descriptor).d_member.offset
    transfer_type = Py_TYPE(Transfer.__new__(Transfer))


_learn_transfer_slots()


cdef inline object _transfer_field(object t, int field):
    cdef PyObject* value
    if Py_TYPE(t) == transfer_type:
        value = (<PyObject**>((<char*><PyObject*>t) + transfer_slot_offsets[field]))[0]
        if value != NULL:
            return <object>value
    return getattr(t, TRANSFER_FIELD_NAMES[field])


cdef inline bint _uint_at_most(object value, uint64_t maximum, uint64_t* out):
    return _u64(value, out) and out[0] <= maximum


cdef inline bint _is_linked(object flags):
    cdef uint64_t value
    return _uint_at_most(flags, 0xFFFF, &value) and (value & 1) != 0


cdef int _account_from_python(object a, AccountC* out):
    """The checks on an account's fields, in the twin's order; fills `out` when they pass."""
    cdef uint64_t value
    memset(out, 0, sizeof(AccountC))
    if not _u64(a.timestamp, &out.timestamp) or out.timestamp != 0:
        return CODE_TIMESTAMP_MUST_BE_ZERO
    if not _u64(a.id, &out.id):
        return CODE_FIELD_OUT_OF_RANGE
    if out.id == 0:
        return CODE_ID_MUST_NOT_BE_ZERO
    if out.id == LEDGER_U64_MAX:
        return CODE_ID_MUST_NOT_BE_INT_MAX
    if not _uint_at_most(a.flags, 0xFFFF, &value) or value & ~(<uint64_t>ACCOUNT_FLAGS_KNOWN):
        return CODE_RESERVED_FLAG
    out.flags = <uint16_t>value
    if (out.flags & ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS) and (out.flags & ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS):
        return CODE_FLAGS_ARE_MUTUALLY_EXCLUSIVE
    if (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted) != (0, 0, 0, 0):
        return CODE_BALANCES_MUST_BE_ZERO
    if not _uint_at_most(a.ledger, 0xFFFFFFFF, &value):
        return CODE_FIELD_OUT_OF_RANGE
    out.ledger = <uint32_t>value
    if not _uint_at_most(a.code, 0xFFFF, &value):
        return CODE_FIELD_OUT_OF_RANGE
    out.code = <uint16_t>value
    if not _u128(a.user_data_128, &out.user_data_128_lo, &out.user_data_128_hi):
        return CODE_FIELD_OUT_OF_RANGE
    if not _u64(a.user_data_64, &out.user_data_64):
        return CODE_FIELD_OUT_OF_RANGE
    if not _uint_at_most(a.user_data_32, 0xFFFFFFFF, &value):
        return CODE_FIELD_OUT_OF_RANGE
    out.user_data_32 = <uint32_t>value
    return 0


cdef int _transfer_from_python(object t, TransferC* out):
    """The checks on a transfer's fields, in the twin's order; fills `out` when they pass."""
    cdef uint64_t value
    memset(out, 0, sizeof(TransferC))
    if not _u64(_transfer_field(t, FIELD_TIMESTAMP), &out.timestamp) or out.timestamp != 0:
        return CODE_TIMESTAMP_MUST_BE_ZERO
    if not _u128(_transfer_field(t, FIELD_ID), &out.id_lo, &out.id_hi):
        return CODE_FIELD_OUT_OF_RANGE
    if out.id_lo == 0 and out.id_hi == 0:
        return CODE_ID_MUST_NOT_BE_ZERO
    if out.id_lo == LEDGER_U64_MAX and out.id_hi == LEDGER_U64_MAX:
        return CODE_ID_MUST_NOT_BE_INT_MAX
    if (not _uint_at_most(_transfer_field(t, FIELD_FLAGS), 0xFFFF, &value)
            or value & ~(<uint64_t>TRANSFER_FLAGS_KNOWN)):
        return CODE_RESERVED_FLAG
    out.flags = <uint16_t>value
    if not (_u64(_transfer_field(t, FIELD_DEBIT_ACCOUNT_ID), &out.debit_account_id)
            and _u64(_transfer_field(t, FIELD_CREDIT_ACCOUNT_ID), &out.credit_account_id)
            and _u128(_transfer_field(t, FIELD_PENDING_ID), &out.pending_id_lo, &out.pending_id_hi)
            and _u128(_transfer_field(t, FIELD_USER_DATA_128), &out.user_data_128_lo, &out.user_data_128_hi)
            and _u64(_transfer_field(t, FIELD_USER_DATA_64), &out.user_data_64)):
        return CODE_FIELD_OUT_OF_RANGE
    if not _uint_at_most(_transfer_field(t, FIELD_USER_DATA_32), 0xFFFFFFFF, &value):
        return CODE_FIELD_OUT_OF_RANGE
    out.user_data_32 = <uint32_t>value
    if not _uint_at_most(_transfer_field(t, FIELD_LEDGER), 0xFFFFFFFF, &value):
        return CODE_FIELD_OUT_OF_RANGE
    out.ledger = <uint32_t>value
    if not _uint_at_most(_transfer_field(t, FIELD_CODE), 0xFFFF, &value):
        return CODE_FIELD_OUT_OF_RANGE
    out.code = <uint16_t>value
    if not _uint_at_most(_transfer_field(t, FIELD_AMOUNT), LIMIT_AMOUNT_MINOR_MAX, &out.amount):
        return CODE_AMOUNT_MUST_NOT_EXCEED_BALANCE_MAX
    if not _uint_at_most(_transfer_field(t, FIELD_TIMEOUT), LIMIT_TIMEOUT_SECONDS_MAX, &value):
        return CODE_TIMEOUT_MUST_NOT_EXCEED_MAX
    out.timeout = <uint32_t>value
    return 0


cdef object _u128_int(uint64_t lo, uint64_t hi):
    if hi == 0:
        return lo
    return (<object>hi << 64) | lo


cdef object _account_to_python(const AccountC* a):
    return Account(a.id, a.ledger, a.code, a.flags, _u128_int(a.user_data_128_lo, a.user_data_128_hi),
                   a.user_data_64, a.user_data_32, a.debits_pending, a.debits_posted,
                   a.credits_pending, a.credits_posted, a.timestamp)


cdef object _transfer_to_python(const TransferC* t):
    return Transfer(_u128_int(t.id_lo, t.id_hi), t.debit_account_id, t.credit_account_id, t.amount,
                    t.ledger, t.code, t.flags, _u128_int(t.pending_id_lo, t.pending_id_hi), t.timeout,
                    _u128_int(t.user_data_128_lo, t.user_data_128_hi), t.user_data_64, t.user_data_32,
                    t.timestamp)


cdef void _account_record(const AccountC* a, AccountRecordC* r) noexcept nogil:
    r.id = a.id
    r.user_data_128_lo = a.user_data_128_lo
    r.user_data_128_hi = a.user_data_128_hi
    r.user_data_64 = a.user_data_64
    r.timestamp = a.timestamp
    r.ledger = a.ledger
    r.user_data_32 = a.user_data_32
    r.code = a.code
    r.flags = a.flags


cdef void _transfer_record(const TransferC* t, TransferRecordC* r) noexcept nogil:
    r.id_lo = t.id_lo
    r.id_hi = t.id_hi
    r.debit_account_id = t.debit_account_id
    r.credit_account_id = t.credit_account_id
    r.amount = t.amount
    r.pending_id_lo = t.pending_id_lo
    r.pending_id_hi = t.pending_id_hi
    r.user_data_128_lo = t.user_data_128_lo
    r.user_data_128_hi = t.user_data_128_hi
    r.user_data_64 = t.user_data_64
    r.timestamp = t.timestamp
    r.user_data_32 = t.user_data_32
    r.timeout = t.timeout
    r.ledger = t.ledger
    r.code = t.code
    r.flags = t.flags


cdef void _transfer_from_record(const TransferRecordC* r, TransferC* t) noexcept nogil:
    memset(t, 0, sizeof(TransferC))
    t.id_lo = r.id_lo
    t.id_hi = r.id_hi
    t.debit_account_id = r.debit_account_id
    t.credit_account_id = r.credit_account_id
    t.amount = r.amount
    t.pending_id_lo = r.pending_id_lo
    t.pending_id_hi = r.pending_id_hi
    t.user_data_128_lo = r.user_data_128_lo
    t.user_data_128_hi = r.user_data_128_hi
    t.user_data_64 = r.user_data_64
    t.timestamp = r.timestamp
    t.user_data_32 = r.user_data_32
    t.timeout = r.timeout
    t.ledger = r.ledger
    t.code = r.code
    t.flags = r.flags


cdef int _account_exists_code(const AccountC* e, const AccountC* a) noexcept nogil:
    if (e.flags & ~ACCOUNT_LINKED) != (a.flags & ~ACCOUNT_LINKED):
        return CODE_EXISTS_WITH_DIFFERENT_FLAGS
    if e.user_data_128_lo != a.user_data_128_lo or e.user_data_128_hi != a.user_data_128_hi:
        return CODE_EXISTS_WITH_DIFFERENT_USER_DATA_128
    if e.user_data_64 != a.user_data_64:
        return CODE_EXISTS_WITH_DIFFERENT_USER_DATA_64
    if e.user_data_32 != a.user_data_32:
        return CODE_EXISTS_WITH_DIFFERENT_USER_DATA_32
    if e.ledger != a.ledger:
        return CODE_EXISTS_WITH_DIFFERENT_LEDGER
    if e.code != a.code:
        return CODE_EXISTS_WITH_DIFFERENT_CODE
    return CODE_EXISTS


cdef int _transfer_exists_code(const TransferC* e, const TransferC* t) noexcept nogil:
    # On a post/void zero fields inherit and are not compared; a balancing transfer
    # may have moved less than it asked, so only asking for less is a difference.
    if (e.flags & ~TRANSFER_LINKED) != (t.flags & ~TRANSFER_LINKED):
        return CODE_EXISTS_WITH_DIFFERENT_FLAGS
    cdef bint resolves = (t.flags & (TRANSFER_POST_PENDING | TRANSFER_VOID_PENDING)) != 0
    cdef bint balancing = (t.flags & (TRANSFER_BALANCING_DEBIT | TRANSFER_BALANCING_CREDIT)) != 0
    if (t.debit_account_id or not resolves) and e.debit_account_id != t.debit_account_id:
        return CODE_EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
    if (t.credit_account_id or not resolves) and e.credit_account_id != t.credit_account_id:
        return CODE_EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
    if balancing:
        if t.amount < e.amount:
            return CODE_EXISTS_WITH_DIFFERENT_AMOUNT
    elif (t.amount or not resolves) and e.amount != t.amount:
        return CODE_EXISTS_WITH_DIFFERENT_AMOUNT
    if e.pending_id_lo != t.pending_id_lo or e.pending_id_hi != t.pending_id_hi:
        return CODE_EXISTS_WITH_DIFFERENT_PENDING_ID
    if e.timeout != t.timeout:
        return CODE_EXISTS_WITH_DIFFERENT_TIMEOUT
    if (t.ledger or not resolves) and e.ledger != t.ledger:
        return CODE_EXISTS_WITH_DIFFERENT_LEDGER
    if (t.code or not resolves) and e.code != t.code:
        return CODE_EXISTS_WITH_DIFFERENT_CODE
    if e.user_data_128_lo != t.user_data_128_lo or e.user_data_128_hi != t.user_data_128_hi:
        return CODE_EXISTS_WITH_DIFFERENT_USER_DATA_128
    if e.user_data_64 != t.user_data_64:
        return CODE_EXISTS_WITH_DIFFERENT_USER_DATA_64
    if e.user_data_32 != t.user_data_32:
        return CODE_EXISTS_WITH_DIFFERENT_USER_DATA_32
    return CODE_EXISTS


cdef int _pending_mismatch_code(const TransferC* p, const TransferC* t) noexcept nogil:
    if t.debit_account_id and t.debit_account_id != p.debit_account_id:
        return CODE_PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID
    if t.credit_account_id and t.credit_account_id != p.credit_account_id:
        return CODE_PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID
    if t.ledger and t.ledger != p.ledger:
        return CODE_PENDING_TRANSFER_HAS_DIFFERENT_LEDGER
    if t.code and t.code != p.code:
        return CODE_PENDING_TRANSFER_HAS_DIFFERENT_CODE
    if t.flags & TRANSFER_POST_PENDING:
        if t.amount > p.amount:
            return CODE_EXCEEDS_PENDING_TRANSFER_AMOUNT
    elif t.amount and t.amount != p.amount:
        return CODE_PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT
    return 0


cdef inline uint64_t _available(uint64_t plus, uint64_t minus_a, uint64_t minus_b) noexcept nogil:
    # minus_a + minus_b cannot overflow: a balance total never passes 2^64-1 (checked on every move).
    cdef uint64_t minus = minus_a + minus_b
    return plus - minus if plus > minus else 0


cdef uint64_t _balanced_amount(const TransferC* t, const AccountC* dr, const AccountC* cr) noexcept nogil:
    cdef uint64_t amount = t.amount
    cdef uint64_t available
    if t.flags & TRANSFER_BALANCING_DEBIT:
        available = _available(dr.credits_posted, dr.debits_posted, dr.debits_pending)
        if available < amount:
            amount = available
    if t.flags & TRANSFER_BALANCING_CREDIT:
        available = _available(cr.debits_posted, cr.credits_posted, cr.credits_pending)
        if available < amount:
            amount = available
    return amount


cdef int _balance_code(const AccountC* dr, const AccountC* cr, uint64_t amount, bint pending) noexcept nogil:
    """Overflow and balance-limit checks, before anything moves (u64 arithmetic, no wrap)."""
    if pending:
        if dr.debits_pending > LEDGER_U64_MAX - amount:
            return CODE_OVERFLOWS_DEBITS_PENDING
        if cr.credits_pending > LEDGER_U64_MAX - amount:
            return CODE_OVERFLOWS_CREDITS_PENDING
    else:
        if dr.debits_posted > LEDGER_U64_MAX - amount:
            return CODE_OVERFLOWS_DEBITS_POSTED
        if cr.credits_posted > LEDGER_U64_MAX - amount:
            return CODE_OVERFLOWS_CREDITS_POSTED
    # Each total fits: the invariant holds before this transfer.
    cdef uint64_t debits = dr.debits_pending + dr.debits_posted
    cdef uint64_t credits = cr.credits_pending + cr.credits_posted
    if debits > LEDGER_U64_MAX - amount:
        return CODE_OVERFLOWS_DEBITS
    if credits > LEDGER_U64_MAX - amount:
        return CODE_OVERFLOWS_CREDITS
    if dr.flags & ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS and debits + amount > dr.credits_posted:
        return CODE_EXCEEDS_CREDITS
    if cr.flags & ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS and credits + amount > cr.debits_posted:
        return CODE_EXCEEDS_DEBITS
    return 0


cdef inline bint _expiry_before(const ExpiryC* a, const ExpiryC* b) noexcept nogil:
    if a.expires_at_ns != b.expires_at_ns:
        return a.expires_at_ns < b.expires_at_ns
    return a.timestamp < b.timestamp


def _check_now(now_ns):
    if not isinstance(now_ns, int) or now_ns < 0 or now_ns > LIMIT_CLOCK_NS_MAX:
        raise ValueError(f"now_ns must be 0..2^63-1 nanoseconds since the epoch, not {now_ns!r}")


cdef int _raise_for_status(int status, str operation) except -1:
    """The Python exception for a status of the nogil batch API (0 ok, -1 out of memory, -2 bad arguments)."""
    if status == -2:
        raise ValueError(f"{operation}: count past batch_events_max or now_ns past the clock")
    if status < 0:
        raise MemoryError("ledger: out of memory; earlier chains of this batch were applied: reload")
    return 0


@cython.final
cdef class Ledger:
    """Accounts and transfers in C arrays; a journaled component named "ledger".

    Same API and results as core_ext.reference.Ledger (see its docstring for
    the rules).  A batch larger than limits.BATCH_EVENTS_MAX gets
    BATCH_TOO_LARGE for every event and nothing is applied.
    """

    name = "ledger"

    def __cinit__(self, accounts_max=LIMIT_ACCOUNTS_MAX):
        if not isinstance(accounts_max, int) or not 0 < accounts_max <= LIMIT_ACCOUNTS_MAX:
            raise ValueError(f"accounts_max must be 1..{LIMIT_ACCOUNTS_MAX}, not {accounts_max!r}")
        self.accounts_max = accounts_max
        self.scratch_transfers = <TransferC*>calloc(LIMIT_BATCH_EVENTS_MAX, sizeof(TransferC))
        self.scratch_accounts = <AccountC*>calloc(LIMIT_BATCH_EVENTS_MAX, sizeof(AccountC))
        self.scratch_codes = <uint16_t*>calloc(LIMIT_BATCH_EVENTS_MAX, sizeof(uint16_t))
        self.scratch_linked = <uint8_t*>calloc(LIMIT_BATCH_EVENTS_MAX, sizeof(uint8_t))
        self.scratch_results = <uint16_t*>calloc(LIMIT_BATCH_EVENTS_MAX, sizeof(uint16_t))
        if (self.scratch_results == NULL or self.scratch_transfers == NULL or self.scratch_accounts == NULL or self.scratch_codes == NULL
                or self.scratch_linked == NULL):
            raise MemoryError("ledger: out of memory")
        self.reset()

    def __dealloc__(self):
        self._free_state()
        free(self.scratch_transfers)
        free(self.scratch_accounts)
        free(self.scratch_codes)
        free(self.scratch_linked)
        free(self.scratch_results)

    cdef void _free_state(self) noexcept:
        free(self.accounts)
        free(self.account_slots)
        free(self.transfers)
        free(self.transfer_slots)
        free(self.history)
        free(self.undo)
        free(self.expiry_heap)
        free(self.journal)
        self.accounts = NULL
        self.account_slots = NULL
        self.transfers = NULL
        self.transfer_slots = NULL
        self.history = NULL
        self.undo = NULL
        self.expiry_heap = NULL
        self.journal = NULL

    def reset(self):
        """Forget everything (storage calls this before replaying the journal)."""
        self._free_state()
        self.account_rows = self.account_capacity = 0
        self.transfer_rows = self.transfer_capacity = self.failed_count = 0
        self.history_rows = self.history_capacity = 0
        self.undo_count = self.undo_capacity = 0
        self.expiry_count = self.expiry_capacity = 0
        self.journal_size = self.journal_capacity = 0
        self.timestamp_last = 0
        self.account_mask = self.transfer_mask = 0
        if self._reserve(0, 0) < 0:
            raise MemoryError("ledger: out of memory")

    # ---- indexes -------------------------------------------------------------

    cdef int _reserve(self, Py_ssize_t accounts_more, Py_ssize_t transfers_more) noexcept nogil:
        """Room for this many more rows, so nothing moves or rehashes inside a batch."""
        if self._has_room(accounts_more, transfers_more):
            return 0                  # the usual case (each payment is a batch): no sizes to work out
        if _grow(<void**>&self.accounts, &self.account_capacity, self.account_rows + accounts_more,
                 sizeof(AccountC)) < 0:
            return -1
        if _grow(<void**>&self.transfers, &self.transfer_capacity, self.transfer_rows + transfers_more,
                 sizeof(TransferC)) < 0:
            return -1
        cdef uint64_t slots = 1024
        while slots < <uint64_t>(2 * (self.account_rows + accounts_more)):
            slots *= 2
        if (self.account_slots == NULL or slots > self.account_mask + 1) and self._rehash_accounts(slots) < 0:
            return -1
        slots = 1024
        while slots < <uint64_t>(2 * (self.transfer_rows + transfers_more)):
            slots *= 2
        if (self.transfer_slots == NULL or slots > self.transfer_mask + 1) and self._rehash_transfers(slots) < 0:
            return -1
        return 0

    cdef bint _has_room(self, Py_ssize_t accounts_more, Py_ssize_t transfers_more) noexcept nogil:
        """True when _reserve would change nothing: the rows fit, and each index stays at most half full."""
        cdef Py_ssize_t accounts = self.account_rows + accounts_more, transfers = self.transfer_rows + transfers_more
        return (accounts <= self.account_capacity and transfers <= self.transfer_capacity
                and self.account_slots != NULL and self.transfer_slots != NULL
                and <uint64_t>(2 * accounts) <= self.account_mask + 1
                and <uint64_t>(2 * transfers) <= self.transfer_mask + 1)

    cdef int _rehash_accounts(self, uint64_t slot_count) noexcept nogil:
        cdef int64_t* slots = <int64_t*>calloc(slot_count, sizeof(int64_t))
        if slots == NULL:
            return -1
        _advise_huge_pages(slots, slot_count * sizeof(int64_t))
        cdef uint64_t mask = slot_count - 1, position, hash_value
        cdef Py_ssize_t row
        for row in range(self.account_rows):
            hash_value = _mix(self.accounts[row].id)
            position = hash_value & mask
            while slots[position]:
                position = (position + 1) & mask
            slots[position] = _slot(hash_value, row)
        free(self.account_slots)
        self.account_slots = slots
        self.account_mask = mask
        return 0

    cdef int _rehash_transfers(self, uint64_t slot_count) noexcept nogil:
        cdef int64_t* slots = <int64_t*>calloc(slot_count, sizeof(int64_t))
        if slots == NULL:
            return -1
        _advise_huge_pages(slots, slot_count * sizeof(int64_t))
        cdef uint64_t mask = slot_count - 1, position, hash_value
        cdef Py_ssize_t row
        for row in range(self.transfer_rows):
            hash_value = _hash128(self.transfers[row].id_lo, self.transfers[row].id_hi)
            position = hash_value & mask
            while slots[position]:
                position = (position + 1) & mask
            slots[position] = _slot(hash_value, row)
        free(self.transfer_slots)
        self.transfer_slots = slots
        self.transfer_mask = mask
        return 0

    cdef int64_t _find_account(self, uint64_t account_id) noexcept nogil:
        cdef uint64_t hash_value = _mix(account_id)
        cdef uint64_t position = hash_value & self.account_mask
        cdef int64_t slot
        while True:
            slot = self.account_slots[position]
            if slot == 0:
                return -1
            if _slot_may_hold(slot, hash_value) and self.accounts[_slot_row(slot)].id == account_id:
                return _slot_row(slot)
            position = (position + 1) & self.account_mask

    cdef int64_t _find_transfer(self, uint64_t id_lo, uint64_t id_hi) noexcept nogil:
        cdef uint64_t hash_value = _hash128(id_lo, id_hi)
        cdef uint64_t position = hash_value & self.transfer_mask
        cdef int64_t slot, row
        while True:
            slot = self.transfer_slots[position]
            if slot == 0:
                return -1
            if _slot_may_hold(slot, hash_value):
                row = _slot_row(slot)
                if self.transfers[row].id_lo == id_lo and self.transfers[row].id_hi == id_hi:
                    return row
            position = (position + 1) & self.transfer_mask

    cdef int _insert_account(self, AccountC* a, bint undoable) noexcept nogil:
        cdef uint64_t hash_value = _mix(a.id)
        cdef uint64_t position = hash_value & self.account_mask
        while self.account_slots[position]:
            position = (position + 1) & self.account_mask
        cdef int64_t row = self.account_rows
        self.accounts[row] = a[0]
        self.accounts[row].history_last = -1
        self.account_slots[position] = _slot(hash_value, row)
        self.account_rows += 1
        if undoable:
            return self._push_undo(UNDO_ACCOUNT_INSERT, row, <int64_t>position)
        return 0

    cdef int _insert_transfer(self, TransferC* t, uint8_t status, bint undoable) noexcept nogil:
        cdef uint64_t hash_value = _hash128(t.id_lo, t.id_hi)
        cdef uint64_t position = hash_value & self.transfer_mask
        while self.transfer_slots[position]:
            position = (position + 1) & self.transfer_mask
        cdef int64_t row = self.transfer_rows
        self.transfers[row] = t[0]
        self.transfers[row].status = status
        self.transfer_slots[position] = _slot(hash_value, row)
        self.transfer_rows += 1
        if undoable:
            return self._push_undo(UNDO_TRANSFER_INSERT, row, <int64_t>position)
        return 0

    # ---- undo ----------------------------------------------------------------

    cdef int _push_undo(self, uint8_t kind, int64_t row, int64_t slot) noexcept nogil:
        if _grow(<void**>&self.undo, &self.undo_capacity, self.undo_count + 1, sizeof(UndoC)) < 0:
            return -1
        cdef UndoC* u = &self.undo[self.undo_count]
        u.kind = kind
        u.row = row
        u.slot = slot
        if kind == UNDO_BALANCES:
            u.balances[0] = self.accounts[row].debits_pending
            u.balances[1] = self.accounts[row].debits_posted
            u.balances[2] = self.accounts[row].credits_pending
            u.balances[3] = self.accounts[row].credits_posted
            u.history_last = self.accounts[row].history_last
        elif kind == UNDO_STATUS:
            u.status = self.transfers[row].status
        self.undo_count += 1
        return 0

    cdef void _rollback(self, Py_ssize_t undo_mark) noexcept nogil:
        """Undo entries back to undo_mark, newest first (rows are truncated by the caller)."""
        cdef UndoC* u
        cdef AccountC* a
        while self.undo_count > undo_mark:
            self.undo_count -= 1
            u = &self.undo[self.undo_count]
            if u.kind == UNDO_BALANCES:
                a = &self.accounts[u.row]
                a.debits_pending = u.balances[0]
                a.debits_posted = u.balances[1]
                a.credits_pending = u.balances[2]
                a.credits_posted = u.balances[3]
                a.history_last = u.history_last
            elif u.kind == UNDO_STATUS:
                self.transfers[u.row].status = u.status
            elif u.kind == UNDO_ACCOUNT_INSERT:
                self.account_slots[u.slot] = 0
            elif u.kind == UNDO_TRANSFER_INSERT:
                self.transfer_slots[u.slot] = 0

    # ---- batches and chains ---------------------------------------------------

    cdef int _run_batch(self, bint is_transfer, void* events, uint16_t* precodes, uint8_t* linked,
                        Py_ssize_t count, uint16_t* results, uint64_t now_ns) noexcept nogil:
        """Apply events in order, linked chains all or none; one code per event."""
        cdef Py_ssize_t index, earlier, chain_start = 0
        cdef bint chain_failed = False
        cdef int code
        cdef ChainMarkC mark                  # where the open chain began
        if self._reserve(0 if is_transfer else count, count if is_transfer else 0) < 0:
            return -1
        self._mark_chain(&mark)
        for index in range(count):
            if is_transfer and index + PREFETCH_DISTANCE < count:
                self._prefetch_transfer(&(<TransferC*>events)[index + PREFETCH_DISTANCE])
            if chain_failed:
                results[index] = CODE_LINKED_EVENT_FAILED
            else:
                code = self._create_one(is_transfer, events, precodes, linked, index, count, now_ns, &mark)
                if code < 0:
                    return -1                   # out of memory; the open chain is undone
                results[index] = code
                if code:
                    self._rollback_chain(&mark)
                    for earlier in range(chain_start, index):
                        results[earlier] = CODE_LINKED_EVENT_FAILED
                    chain_failed = True
                    if is_transfer and _is_failure_forever(code):
                        if self._remember_failed(&(<TransferC*>events)[index]) < 0:
                            return -1
            if not linked[index]:
                chain_start = index + 1
                chain_failed = False
                self._mark_chain(&mark)
        return 0

    cdef int _create_one(self, bint is_transfer, void* events, uint16_t* precodes, uint8_t* linked,
                         Py_ssize_t index, Py_ssize_t count, uint64_t now_ns, ChainMarkC* mark) noexcept nogil:
        """One event's code, or -1 when out of memory (its open chain undone first)."""
        if linked[index] and index == count - 1:
            return CODE_LINKED_EVENT_CHAIN_OPEN
        if precodes[index]:
            return precodes[index]
        cdef int code
        if is_transfer:
            code = self._create_transfer(&(<TransferC*>events)[index], now_ns)
        else:
            code = self._create_account(&(<AccountC*>events)[index], now_ns)
        if code < 0:
            self._rollback_chain(mark)
        return code

    cdef void _mark_chain(self, ChainMarkC* mark) noexcept nogil:
        self.undo_count = 0
        mark.account_rows = self.account_rows
        mark.transfer_rows = self.transfer_rows
        mark.history_rows = self.history_rows
        mark.journal_size = self.journal_size
        mark.timestamp_last = self.timestamp_last

    cdef void _rollback_chain(self, ChainMarkC* mark) noexcept nogil:
        """Undo everything since the mark: the ledger is as it was before the chain."""
        self._rollback(0)
        self.account_rows = mark.account_rows
        self.transfer_rows = mark.transfer_rows
        self.history_rows = mark.history_rows
        self.journal_size = mark.journal_size
        self.timestamp_last = mark.timestamp_last

    cdef void _prefetch_transfer(self, const TransferC* t) noexcept nogil:
        LEDGER_PREFETCH(&self.transfer_slots[_hash128(t.id_lo, t.id_hi) & self.transfer_mask])
        LEDGER_PREFETCH(&self.account_slots[_mix(t.debit_account_id) & self.account_mask])
        LEDGER_PREFETCH(&self.account_slots[_mix(t.credit_account_id) & self.account_mask])

    cdef int create_transfers_nogil(self, TransferC* events, uint16_t* results, Py_ssize_t count,
                                    uint64_t now_ns) noexcept nogil:
        if count > <Py_ssize_t>LIMIT_BATCH_EVENTS_MAX or now_ns > LIMIT_CLOCK_NS_MAX:
            return -2
        cdef Py_ssize_t index
        for index in range(count):
            self.scratch_codes[index] = 0
            self.scratch_linked[index] = events[index].flags & TRANSFER_LINKED
        return self._run_batch(True, events, self.scratch_codes, self.scratch_linked, count, results, now_ns)

    cdef int create_transfers_c(self, TransferC* events, uint16_t* results, Py_ssize_t count,
                                uint64_t now_ns) except -1:
        return _raise_for_status(self.create_transfers_nogil(events, results, count, now_ns), "create_transfers_c")

    cdef int create_accounts_nogil(self, AccountC* events, uint16_t* results, Py_ssize_t count,
                                   uint64_t now_ns) noexcept nogil:
        if count > <Py_ssize_t>LIMIT_BATCH_EVENTS_MAX or now_ns > LIMIT_CLOCK_NS_MAX:
            return -2
        cdef Py_ssize_t index
        for index in range(count):
            self.scratch_codes[index] = 0
            self.scratch_linked[index] = events[index].flags & ACCOUNT_LINKED
        return self._run_batch(False, events, self.scratch_codes, self.scratch_linked, count, results, now_ns)

    cdef int create_accounts_c(self, AccountC* events, uint16_t* results, Py_ssize_t count,
                               uint64_t now_ns) except -1:
        return _raise_for_status(self.create_accounts_nogil(events, results, count, now_ns), "create_accounts_c")

    def create_accounts(self, accounts, now_ns):
        """One code per account (0 = created).  More than BATCH_EVENTS_MAX: every one BATCH_TOO_LARGE."""
        cdef Py_ssize_t index, count = len(accounts)
        if count > <Py_ssize_t>LIMIT_BATCH_EVENTS_MAX:
            return [CODE_BATCH_TOO_LARGE] * count
        _check_now(now_ns)
        cdef uint16_t* results = self.scratch_results
        for index in range(count):
            account = accounts[index]
            self.scratch_linked[index] = _is_linked(account.flags)
            self.scratch_codes[index] = _account_from_python(account, &self.scratch_accounts[index])
        if self._run_batch(False, self.scratch_accounts, self.scratch_codes, self.scratch_linked, count, results,
                           now_ns) < 0:
            raise MemoryError("ledger: out of memory; earlier chains of this batch were applied: reload")
        return [results[index] for index in range(count)]

    def create_transfers(self, transfers, now_ns):
        """One code per transfer (0 = applied).  More than BATCH_EVENTS_MAX: every one BATCH_TOO_LARGE."""
        cdef Py_ssize_t index, count = len(transfers)
        if count > <Py_ssize_t>LIMIT_BATCH_EVENTS_MAX:
            return [CODE_BATCH_TOO_LARGE] * count
        _check_now(now_ns)
        cdef uint16_t* results = self.scratch_results
        for index in range(count):
            transfer = transfers[index]
            self.scratch_linked[index] = _is_linked(_transfer_field(transfer, FIELD_FLAGS))
            self.scratch_codes[index] = _transfer_from_python(transfer, &self.scratch_transfers[index])
        if self._run_batch(True, self.scratch_transfers, self.scratch_codes, self.scratch_linked, count, results,
                           now_ns) < 0:
            raise MemoryError("ledger: out of memory; earlier chains of this batch were applied: reload")
        return [results[index] for index in range(count)]

    # ---- accounts -------------------------------------------------------------

    cdef int _create_account(self, AccountC* a, uint64_t now_ns) noexcept nogil:
        if a.id == 0:
            return CODE_ID_MUST_NOT_BE_ZERO
        if a.id == LEDGER_U64_MAX:
            return CODE_ID_MUST_NOT_BE_INT_MAX
        if a.flags & ~ACCOUNT_FLAGS_KNOWN:
            return CODE_RESERVED_FLAG
        if (a.flags & ACCOUNT_DEBITS_MUST_NOT_EXCEED_CREDITS) and (a.flags & ACCOUNT_CREDITS_MUST_NOT_EXCEED_DEBITS):
            return CODE_FLAGS_ARE_MUTUALLY_EXCLUSIVE
        if a.debits_pending or a.debits_posted or a.credits_pending or a.credits_posted:
            return CODE_BALANCES_MUST_BE_ZERO
        if a.ledger == 0:
            return CODE_LEDGER_MUST_NOT_BE_ZERO
        if a.code == 0:
            return CODE_CODE_MUST_NOT_BE_ZERO
        cdef int64_t row = self._find_account(a.id)
        if row >= 0:
            return _account_exists_code(&self.accounts[row], a)
        if self.account_rows >= self.accounts_max:
            return CODE_ACCOUNTS_LIMIT_REACHED
        a.timestamp = _next_timestamp(self.timestamp_last, now_ns)
        self.timestamp_last = a.timestamp
        if self._insert_account(a, True) < 0:
            return -1
        cdef AccountRecordC record
        _account_record(a, &record)
        return self._journal_write(JOURNAL_ACCOUNT, &record, sizeof(record))

    # ---- transfers ------------------------------------------------------------

    cdef int _create_transfer(self, TransferC* t, uint64_t now_ns) noexcept nogil:
        if t.id_lo == 0 and t.id_hi == 0:
            return CODE_ID_MUST_NOT_BE_ZERO
        if t.id_lo == LEDGER_U64_MAX and t.id_hi == LEDGER_U64_MAX:
            return CODE_ID_MUST_NOT_BE_INT_MAX
        if t.flags & ~TRANSFER_FLAGS_KNOWN:
            return CODE_RESERVED_FLAG
        cdef uint16_t phase = t.flags & (TRANSFER_PENDING | TRANSFER_POST_PENDING | TRANSFER_VOID_PENDING)
        if phase & (phase - 1):
            return CODE_FLAGS_ARE_MUTUALLY_EXCLUSIVE
        cdef bint resolves = (t.flags & (TRANSFER_POST_PENDING | TRANSFER_VOID_PENDING)) != 0
        if resolves and t.flags & (TRANSFER_BALANCING_DEBIT | TRANSFER_BALANCING_CREDIT):
            return CODE_FLAGS_ARE_MUTUALLY_EXCLUSIVE
        if resolves:
            return self._resolve_pending(t, now_ns)
        return self._create_single(t, now_ns)

    cdef int _existing_code(self, TransferC* t) noexcept nogil:
        cdef int64_t row = self._find_transfer(t.id_lo, t.id_hi)
        if row < 0:
            return 0
        if self.transfers[row].status == STATUS_FAILED:
            return CODE_ID_ALREADY_FAILED
        return _transfer_exists_code(&self.transfers[row], t)

    cdef int _create_single(self, TransferC* t, uint64_t now_ns) noexcept nogil:
        if t.debit_account_id == 0:
            return CODE_DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
        if t.credit_account_id == 0:
            return CODE_CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
        if t.debit_account_id == t.credit_account_id:
            return CODE_ACCOUNTS_MUST_BE_DIFFERENT
        if t.pending_id_lo or t.pending_id_hi:
            return CODE_PENDING_ID_MUST_BE_ZERO
        cdef bint pending = (t.flags & TRANSFER_PENDING) != 0
        if not pending and t.timeout:
            return CODE_TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
        if t.amount == 0:
            return CODE_AMOUNT_MUST_NOT_BE_ZERO
        if t.ledger == 0:
            return CODE_LEDGER_MUST_NOT_BE_ZERO
        if t.code == 0:
            return CODE_CODE_MUST_NOT_BE_ZERO
        cdef int code = self._existing_code(t)
        if code:
            return code
        cdef int64_t debit_row = self._find_account(t.debit_account_id)
        if debit_row < 0:
            return CODE_DEBIT_ACCOUNT_NOT_FOUND
        cdef int64_t credit_row = self._find_account(t.credit_account_id)
        if credit_row < 0:
            return CODE_CREDIT_ACCOUNT_NOT_FOUND
        cdef AccountC* dr = &self.accounts[debit_row]
        cdef AccountC* cr = &self.accounts[credit_row]
        if dr.ledger != cr.ledger:
            return CODE_ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER
        if t.ledger != dr.ledger:
            return CODE_TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS
        cdef uint64_t timestamp = _next_timestamp(self.timestamp_last, now_ns)
        if pending and <uint64_t>t.timeout * NS_PER_SECOND > LIMIT_CLOCK_NS_MAX - timestamp:
            return CODE_OVERFLOWS_TIMEOUT
        cdef uint64_t amount = _balanced_amount(t, dr, cr)
        if amount == 0:
            return CODE_EXCEEDS_CREDITS if t.flags & TRANSFER_BALANCING_DEBIT else CODE_EXCEEDS_DEBITS
        code = _balance_code(dr, cr, amount, pending)
        if code:
            return code
        t.amount = amount
        t.timestamp = timestamp
        t.expires_at_ns = timestamp + <uint64_t>t.timeout * NS_PER_SECOND if pending and t.timeout else 0
        self.timestamp_last = timestamp
        if self._insert_transfer(t, STATUS_PENDING if pending else STATUS_POSTED, True) < 0:
            return -1
        if pending:
            if self._move(debit_row, credit_row, 1, amount, 0, timestamp, True) < 0:
                return -1
            if t.timeout and self._push_expiry(self.transfer_rows - 1) < 0:
                return -1
        elif self._move(debit_row, credit_row, 0, 0, amount, timestamp, True) < 0:
            return -1
        cdef TransferRecordC record
        _transfer_record(t, &record)
        return self._journal_write(JOURNAL_TRANSFER, &record, sizeof(record))

    cdef int _resolve_pending(self, TransferC* t, uint64_t now_ns) noexcept nogil:
        """A post_pending_transfer or void_pending_transfer."""
        if t.pending_id_lo == 0 and t.pending_id_hi == 0:
            return CODE_PENDING_ID_MUST_NOT_BE_ZERO
        if t.pending_id_lo == t.id_lo and t.pending_id_hi == t.id_hi:
            return CODE_PENDING_ID_MUST_BE_DIFFERENT
        if t.timeout:
            return CODE_TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
        cdef int code = self._existing_code(t)
        if code:
            return code
        cdef int64_t pending_row = self._find_transfer(t.pending_id_lo, t.pending_id_hi)
        if pending_row < 0 or self.transfers[pending_row].status == STATUS_FAILED:
            return CODE_PENDING_TRANSFER_NOT_FOUND
        cdef TransferC* p = &self.transfers[pending_row]
        if not p.flags & TRANSFER_PENDING:
            return CODE_PENDING_TRANSFER_NOT_PENDING
        code = _pending_mismatch_code(p, t)
        if code:
            return code
        if p.status == STATUS_PENDING_POSTED:
            return CODE_PENDING_TRANSFER_ALREADY_POSTED
        if p.status == STATUS_PENDING_VOIDED:
            return CODE_PENDING_TRANSFER_ALREADY_VOIDED
        if p.status == STATUS_PENDING_EXPIRED:
            return CODE_PENDING_TRANSFER_EXPIRED
        cdef uint64_t timestamp = _next_timestamp(self.timestamp_last, now_ns)
        if p.expires_at_ns and p.expires_at_ns <= timestamp:
            return CODE_PENDING_TRANSFER_EXPIRED
        cdef bint posting = (t.flags & TRANSFER_POST_PENDING) != 0
        if not posting or t.amount == 0:
            t.amount = p.amount
        t.debit_account_id = p.debit_account_id
        t.credit_account_id = p.credit_account_id
        t.ledger = p.ledger
        t.code = p.code
        t.timestamp = timestamp
        t.expires_at_ns = 0
        self.timestamp_last = timestamp
        if self._insert_transfer(t, STATUS_POSTED, True) < 0:
            return -1
        if self._apply_resolution(pending_row, t, posting, True) < 0:
            return -1
        cdef TransferRecordC record
        _transfer_record(t, &record)
        return self._journal_write(JOURNAL_TRANSFER, &record, sizeof(record))

    cdef int _apply_resolution(self, int64_t pending_row, TransferC* stored, bint posting, bint undoable) noexcept nogil:
        """Release the pending amount; a post moves `stored.amount` of it to posted."""
        if undoable and self._push_undo(UNDO_STATUS, pending_row, 0) < 0:
            return -1
        cdef TransferC* p = &self.transfers[pending_row]
        p.status = STATUS_PENDING_POSTED if posting else STATUS_PENDING_VOIDED
        cdef int64_t debit_row = self._find_account(p.debit_account_id)
        cdef int64_t credit_row = self._find_account(p.credit_account_id)
        return self._move(debit_row, credit_row, -1, p.amount, stored.amount if posting else 0,
                          stored.timestamp, undoable)

    cdef int _move(self, int64_t debit_row, int64_t credit_row, int64_t pending_delta, uint64_t pending_amount,
                   uint64_t posted_amount, uint64_t timestamp, bint undoable) noexcept nogil:
        """Change both accounts' balances (pending_delta: +1 reserve, -1 release, 0 none) and history."""
        if undoable and (self._push_undo(UNDO_BALANCES, debit_row, 0) < 0
                         or self._push_undo(UNDO_BALANCES, credit_row, 0) < 0):
            return -1
        cdef AccountC* dr = &self.accounts[debit_row]
        cdef AccountC* cr = &self.accounts[credit_row]
        if pending_delta > 0:
            dr.debits_pending += pending_amount
            cr.credits_pending += pending_amount
        elif pending_delta < 0:
            dr.debits_pending -= pending_amount
            cr.credits_pending -= pending_amount
        dr.debits_posted += posted_amount
        cr.credits_posted += posted_amount
        if dr.flags & ACCOUNT_HISTORY and self._history_append(debit_row, timestamp) < 0:
            return -1
        if cr.flags & ACCOUNT_HISTORY and self._history_append(credit_row, timestamp) < 0:
            return -1
        return 0

    cdef int _history_append(self, int64_t row, uint64_t timestamp) noexcept nogil:
        if _grow(<void**>&self.history, &self.history_capacity, self.history_rows + 1, sizeof(HistoryC)) < 0:
            return -1
        cdef AccountC* a = &self.accounts[row]
        cdef HistoryC* h = &self.history[self.history_rows]
        h.timestamp = timestamp
        h.debits_pending = a.debits_pending
        h.debits_posted = a.debits_posted
        h.credits_pending = a.credits_pending
        h.credits_posted = a.credits_posted
        h.previous = a.history_last
        a.history_last = self.history_rows
        self.history_rows += 1
        return 0

    cdef int _remember_failed(self, TransferC* t) noexcept nogil:
        """Keep the id of a transfer that failed a balance check, so it can never succeed."""
        cdef TransferC failed
        memset(&failed, 0, sizeof(failed))
        failed.id_lo = t.id_lo
        failed.id_hi = t.id_hi
        if self._insert_transfer(&failed, STATUS_FAILED, False) < 0:
            return -1
        self.failed_count += 1
        cdef uint64_t record[2]
        record[0] = t.id_lo
        record[1] = t.id_hi
        return self._journal_write(JOURNAL_FAILED, record, sizeof(record))

    cdef int _journal_write(self, uint8_t kind, const void* record, Py_ssize_t size) noexcept nogil:
        if _grow(<void**>&self.journal, &self.journal_capacity, self.journal_size + 1 + size, 1) < 0:
            return -1
        self.journal[self.journal_size] = kind
        memcpy(&self.journal[self.journal_size + 1], record, size)
        self.journal_size += 1 + size
        return 0

    # ---- expiry ---------------------------------------------------------------

    cdef int _push_expiry(self, int64_t row) noexcept nogil:
        if _grow(<void**>&self.expiry_heap, &self.expiry_capacity, self.expiry_count + 1, sizeof(ExpiryC)) < 0:
            return -1
        cdef Py_ssize_t child = self.expiry_count, parent
        cdef ExpiryC entry
        entry.expires_at_ns = self.transfers[row].expires_at_ns
        entry.timestamp = self.transfers[row].timestamp
        entry.row = row
        self.expiry_count += 1
        while child > 0:
            parent = (child - 1) // 2
            if not _expiry_before(&entry, &self.expiry_heap[parent]):
                break
            self.expiry_heap[child] = self.expiry_heap[parent]
            child = parent
        self.expiry_heap[child] = entry
        return 0

    cdef ExpiryC _pop_expiry(self) noexcept nogil:
        cdef ExpiryC top = self.expiry_heap[0]
        self.expiry_count -= 1
        cdef ExpiryC last = self.expiry_heap[self.expiry_count]
        cdef Py_ssize_t parent = 0, child
        while True:
            child = 2 * parent + 1
            if child >= self.expiry_count:
                break
            if child + 1 < self.expiry_count and _expiry_before(&self.expiry_heap[child + 1], &self.expiry_heap[child]):
                child += 1
            if not _expiry_before(&self.expiry_heap[child], &last):
                break
            self.expiry_heap[parent] = self.expiry_heap[child]
            parent = child
        if self.expiry_count:
            self.expiry_heap[parent] = last
        return top

    def expire_pending(self, now_ns):
        """Release pending transfers whose timeout passed by now_ns, soonest first; the count released.

        At most BATCH_EVENTS_MAX per call, so that one batch's journal stays bounded:
        a caller that gets BATCH_EVENTS_MAX back calls again."""
        _check_now(now_ns)
        cdef uint64_t now = now_ns, timestamp
        cdef ExpiryC entry
        cdef TransferC* p
        cdef uint64_t record[3]
        cdef Py_ssize_t released = 0
        while (self.expiry_count and self.expiry_heap[0].expires_at_ns <= now
               and released < <Py_ssize_t>LIMIT_BATCH_EVENTS_MAX):
            entry = self._pop_expiry()
            # A chain that was rolled back leaves its entry behind: skip what no longer matches.
            if entry.row >= self.transfer_rows:
                continue
            p = &self.transfers[entry.row]
            if (p.status != STATUS_PENDING or p.timestamp != entry.timestamp
                    or p.expires_at_ns != entry.expires_at_ns):
                continue
            timestamp = _next_timestamp(self.timestamp_last, now)
            record[0] = p.id_lo
            record[1] = p.id_hi
            record[2] = timestamp
            if self._expire_one(entry.row, timestamp) < 0 or self._journal_write(JOURNAL_EXPIRED, record,
                                                                                 sizeof(record)) < 0:
                raise MemoryError("ledger: out of memory while expiring: reload")
            released += 1
        return released

    cdef int _expire_one(self, int64_t row, uint64_t timestamp) noexcept nogil:
        cdef TransferC* p = &self.transfers[row]
        p.status = STATUS_PENDING_EXPIRED
        if timestamp > self.timestamp_last:
            self.timestamp_last = timestamp
        return self._move(self._find_account(p.debit_account_id), self._find_account(p.credit_account_id),
                          -1, p.amount, 0, timestamp, False)

    # ---- lookups --------------------------------------------------------------

    cdef const AccountC* lookup_account_c(self, uint64_t account_id) noexcept nogil:
        cdef int64_t row = self._find_account(account_id)
        return NULL if row < 0 else &self.accounts[row]

    cdef const TransferC* lookup_transfer_c(self, uint64_t id_lo, uint64_t id_hi) noexcept nogil:
        cdef int64_t row = self._find_transfer(id_lo, id_hi)
        if row < 0 or self.transfers[row].status == STATUS_FAILED:
            return NULL
        return &self.transfers[row]

    @property
    def account_count(self):
        return self.account_rows

    @property
    def transfer_count(self):
        return self.transfer_rows - self.failed_count

    def lookup_accounts(self, ids):
        cdef uint64_t account_id
        cdef const AccountC* a
        found = []
        for value in ids:
            a = self.lookup_account_c(account_id) if _u64(value, &account_id) else NULL
            found.append(None if a == NULL else _account_to_python(a))
        return found

    def lookup_transfers(self, ids):
        cdef uint64_t lo, hi
        cdef const TransferC* t
        found = []
        for value in ids:
            t = self.lookup_transfer_c(lo, hi) if _u128(value, &lo, &hi) else NULL
            found.append(None if t == NULL else _transfer_to_python(t))
        return found

    def account_history(self, account_id, limit):
        """The most recent `limit` balance rows of a `history` account, oldest first:
        (timestamp, debits_pending, debits_posted, credits_pending, credits_posted)."""
        cdef uint64_t rows_max, account
        if not _uint_at_most(limit, LIMIT_ACCOUNT_HISTORY_ROWS_MAX, &rows_max):
            raise ValueError(f"limit must be 0..{LIMIT_ACCOUNT_HISTORY_ROWS_MAX}, not {limit!r}")
        cdef const AccountC* a = self.lookup_account_c(account) if _u64(account_id, &account) else NULL
        rows = []
        cdef int64_t row = a.history_last if a != NULL else -1
        cdef HistoryC* h
        while row >= 0 and <uint64_t>len(rows) < rows_max:
            h = &self.history[row]
            rows.append((h.timestamp, h.debits_pending, h.debits_posted, h.credits_pending, h.credits_posted))
            row = h.previous
        rows.reverse()
        return rows

    # ---- journaled component ----------------------------------------------------

    def take_journal(self):
        """The effects applied since the last call, or None when nothing changed."""
        if self.journal_size == 0:
            return None
        blob = PyBytes_FromStringAndSize(<char*>self.journal, self.journal_size)
        self.journal_size = 0
        return blob

    def apply_journal(self, const unsigned char[:] blob):
        """Re-apply effects recorded by take_journal (recovery); never re-decides anything."""
        cdef Py_ssize_t offset = 0, size = blob.shape[0]
        cdef uint8_t kind
        while offset < size:
            kind = blob[offset]
            offset += 1
            if kind == JOURNAL_ACCOUNT and offset + <Py_ssize_t>sizeof(AccountRecordC) <= size:
                self._replay_account(<const AccountRecordC*>&blob[offset])
                offset += sizeof(AccountRecordC)
            elif kind == JOURNAL_TRANSFER and offset + <Py_ssize_t>sizeof(TransferRecordC) <= size:
                self._replay_transfer(<const TransferRecordC*>&blob[offset])
                offset += sizeof(TransferRecordC)
            elif kind == JOURNAL_FAILED and offset + 16 <= size:
                self._replay_failed(<const uint64_t*>&blob[offset])
                offset += 16
            elif kind == JOURNAL_EXPIRED and offset + 24 <= size:
                self._replay_expiry(<const uint64_t*>&blob[offset])
                offset += 24
            else:
                raise ValueError(f"ledger journal: bad record kind {kind} or truncated at byte {offset - 1}")
        self.undo_count = 0

    cdef int _replay_account(self, const AccountRecordC* r) except -1:
        cdef AccountC a
        memset(&a, 0, sizeof(a))
        a.id = r.id
        a.user_data_128_lo = r.user_data_128_lo
        a.user_data_128_hi = r.user_data_128_hi
        a.user_data_64 = r.user_data_64
        a.timestamp = r.timestamp
        a.ledger = r.ledger
        a.user_data_32 = r.user_data_32
        a.code = r.code
        a.flags = r.flags
        if self._reserve(1, 0) < 0:
            raise MemoryError("ledger: out of memory")
        if self._find_account(a.id) >= 0:
            raise ValueError(f"ledger journal: account {a.id} created twice")
        if self._insert_account(&a, False) < 0:
            raise MemoryError("ledger: out of memory")
        if a.timestamp > self.timestamp_last:
            self.timestamp_last = a.timestamp
        return 0

    cdef int _replay_transfer(self, const TransferRecordC* r) except -1:
        cdef TransferC t
        _transfer_from_record(r, &t)
        if self._reserve(0, 1) < 0:
            raise MemoryError("ledger: out of memory")
        if self._find_transfer(t.id_lo, t.id_hi) >= 0:
            raise ValueError(f"ledger journal: transfer {_u128_int(t.id_lo, t.id_hi)} applied twice")
        cdef int64_t debit_row = self._find_account(t.debit_account_id)
        cdef int64_t credit_row = self._find_account(t.credit_account_id)
        if debit_row < 0 or credit_row < 0:
            raise ValueError("ledger journal: a transfer names an account that was never created")
        if t.timestamp > self.timestamp_last:
            self.timestamp_last = t.timestamp
        cdef int64_t pending_row
        if t.flags & (TRANSFER_POST_PENDING | TRANSFER_VOID_PENDING):
            pending_row = self._find_transfer(t.pending_id_lo, t.pending_id_hi)
            if pending_row < 0 or self.transfers[pending_row].status != STATUS_PENDING:
                raise ValueError("ledger journal: a post/void names no open pending transfer")
            if self._insert_transfer(&t, STATUS_POSTED, False) < 0:
                raise MemoryError("ledger: out of memory")
            if self._apply_resolution(pending_row, &t, (t.flags & TRANSFER_POST_PENDING) != 0, False) < 0:
                raise MemoryError("ledger: out of memory")
        elif t.flags & TRANSFER_PENDING:
            t.expires_at_ns = t.timestamp + <uint64_t>t.timeout * NS_PER_SECOND if t.timeout else 0
            if self._insert_transfer(&t, STATUS_PENDING, False) < 0:
                raise MemoryError("ledger: out of memory")
            if self._move(debit_row, credit_row, 1, t.amount, 0, t.timestamp, False) < 0:
                raise MemoryError("ledger: out of memory")
            if t.timeout and self._push_expiry(self.transfer_rows - 1) < 0:
                raise MemoryError("ledger: out of memory")
        else:
            if self._insert_transfer(&t, STATUS_POSTED, False) < 0:
                raise MemoryError("ledger: out of memory")
            if self._move(debit_row, credit_row, 0, 0, t.amount, t.timestamp, False) < 0:
                raise MemoryError("ledger: out of memory")
        return 0

    cdef int _replay_failed(self, const uint64_t* ids) except -1:
        cdef TransferC failed
        memset(&failed, 0, sizeof(failed))
        failed.id_lo = ids[0]
        failed.id_hi = ids[1]
        if self._reserve(0, 1) < 0:
            raise MemoryError("ledger: out of memory")
        if self._find_transfer(failed.id_lo, failed.id_hi) >= 0:
            raise ValueError("ledger journal: a failed id is already known")
        if self._insert_transfer(&failed, STATUS_FAILED, False) < 0:
            raise MemoryError("ledger: out of memory")
        self.failed_count += 1
        return 0

    cdef int _replay_expiry(self, const uint64_t* fields) except -1:
        cdef int64_t row = self._find_transfer(fields[0], fields[1])
        if row < 0 or self.transfers[row].status != STATUS_PENDING:
            raise ValueError("ledger journal: an expiry names no open pending transfer")
        if self._expire_one(row, fields[2]) < 0:
            raise MemoryError("ledger: out of memory")
        return 0

    def state_bytes(self):
        """Canonical bytes of the whole state (the reference twin yields the same bytes)."""
        out = bytearray(_HEADER.pack(self.account_rows, self.transfer_rows - self.failed_count,
                                     self.failed_count, self.timestamp_last))
        out += self.checkpoint()
        cdef Py_ssize_t row
        cdef TransferRecordC record
        failed_ids = []
        for row in range(self.transfer_rows):
            if self.transfers[row].status == STATUS_FAILED:
                failed_ids.append(_u128_int(self.transfers[row].id_lo, self.transfers[row].id_hi))
                continue
            _transfer_record(&self.transfers[row], &record)
            out += PyBytes_FromStringAndSize(<char*>&record, sizeof(record))
            out.append(self.transfers[row].status)
        for failed_id in sorted(failed_ids):
            out += _FAILED.pack(failed_id & U64_MASK, failed_id >> 64)
        return bytes(out)

    def state_hash(self):
        """A digest of the full state, equal for equal states (in both implementations)."""
        return hashlib.blake2b(self.state_bytes(), digest_size=32).digest()

    def checkpoint(self):
        """Every account with its balances, for storage's checkpoints and `ledger check`."""
        out = bytearray()
        cdef Py_ssize_t row
        cdef AccountRecordC record
        cdef AccountC* a
        for row in range(self.account_rows):
            a = &self.accounts[row]
            _account_record(a, &record)
            out += PyBytes_FromStringAndSize(<char*>&record, sizeof(record))
            out += _ACCOUNT_STATE_TAIL.pack(a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
        return bytes(out)

    def snapshot(self):
        """The whole state, for storage's snapshots: state_bytes(), then every history account's rows
        (oldest first) in account order -- the twin's bytes.  restore() of them rebuilds an equal ledger."""
        out = bytearray(self.state_bytes())
        cdef Py_ssize_t row
        cdef int64_t history_row
        cdef HistoryC* h
        with_history = [row for row in range(self.account_rows) if self.accounts[row].history_last >= 0]
        out += _SNAPSHOT_COUNT.pack(len(with_history))
        for row in with_history:
            rows = []
            history_row = self.accounts[row].history_last
            while history_row >= 0:
                h = &self.history[history_row]
                rows.append(_HISTORY_ROW.pack(h.timestamp, h.debits_pending, h.debits_posted,
                                              h.credits_pending, h.credits_posted))
                history_row = h.previous
            out += _HISTORY_HEADER.pack(self.accounts[row].id, len(rows))
            out += b"".join(reversed(rows))
        return bytes(out)

    def restore(self, const unsigned char[:] blob):
        """Replace the whole state by a snapshot(); ValueError (and an empty ledger) when it is malformed."""
        self.reset()
        try:
            end = _restore_state(self, blob)
        except (struct.error, ValueError) as error:
            self.reset()
            raise ValueError(f"ledger snapshot: malformed: {error!r}") from error
        if end != blob.shape[0]:
            self.reset()
            raise ValueError(f"ledger snapshot: {blob.shape[0] - end} bytes after its end")

    # ---- invariants -------------------------------------------------------------

    def check_invariants(self):
        """Money invariants; each broken one is a sentence.  Empty when all hold."""
        from core_ext.reference.ledger import check_accounts
        cdef Py_ssize_t row
        return check_accounts([_account_to_python(&self.accounts[row]) for row in range(self.account_rows)])


# ---- restoring a snapshot (Ledger.restore) -------------------------------------

cdef Py_ssize_t _restore_state(Ledger self, const unsigned char[:] blob) except -1:
    accounts, transfers, failed, timestamp_last = _HEADER.unpack_from(blob, 0)
    cdef Py_ssize_t offset = _HEADER.size, index
    if (accounts * sizeof(AccountStateC) + transfers * sizeof(TransferStateC) + failed * 16
            > blob.shape[0] - offset):
        raise ValueError("the counts in its header are past its end")
    self.timestamp_last = timestamp_last
    if self._reserve(accounts, transfers + failed) < 0:
        raise MemoryError("ledger: out of memory")
    for index in range(accounts):
        _restore_account(self, <const AccountStateC*>&blob[offset])
        offset += sizeof(AccountStateC)
    for index in range(transfers):
        _restore_transfer(self, <const TransferStateC*>&blob[offset])
        offset += sizeof(TransferStateC)
    for index in range(failed):
        self._replay_failed(<const uint64_t*>&blob[offset])
        offset += 16
    return _restore_history(self, blob, offset)

cdef int _restore_account(Ledger self, const AccountStateC* state) except -1:
    self._replay_account(&state.record)
    cdef AccountC* a = &self.accounts[self.account_rows - 1]
    a.debits_pending = state.debits_pending
    a.debits_posted = state.debits_posted
    a.credits_pending = state.credits_pending
    a.credits_posted = state.credits_posted
    return 0

cdef int _restore_transfer(Ledger self, const TransferStateC* state) except -1:
    """A transfer as replay leaves it: a pending one with a timeout keeps its expiry time."""
    cdef TransferC t
    _transfer_from_record(&state.record, &t)
    if state.status > STATUS_PENDING_EXPIRED or self._find_transfer(t.id_lo, t.id_hi) >= 0:
        raise ValueError(f"transfer {_u128_int(t.id_lo, t.id_hi)} twice or with status {state.status}")
    if t.flags & TRANSFER_PENDING and t.timeout:
        t.expires_at_ns = t.timestamp + <uint64_t>t.timeout * NS_PER_SECOND
    if self._insert_transfer(&t, state.status, False) < 0:
        raise MemoryError("ledger: out of memory")
    if state.status == STATUS_PENDING and t.expires_at_ns and self._push_expiry(self.transfer_rows - 1) < 0:
        raise MemoryError("ledger: out of memory")
    return 0

cdef Py_ssize_t _restore_history(Ledger self, const unsigned char[:] blob, Py_ssize_t offset) except -1:
    history_accounts, = _SNAPSHOT_COUNT.unpack_from(blob, offset)
    offset += _SNAPSHOT_COUNT.size
    cdef int64_t row
    cdef HistoryC* h
    for _ in range(history_accounts):
        account_id, rows = _HISTORY_HEADER.unpack_from(blob, offset)
        offset += _HISTORY_HEADER.size
        row = self._find_account(account_id)
        if row < 0 or self.accounts[row].history_last >= 0 or rows > (blob.shape[0] - offset) // 40:
            raise ValueError(f"history of account {account_id}: unknown, twice or past the end")
        for _ in range(rows):
            if _grow(<void**>&self.history, &self.history_capacity, self.history_rows + 1, sizeof(HistoryC)) < 0:
                raise MemoryError("ledger: out of memory")
            h = &self.history[self.history_rows]
            h.timestamp, h.debits_pending, h.debits_posted, h.credits_pending, h.credits_posted = \
                _HISTORY_ROW.unpack_from(blob, offset)
            h.previous = self.accounts[row].history_last
            self.accounts[row].history_last = self.history_rows
            self.history_rows += 1
            offset += _HISTORY_ROW.size
    return offset
