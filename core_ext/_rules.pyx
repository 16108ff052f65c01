# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The risk and AML rules engine, compiled.  Same functions and results as
core_ext/reference/rules.py (read that first: it is the spec in plain Python).

Per payment, `evaluate_struct` runs every rule of the set over C structs: the
state of the payer, payee and device is found through one C hash probe each and
read in place; nothing is allocated.  The fired rules come back as a u64 mask
(at most RULES_PER_SET_MAX = 64 rules), turned into a Decision only at the
Python boundary.
"""
cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.bool cimport PyBool_Check
from cpython.long cimport PyLong_CheckExact
from libc.stdint cimport INT64_MAX, UINT64_MAX, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memcpy, memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

include "codes.pxi"
include "limits.pxi"

import sys

from core_ext.rules_types import (
    BLOCKLIST_FIELDS, DAY, DAYS_30, HOUR, JOURNAL_RECORD, JOURNAL_VERSION, MERCHANT_DAY_NS, MODE_NAMES,
    SKETCH_BUCKET_NS, Decision, Kind, Mode, check_compiled, check_reload_between_batches, context_problem,
    journal_blob, journal_records, replay_plan, rule_stats, state_digest, table_capacities,
)

cdef extern from *:
    """
    /* Products of an amount and a percentage need 128 bits: u64 * 100000. */
    static inline int rules_product_gt(unsigned long long a, unsigned long long fa,
                                       unsigned long long b, unsigned long long fb) {
        return (unsigned __int128)a * fa > (unsigned __int128)b * fb;
    }
    static inline int rules_product_ge(unsigned long long a, unsigned long long fa,
                                       unsigned long long b, unsigned long long fb) {
        return (unsigned __int128)a * fa >= (unsigned __int128)b * fb;
    }
    /* (average * (2^shift - 1) + x) >> shift without overflow. */
    static inline unsigned long long rules_ema(unsigned long long average, unsigned long long x, int shift) {
        return (unsigned long long)(((unsigned __int128)average * ((1u << shift) - 1) + x) >> shift);
    }
    /* An amount in the rule set's currency: floor(amount * numerator / denominator) in 128 bits,
       saturating at 2^64-1 (rules_types.reference_minor). denominator >= 1 is checked on entry. */
    static inline unsigned long long rules_reference_minor(unsigned long long amount, unsigned long long numerator,
                                                           unsigned long long denominator) {
        unsigned __int128 value;
        if (numerator == denominator)         /* the payment is in the rule set's currency: no divide */
            return amount;
        value = (unsigned __int128)amount * numerator / denominator;
        return value > 0xFFFFFFFFFFFFFFFFULL ? 0xFFFFFFFFFFFFFFFFULL : (unsigned long long)value;
    }
    /* The bucket widths as compile-time constants, so each `now_ns // width` compiles to a multiply
       and shifts instead of a 64-bit divide (some 16 a payment); checked against rules_types below. */
    #define RULES_HOUR_BUCKET_NS (3600LL * 1000000000LL / 8)
    #define RULES_DAY_BUCKET_NS (86400LL * 1000000000LL / 8)
    #define RULES_DAYS_30_BUCKET_NS (30LL * 86400LL * 1000000000LL / 8)
    #define RULES_SKETCH_BUCKET_NS (43200LL * 1000000000LL)
    #define RULES_MERCHANT_DAY_NS (86400LL * 1000000000LL)
    static inline int rules_popcount(unsigned long long x) { return __builtin_popcountll(x); }
    """
    bint rules_product_gt(uint64_t a, uint64_t fa, uint64_t b, uint64_t fb) nogil
    bint rules_product_ge(uint64_t a, uint64_t fa, uint64_t b, uint64_t fb) nogil
    uint64_t rules_ema(uint64_t average, uint64_t x, int shift) nogil
    int rules_popcount(uint64_t x) nogil
    const int64_t HOUR_BUCKET_NS "RULES_HOUR_BUCKET_NS"
    const int64_t DAY_BUCKET_NS "RULES_DAY_BUCKET_NS"
    const int64_t DAYS_30_BUCKET_NS "RULES_DAYS_30_BUCKET_NS"
    const int64_t SKETCH_NS "RULES_SKETCH_BUCKET_NS"
    const int64_t MERCHANT_DAY "RULES_MERCHANT_DAY_NS"
    uint64_t rules_reference_minor(uint64_t amount, uint64_t numerator, uint64_t denominator) nogil
    int __builtin_ctzll(unsigned long long x) nogil

# The .pxd fixes array sizes; they must be the limits' (a mismatch is a build bug).
assert RING_SLOTS == LIMIT_RULES_WINDOW_BUCKETS + 1
assert SKETCH_WORDS_COUNT * 64 == LIMIT_RULES_SKETCH_BITS
assert BURST_TIMES_COUNT == LIMIT_RULES_BURST_COUNT_MAX
assert RULES_MAX == LIMIT_RULES_PER_SET_MAX
# The sampling test is a mask: the interval must be a power of two, at least 2.
assert LIMIT_RULES_TIME_SAMPLE_INTERVAL_EVALUATIONS >= 2 and \
    LIMIT_RULES_TIME_SAMPLE_INTERVAL_EVALUATIONS & (LIMIT_RULES_TIME_SAMPLE_INTERVAL_EVALUATIONS - 1) == 0
assert JOURNAL_RECORD.size == 57 and sys.byteorder == "little"

cdef enum:
    JOURNAL_RECORD_BYTES = 57
    FLAG_QR_DYNAMIC = 1
    FLAG_STRUCTURING_BAND = 2
    EMA_SHIFT = 3
    HISTORY_SHIFT = 3
    EMA_EMPTY_DAYS_MAX = 64
    KIND_BLOCKLIST = 1
    KIND_PAYMENT_CAP_TIER = 2
    KIND_PAYMENT_CAP_MCC = 3
    KIND_PAYER_DAY_COUNT = 4
    KIND_PAYER_DAY_AMOUNT = 5
    KIND_PAYER_HOUR_AMOUNT = 6
    KIND_NEW_ACCOUNT_COOLING = 7
    KIND_BALANCE_CAP = 8
    KIND_DEVICE_VELOCITY = 9
    KIND_DEVICE_DISTINCT_PAYERS = 10
    KIND_STRUCTURING = 11
    KIND_MONTHLY_AGGREGATE = 12
    KIND_PASS_THROUGH = 13
    KIND_DORMANT_REACTIVATION = 14
    KIND_BURST = 15
    KIND_FIRST_PAYEE = 16
    KIND_FAN_IN = 17
    KIND_HISTORY_OUTLIER = 18
    KIND_MCC_DENY = 19
    KIND_STATIC_QR_MERCHANT = 20
    KIND_DYNAMIC_QR = 21
    KIND_MERCHANT_SPIKE = 22
    KIND_TRAVEL_RULE = 23
    MODE_OFF = 0
    MODE_SHADOW = 1
    ACTION_APPROVE = 0
    ACTION_REVIEW = 1
    ACTION_DECLINE = 2

assert {kind.name: int(kind) for kind in Kind}["TRAVEL_RULE"] == KIND_TRAVEL_RULE and len(Kind) == 23
assert int(Mode.SHADOW) == MODE_SHADOW and int(Mode.OFF) == MODE_OFF

_tuple_new = tuple.__new__
assert (HOUR_BUCKET_NS, DAY_BUCKET_NS, DAYS_30_BUCKET_NS, SKETCH_NS, MERCHANT_DAY) == \
    (HOUR.bucket_ns, DAY.bucket_ns, DAYS_30.bucket_ns, SKETCH_BUCKET_NS, MERCHANT_DAY_NS)
# The kinds that read the payer's day window (summed once per evaluation: StateView).
PAYER_DAY_KINDS = frozenset((KIND_PAYER_DAY_COUNT, KIND_PAYER_DAY_AMOUNT, KIND_NEW_ACCOUNT_COOLING,
                             KIND_PASS_THROUGH))
cdef uint64_t BLOCK_PAYER = BLOCKLIST_FIELDS["payer"]
cdef uint64_t BLOCK_MERCHANT = BLOCKLIST_FIELDS["merchant"]
cdef uint64_t BLOCK_DEVICE = BLOCKLIST_FIELDS["device"]


# ---- small C helpers -------------------------------------------------------------

cdef inline uint64_t mix64(uint64_t value) noexcept nogil:
    value += 0x9E3779B97F4A7C15ULL
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9ULL
    value = (value ^ (value >> 27)) * 0x94D049BB133111EBULL
    return value ^ (value >> 31)


cdef inline uint64_t sat_add(uint64_t a, uint64_t b) noexcept nogil:
    cdef uint64_t total = a + b
    return UINT64_MAX if total < a else total


cdef inline void ring_totals(const Ring* ring, int64_t bucket_ns, int64_t now_ns,
                             uint64_t* amount, uint64_t* count) noexcept nogil:
    cdef int64_t oldest = now_ns // bucket_ns - LIMIT_RULES_WINDOW_BUCKETS
    cdef int slot
    amount[0] = 0
    count[0] = 0
    for slot in range(RING_SLOTS):
        if ring.index[slot] >= oldest:
            amount[0] = sat_add(amount[0], ring.amount[slot])
            count[0] += ring.count[slot]
    if count[0] > 0xFFFFFFFFULL:
        count[0] = 0xFFFFFFFFULL


cdef inline void ring_add(Ring* ring, int64_t bucket_ns, int64_t now_ns, uint64_t amount) noexcept nogil:
    cdef int64_t current = now_ns // bucket_ns
    cdef int slot = current % RING_SLOTS
    if ring.index[slot] != current:
        ring.index[slot] = current
        ring.amount[slot] = 0
        ring.count[slot] = 0
    ring.amount[slot] = sat_add(ring.amount[slot], amount)
    if ring.count[slot] < 0xFFFFFFFFU:
        ring.count[slot] += 1


cdef inline int sketch_bit(uint64_t member) noexcept nogil:
    return (mix64(member) >> 16) & (LIMIT_RULES_SKETCH_BITS - 1)


cdef inline int sketch_bits_with(const Sketch* sketch, int64_t now_ns, uint64_t member) noexcept nogil:
    cdef int64_t oldest = now_ns // SKETCH_NS - (SKETCH_SLOTS - 1)
    cdef uint64_t union_words[SKETCH_WORDS_COUNT]
    cdef int slot, word, bits = 0
    cdef int bit = sketch_bit(member)
    memset(union_words, 0, sizeof(union_words))
    if sketch != NULL:
        for slot in range(SKETCH_SLOTS):
            if sketch.index[slot] >= oldest:
                for word in range(SKETCH_WORDS_COUNT):
                    union_words[word] |= sketch.words[slot][word]
    union_words[bit >> 6] |= 1ULL << (bit & 63)
    for word in range(SKETCH_WORDS_COUNT):
        bits += rules_popcount(union_words[word])
    return bits


cdef inline void sketch_add(Sketch* sketch, int64_t now_ns, uint64_t member) noexcept nogil:
    cdef int64_t current = now_ns // SKETCH_NS
    cdef int slot = current % SKETCH_SLOTS
    cdef int bit = sketch_bit(member)
    if sketch.index[slot] != current:
        sketch.index[slot] = current
        memset(sketch.words[slot], 0, sizeof(sketch.words[slot]))
    sketch.words[slot][bit >> 6] |= 1ULL << (bit & 63)


cdef inline bint has_paid(const AccountState* state, uint64_t payee) noexcept nogil:
    cdef uint64_t spread = mix64(payee)
    cdef int first = spread & 127, second = (spread >> 7) & 127
    return ((state.payee_filter[first >> 6] >> (first & 63)) & 1) and \
           ((state.payee_filter[second >> 6] >> (second & 63)) & 1)


cdef inline void volume_view(const AccountState* state, int64_t now_ns,
                             uint64_t* average, uint64_t* today) noexcept nogil:
    """(average, today's volume) as of now_ns, without changing anything."""
    cdef int64_t day = now_ns // MERCHANT_DAY
    cdef int64_t empty_days
    if day <= state.volume_day:
        average[0] = state.volume_average_minor
        today[0] = state.volume_today_minor
        return
    average[0] = rules_ema(state.volume_average_minor, state.volume_today_minor, EMA_SHIFT)
    empty_days = day - state.volume_day - 1
    if empty_days > EMA_EMPTY_DAYS_MAX:
        empty_days = EMA_EMPTY_DAYS_MAX
    while empty_days > 0:
        average[0] = rules_ema(average[0], 0, EMA_SHIFT)
        empty_days -= 1
    today[0] = 0


cdef bint idset_find(const IdSet* members, uint64_t key, uint64_t* value) noexcept nogil:
    cdef uint64_t slot
    if members.used == NULL:
        return False
    slot = mix64(key) & members.mask
    while members.used[slot]:
        if members.keys[slot] == key:
            if value != NULL:
                value[0] = members.values[slot]
            return True
        slot = (slot + 1) & members.mask
    return False


cdef int idset_build(IdSet* members, object pairs, Py_ssize_t count) except -1:
    """Fill a set from (key, value) pairs; the capacity is a power of two >= 2 * count, so a probe ends."""
    cdef uint64_t capacity = 2, slot, key
    while capacity < 2 * <uint64_t>count:
        capacity *= 2
    members.keys = <uint64_t*>calloc(capacity, sizeof(uint64_t))
    members.values = <uint64_t*>calloc(capacity, sizeof(uint64_t))
    members.used = <uint8_t*>calloc(capacity, sizeof(uint8_t))
    if members.keys == NULL or members.values == NULL or members.used == NULL:
        raise MemoryError()
    members.mask = capacity - 1
    for key_object, value_object in pairs:
        key = key_object
        slot = mix64(key) & members.mask
        while members.used[slot]:
            slot = (slot + 1) & members.mask
        members.used[slot] = 1
        members.keys[slot] = key
        members.values[slot] = value_object
    return 0


cdef void idset_free(IdSet* members) noexcept:
    free(members.keys)
    free(members.values)
    free(members.used)
    members.keys = NULL
    members.values = NULL
    members.used = NULL


# ---- the payment context -----------------------------------------------------------

cdef int context_from_object(object ctx, PaymentCtx* out) except -1:
    """Fill `out` from a PaymentContext; return 1 if a field is invalid (the same
    verdict as rules_types.context_problem), 0 when `out` is ready."""
    cdef bint exact = True
    try:
        value = ctx.payer_account_id
        exact &= PyLong_CheckExact(value)
        out.payer_account_id = value
        value = ctx.payer_kyc_tier
        exact &= PyLong_CheckExact(value)
        out.payer_kyc_tier = value
        value = ctx.payer_created_ns
        exact &= PyLong_CheckExact(value)
        out.payer_created_ns = value
        value = ctx.payer_balance_minor
        exact &= PyLong_CheckExact(value)
        out.payer_balance_minor = value
        value = ctx.merchant_account_id
        exact &= PyLong_CheckExact(value)
        out.merchant_account_id = value
        value = ctx.merchant_mcc
        exact &= PyLong_CheckExact(value)
        out.merchant_mcc = value
        value = ctx.merchant_is_personal
        exact &= PyBool_Check(value)
        out.merchant_is_personal = value
        value = ctx.merchant_country
        exact &= PyLong_CheckExact(value)
        out.merchant_country = value
        value = ctx.payer_country
        exact &= PyLong_CheckExact(value)
        out.payer_country = value
        value = ctx.device_id
        exact &= PyLong_CheckExact(value)
        out.device_id = value
        value = ctx.qr_digest
        exact &= PyLong_CheckExact(value)
        out.qr_digest = value
        value = ctx.qr_dynamic
        exact &= PyBool_Check(value)
        out.qr_dynamic = value
        value = ctx.amount_minor
        exact &= PyLong_CheckExact(value)
        out.amount_minor = value
        value = ctx.currency
        exact &= PyLong_CheckExact(value)
        out.currency = value
        value = ctx.amount_usd_minor
        exact &= PyLong_CheckExact(value)
        out.amount_usd_minor = value
        value = ctx.originator_info_present
        exact &= PyBool_Check(value)
        out.originator_info_present = value
        value = ctx.beneficiary_info_present
        exact &= PyBool_Check(value)
        out.beneficiary_info_present = value
        value = ctx.now_ns
        exact &= PyLong_CheckExact(value)
        out.now_ns = value
        value = ctx.qr_merchant_account_id
        exact &= PyLong_CheckExact(value)
        out.qr_merchant_account_id = value
        value = ctx.qr_expires_ns
        exact &= PyLong_CheckExact(value)
        out.qr_expires_ns = value
        value = ctx.qr_amount_minor
        exact &= PyLong_CheckExact(value)
        out.qr_amount_minor = value
        value = ctx.merchant_kyc_tier
        exact &= PyLong_CheckExact(value)
        out.merchant_kyc_tier = value
        value = ctx.merchant_balance_minor
        exact &= PyLong_CheckExact(value)
        out.merchant_balance_minor = value
        value = ctx.reference_rate_numerator
        exact &= PyLong_CheckExact(value)
        out.reference_rate_numerator = value
        value = ctx.reference_rate_denominator
        exact &= PyLong_CheckExact(value)
        out.reference_rate_denominator = value
    except (OverflowError, TypeError, AttributeError, ValueError):
        return 1
    if (out.payer_kyc_tier >= LIMIT_RULES_KYC_TIERS or out.merchant_kyc_tier >= LIMIT_RULES_KYC_TIERS
            or out.payer_created_ns < 0 or out.now_ns < 0 or out.qr_expires_ns < 0 or out.amount_minor == 0
            or out.merchant_mcc > 9999 or out.merchant_country > 999 or out.payer_country > 999
            or out.currency > 999 or out.reference_rate_numerator == 0 or out.reference_rate_denominator == 0):
        return 1
    # The C conversion also takes bools and int-likes; the shared check is the judge for those.
    if not exact:
        return 1 if context_problem(ctx) is not None else 0
    return 0

# ---- bounded tables ------------------------------------------------------------------

@cython.final
cdef class _Lru:
    """key -> slot, with the slots in a doubly linked list from least to most recently used.

    The index is an open-addressing hash table in C (docs/PROFILING.md section 8: the dict of
    boxed keys it replaces was a third of a payment's instructions).  Linear probing from
    mix64(key), at least twice as many buckets as slots so a probe stays short; an evicted key
    leaves by backward shift, so there are no tombstones and a lookup never degrades."""

    def __cinit__(self, int32_t capacity):
        cdef uint64_t bucket_count = 1
        if capacity < 1:
            raise ValueError(f"_Lru capacity must be at least 1, not {capacity}")
        while bucket_count < 2 * <uint64_t>capacity:
            bucket_count <<= 1
        self.capacity = capacity
        self.bucket_mask = <uint32_t>(bucket_count - 1)
        self.buckets = <LruBucket*>calloc(bucket_count, sizeof(LruBucket))
        self.prev = <int32_t*>calloc(capacity, sizeof(int32_t))
        self.next = <int32_t*>calloc(capacity, sizeof(int32_t))
        self.keys = <uint64_t*>calloc(capacity, sizeof(uint64_t))
        if self.buckets == NULL or self.prev == NULL or self.next == NULL or self.keys == NULL:
            raise MemoryError()
        self.head = self.tail = -1
        self.size = 0
        self.evictions = 0

    def __dealloc__(self):
        free(self.buckets)
        free(self.prev)
        free(self.next)
        free(self.keys)

    cdef uint32_t _bucket_of(self, uint64_t key) noexcept nogil:
        """The bucket holding `key`, or the empty bucket that ends its probe (where it would go)."""
        cdef uint32_t at = <uint32_t>mix64(key) & self.bucket_mask
        while self.buckets[at].slot_plus_one and self.buckets[at].key != key:
            at = (at + 1) & self.bucket_mask
        return at

    cdef int32_t find(self, uint64_t key) noexcept nogil:
        """The slot of `key`, or -1."""
        return <int32_t>self.buckets[self._bucket_of(key)].slot_plus_one - 1

    cdef void _bucket_remove(self, uint32_t at) noexcept nogil:
        """Empty bucket `at`, shifting back each later bucket of the run whose home is not
        cyclically in (at, later]: every key stays reachable from its home without tombstones."""
        cdef uint32_t later = at, home
        while True:
            later = (later + 1) & self.bucket_mask
            if not self.buckets[later].slot_plus_one:
                break
            home = <uint32_t>mix64(self.buckets[later].key) & self.bucket_mask
            if ((later - home) & self.bucket_mask) >= ((later - at) & self.bucket_mask):
                self.buckets[at] = self.buckets[later]
                at = later
        self.buckets[at].slot_plus_one = 0

    cdef void _unlink(self, int32_t slot) noexcept nogil:
        if self.prev[slot] >= 0:
            self.next[self.prev[slot]] = self.next[slot]
        else:
            self.head = self.next[slot]
        if self.next[slot] >= 0:
            self.prev[self.next[slot]] = self.prev[slot]
        else:
            self.tail = self.prev[slot]

    cdef void _push_tail(self, int32_t slot) noexcept nogil:
        self.prev[slot] = self.tail
        self.next[slot] = -1
        if self.tail >= 0:
            self.next[self.tail] = slot
        else:
            self.head = slot
        self.tail = slot

    cdef int32_t touch(self, uint64_t key, bint* fresh) noexcept nogil:
        """The slot of `key`, now the most recent; a new key takes a free slot or the least recent one."""
        cdef uint32_t at = self._bucket_of(key)
        cdef int32_t slot = <int32_t>self.buckets[at].slot_plus_one - 1
        if slot >= 0:
            self._make_recent(slot)
            fresh[0] = False
            return slot
        if self.size < self.capacity:
            slot = self.size
            self.size += 1
        else:
            slot = self.head
            self._unlink(slot)
            self._bucket_remove(self._bucket_of(self.keys[slot]))
            self.evictions += 1
            at = self._bucket_of(key)          # the removal may have shifted buckets into the probe
        self.keys[slot] = key
        self.buckets[at].key = key
        self.buckets[at].slot_plus_one = <uint32_t>slot + 1
        self._push_tail(slot)
        fresh[0] = True
        return slot

    cdef int32_t touch_hinted(self, uint64_t key, int32_t hint, bint* fresh) noexcept nogil:
        """touch, without the probe when `hint` (a slot find gave for `key`) still holds `key`:
        slots below size always hold their current key, and a key has one slot."""
        if 0 <= hint < self.size and self.keys[hint] == key:
            self._make_recent(hint)
            fresh[0] = False
            return hint
        return self.touch(key, fresh)

    cdef void _make_recent(self, int32_t slot) noexcept nogil:
        if slot != self.tail:
            self._unlink(slot)
            self._push_tail(slot)

    def slots_in_order(self):
        """(key, slot) from least to most recently used."""
        cdef int32_t slot = self.head
        out = []
        while slot >= 0:
            out.append((self.keys[slot], slot))
            slot = self.next[slot]
        return out

    def stats(self):
        return {"size": self.size, "capacity": self.capacity, "evictions": self.evictions}


# ---- the rule checks: each returns the external code when it matches, else 0 -------------

cdef inline uint32_t check_counts(const CRule* rule, const PaymentCtx* c, const StateView* view) noexcept nogil:
    """The kinds that compare a window total with a limit."""
    cdef uint64_t amount = 0, count = 0
    cdef uint32_t kind = rule.kind
    cdef const AccountState* payer = view.payer
    cdef const DeviceState* device = view.device
    if kind == KIND_PAYER_DAY_COUNT:
        return rule.code if view.payer_day_count + 1 > rule.tier[c.payer_kyc_tier] else 0
    if kind == KIND_PAYER_DAY_AMOUNT:
        amount = sat_add(view.payer_day_amount_minor, c.amount_reference_minor)
        return rule.code if amount > rule.tier[c.payer_kyc_tier] else 0
    if kind == KIND_PAYER_HOUR_AMOUNT:
        if payer != NULL:
            ring_totals(&payer.out_hour, HOUR_BUCKET_NS, c.now_ns, &amount, &count)
        return rule.code if sat_add(amount, c.amount_reference_minor) > rule.tier[c.payer_kyc_tier] else 0
    if kind == KIND_NEW_ACCOUNT_COOLING:
        if c.now_ns - c.payer_created_ns >= <int64_t>rule.p[0]:
            return 0
        return rule.code if sat_add(view.payer_day_amount_minor, c.amount_reference_minor) > rule.p[1] else 0
    if kind == KIND_DEVICE_VELOCITY:
        if c.device_id == 0:
            return 0
        if device != NULL:
            ring_totals(&device.hour, HOUR_BUCKET_NS, c.now_ns, &amount, &count)
        return rule.code if count + 1 > rule.p[0] else 0
    if kind == KIND_MONTHLY_AGGREGATE:
        if payer != NULL:
            ring_totals(&payer.out_30d, DAYS_30_BUCKET_NS, c.now_ns, &amount, &count)
        return rule.code if sat_add(amount, c.amount_reference_minor) >= rule.p[0] else 0
    if kind == KIND_STRUCTURING:
        if not (rule.p[0] - rule.p[1] <= c.amount_reference_minor < rule.p[0]):
            return 0
        if payer != NULL:
            ring_totals(&payer.structuring_30d, DAYS_30_BUCKET_NS, c.now_ns, &amount, &count)
        return rule.code if count + 1 >= rule.p[2] else 0
    return 0


cdef inline uint32_t check_pass_through(const CRule* rule, const PaymentCtx* c, const StateView* view) noexcept nogil:
    cdef uint64_t inflow = 0, count = 0
    if view.payer == NULL:
        return 0
    ring_totals(&view.payer.in_day, DAY_BUCKET_NS, c.now_ns, &inflow, &count)
    if inflow == 0 or inflow < rule.p[1]:
        return 0
    return rule.code if rules_product_ge(sat_add(view.payer_day_amount_minor, c.amount_reference_minor), 100,
                                         inflow, rule.p[0]) else 0


cdef inline uint32_t check_burst(const CRule* rule, const PaymentCtx* c, const AccountState* payer) noexcept nogil:
    cdef uint64_t chain = 1
    cdef int64_t later_ns = c.now_ns, earlier_ns
    cdef uint32_t back, steps
    if payer != NULL:
        steps = payer.times_count
        if steps > rule.p[1] - 1:
            steps = <uint32_t>(rule.p[1] - 1)
        for back in range(steps):
            earlier_ns = payer.times[(payer.times_head + BURST_TIMES_COUNT - back) % BURST_TIMES_COUNT]
            if later_ns - earlier_ns >= <int64_t>rule.p[0]:
                break
            chain += 1
            later_ns = earlier_ns
    return rule.code if chain >= rule.p[1] else 0


cdef inline uint32_t check_history(const CRule* rule, const PaymentCtx* c, const AccountState* payer) noexcept nogil:
    if payer == NULL or payer.history_count < rule.p[2]:
        return 0
    if (rules_product_gt(c.amount_reference_minor, 100, payer.history_mean_minor, rule.p[0])
            and rules_product_gt(c.amount_reference_minor, 100, payer.history_max_minor, rule.p[1])):
        return rule.code
    return 0


cdef inline uint32_t check_spike(const CRule* rule, const PaymentCtx* c, const AccountState* payee) noexcept nogil:
    cdef uint64_t average = 0, today = 0
    if payee == NULL:
        return 0
    volume_view(payee, c.now_ns, &average, &today)
    if average == 0 or average < rule.p[1]:
        return 0
    return rule.code if rules_product_gt(sat_add(today, c.amount_reference_minor), 100, average, rule.p[0]) else 0


cdef inline uint32_t check_simple(const CRule* rule, const PaymentCtx* c, const AccountState* payer) noexcept nogil:
    """The kinds that need no window: lists, caps, QR binding, travel rule, dormancy, first payee."""
    cdef uint32_t kind = rule.kind
    cdef uint64_t value = 0, cap = 0
    cdef int64_t last_ns
    if kind == KIND_BLOCKLIST:
        value = (c.payer_account_id if rule.p[0] == BLOCK_PAYER else c.merchant_account_id
                 if rule.p[0] == BLOCK_MERCHANT else c.device_id if rule.p[0] == BLOCK_DEVICE else c.qr_digest)
        return rule.code if idset_find(&rule.members, value, NULL) else 0
    if kind == KIND_MCC_DENY:
        return rule.code if idset_find(&rule.members, c.merchant_mcc, NULL) else 0
    if kind == KIND_PAYMENT_CAP_TIER:
        return rule.code if c.amount_reference_minor > rule.tier[c.payer_kyc_tier] else 0
    if kind == KIND_PAYMENT_CAP_MCC:
        if idset_find(&rule.members, c.merchant_mcc, &cap) and c.amount_reference_minor > cap:
            return rule.code
        return 0
    if kind == KIND_BALANCE_CAP:
        if not c.merchant_is_personal:
            return 0
        # The payee's balance is in the payment's ledger: convert the sum once (as the twin does).
        value = rules_reference_minor(sat_add(c.merchant_balance_minor, c.amount_minor),
                                      c.reference_rate_numerator, c.reference_rate_denominator)
        return rule.code if value > rule.tier[c.merchant_kyc_tier] else 0
    if kind == KIND_STATIC_QR_MERCHANT:
        return rule.code if not c.qr_dynamic and c.qr_merchant_account_id != c.merchant_account_id else 0
    if kind == KIND_TRAVEL_RULE:
        if c.payer_country == c.merchant_country or c.amount_usd_minor < rule.p[0]:
            return 0
        return 0 if c.originator_info_present and c.beneficiary_info_present else rule.code
    if kind == KIND_DORMANT_REACTIVATION:
        last_ns = c.payer_created_ns
        if payer != NULL and payer.times_count:
            last_ns = payer.times[payer.times_head]
        return rule.code if c.now_ns - last_ns >= <int64_t>rule.p[0] and c.amount_reference_minor >= rule.p[1] else 0
    if kind == KIND_FIRST_PAYEE:
        if c.amount_reference_minor < rule.p[0]:
            return 0
        return 0 if payer != NULL and has_paid(payer, c.merchant_account_id) else rule.code
    return 0


# ---- the engine -----------------------------------------------------------------------

cdef class RuleEngine:
    """The rules as a journaled component named "rules" (docs/INTERNALS.md)."""

    def __cinit__(self, *args, **kwargs):
        self._rules = NULL
        self._rule_count = 0
        self._account_states = NULL
        self._device_states = NULL
        self._qr_expires = NULL
        self._journal = NULL
        self._journal_bytes = 0
        self._journal_capacity = 0

    def __init__(self, ruleset, capacity=None):
        sizes = table_capacities(capacity)
        self.name = "rules"
        self._accounts = _Lru(sizes["accounts"])
        self._devices = _Lru(sizes["devices"])
        self._qr = _Lru(sizes["dynamic_qr"])
        self._account_states = <AccountState*>calloc(sizes["accounts"], sizeof(AccountState))
        self._device_states = <DeviceState*>calloc(sizes["devices"], sizeof(DeviceState))
        self._qr_expires = <int64_t*>calloc(sizes["dynamic_qr"], sizeof(int64_t))
        if self._account_states == NULL or self._device_states == NULL or self._qr_expires == NULL:
            raise MemoryError()
        self.ruleset = ruleset
        self._meaning = self._counted_meaning = ruleset.counter_meaning()
        self._load(ruleset, {})

    def __dealloc__(self):
        self._free_rules()
        free(self._account_states)
        free(self._device_states)
        free(self._qr_expires)
        free(self._journal)

    cdef void _free_rules(self) noexcept:
        cdef int index
        if self._rules != NULL:
            for index in range(self._rule_count):
                idset_free(&self._rules[index].members)
            free(self._rules)
        self._rules = NULL
        self._rule_count = 0

    # ---- rule set ----------------------------------------------------------------

    def reload(self, ruleset):
        """Swap the whole set; the caller does it between batches. Counters are
        kept unless the set changes their meaning (rules_types.CounterMeaning): then
        they are forgotten. Per-rule statistics are kept for rules whose id and version stay."""
        check_compiled(ruleset)
        meaning = ruleset.counter_meaning()
        check_reload_between_batches(self._journal_bytes > 0, self._meaning, meaning)
        old = {}
        for index, rule in enumerate(self.ruleset.rules):
            old[(rule.id, rule.version)] = (self._hits[index], self._shadow_hits[index], self._evaluations[index],
                                            self._samples[index], self._time_ns_sampled[index])
        self._load(ruleset, old)
        if meaning != self._meaning:
            self._forget_counters()
        self._meaning = self._counted_meaning = meaning

    cdef int _load(self, object ruleset, dict old) except -1:
        cdef CRule* rules
        cdef int index
        check_compiled(ruleset)                  # at most RULES_MAX rules: the fired mask is one u64
        rules = <CRule*>calloc(max(len(ruleset.rules), 1), sizeof(CRule))
        if rules == NULL:
            raise MemoryError()
        try:
            for index, rule in enumerate(ruleset.rules):
                self._fill_rule(&rules[index], rule)
        except BaseException:
            for index in range(len(ruleset.rules)):
                idset_free(&rules[index].members)
            free(rules)
            raise
        self._free_rules()
        self._rules = rules
        self._rule_count = len(ruleset.rules)
        self.ruleset = ruleset
        self._hash = ruleset.hash
        self._fired_entries = [(rule.id, rule.reason, MODE_NAMES[rule.mode]) for rule in ruleset.rules]
        for index, rule in enumerate(ruleset.rules):
            kept = old.get((rule.id, rule.version), (0, 0, 0, 0, 0))
            self._hits[index], self._shadow_hits[index], self._evaluations[index] = kept[:3]
            self._samples[index], self._time_ns_sampled[index] = kept[3:]
        self._sums_payer_day = any(rule.kind in PAYER_DAY_KINDS for rule in ruleset.rules)
        band = ruleset.structuring_band()
        self._band_on = band is not None
        self._band_low_minor, self._band_high_minor = band if band is not None else (0, 0)
        return 0

    cdef int _fill_rule(self, CRule* out, object rule) except -1:
        cdef int tier, slot
        out.kind = rule.kind
        out.mode = rule.mode
        out.action = rule.action
        out.code = rule.code
        for tier in range(3):
            out.tier[tier] = rule.tier[tier]
        for slot in range(4):
            out.p[slot] = rule.p[slot]
        if rule.kind == KIND_PAYMENT_CAP_MCC:
            idset_build(&out.members, rule.caps, len(rule.caps))
        elif rule.members:
            idset_build(&out.members, [(member, 0) for member in rule.members], len(rule.members))
        return 0

    def stats(self):
        return {rule.id: rule_stats(self._hits[index], self._shadow_hits[index], self._evaluations[index],
                                    self._samples[index], self._time_ns_sampled[index])
                for index, rule in enumerate(self.ruleset.rules)}

    def tables(self):
        return {"accounts": self._accounts.stats(), "devices": self._devices.stats(),
                "dynamic_qr": self._qr.stats()}

    # ---- deciding ----------------------------------------------------------------

    cdef uint32_t _check_dynamic_qr(self, const CRule* rule, const PaymentCtx* c) except? 0xFFFFFFFF:
        if not c.qr_dynamic:
            return 0
        if c.qr_expires_ns == 0 or c.now_ns >= c.qr_expires_ns:
            return rule.code
        if c.qr_amount_minor and c.amount_minor != c.qr_amount_minor:
            return rule.code
        if self._qr.find(c.qr_digest) >= 0:
            return rule.code
        if self._qr.size >= self._qr.capacity and self._qr_expires[self._qr.head] > c.now_ns:
            return CODE_RISK_STATE_FULL
        return 0

    cdef uint32_t _check(self, const CRule* rule, const PaymentCtx* c, const StateView* view) except? 0xFFFFFFFF:
        cdef uint32_t kind = rule.kind
        cdef const AccountState* payer = view.payer
        cdef const AccountState* payee = view.payee
        cdef const DeviceState* device = view.device
        if kind == KIND_DYNAMIC_QR:
            return self._check_dynamic_qr(rule, c)
        if kind == KIND_PASS_THROUGH:
            return check_pass_through(rule, c, view)
        if kind == KIND_BURST:
            return check_burst(rule, c, payer)
        if kind == KIND_HISTORY_OUTLIER:
            return check_history(rule, c, payer)
        if kind == KIND_MERCHANT_SPIKE:
            return check_spike(rule, c, payee)
        if kind == KIND_FAN_IN:
            if not c.merchant_is_personal:
                return 0
            return rule.code if sketch_bits_with(&payee.payers if payee != NULL else NULL,
                                                 c.now_ns, c.payer_account_id) > <int>rule.p[1] else 0
        if kind == KIND_DEVICE_DISTINCT_PAYERS:
            if c.device_id == 0:
                return 0
            return rule.code if sketch_bits_with(&device.payers if device != NULL else NULL,
                                                 c.now_ns, c.payer_account_id) > <int>rule.p[1] else 0
        if kind == KIND_PAYER_DAY_COUNT or kind == KIND_PAYER_DAY_AMOUNT or kind == KIND_PAYER_HOUR_AMOUNT \
                or kind == KIND_NEW_ACCOUNT_COOLING or kind == KIND_DEVICE_VELOCITY \
                or kind == KIND_MONTHLY_AGGREGATE or kind == KIND_STRUCTURING:
            return check_counts(rule, c, view)
        return check_simple(rule, c, payer)

    cdef void evaluate_struct(self, const PaymentCtx* given, DecisionOut* out):
        """Decide one payment; touches no state but the per-rule counters."""
        # A copy with the amount in the rule set's currency, derived here so no caller can forget it.
        cdef PaymentCtx converted = given[0]
        converted.amount_reference_minor = rules_reference_minor(
            given.amount_minor, given.reference_rate_numerator, given.reference_rate_denominator)
        cdef const PaymentCtx* c = &converted
        cdef StateView view
        cdef int index
        cdef uint32_t code
        cdef const CRule* rule
        self._view(c, &view, &out.found)
        out.action = ACTION_APPROVE
        out.code = CODE_OK
        out.fired_mask = 0
        for index in range(self._rule_count):
            rule = &self._rules[index]
            if rule.mode == MODE_OFF:
                continue
            self._evaluations[index] += 1
            if (self._evaluations[index] & (LIMIT_RULES_TIME_SAMPLE_INTERVAL_EVALUATIONS - 1)) == 1:
                code = self._check_timed(index, rule, c, &view)
            else:
                code = self._check(rule, c, &view)
            if code == 0:
                continue
            out.fired_mask |= 1ULL << index
            if rule.mode == MODE_SHADOW:
                self._shadow_hits[index] += 1
                continue
            self._hits[index] += 1
            if rule.action == ACTION_DECLINE and out.action < ACTION_DECLINE:
                out.action = ACTION_DECLINE
                out.code = code
            elif rule.action == ACTION_REVIEW and out.action < ACTION_REVIEW:
                out.action = ACTION_REVIEW
                out.code = CODE_RISK_REVIEW

    cdef void _view(self, const PaymentCtx* c, StateView* view, StateSlots* found) noexcept:
        """The payer's, payee's and device's states (NULL: none yet), and the payer's day window
        summed once: three kinds of rule read it."""
        found.payer = self._accounts.find(c.payer_account_id)
        view.payer = &self._account_states[found.payer] if found.payer >= 0 else NULL
        found.payee = self._accounts.find(c.merchant_account_id)
        view.payee = &self._account_states[found.payee] if found.payee >= 0 else NULL
        found.device = self._devices.find(c.device_id) if c.device_id else -1
        view.device = &self._device_states[found.device] if found.device >= 0 else NULL
        view.payer_day_amount_minor = view.payer_day_count = 0
        if view.payer != NULL and self._sums_payer_day:
            ring_totals(&view.payer.out_day, DAY_BUCKET_NS, c.now_ns, &view.payer_day_amount_minor,
                        &view.payer_day_count)

    cdef uint32_t _check_timed(self, int index, const CRule* rule, const PaymentCtx* c,
                               const StateView* view) except? 0xFFFFFFFF:
        """_check with a monotonic clock read on either side, added to the rule's sampled time."""
        cdef timespec start, end
        cdef uint32_t code
        clock_gettime(CLOCK_MONOTONIC, &start)
        code = self._check(rule, c, view)
        clock_gettime(CLOCK_MONOTONIC, &end)
        self._samples[index] += 1
        self._time_ns_sampled[index] += <uint64_t>((end.tv_sec - start.tv_sec) * 1000000000 + (end.tv_nsec - start.tv_nsec))
        return code

    cdef object _decision(self, const DecisionOut* out):
        fired = []
        cdef int index
        cdef uint64_t mask = out.fired_mask
        while mask:
            index = __builtin_ctzll(mask)
            fired.append(self._fired_entries[index])
            mask &= mask - 1
        # tuple.__new__ straight away: Decision's generated __new__ is a Python function.
        return _tuple_new(Decision, (out.action, out.code, tuple(fired), self._hash))

    def evaluate(self, ctx):
        cdef PaymentCtx c
        cdef DecisionOut out
        if context_from_object(ctx, &c):
            return Decision(ACTION_DECLINE, CODE_RISK_CONTEXT_INVALID, (), self._hash)
        self.evaluate_struct(&c, &out)
        return self._decision(&out)

    def evaluate_repeat(self, ctx, Py_ssize_t count):
        """`evaluate` `count` times on one conversion (benchmarks: the per-payment rule cost)."""
        cdef PaymentCtx c
        cdef DecisionOut out
        cdef Py_ssize_t round_index
        if count < 1:
            raise ValueError(f"evaluate_repeat: count must be at least 1, not {count}")
        if context_from_object(ctx, &c):
            return Decision(ACTION_DECLINE, CODE_RISK_CONTEXT_INVALID, (), self._hash)
        for round_index in range(count):
            self.evaluate_struct(&c, &out)
        return self._decision(&out)

    # ---- applying ----------------------------------------------------------------

    def observe(self, ctx, decision):
        """Apply a posted payment (approved, or held for review with its funds reserved)."""
        cdef PaymentCtx c
        cdef DecisionOut out
        if context_from_object(ctx, &c):
            raise ValueError(f"observe: {context_problem(ctx) or 'invalid payment context'}")
        out.action = decision.action
        out.found.payer = out.found.payee = out.found.device = -1
        self.observe_struct(&c, &out)

    cdef int observe_struct(self, const PaymentCtx* c, const DecisionOut* decision) except -1:
        """Apply a posted payment; `decision` is evaluate_struct's for it (its slots save the probes)."""
        cdef uint8_t flags = FLAG_QR_DYNAMIC if c.qr_dynamic else 0
        # Counters accumulate (and the journal records) the amount in the rule set's currency.
        cdef uint64_t amount_minor = rules_reference_minor(c.amount_minor, c.reference_rate_numerator,
                                                           c.reference_rate_denominator)
        if decision.action == ACTION_DECLINE:
            return 0
        if self._band_on and self._band_low_minor <= amount_minor < self._band_high_minor:
            flags |= FLAG_STRUCTURING_BAND
        self._apply(c.now_ns, c.payer_account_id, c.merchant_account_id, c.device_id, c.qr_digest,
                    c.qr_expires_ns, amount_minor, flags, &decision.found)
        self._journal_append(c.now_ns, c.payer_account_id, c.merchant_account_id, c.device_id, c.qr_digest,
                             c.qr_expires_ns, amount_minor, flags)
        return 0

    cdef int _apply(self, int64_t now_ns, uint64_t payer_id, uint64_t payee_id, uint64_t device_id,
                    uint64_t qr_digest, int64_t qr_expires_ns, uint64_t amount, uint8_t flags,
                    const StateSlots* hints) except -1:
        """One payment's effect on the tables; `hints` (NULL: none) are evaluate_struct's slots."""
        cdef bint fresh
        cdef int32_t slot = self._accounts.touch_hinted(payer_id, hints.payer if hints else -1, &fresh)
        if fresh:
            memset(&self._account_states[slot], 0, sizeof(AccountState))
        apply_payer(&self._account_states[slot], now_ns, payee_id, amount, flags)
        slot = self._accounts.touch_hinted(payee_id, hints.payee if hints else -1, &fresh)
        if fresh:
            memset(&self._account_states[slot], 0, sizeof(AccountState))
        apply_payee(&self._account_states[slot], now_ns, payer_id, amount)
        if device_id:
            slot = self._devices.touch_hinted(device_id, hints.device if hints else -1, &fresh)
            if fresh:
                memset(&self._device_states[slot], 0, sizeof(DeviceState))
            ring_add(&self._device_states[slot].hour, HOUR_BUCKET_NS, now_ns, amount)
            sketch_add(&self._device_states[slot].payers, now_ns, payer_id)
        if flags & FLAG_QR_DYNAMIC:
            slot = self._qr.touch(qr_digest, &fresh)
            self._qr_expires[slot] = qr_expires_ns
        return 0

    # ---- journaled component ---------------------------------------------------------

    cdef int _journal_append(self, int64_t now_ns, uint64_t payer_id, uint64_t payee_id, uint64_t device_id,
                             uint64_t qr_digest, int64_t qr_expires_ns, uint64_t amount, uint8_t flags) except -1:
        cdef Py_ssize_t needed = self._journal_bytes + JOURNAL_RECORD_BYTES + 1
        cdef uint8_t* grown
        cdef uint8_t* at
        if needed > self._journal_capacity:
            grown = <uint8_t*>realloc(self._journal, max(needed, 2 * self._journal_capacity, 4096))
            if grown == NULL:
                raise MemoryError()
            self._journal = grown
            self._journal_capacity = max(needed, 2 * self._journal_capacity, 4096)
        if self._journal_bytes == 0:
            self._journal[0] = JOURNAL_VERSION
            self._journal_bytes = 1
        at = self._journal + self._journal_bytes
        memcpy(at, &now_ns, 8)
        memcpy(at + 8, &payer_id, 8)
        memcpy(at + 16, &payee_id, 8)
        memcpy(at + 24, &device_id, 8)
        memcpy(at + 32, &qr_digest, 8)
        memcpy(at + 40, &qr_expires_ns, 8)
        memcpy(at + 48, &amount, 8)
        at[56] = flags
        self._journal_bytes += JOURNAL_RECORD_BYTES
        return 0

    def reset(self):
        """Forget all counters and any unjournaled effects (storage reload replays from empty).
        Slots are zeroed when reused, so only the indexes are renewed; statistics stay."""
        self._forget_counters()
        self._qr = _Lru(self._qr.capacity)
        self._counted_meaning = self._meaning
        self._journal_bytes = 0

    cdef int _forget_counters(self) except -1:
        """The per-account and per-device counters; the dynamic QR replay table stays."""
        self._accounts = _Lru(self._accounts.capacity)
        self._devices = _Lru(self._devices.capacity)
        return 0

    def take_journal(self):
        if self._journal_bytes == 0:
            return None
        # The buffer starts with a version 1 byte (_journal_append); the blob says the meaning instead.
        blob = journal_blob(self._meaning, PyBytes_FromStringAndSize(<char*>self._journal + 1, self._journal_bytes - 1))
        self._journal_bytes = 0
        return blob

    def apply_journal(self, blob):
        cdef bint fresh
        records = journal_records(blob)       # all or nothing: a malformed blob changes nothing
        forget, count, self._counted_meaning = replay_plan(self._counted_meaning, self._meaning, blob)
        if forget:
            self._forget_counters()
        for now_ns, payer_id, payee_id, device_id, qr_digest, qr_expires_ns, amount, flags in records:
            if count:
                self._apply(now_ns, payer_id, payee_id, device_id, qr_digest, qr_expires_ns, amount, flags, NULL)
            elif flags & FLAG_QR_DYNAMIC:
                self._qr_expires[self._qr.touch(qr_digest, &fresh)] = qr_expires_ns

    def state_hash(self):
        return state_digest((
            ("accounts", [account_canonical(key, &self._account_states[slot])
                          for key, slot in self._accounts.slots_in_order()]),
            ("devices", [device_canonical(key, &self._device_states[slot])
                         for key, slot in self._devices.slots_in_order()]),
            ("dynamic_qr", [(key, self._qr_expires[slot]) for key, slot in self._qr.slots_in_order()]),
        ))


cdef void apply_payer(AccountState* state, int64_t now_ns, uint64_t payee_id, uint64_t amount,
                      uint8_t flags) noexcept nogil:
    cdef uint64_t spread = mix64(payee_id)
    cdef int first = spread & 127, second = (spread >> 7) & 127
    state.times_head = (state.times_head + 1) % BURST_TIMES_COUNT if state.times_count else 0
    state.times[state.times_head] = now_ns
    if state.times_count < BURST_TIMES_COUNT:
        state.times_count += 1
    ring_add(&state.out_hour, HOUR_BUCKET_NS, now_ns, amount)
    ring_add(&state.out_day, DAY_BUCKET_NS, now_ns, amount)
    ring_add(&state.out_30d, DAYS_30_BUCKET_NS, now_ns, amount)
    if flags & FLAG_STRUCTURING_BAND:
        ring_add(&state.structuring_30d, DAYS_30_BUCKET_NS, now_ns, amount)
    state.payee_filter[first >> 6] |= 1ULL << (first & 63)
    state.payee_filter[second >> 6] |= 1ULL << (second & 63)
    if state.history_count == 0:
        state.history_mean_minor = amount
    else:
        state.history_mean_minor = rules_ema(state.history_mean_minor, amount, HISTORY_SHIFT)
    if amount > state.history_max_minor:
        state.history_max_minor = amount
    if state.history_count < 0xFFFFFFFFU:
        state.history_count += 1


cdef void apply_payee(AccountState* state, int64_t now_ns, uint64_t payer_id, uint64_t amount) noexcept nogil:
    cdef uint64_t average, today
    cdef int64_t day = now_ns // MERCHANT_DAY
    ring_add(&state.in_day, DAY_BUCKET_NS, now_ns, amount)
    sketch_add(&state.payers, now_ns, payer_id)
    volume_view(state, now_ns, &average, &today)
    if day > state.volume_day:
        state.volume_day = day
    state.volume_average_minor = average
    state.volume_today_minor = sat_add(today, amount)


cdef tuple ring_canonical(const Ring* ring):
    return (tuple([ring.index[slot] for slot in range(RING_SLOTS)])
            + tuple([ring.amount[slot] for slot in range(RING_SLOTS)])
            + tuple([ring.count[slot] for slot in range(RING_SLOTS)]))


cdef tuple sketch_canonical(const Sketch* sketch):
    return (tuple([sketch.index[slot] for slot in range(SKETCH_SLOTS)])
            + tuple([sketch.words[slot][word] for slot in range(SKETCH_SLOTS) for word in range(SKETCH_WORDS_COUNT)]))


cdef tuple account_canonical(uint64_t key, const AccountState* s):
    return ((key, s.times_count, s.times_head) + tuple([s.times[i] for i in range(BURST_TIMES_COUNT)])
            + ring_canonical(&s.out_hour) + ring_canonical(&s.out_day) + ring_canonical(&s.out_30d)
            + ring_canonical(&s.structuring_30d) + ring_canonical(&s.in_day) + sketch_canonical(&s.payers)
            + (s.payee_filter[0], s.payee_filter[1], s.history_count, s.history_mean_minor, s.history_max_minor,
               s.volume_day, s.volume_today_minor, s.volume_average_minor))


cdef tuple device_canonical(uint64_t key, const DeviceState* s):
    return (key,) + ring_canonical(&s.hour) + sketch_canonical(&s.payers)
