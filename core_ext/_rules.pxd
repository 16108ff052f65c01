# The compiled risk and AML rules engine: its C structs and the cdef API the
# compiled pipeline calls without Python objects per payment.  Sizes are fixed
# by core_ext/limits.py (checked at import of _rules).
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

cdef enum:
    RING_SLOTS = 9             # RULES_WINDOW_BUCKETS + the current bucket
    SKETCH_SLOTS = 3           # two half-day buckets + the current one
    SKETCH_WORDS_COUNT = 4     # RULES_SKETCH_BITS / 64
    BURST_TIMES_COUNT = 8      # RULES_BURST_COUNT_MAX
    RULES_MAX = 64             # RULES_PER_SET_MAX: a fired set is one u64 mask

ctypedef struct Ring:
    int64_t index[RING_SLOTS]      # bucket number each slot holds
    uint64_t amount[RING_SLOTS]    # minor units, saturating
    uint32_t count[RING_SLOTS]

ctypedef struct Sketch:
    int64_t index[SKETCH_SLOTS]
    uint64_t words[SKETCH_SLOTS][SKETCH_WORDS_COUNT]

ctypedef struct AccountState:
    int64_t times[BURST_TIMES_COUNT]
    uint32_t times_count
    uint32_t times_head
    Ring out_hour
    Ring out_day
    Ring out_30d
    Ring structuring_30d
    Ring in_day
    Sketch payers
    uint64_t payee_filter[2]
    uint32_t history_count
    uint64_t history_mean_minor
    uint64_t history_max_minor
    int64_t volume_day
    uint64_t volume_today_minor
    uint64_t volume_average_minor

ctypedef struct DeviceState:
    Ring hour
    Sketch payers

# One payment, converted once from PaymentContext (see core_ext/rules_types.py for each field).
ctypedef struct PaymentCtx:
    uint64_t payer_account_id
    uint32_t payer_kyc_tier
    int64_t payer_created_ns
    uint64_t payer_balance_minor
    uint64_t merchant_account_id
    uint32_t merchant_mcc
    bint merchant_is_personal
    uint32_t merchant_country
    uint32_t payer_country
    uint64_t device_id
    uint64_t qr_digest
    bint qr_dynamic
    uint64_t amount_minor
    uint32_t currency
    uint64_t amount_usd_minor
    bint originator_info_present
    bint beneficiary_info_present
    int64_t now_ns
    uint64_t qr_merchant_account_id
    int64_t qr_expires_ns
    uint64_t qr_amount_minor
    uint32_t merchant_kyc_tier
    uint64_t merchant_balance_minor
    uint64_t reference_rate_numerator      # the amount in the rule set's currency is
    uint64_t reference_rate_denominator    # floor(amount_minor * numerator / denominator)
    uint64_t amount_reference_minor        # derived by the engine from the three above; callers leave it

# What one evaluation reads of the tables, found once (NULL: no state yet).
ctypedef struct StateView:
    const AccountState* payer
    const AccountState* payee
    const DeviceState* device
    uint64_t payer_day_amount_minor    # the payer's out_day window, summed once: several kinds read it
    uint64_t payer_day_count

# The table slots evaluate_struct found (-1: none), for observe_struct to start from instead of
# probing again; a slot is used only while it still holds its key, so a stale one costs a probe.
ctypedef struct StateSlots:
    int32_t payer
    int32_t payee
    int32_t device

ctypedef struct DecisionOut:
    uint32_t action            # Action
    uint32_t code              # external result code
    uint64_t fired_mask        # bit i: rule i matched (any mode)
    StateSlots found           # where the payer, payee and device states were (an observe hint)

# A static hash set of u64 (blocklists, deny lists), optionally with values (category caps).
ctypedef struct IdSet:
    uint64_t* keys
    uint64_t* values
    uint8_t* used
    uint64_t mask

ctypedef struct CRule:
    uint32_t kind
    uint32_t mode
    uint32_t action
    uint32_t code
    uint64_t tier[3]
    uint64_t p[4]
    IdSet members


# One bucket of an _Lru's open-addressing index: a key and its slot + 1 (0: the bucket is empty,
# so a calloc'd index is an empty one).
ctypedef struct LruBucket:
    uint64_t key
    uint32_t slot_plus_one


cdef class _Lru:
    cdef LruBucket* buckets         # power-of-two count >= 2 * capacity, linear probing
    cdef uint32_t bucket_mask
    cdef int32_t* prev
    cdef int32_t* next
    cdef uint64_t* keys
    cdef int32_t head               # least recently used
    cdef int32_t tail               # most recently used
    cdef int32_t size
    cdef int32_t capacity
    cdef uint64_t evictions
    cdef int32_t find(self, uint64_t key) noexcept nogil
    cdef int32_t touch(self, uint64_t key, bint* fresh) noexcept nogil
    cdef int32_t touch_hinted(self, uint64_t key, int32_t hint, bint* fresh) noexcept nogil
    cdef void _make_recent(self, int32_t slot) noexcept nogil
    cdef uint32_t _bucket_of(self, uint64_t key) noexcept nogil
    cdef void _bucket_remove(self, uint32_t at) noexcept nogil
    cdef void _unlink(self, int32_t slot) noexcept nogil
    cdef void _push_tail(self, int32_t slot) noexcept nogil


cdef class RuleEngine:
    cdef readonly object ruleset
    cdef readonly str name
    cdef str _hash
    cdef CRule* _rules
    cdef int _rule_count
    cdef list _fired_entries
    cdef uint64_t _hits[RULES_MAX]
    cdef uint64_t _shadow_hits[RULES_MAX]
    cdef uint64_t _evaluations[RULES_MAX]
    cdef uint64_t _samples[RULES_MAX]             # evaluations timed (one in RULES_TIME_SAMPLE_INTERVAL_EVALUATIONS)
    cdef uint64_t _time_ns_sampled[RULES_MAX]     # monotonic nanoseconds spent in those
    cdef bint _band_on
    cdef uint64_t _band_low_minor
    cdef uint64_t _band_high_minor
    cdef bint _sums_payer_day           # a rule of PAYER_DAY_KINDS is in the set
    cdef _Lru _accounts
    cdef _Lru _devices
    cdef _Lru _qr
    cdef AccountState* _account_states
    cdef DeviceState* _device_states
    cdef int64_t* _qr_expires
    cdef uint8_t* _journal
    cdef Py_ssize_t _journal_bytes
    cdef Py_ssize_t _journal_capacity
    cdef object _meaning                          # the running set's CounterMeaning
    cdef object _counted_meaning                  # the counters' (another only while a journal replays)

    # The compiled pipeline's entry points: decide on a struct, apply a posted one.
    cdef void evaluate_struct(self, const PaymentCtx* ctx, DecisionOut* out)
    cdef int observe_struct(self, const PaymentCtx* ctx, const DecisionOut* decision) except -1
    cdef object _decision(self, const DecisionOut* out)
    cdef void _view(self, const PaymentCtx* c, StateView* view, StateSlots* found) noexcept
    cdef uint32_t _check_timed(self, int index, const CRule* rule, const PaymentCtx* c,
                               const StateView* view) except? 0xFFFFFFFF

    cdef void _free_rules(self) noexcept
    cdef int _load(self, object ruleset, dict old) except -1
    cdef int _fill_rule(self, CRule* out, object rule) except -1
    cdef uint32_t _check_dynamic_qr(self, const CRule* rule, const PaymentCtx* c) except? 0xFFFFFFFF
    cdef uint32_t _check(self, const CRule* rule, const PaymentCtx* c, const StateView* view) except? 0xFFFFFFFF
    cdef int _apply(self, int64_t now_ns, uint64_t payer_id, uint64_t payee_id, uint64_t device_id,
                    uint64_t qr_digest, int64_t qr_expires_ns, uint64_t amount, uint8_t flags,
                    const StateSlots* hints) except -1
    cdef int _forget_counters(self) except -1
    cdef int _journal_append(self, int64_t now_ns, uint64_t payer_id, uint64_t payee_id, uint64_t device_id,
                             uint64_t qr_digest, int64_t qr_expires_ns, uint64_t amount, uint8_t flags) except -1


cdef int context_from_object(object ctx, PaymentCtx* out) except -1
