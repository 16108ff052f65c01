# The compiled ledger's C view, for other compiled modules (the batch pipeline)
# to post transfers without a Python object per transfer:
#
#     from core_ext._ledger cimport Ledger, TransferC
#     code = ledger.create_transfers_c(events, results, count, now_ns)
#
# Record layouts (AccountRecordC, TransferRecordC) are the journal's bytes,
# shared with the reference twin (core_ext/reference/ledger.py).
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef struct AccountC:
    uint64_t id
    uint64_t user_data_128_lo
    uint64_t user_data_128_hi
    uint64_t user_data_64
    uint64_t timestamp
    uint64_t debits_pending
    uint64_t debits_posted
    uint64_t credits_pending
    uint64_t credits_posted
    int64_t history_last        # row of the latest history entry, -1: none
    uint32_t ledger
    uint32_t user_data_32
    uint16_t code
    uint16_t flags


cdef struct TransferC:
    uint64_t id_lo
    uint64_t id_hi
    uint64_t debit_account_id
    uint64_t credit_account_id
    uint64_t amount
    uint64_t pending_id_lo
    uint64_t pending_id_hi
    uint64_t user_data_128_lo
    uint64_t user_data_128_hi
    uint64_t user_data_64
    uint64_t timestamp
    uint64_t expires_at_ns      # 0: never (set by the ledger for pending transfers with a timeout)
    uint32_t user_data_32
    uint32_t timeout
    uint32_t ledger
    uint16_t code
    uint16_t flags
    uint8_t status              # STATUS_* in _ledger.pyx; FAILED rows only remember a failed id


cdef struct HistoryC:
    uint64_t timestamp
    uint64_t debits_pending
    uint64_t debits_posted
    uint64_t credits_pending
    uint64_t credits_posted
    int64_t previous            # the account's earlier entry, -1: none


cdef struct UndoC:
    int64_t row
    int64_t slot
    uint64_t balances[4]
    int64_t history_last
    uint8_t kind
    uint8_t status


cdef struct ExpiryC:
    uint64_t expires_at_ns
    uint64_t timestamp
    int64_t row


cdef struct ChainMarkC:
    Py_ssize_t account_rows
    Py_ssize_t transfer_rows
    Py_ssize_t history_rows
    Py_ssize_t journal_size
    uint64_t timestamp_last


cdef packed struct AccountRecordC:
    uint64_t id
    uint64_t user_data_128_lo
    uint64_t user_data_128_hi
    uint64_t user_data_64
    uint64_t timestamp
    uint32_t ledger
    uint32_t user_data_32
    uint16_t code
    uint16_t flags


cdef packed struct TransferRecordC:
    uint64_t id_lo
    uint64_t id_hi
    uint64_t debit_account_id
    uint64_t credit_account_id
    uint64_t amount
    uint64_t pending_id_lo
    uint64_t pending_id_hi
    uint64_t user_data_128_lo
    uint64_t user_data_128_hi
    uint64_t user_data_64
    uint64_t timestamp
    uint32_t user_data_32
    uint32_t timeout
    uint32_t ledger
    uint16_t code
    uint16_t flags


cdef class Ledger:
    cdef readonly Py_ssize_t accounts_max
    cdef AccountC* accounts
    cdef Py_ssize_t account_rows
    cdef Py_ssize_t account_capacity
    cdef int64_t* account_slots
    cdef uint64_t account_mask

    cdef TransferC* transfers
    cdef Py_ssize_t transfer_rows         # rows used, FAILED rows included
    cdef Py_ssize_t transfer_capacity
    cdef Py_ssize_t failed_count
    cdef int64_t* transfer_slots
    cdef uint64_t transfer_mask

    cdef HistoryC* history
    cdef Py_ssize_t history_rows
    cdef Py_ssize_t history_capacity

    cdef UndoC* undo
    cdef Py_ssize_t undo_count
    cdef Py_ssize_t undo_capacity

    cdef ExpiryC* expiry_heap
    cdef Py_ssize_t expiry_count
    cdef Py_ssize_t expiry_capacity

    cdef unsigned char* journal
    cdef Py_ssize_t journal_size
    cdef Py_ssize_t journal_capacity

    cdef uint64_t timestamp_last
    # Scratch for one batch from Python, allocated once (batch_events_max events).
    cdef TransferC* scratch_transfers
    cdef AccountC* scratch_accounts
    cdef uint16_t* scratch_codes
    cdef uint8_t* scratch_linked
    cdef uint16_t* scratch_results

    # ---- the C API: no Python object per event ----
    # Apply `count` transfers (fields already in range; timestamps ignored) as one
    # batch with linked chains; one code per event in `results`.  count must not
    # exceed batch_events_max.  An applied event is updated in place to what was
    # stored: its timestamp, and for a post/void or balancing transfer the amount
    # and accounts it resolved to.  With the GIL held; raises ValueError (count or
    # now_ns out of range: nothing applied) or MemoryError (the open chain is undone,
    # earlier chains of the batch stay applied: treat the batch as failed and reload
    # the ledger from storage).
    cdef int create_transfers_c(self, TransferC* events, uint16_t* results, Py_ssize_t count,
                                uint64_t now_ns) except -1
    cdef int create_accounts_c(self, AccountC* events, uint16_t* results, Py_ssize_t count,
                               uint64_t now_ns) except -1
    # The same without the GIL (call them `with nogil`; nothing else may use this
    # Ledger meanwhile).  Return 0, -2 for ValueError's cases, -1 for MemoryError's.
    cdef int create_transfers_nogil(self, TransferC* events, uint16_t* results, Py_ssize_t count,
                                    uint64_t now_ns) noexcept nogil
    cdef int create_accounts_nogil(self, AccountC* events, uint16_t* results, Py_ssize_t count,
                                   uint64_t now_ns) noexcept nogil
    # The stored account / transfer, or NULL.  Valid until the next call that changes the ledger.
    cdef const AccountC* lookup_account_c(self, uint64_t account_id) noexcept nogil
    cdef const TransferC* lookup_transfer_c(self, uint64_t id_lo, uint64_t id_hi) noexcept nogil

    # ---- internals ----
    cdef int _run_batch(self, bint is_transfer, void* events, uint16_t* precodes, uint8_t* linked,
                        Py_ssize_t count, uint16_t* results, uint64_t now_ns) noexcept nogil
    cdef int _reserve(self, Py_ssize_t accounts_more, Py_ssize_t transfers_more) noexcept nogil
    cdef bint _has_room(self, Py_ssize_t accounts_more, Py_ssize_t transfers_more) noexcept nogil
    cdef int64_t _find_account(self, uint64_t account_id) noexcept nogil
    cdef int64_t _find_transfer(self, uint64_t id_lo, uint64_t id_hi) noexcept nogil
    cdef int _create_account(self, AccountC* a, uint64_t now_ns) noexcept nogil
    cdef int _create_transfer(self, TransferC* t, uint64_t now_ns) noexcept nogil
    cdef int _create_single(self, TransferC* t, uint64_t now_ns) noexcept nogil
    cdef int _resolve_pending(self, TransferC* t, uint64_t now_ns) noexcept nogil
    cdef int _existing_code(self, TransferC* t) noexcept nogil
    cdef int _insert_transfer(self, TransferC* t, uint8_t status, bint undoable) noexcept nogil
    cdef int _insert_account(self, AccountC* a, bint undoable) noexcept nogil
    cdef int _move(self, int64_t debit_row, int64_t credit_row, int64_t pending_delta, uint64_t pending_amount,
                   uint64_t posted_amount, uint64_t timestamp, bint undoable) noexcept nogil
    cdef int _apply_resolution(self, int64_t pending_row, TransferC* stored, bint posting, bint undoable) noexcept nogil
    cdef int _push_undo(self, uint8_t kind, int64_t row, int64_t slot) noexcept nogil
    cdef void _rollback(self, Py_ssize_t undo_mark) noexcept nogil
    cdef int _remember_failed(self, TransferC* t) noexcept nogil
    cdef int _push_expiry(self, int64_t row) noexcept nogil
    cdef int _journal_write(self, uint8_t kind, const void* record, Py_ssize_t size) noexcept nogil
    cdef int _history_append(self, int64_t row, uint64_t timestamp) noexcept nogil
    cdef int _expire_one(self, int64_t row, uint64_t timestamp) noexcept nogil
    cdef ExpiryC _pop_expiry(self) noexcept nogil
    cdef void _prefetch_transfer(self, const TransferC* t) noexcept nogil
    cdef int _create_one(self, bint is_transfer, void* events, uint16_t* precodes, uint8_t* linked,
                         Py_ssize_t index, Py_ssize_t count, uint64_t now_ns, ChainMarkC* mark) noexcept nogil
    cdef void _mark_chain(self, ChainMarkC* mark) noexcept nogil
    cdef void _rollback_chain(self, ChainMarkC* mark) noexcept nogil
    cdef int _rehash_accounts(self, uint64_t slot_count) noexcept nogil
    cdef int _rehash_transfers(self, uint64_t slot_count) noexcept nogil
    cdef void _free_state(self) noexcept
    cdef int _replay_account(self, const AccountRecordC* r) except -1
    cdef int _replay_transfer(self, const TransferRecordC* r) except -1
    cdef int _replay_failed(self, const uint64_t* ids) except -1
    cdef int _replay_expiry(self, const uint64_t* fields) except -1
