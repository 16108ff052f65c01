# The compiled payment pipeline: its C structs, for another compiled module (or a
# profiler) to read.  core_ext/reference/pipeline.py is the readable statement of
# the pay flow this module runs; core_ext/_pipeline.pyx says how it runs in C.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from core_ext._ledger cimport AccountC, Ledger, TransferC
from core_ext._qr cimport QrKey, QrVerdict
from core_ext._rules cimport DecisionOut, PaymentCtx, RuleEngine


# One payment of a request, decoded and then decided in place.
cdef struct PayC:
    uint64_t id_lo
    uint64_t id_hi
    uint64_t payer_account_id
    uint64_t amount_minor            # as sent (0: from the QR)
    const unsigned char* qr          # points into the request body (or a kept bytes object)
    int32_t qr_bytes
    const unsigned char* device      # NULL: no device id
    int32_t device_bytes
    uint64_t qr_digest               # pipeline_types.qr_digest of the payload
    # ---- the QR stage ----
    int32_t qr_code                  # qr_validate's verdict code
    bint dynamic
    bint has_amount
    bint has_expiry
    int64_t qr_amount_minor
    int64_t expiry_s
    int32_t currency
    int32_t merchant                 # index into the merchant mirror, -1: not registered
    # ---- the answer ----
    uint32_t code
    uint64_t answer_amount_minor
    uint64_t fee_minor
    bint has_detail


cdef enum:
    QR_CACHE_SLOTS = 4096                # direct mapped by the payload's digest
    QR_CACHE_PAYLOAD_BYTES_MAX = 320     # longer payloads are validated every time


# A static code seen before: its verdict (no expiry, so it cannot change with the clock) and
# merchant, keyed by the exact payload bytes.  Emptied when the merchant mirror is rebuilt.
cdef struct QrCacheC:
    uint64_t digest                      # the payload's digest_u64, handed to each hit
    int32_t payload_bytes                # 0: an empty slot
    int32_t merchant
    bint has_amount
    int64_t qr_amount_minor
    int32_t currency
    unsigned char payload[QR_CACHE_PAYLOAD_BYTES_MAX]


cdef struct MerchantC:
    uint64_t account_id
    uint32_t ledger                  # ISO 4217 numeric
    uint32_t mcc                     # as a number, 0..9999
    uint32_t country                 # ISO 3166 numeric, 0: unknown
    const char* name_msgpack         # the name, msgpack-encoded (str), owned by a kept bytes object
    Py_ssize_t name_msgpack_bytes


cdef struct LedgerC:
    uint32_t ledger
    uint32_t fee_bps
    uint64_t fee_account_id
    uint64_t usd_minor_per_million_minor


cdef struct ParticipantC:
    uint64_t id
    bint is_operator
    Py_ssize_t range_first           # into Pipeline.range_starts / range_ends
    Py_ssize_t range_count
    bint bucket_started
    int64_t tokens
    int64_t updated_ns
    int64_t rate_per_second          # its own token bucket: items per second, and burst
    int64_t rate_burst


# The part of a sampled payment's decide-and-post being timed (_pipeline.pyx, part_switch).
cdef struct PartClock:
    bint on                          # this payment is sampled
    int part                         # PART_RULES or PART_POST
    uint64_t part_ns[2]              # this payment's time so far per part
    uint64_t since_ns


cdef struct RuleAuditC:
    const unsigned char* entry       # mode u8, id (u8 length + bytes), reason (u8 length + bytes)
    Py_ssize_t entry_bytes


# A growable output buffer (response frames, audit records), kept per pipeline.
cdef struct Out:
    unsigned char* data
    Py_ssize_t size
    Py_ssize_t capacity


cdef class Pipeline:
    cdef readonly Ledger ledger
    cdef readonly object merchants
    cdef readonly object audit
    cdef RuleEngine _rules
    cdef object _ruleset_seen            # the RuleSet the audit tables below were built from
    cdef uint32_t _reference_ledger      # the rule set's currency (0: each payment's own)
    cdef uint64_t _reference_usd_minor_per_million_minor   # its rate (0: no such ledger, so no conversion)
    cdef list _keep_rules                # the bytes _rule_audit points into
    cdef list _keep                      # bytes objects C pointers point into
    cdef RuleAuditC _rule_audit[64]
    cdef unsigned char _ruleset_hash[32]
    cdef uint32_t review_timeout_seconds
    cdef int64_t rate_per_second
    cdef int64_t rate_burst
    # participants
    cdef ParticipantC* participants
    cdef Py_ssize_t participant_count
    cdef uint64_t* range_starts
    cdef uint64_t* range_ends
    cdef dict _participant_index
    # ledgers (currencies): a handful, scanned
    cdef LedgerC* ledgers
    cdef Py_ssize_t ledger_count
    # the merchant directory's mirror: open addressing over "scheme\0identifier"
    cdef MerchantC* merchant_rows
    cdef Py_ssize_t merchant_count
    cdef int32_t* key_slots
    cdef uint64_t* key_hashes
    cdef const unsigned char** key_bytes
    cdef int32_t* key_sizes
    cdef uint64_t key_mask
    cdef list _merchant_names            # str, for Python answers
    cdef list _scheme_names              # bytes per QR scheme number
    # per call scratch, allocated once
    cdef PayC* items
    cdef QrCacheC* qr_cache
    cdef uint64_t qr_cache_hits
    cdef list _payloads                  # str payloads of the current call (guard, twin path)
    cdef list _kept_items                # bytes the items of a decoded call point into
    cdef Out _audit
    cdef Py_ssize_t _audit_count
    cdef Out _response
    cdef list _holds
    cdef public int64_t review_slots_free    # the review queue's free slots this call (set by the engine)
    # stage clocks (ns) and counts
    cdef uint64_t stage_ns[4]            # decode, qr, decide-and-post, respond: every call
    cdef uint64_t part_sampled_ns[2]     # rules, post: decide-and-post's parts on the sampled payments
    cdef uint64_t payments
    cdef uint64_t calls
    cdef uint64_t fast_decodes
    cdef uint64_t slow_decodes
    cdef uint64_t code_counts[1000]      # answers per result code (codes are < 1000)
    cdef readonly uint32_t last_code     # the request-level code of the last run (OK for a run batch)

    # ---- internals (core_ext/_pipeline.pyx) ----
    cdef int _load_participants(self, participants) except -1
    cdef int _load_ledgers(self, ledgers) except -1
    cdef const LedgerC* _ledger_of(self, uint32_t ledger) noexcept
    cdef int _refresh_rule_tables(self) except -1
    cdef void _free_merchants(self) noexcept
    cdef int32_t _find_key(self, const unsigned char* key, Py_ssize_t size) noexcept
    cdef int32_t _resolve(self, const unsigned char* payload, const QrVerdict* verdict) noexcept
    cdef Py_ssize_t _key_of(self, const unsigned char* payload, const QrVerdict* verdict, const QrKey* qr_key, unsigned char* out) noexcept
    cdef object _scheme_name(self, int32_t scheme)
    cdef bint _owns(self, const ParticipantC* participant, uint64_t account_id) noexcept
    cdef bint _take(self, ParticipantC* participant, int64_t count, int64_t now_ns) noexcept
    cdef ParticipantC* _participant(self, participant_id) except? NULL
    cdef object _run_decoded(self, participant_id, bytes body, int64_t now_ns, uint64_t started_ns)
    cdef Py_ssize_t _load_items(self, items) except -1
    cdef int _execute(self, participant_id, Py_ssize_t count, int64_t now_ns) except -1
    cdef void _qr_stage(self, PayC* item, int64_t now_s, QrVerdict* verdict) noexcept
    cdef int _decide_post(self, ParticipantC* participant, PayC* item, Py_ssize_t index, int64_t now_ns,
                          PartClock* clock) except -1
    cdef uint32_t _resolve_payment(self, ParticipantC* participant, PayC* item, int64_t now_ns) except? 0xFFFFFFFF
    cdef bint _fill_context(self, PaymentCtx* ctx, const PayC* item, const MerchantC* merchant, const AccountC* payer, const AccountC* payee, int64_t now_ns) noexcept
    cdef bint _fill_reference_rate(self, PaymentCtx* ctx, uint32_t ledger, const LedgerC* entry) noexcept
    cdef int _act_on(self, ParticipantC* participant, PayC* item, Py_ssize_t index, const MerchantC* merchant, const DecisionOut* decision, int64_t now_ns) except -1
    cdef uint32_t _guard(self, PayC* item, Py_ssize_t index, int64_t now_ns) except? 0xFFFFFFFF
    cdef int _post(self, ParticipantC* participant, PayC* item, const MerchantC* merchant, bint held, int64_t now_ns) except -1
    cdef int _hold(self, ParticipantC* participant, const PayC* item, uint64_t fired_mask, int64_t now_ns) except -1
    cdef int _write_audit(self, const PayC* item, const MerchantC* merchant, const DecisionOut* decision, int64_t now_ns) except -1
    cdef int _flush_audit(self) except -1
    cdef bytes _frame(self, uint64_t request_id, bint batch, Py_ssize_t count)
    cdef int _encode_frame(self, uint64_t request_id, bint batch, Py_ssize_t count) except -1
    cdef int _put_answer(self, const PayC* item) except -1
