# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The payment pipeline, compiled.  Same functions and results as
core_ext/reference/pipeline.py (read that first: it states the pay flow).

`run(participant_id, body, now_ns)` takes the raw body of a `pay` / `pay_batch`
frame and answers the whole response frame.  Four passes, each timed once per
call (the decide-and-post pass split into the stages rules and post, below):

* decode: a bounded msgpack reader for exactly the shapes docs/PROTOCOL.md 4.1
  allows.  Anything else -- malformed, an unusual encoding, a limit passed --
  is handed to switch/protocol.py's decoder instead, so a malformed body gets
  exactly the slow path's code (by construction, and tests compare them);
* qr: qr_validate (C, without the GIL) and the merchant lookup in a C mirror
  of the merchant directory (the keys built from the verdict's spans);
* decide_post: per payment, in order -- ids, rate, ownership, QR, merchant,
  amount, accounts, retry, rules (evaluate_struct), the dynamic-QR guard,
  the ledger's create_transfers_c, observe_struct, audit bytes -- so each
  payment's rules see the one before it.  Its time is exact; its split into
  rules (context, evaluate, observe, audit) and post (every other step) is
  measured on one payment in PART_SAMPLE_INTERVAL_PAYMENTS: a clock read
  costs about 190 ns here, two payments' worth of reads per payment would
  cost a fifth of the pass (a sample the scheduler interrupted is dropped);
* respond: the response frame, msgpack written straight into a bytearray.

No Python object is made per payment on this path, with two exceptions kept
off the common case: a dynamic QR code goes through the merchant directory's
guard (switch/merchants.py, a Python object), and a payment held for review is
reported to the review queue (take_holds).
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport INT64_MAX, UINT64_MAX, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memcmp, memcpy, memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from core_ext._ledger cimport AccountC, Ledger, TransferC
from core_ext._qr cimport (
    QR_SCHEME_BHARAT_PRIMITIVE, QR_SCHEME_FROM_TEXT, QR_SCHEME_PRIMITIVE, QrKey, QrSpan, QrVerdict, percent_decode,
    qr_validate, utf8_valid,
)
from core_ext._rules cimport DecisionOut, PaymentCtx, RuleEngine

include "codes.pxi"
include "limits.pxi"

import msgpack

from core_ext import _qr as _qr_module
from core_ext import qr_tables as _qr_tables
from core_ext.pipeline_types import (
    COUNTRY_NUMERIC, DIGEST_SEED_DEVICE, DIGEST_SEED_QR, FNV_OFFSET, FNV_PRIME, LEDGER_COUNTRY, MODE_CODES, U128_MAX,
    fee_id_for,
)
from core_ext.rules_types import MODE_NAMES
from core_ext.types import Transfer

cdef extern from *:
    """
    typedef unsigned __int128 pipeline_u128;
    """
    ctypedef unsigned long long pipeline_u128
    bint __builtin_mul_overflow(uint64_t a, uint64_t b, uint64_t* product) noexcept nogil

cdef enum:
    STAGE_DECODE = 0
    STAGE_QR = 1
    STAGE_DECIDE_POST = 2
    STAGE_RESPOND = 3
    PART_RULES = 0                  # the two parts of STAGE_DECIDE_POST, sampled
    PART_POST = 1
    PART_SAMPLE_INTERVAL_PAYMENTS = 64   # a power of two: the test is a mask
    # A sampled payment slower than this was preempted (a payment takes microseconds; a time slice
    # lost to another process, milliseconds): counting it would tip the split by its whole pause.
    PART_SAMPLE_KEPT_NS_MAX = 250000
    ACTION_APPROVE = 0
    ACTION_REVIEW = 1
    ACTION_DECLINE = 2
    FLAG_LINKED = 1
    FLAG_PENDING = 2
    TRANSFER_CODE_PAYMENT_C = 1
    TRANSFER_CODE_MERCHANT_FEE_C = 2
    ACCOUNT_CODE_PERSONAL_RECEIVING_C = 5
    KEY_BYTES_MAX = 2048            # scheme + 0 + identifier of one merchant key
    AUDIT_HEADER_BYTES = 90         # pipeline_types.AUDIT_HEADER.size
    AUDIT_VERSION_C = 1
    RULES_CAPACITY = 64
    RUN_FRAMES_YIELD_NS = 200000    # run_frames lets other threads take the GIL this often (0.2 ms)

# run_frames' payloads: the C reader keeps none (the guard decodes a dynamic code's own bytes).
_NO_PAYLOADS = [None] * LIMIT_BATCH_FRAME_ITEMS_MAX


def split_stage_ns(total_ns, rules_sampled_ns, post_sampled_ns):
    """(rules_ns, post_ns): the pass's exact total in the sampled payments' proportion; all post
    before any sample of the rules."""
    sampled_ns = rules_sampled_ns + post_sampled_ns
    rules_ns = total_ns * rules_sampled_ns // sampled_ns if sampled_ns else 0
    return rules_ns, total_ns - rules_ns


assert LIMIT_RULES_PER_SET_MAX == RULES_CAPACITY
P_UPI = _qr_tables.PROFILE_INDEX["upi"]
cdef int32_t PROFILE_UPI = P_UPI
cdef uint64_t NS_PER_SECOND = 1000000000
cdef uint64_t U64_FNV_OFFSET = FNV_OFFSET
cdef uint64_t U64_FNV_PRIME = FNV_PRIME
cdef uint64_t SEED_DEVICE = DIGEST_SEED_DEVICE
cdef uint64_t SEED_QR = DIGEST_SEED_QR
cdef uint64_t UNDATED_LIFETIME_NS = LIMIT_QR_UNDATED_DYNAMIC_LIFETIME_SECONDS * 1000000000ULL


# ---- small C helpers ------------------------------------------------------------------

cdef inline uint64_t monotonic_ns() noexcept nogil:
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return <uint64_t>now.tv_sec * 1000000000ULL + <uint64_t>now.tv_nsec


cdef inline void part_start(PartClock* clock, bint sampled) noexcept nogil:
    clock.on = sampled
    if sampled:
        clock.part_ns[PART_RULES] = clock.part_ns[PART_POST] = 0
        clock.part, clock.since_ns = PART_POST, monotonic_ns()


cdef inline void part_switch(PartClock* clock, int part) noexcept nogil:
    """Close the open part (its time to this payment's part_ns) and open `part`; nothing unless sampled."""
    cdef uint64_t now_ns
    if clock.on:
        now_ns = monotonic_ns()
        clock.part_ns[clock.part] += now_ns - clock.since_ns
        clock.part, clock.since_ns = part, now_ns


cdef inline void part_end(PartClock* clock, uint64_t* sampled_ns) noexcept nogil:
    """Close the payment's clock; add its parts to sampled_ns unless it was preempted."""
    if clock.on:
        part_switch(clock, PART_POST)
        if clock.part_ns[PART_RULES] + clock.part_ns[PART_POST] <= PART_SAMPLE_KEPT_NS_MAX:
            sampled_ns[PART_RULES] += clock.part_ns[PART_RULES]
            sampled_ns[PART_POST] += clock.part_ns[PART_POST]


cdef inline uint64_t mix64(uint64_t value) noexcept nogil:
    value += 0x9E3779B97F4A7C15ULL
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9ULL
    value = (value ^ (value >> 27)) * 0x94D049BB133111EBULL
    return value ^ (value >> 31)


cdef inline uint64_t digest_u64(uint64_t seed, const unsigned char* data, Py_ssize_t size) noexcept nogil:
    """pipeline_types.digest_u64: FNV-1a, then mix64; never 0."""
    cdef uint64_t value = U64_FNV_OFFSET ^ seed
    cdef Py_ssize_t index
    for index in range(size):
        value = (value ^ data[index]) * U64_FNV_PRIME
    value = mix64(value)
    return value if value else 1


cdef inline uint64_t cache_slot_hash(const unsigned char* data, Py_ssize_t size) noexcept nogil:
    """A hash of `size` bytes taken eight at a time, only to pick a QR cache slot: a hit is then
    confirmed byte for byte, so a weak spread costs at worst a miss.  digest_u64 reads one byte per
    multiply (about five instructions a byte), which was most of the QR stage on a cache hit."""
    cdef uint64_t value = <uint64_t>size * 0x9E3779B97F4A7C15ULL, word
    cdef Py_ssize_t at = 0
    while at + 8 <= size:
        memcpy(&word, data + at, 8)
        value = (value ^ word) * 0xBF58476D1CE4E5B9ULL
        value ^= value >> 29
        at += 8
    word = 0
    while at < size:
        word = (word << 8) | data[at]
        at += 1
    return mix64(value ^ word)


cdef inline uint64_t fnv64(const unsigned char* data, Py_ssize_t size) noexcept nogil:
    cdef uint64_t value = 0xCBF29CE484222325ULL
    cdef Py_ssize_t index
    for index in range(size):
        value = (value ^ data[index]) * 0x100000001B3ULL
    return mix64(value)


cdef inline uint64_t floor_scaled(uint64_t amount, uint64_t rate, uint64_t scale) noexcept nogil:
    """amount * rate // scale, exactly, saturated at u64.  A product that fits in 64 bits is divided
    in 64 bits: the scales are constants, so that is a multiply, not a call to the 128-bit divide."""
    cdef uint64_t product_64
    if not __builtin_mul_overflow(amount, rate, &product_64):
        return product_64 // scale
    cdef pipeline_u128 product = <pipeline_u128>amount * rate / scale
    return UINT64_MAX if product > UINT64_MAX else <uint64_t>product


cdef inline uint64_t load_be64(const unsigned char* data) noexcept nogil:
    cdef uint64_t value = 0
    cdef int index
    for index in range(8):
        value = (value << 8) | data[index]
    return value


# ---- BLAKE2b-128 of a fee leg's id (RFC 7693), so fee_id_for needs no Python call ----------

cdef uint64_t BLAKE2B_IV[8]
BLAKE2B_IV[:] = [0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
                 0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179]
cdef uint8_t BLAKE2B_SIGMA[12][16]
_SIGMA = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
    (14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3),
    (11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4),
    (7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8),
    (9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13),
    (2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9),
    (12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11),
    (13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10),
    (6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5),
    (10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0),
)
for _round in range(12):
    for _index in range(16):
        BLAKE2B_SIGMA[_round][_index] = _SIGMA[_round % 10][_index]
cdef const unsigned char* FEE_PURPOSE = b"merchant-fee"


cdef inline uint64_t rotr64(uint64_t value, int bits) noexcept nogil:
    return (value >> bits) | (value << (64 - bits))


cdef inline void blake2b_mix(uint64_t* v, int a, int b, int c, int d, uint64_t x, uint64_t y) noexcept nogil:
    v[a] = v[a] + v[b] + x
    v[d] = rotr64(v[d] ^ v[a], 32)
    v[c] = v[c] + v[d]
    v[b] = rotr64(v[b] ^ v[c], 24)
    v[a] = v[a] + v[b] + y
    v[d] = rotr64(v[d] ^ v[a], 16)
    v[c] = v[c] + v[d]
    v[b] = rotr64(v[b] ^ v[c], 63)


cdef void blake2b_128_one_block(const unsigned char* data, int size, unsigned char* out) noexcept nogil:
    """BLAKE2b with a 16-byte digest of at most 128 bytes of data (one block), no key."""
    cdef uint64_t h[8]
    cdef uint64_t v[16]
    cdef uint64_t m[16]
    cdef unsigned char block[128]
    cdef int index, round_index
    cdef const uint8_t* s
    memset(block, 0, 128)
    memcpy(block, data, size)
    for index in range(16):
        m[index] = 0
        for round_index in range(8):
            m[index] |= (<uint64_t>block[8 * index + round_index]) << (8 * round_index)
    for index in range(8):
        h[index] = BLAKE2B_IV[index]
    h[0] ^= 0x01010000ULL ^ 16
    for index in range(8):
        v[index] = h[index]
        v[index + 8] = BLAKE2B_IV[index]
    v[12] ^= <uint64_t>size
    v[14] = ~v[14]
    for round_index in range(12):
        s = BLAKE2B_SIGMA[round_index]
        blake2b_mix(v, 0, 4, 8, 12, m[s[0]], m[s[1]])
        blake2b_mix(v, 1, 5, 9, 13, m[s[2]], m[s[3]])
        blake2b_mix(v, 2, 6, 10, 14, m[s[4]], m[s[5]])
        blake2b_mix(v, 3, 7, 11, 15, m[s[6]], m[s[7]])
        blake2b_mix(v, 0, 5, 10, 15, m[s[8]], m[s[9]])
        blake2b_mix(v, 1, 6, 11, 12, m[s[10]], m[s[11]])
        blake2b_mix(v, 2, 7, 8, 13, m[s[12]], m[s[13]])
        blake2b_mix(v, 3, 4, 9, 14, m[s[14]], m[s[15]])
    for index in range(2):
        h[index] ^= v[index] ^ v[index + 8]
        for round_index in range(8):
            out[8 * index + round_index] = <unsigned char>(h[index] >> (8 * round_index))


cdef void fee_id_c(uint64_t id_lo, uint64_t id_hi, uint64_t* fee_lo, uint64_t* fee_hi) noexcept nogil:
    """pipeline_types.fee_id_for in C: BLAKE2b-128("merchant-fee" || id as 16 bytes big-endian)."""
    cdef unsigned char message[28]
    cdef unsigned char digest[16]
    cdef int index
    memcpy(message, FEE_PURPOSE, 12)
    for index in range(8):
        message[12 + index] = <unsigned char>(id_hi >> (56 - 8 * index))
        message[20 + index] = <unsigned char>(id_lo >> (56 - 8 * index))
    blake2b_128_one_block(message, 28, digest)
    fee_hi[0] = load_be64(digest)
    fee_lo[0] = load_be64(digest + 8)
    if (fee_hi[0] == 0 and fee_lo[0] == 0) or (fee_hi[0] == UINT64_MAX and fee_lo[0] == UINT64_MAX):
        fee_hi[0], fee_lo[0] = 0, 1


def fee_id_check(payment_id):
    """The C fee id of a payment id (tests compare it with pipeline_types.fee_id_for)."""
    cdef uint64_t lo, hi
    fee_id_c(payment_id & 0xFFFFFFFFFFFFFFFF, payment_id >> 64, &lo, &hi)
    return ((<object>hi) << 64) | lo


# ---- the msgpack reader: exactly docs/PROTOCOL.md 4.1's shapes, or "not mine" --------------

cdef struct Reader:
    const unsigned char* data
    Py_ssize_t size
    Py_ssize_t position


cdef inline bint read_uint(Reader* r, uint64_t* out) noexcept nogil:
    cdef unsigned char lead
    cdef int width, index
    if r.position >= r.size:
        return False
    lead = r.data[r.position]
    if lead <= 0x7F:
        out[0] = lead
        r.position += 1
        return True
    if lead == 0xCC:
        width = 1
    elif lead == 0xCD:
        width = 2
    elif lead == 0xCE:
        width = 4
    elif lead == 0xCF:
        width = 8
    else:
        return False
    if r.position + 1 + width > r.size:
        return False
    out[0] = 0
    for index in range(width):
        out[0] = (out[0] << 8) | r.data[r.position + 1 + index]
    r.position += 1 + width
    return True


cdef inline Py_ssize_t read_array(Reader* r) noexcept nogil:
    """An array header's length, or -1."""
    cdef unsigned char lead
    cdef Py_ssize_t length
    if r.position >= r.size:
        return -1
    lead = r.data[r.position]
    if 0x90 <= lead <= 0x9F:
        r.position += 1
        return lead - 0x90
    if lead == 0xDC and r.position + 3 <= r.size:
        length = (r.data[r.position + 1] << 8) | r.data[r.position + 2]
        r.position += 3
        return length
    if lead == 0xDD and r.position + 5 <= r.size:
        length = ((<Py_ssize_t>r.data[r.position + 1] << 24) | (<Py_ssize_t>r.data[r.position + 2] << 16)
                  | (<Py_ssize_t>r.data[r.position + 3] << 8) | r.data[r.position + 4])
        r.position += 5
        return length
    return -1


cdef inline int read_str(Reader* r, const unsigned char** text, int32_t* size) noexcept nogil:
    """1: a str within string_bytes_max, valid UTF-8; 0: nil; -1: anything else."""
    cdef unsigned char lead
    cdef Py_ssize_t length, start
    if r.position >= r.size:
        return -1
    lead = r.data[r.position]
    if lead == 0xC0:
        r.position += 1
        return 0
    if 0xA0 <= lead <= 0xBF:
        length = lead - 0xA0
        start = r.position + 1
    elif lead == 0xD9 and r.position + 2 <= r.size:
        length = r.data[r.position + 1]
        start = r.position + 2
    elif lead == 0xDA and r.position + 3 <= r.size:
        length = (r.data[r.position + 1] << 8) | r.data[r.position + 2]
        start = r.position + 3
    else:
        return -1
    if length > <Py_ssize_t>LIMIT_STRING_BYTES_MAX or start + length > r.size or not utf8_valid(r.data + start, length):
        return -1
    text[0] = r.data + start
    size[0] = <int32_t>length
    r.position = start + length
    return 1


cdef bint read_pay_item(Reader* r, PayC* item) noexcept nogil:
    """[bin16 id, uint payer, str qr, uint amount, str|nil device?, str|nil reference?]."""
    cdef Py_ssize_t fields = read_array(r)
    cdef const unsigned char* text
    cdef int32_t size
    cdef int kind
    if fields < 4 or fields > 6:
        return False
    if r.position + 18 > r.size or r.data[r.position] != 0xC4 or r.data[r.position + 1] != 16:
        return False
    item.id_hi = load_be64(r.data + r.position + 2)
    item.id_lo = load_be64(r.data + r.position + 10)
    r.position += 18
    if not read_uint(r, &item.payer_account_id):
        return False
    if read_str(r, &item.qr, &item.qr_bytes) != 1:
        return False
    if not read_uint(r, &item.amount_minor):
        return False
    item.device = NULL
    item.device_bytes = 0
    if fields >= 5:
        kind = read_str(r, &text, &size)
        if kind < 0:
            return False
        if kind == 1:
            item.device, item.device_bytes = text, size
    if fields == 6 and read_str(r, &text, &size) < 0:
        return False
    return True


cdef Py_ssize_t read_request(Reader* r, uint64_t* request_id, PayC* items, bint* batch) noexcept nogil:
    """The items of a well-formed pay / pay_batch body, or -1 (the slow path decides)."""
    cdef Py_ssize_t count, index
    if r.size < 1 or r.data[0] != 0x93:
        return -1
    r.position = 1
    if not read_uint(r, request_id) or request_id[0] < 1 or request_id[0] > 0xFFFFFFFFULL:
        return -1
    if r.position + 4 <= r.size and r.data[r.position] == 0xA3 and memcmp(r.data + r.position + 1, b"pay", 3) == 0:
        r.position += 4
        batch[0] = False
        count = 1
        if not read_pay_item(r, &items[0]):
            return -1
    elif r.position + 10 <= r.size and r.data[r.position] == 0xA9 \
            and memcmp(r.data + r.position + 1, b"pay_batch", 9) == 0:
        r.position += 10
        batch[0] = True
        count = read_array(r)
        if count < 1 or count > <Py_ssize_t>LIMIT_BATCH_FRAME_ITEMS_MAX:
            return -1
        for index in range(count):
            if not read_pay_item(r, &items[index]):
                return -1
    else:
        return -1
    return count if r.position == r.size else -1


cdef Py_ssize_t peek_body(const unsigned char* data, Py_ssize_t size, uint64_t* request_id) noexcept nogil:
    """Pipeline.peek in C: the ledger events of a body the fast path takes, or -1."""
    cdef Reader r
    cdef Py_ssize_t count
    r.data, r.size, r.position = data, size, 1
    if size < 2 or data[0] != 0x93:
        return -1
    if data[1] > 0x7F and data[1] != 0xCC and data[1] != 0xCD and data[1] != 0xCE:
        return -1
    if not read_uint(&r, request_id) or request_id[0] < 1:
        return -1
    if r.position + 4 <= size and data[r.position] == 0xA3 and memcmp(data + r.position + 1, b"pay", 3) == 0:
        return 2
    if r.position + 10 <= size and data[r.position] == 0xA9 and memcmp(data + r.position + 1, b"pay_batch", 9) == 0:
        r.position += 10
        count = read_array(&r)
        return 2 * count if 0 < count <= <Py_ssize_t>LIMIT_BATCH_FRAME_ITEMS_MAX else 1
    return -1


cdef inline Py_ssize_t read_length(const unsigned char* data, Py_ssize_t available) noexcept nogil:
    """The body length of the frame at `data` when the whole frame is there, else -1."""
    cdef Py_ssize_t length
    if available < 4:
        return -1
    length = (<Py_ssize_t>data[0] << 24) | (<Py_ssize_t>data[1] << 16) | (<Py_ssize_t>data[2] << 8) | data[3]
    return length if available - 4 >= length else -1


# ---- the msgpack writer (the same bytes msgpack.packb(use_bin_type=True) gives) --------------

cdef int out_reserve(Out* out, Py_ssize_t more) except -1:
    cdef Py_ssize_t wanted = out.size + more, capacity = out.capacity if out.capacity else 4096
    cdef unsigned char* grown
    if wanted <= out.capacity:
        return 0
    while capacity < wanted:
        capacity *= 2
    grown = <unsigned char*>realloc(out.data, capacity)
    if grown == NULL:
        raise MemoryError()
    out.data, out.capacity = grown, capacity
    return 0


cdef int out_append(Out* out, const unsigned char* data, Py_ssize_t size) except -1:
    out_reserve(out, size)
    memcpy(out.data + out.size, data, size)
    out.size += size
    return 0


cdef inline void put_byte(Out* out, unsigned char value) noexcept:
    out.data[out.size] = value
    out.size += 1


cdef inline void put_uint(Out* out, uint64_t value) noexcept:
    """Room for 9 bytes must be reserved."""
    cdef int width, index
    if value <= 0x7F:
        put_byte(out, <unsigned char>value)
        return
    if value <= 0xFF:
        put_byte(out, 0xCC)
        width = 1
    elif value <= 0xFFFF:
        put_byte(out, 0xCD)
        width = 2
    elif value <= 0xFFFFFFFFULL:
        put_byte(out, 0xCE)
        width = 4
    else:
        put_byte(out, 0xCF)
        width = 8
    for index in range(width):
        put_byte(out, <unsigned char>(value >> (8 * (width - 1 - index))))


cdef inline void put_array_header(Out* out, Py_ssize_t length) noexcept:
    """Room for 5 bytes must be reserved; length <= batch_frame_items_max."""
    if length <= 15:
        put_byte(out, <unsigned char>(0x90 | length))
    else:
        put_byte(out, 0xDC)
        put_byte(out, <unsigned char>(length >> 8))
        put_byte(out, <unsigned char>length)


cdef inline void put_u64_le(unsigned char* at, uint64_t value) noexcept:
    cdef int index
    for index in range(8):
        at[index] = <unsigned char>(value >> (8 * index))


# ---- helpers of the decide stage ---------------------------------------------------------------

cdef uint32_t LEDGER_COUNTRY_C[1000]
for _ledger, _country in LEDGER_COUNTRY.items():
    LEDGER_COUNTRY_C[_ledger] = _country


cdef inline uint64_t available_minor(const AccountC* account) noexcept:
    """credits_posted - debits_posted - debits_pending, never below 0."""
    cdef uint64_t spent = account.debits_posted + account.debits_pending
    if spent < account.debits_posted or spent >= account.credits_posted:
        return 0
    return account.credits_posted - spent


cdef inline uint32_t payment_answer(const uint16_t* codes, Py_ssize_t count) noexcept:
    """reference.pipeline.payment_answer: EXISTS for a whole retried chain, else the leg that failed."""
    cdef Py_ssize_t index
    cdef bint all_exist = codes[0] == CODE_EXISTS, linked_failed = False
    for index in range(1, count):
        if codes[index] != CODE_EXISTS and codes[index] != CODE_LINKED_EVENT_FAILED:
            all_exist = False
    if all_exist:
        return CODE_EXISTS
    for index in range(count):
        if codes[index] != CODE_OK and codes[index] != CODE_LINKED_EVENT_FAILED:
            return codes[index]
        linked_failed |= codes[index] == CODE_LINKED_EVENT_FAILED
    return CODE_LINKED_EVENT_FAILED if linked_failed else CODE_OK


# Scheme numbers of a verdict (core_ext/_qr.pxd) -> names, in one list: the profile schemes,
# then the primitive ones (02-25), then Bharat QR's.
cdef enum:
    PRIMITIVE_NAMES_AT = 32
    BHARAT_NAMES_AT = PRIMITIVE_NAMES_AT + 32


def scheme_name_table() -> list:
    assert len(_qr_module.SCHEME_NAMES) <= PRIMITIVE_NAMES_AT
    names = [None] * (BHARAT_NAMES_AT + 16)
    for index, name in enumerate(_qr_module.SCHEME_NAMES):
        names[index] = name.encode()
    for tag, name in _qr_tables.PRIMITIVE_SCHEMES.items():
        names[PRIMITIVE_NAMES_AT + tag] = name.encode()
    for tag, name in _qr_tables.BHARAT_PRIMITIVE_SCHEMES.items():
        names[BHARAT_NAMES_AT + tag] = name.encode()
    return names


# ---- the pipeline ---------------------------------------------------------------------------

@cython.final
cdef class Pipeline:
    """See the module docstring; the API is core_ext.reference.pipeline.Pipeline's."""

    def __cinit__(self, *args, **kwargs):
        self.items = <PayC*>calloc(LIMIT_BATCH_FRAME_ITEMS_MAX, sizeof(PayC))
        self.qr_cache = <QrCacheC*>calloc(QR_CACHE_SLOTS, sizeof(QrCacheC))
        self.key_mask = 0
        if self.items == NULL or self.qr_cache == NULL:
            raise MemoryError()

    def __init__(self, settings, Ledger ledger, merchants, rules=None, audit=None):
        from core_ext.pipeline_types import AuditLog

        self.ledger = ledger
        self.merchants = merchants
        self.audit = audit if audit is not None else AuditLog()
        self.rules = rules
        self._keep = []
        self._holds = []
        self.review_slots_free = LIMIT_REVIEW_QUEUE_ITEMS_MAX
        self._payloads = []
        self.review_timeout_seconds = settings.review_timeout_seconds
        self.rate_per_second = settings.rate_items_per_second
        self.rate_burst = settings.rate_burst_items
        self._load_participants(settings.participants)
        self._load_ledgers(settings.ledgers)
        self._scheme_names = scheme_name_table()
        self.sync_merchants()

    def __dealloc__(self):
        free(self.items)
        free(self.qr_cache)
        free(self.participants)
        free(self.range_starts)
        free(self.range_ends)
        free(self.ledgers)
        self._free_merchants()
        free(self._audit.data)
        free(self._response.data)

    # ---- settings ----------------------------------------------------------------------

    cdef int _load_participants(self, participants) except -1:
        cdef Py_ssize_t ranges = sum(len(p.range_starts) for p in participants), at = 0, index
        self.participants = <ParticipantC*>calloc(max(len(participants), 1), sizeof(ParticipantC))
        self.range_starts = <uint64_t*>calloc(max(ranges, 1), sizeof(uint64_t))
        self.range_ends = <uint64_t*>calloc(max(ranges, 1), sizeof(uint64_t))
        if self.participants == NULL or self.range_starts == NULL or self.range_ends == NULL:
            raise MemoryError()
        self._participant_index = {}
        for index, participant in enumerate(participants):
            self.participants[index].id = participant.id
            self.participants[index].is_operator = participant.is_operator
            self.participants[index].range_first = at
            self.participants[index].range_count = len(participant.range_starts)
            self.participants[index].rate_per_second = participant.rate_items_per_second or self.rate_per_second
            self.participants[index].rate_burst = participant.rate_burst_items or self.rate_burst
            for start, end in zip(participant.range_starts, participant.range_ends):
                self.range_starts[at], self.range_ends[at] = start, end
                at += 1
            self._participant_index[participant.id] = index
        self.participant_count = len(participants)
        return 0

    cdef int _load_ledgers(self, ledgers) except -1:
        cdef Py_ssize_t index
        self.ledgers = <LedgerC*>calloc(max(len(ledgers), 1), sizeof(LedgerC))
        if self.ledgers == NULL:
            raise MemoryError()
        for index, entry in enumerate(ledgers):
            self.ledgers[index].ledger = entry.ledger
            self.ledgers[index].fee_bps = entry.fee_bps
            self.ledgers[index].fee_account_id = entry.fee_account_id
            self.ledgers[index].usd_minor_per_million_minor = entry.usd_minor_per_million_minor
        self.ledger_count = len(ledgers)
        return 0

    cdef inline const LedgerC* _ledger_of(self, uint32_t ledger) noexcept:
        cdef Py_ssize_t index
        for index in range(self.ledger_count):
            if self.ledgers[index].ledger == ledger:
                return &self.ledgers[index]
        return NULL

    @property
    def rules(self):
        return self._rules

    @rules.setter
    def rules(self, rules):
        if rules is not None and not isinstance(rules, RuleEngine):
            raise TypeError(f"the compiled pipeline decides with a compiled RuleEngine, not {type(rules).__name__}")
        self._rules = rules
        self._ruleset_seen = None

    cdef int _refresh_rule_tables(self) except -1:
        """The audit bytes of each rule, rebuilt when the rule set changed (a reload)."""
        cdef Py_ssize_t index
        cdef bytes entry
        cdef const LedgerC* reference
        ruleset = self._rules.ruleset
        if ruleset is self._ruleset_seen:
            return 0
        entries = []
        for index, rule in enumerate(ruleset.rules):
            rule_id, reason = rule.id.encode(), rule.reason.encode()
            entry = bytes([MODE_CODES[MODE_NAMES[rule.mode]], len(rule_id)]) + rule_id + bytes([len(reason)]) + reason
            entries.append(entry)
            self._rule_audit[index].entry = <const unsigned char*>PyBytes_AS_STRING(entry)
            self._rule_audit[index].entry_bytes = PyBytes_GET_SIZE(entry)
        digest = bytes.fromhex(ruleset.hash)
        memcpy(self._ruleset_hash, <const char*>digest, 32)
        reference = self._ledger_of(ruleset.currency) if ruleset.currency else NULL
        self._reference_ledger = ruleset.currency
        self._reference_usd_minor_per_million_minor = reference.usd_minor_per_million_minor if reference != NULL else 0
        self._keep_rules = entries
        self._ruleset_seen = ruleset
        return 0

    # ---- the merchant directory's mirror ------------------------------------------------

    cdef void _free_merchants(self) noexcept:
        free(self.merchant_rows)
        free(self.key_slots)
        free(self.key_hashes)
        free(<void*>self.key_bytes)
        free(self.key_sizes)
        self.merchant_rows, self.key_slots, self.key_hashes, self.key_bytes, self.key_sizes = NULL, NULL, NULL, NULL, NULL
        self.merchant_count = 0
        self.key_mask = 0

    def sync_merchants(self):
        """Mirror the directory (call after a register): one row and one key per registration."""
        cdef Py_ssize_t count, capacity = 16, index
        cdef uint64_t slot, key_hash
        cdef Py_ssize_t slot_index
        cdef bytes key, name
        self._free_merchants()
        memset(self.qr_cache, 0, QR_CACHE_SLOTS * sizeof(QrCacheC))     # cached merchant rows go stale
        registrations = self.merchants.registrations() if self.merchants is not None else []
        count = len(registrations)
        while capacity < 2 * count:
            capacity *= 2
        self.merchant_rows = <MerchantC*>calloc(max(count, 1), sizeof(MerchantC))
        self.key_slots = <int32_t*>calloc(capacity, sizeof(int32_t))
        self.key_hashes = <uint64_t*>calloc(capacity, sizeof(uint64_t))
        self.key_bytes = <const unsigned char**>calloc(max(count, 1), sizeof(const unsigned char*))
        self.key_sizes = <int32_t*>calloc(max(count, 1), sizeof(int32_t))
        if not (self.merchant_rows and self.key_slots and self.key_hashes and self.key_bytes and self.key_sizes):
            self._free_merchants()
            raise MemoryError()
        self.key_mask = capacity - 1
        for slot_index in range(capacity):
            self.key_slots[slot_index] = -1
        self._keep = []
        self._merchant_names = []
        for index, (scheme, merchant_id, merchant) in enumerate(registrations):
            key = scheme.encode() + b"\0" + merchant_id.encode()
            name = msgpack.packb(merchant.name, use_bin_type=True)
            self._keep += [key, name]
            self._merchant_names.append(merchant.name)
            self.merchant_rows[index].account_id = merchant.account_id
            self.merchant_rows[index].ledger = merchant.currency
            self.merchant_rows[index].mcc = int(merchant.mcc) if merchant.mcc.isdigit() else 0
            self.merchant_rows[index].country = COUNTRY_NUMERIC.get(merchant.country, 0)
            self.merchant_rows[index].name_msgpack = PyBytes_AS_STRING(name)
            self.merchant_rows[index].name_msgpack_bytes = PyBytes_GET_SIZE(name)
            self.key_bytes[index] = <const unsigned char*>PyBytes_AS_STRING(key)
            self.key_sizes[index] = <int32_t>PyBytes_GET_SIZE(key)
            key_hash = fnv64(self.key_bytes[index], self.key_sizes[index])
            slot = key_hash & self.key_mask
            while self.key_slots[slot] >= 0:
                slot = (slot + 1) & self.key_mask
            self.key_slots[slot] = <int32_t>index
            self.key_hashes[slot] = key_hash
        self.merchant_count = count
        return count

    cdef int32_t _find_key(self, const unsigned char* key, Py_ssize_t size) noexcept:
        cdef uint64_t key_hash = fnv64(key, size)
        cdef uint64_t slot = key_hash & self.key_mask
        cdef int32_t row
        if self.key_mask == 0:
            return -1
        while True:
            row = self.key_slots[slot]
            if row < 0:
                return -1
            if self.key_hashes[slot] == key_hash and self.key_sizes[row] == size \
                    and memcmp(self.key_bytes[row], key, size) == 0:
                return row
            slot = (slot + 1) & self.key_mask

    cdef int32_t _resolve(self, const unsigned char* payload, const QrVerdict* verdict) noexcept:
        """The first registered merchant key of a valid verdict (keys come most specific first)."""
        cdef unsigned char key[KEY_BYTES_MAX]
        cdef Py_ssize_t size
        cdef int index
        cdef int32_t row
        for index in range(verdict.key_count):
            size = self._key_of(payload, verdict, &verdict.keys[index], key)
            if size >= 0:
                row = self._find_key(key, size)
                if row >= 0:
                    return row
        return -1

    cdef Py_ssize_t _key_of(self, const unsigned char* payload, const QrVerdict* verdict, const QrKey* qr_key,
                            unsigned char* out) noexcept:
        """scheme + 0 + identifier, as the directory registers it (a UPI identifier %-decoded), or -1."""
        cdef const unsigned char* scheme
        cdef Py_ssize_t scheme_bytes, size, written
        if qr_key.scheme == QR_SCHEME_FROM_TEXT:
            scheme, scheme_bytes = payload + qr_key.scheme_text.start, qr_key.scheme_text.length
        else:
            name = self._scheme_name(qr_key.scheme)
            if name is None:
                return -1
            scheme, scheme_bytes = <const unsigned char*>PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name)
        if scheme_bytes < 0 or scheme_bytes + 2 + qr_key.first.length + qr_key.second.length > KEY_BYTES_MAX:
            return -1
        memcpy(out, scheme, scheme_bytes)
        out[scheme_bytes] = 0
        size = scheme_bytes + 1
        if verdict.profile == PROFILE_UPI:
            written = percent_decode(payload, qr_key.first.start, qr_key.first.start + qr_key.first.length, out + size)
            if written < 0:
                return -1
            size += written
        else:
            memcpy(out + size, payload + qr_key.first.start, qr_key.first.length)
            size += qr_key.first.length
        if qr_key.second.length >= 0:
            out[size] = 58   # ":"
            memcpy(out + size + 1, payload + qr_key.second.start, qr_key.second.length)
            size += 1 + qr_key.second.length
        return size

    cdef object _scheme_name(self, int32_t scheme):
        """The scheme name (bytes) of a verdict's scheme number, from tables built once; None: unknown."""
        cdef list names = self._scheme_names
        if scheme >= QR_SCHEME_BHARAT_PRIMITIVE:
            scheme = scheme - QR_SCHEME_BHARAT_PRIMITIVE + BHARAT_NAMES_AT
        elif scheme >= QR_SCHEME_PRIMITIVE:
            scheme = scheme - QR_SCHEME_PRIMITIVE + PRIMITIVE_NAMES_AT
        elif scheme >= PRIMITIVE_NAMES_AT:
            return None
        return names[scheme] if 0 <= scheme < len(names) else None

    # ---- participants and rate ----------------------------------------------------------

    cdef inline bint _owns(self, const ParticipantC* participant, uint64_t account_id) noexcept:
        cdef Py_ssize_t low = 0, high = participant.range_count, middle
        cdef uint64_t* starts = self.range_starts + participant.range_first
        cdef uint64_t* ends = self.range_ends + participant.range_first
        if participant.is_operator:
            return True
        while low < high:          # the last range starting at or before account_id
            middle = (low + high) // 2
            if starts[middle] <= account_id:
                low = middle + 1
            else:
                high = middle
        return low > 0 and account_id <= ends[low - 1]

    cdef bint _take(self, ParticipantC* participant, int64_t count, int64_t now_ns) noexcept:
        """pipeline_types.TokenBucket.take, in exact integer arithmetic."""
        cdef int64_t elapsed_ns, refill
        if not participant.bucket_started:
            participant.bucket_started = True
            participant.tokens = participant.rate_burst
            participant.updated_ns = now_ns
        elapsed_ns = now_ns - participant.updated_ns if now_ns > participant.updated_ns else 0
        refill = 0
        if elapsed_ns:         # no 128-bit divide when no time passed: every payment of a batch after the first
            refill = <int64_t>(<pipeline_u128>elapsed_ns * <uint64_t>participant.rate_per_second / NS_PER_SECOND)
        if refill:
            participant.tokens = min(participant.rate_burst, participant.tokens + refill)
            participant.updated_ns += <int64_t>(<pipeline_u128>refill * NS_PER_SECOND
                                                / <uint64_t>participant.rate_per_second)
        if participant.tokens < count:
            return False
        participant.tokens -= count
        return True

    cdef ParticipantC* _participant(self, participant_id) except? NULL:
        index = self._participant_index.get(participant_id)
        return &self.participants[<Py_ssize_t>index] if index is not None else NULL

    def owns(self, participant_id, account_id):
        cdef ParticipantC* participant = self._participant(participant_id)
        return participant != NULL and self._owns(participant, account_id)

    def take_tokens(self, participant_id, count, now_ns):
        cdef ParticipantC* participant = self._participant(participant_id)
        return participant != NULL and self._take(participant, count, now_ns)

    def fee_of(self, ledger, amount_minor):
        cdef const LedgerC* entry = self._ledger_of(ledger) if 0 <= ledger <= 0xFFFFFFFF else NULL
        return floor_scaled(amount_minor, entry.fee_bps, 10000) if entry != NULL else 0

    def fee_leg(self, payment_id, merchant_account_id, ledger, fee_minor, participant_id):
        cdef const LedgerC* entry = self._ledger_of(ledger)
        if entry == NULL:
            raise KeyError(ledger)
        return Transfer(
            id=fee_id_for(payment_id), debit_account_id=merchant_account_id, credit_account_id=entry.fee_account_id,
            amount=fee_minor, ledger=ledger, code=TRANSFER_CODE_MERCHANT_FEE_C, user_data_64=participant_id)

    def take_holds(self):
        holds, self._holds = self._holds, []
        return holds

    def stats(self):
        rules_ns, post_ns = split_stage_ns(self.stage_ns[STAGE_DECIDE_POST], self.part_sampled_ns[PART_RULES],
                                           self.part_sampled_ns[PART_POST])
        values = {"decode_ns": self.stage_ns[STAGE_DECODE], "qr_ns": self.stage_ns[STAGE_QR], "rules_ns": rules_ns,
                  "post_ns": post_ns, "respond_ns": self.stage_ns[STAGE_RESPOND]}
        values.update(payments=self.payments, calls=self.calls, fast_decodes=self.fast_decodes,
                      slow_decodes=self.slow_decodes, qr_cache_hits=self.qr_cache_hits)
        values["codes"] = {code: self.code_counts[code] for code in range(1000) if self.code_counts[code]}
        return values

    # ---- raw frames ------------------------------------------------------------------------

    @staticmethod
    def peek(bytes body):
        """(ledger events, request id) of a body the fast path takes ([uint, "pay"|"pay_batch", ...]),
        or (-1, 0); the twin's docstring says why."""
        cdef uint64_t request_id = 0
        cdef Py_ssize_t events = peek_body(<const unsigned char*>PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body),
                                           &request_id)
        if events < 0:
            return (-1, 0)
        return (events, request_id)

    @staticmethod
    def cut(const unsigned char[::1] data, Py_ssize_t start, Py_ssize_t end, Py_ssize_t frames_max,
            Py_ssize_t body_bytes_budget, Py_ssize_t events_max, Py_ssize_t frame_bytes_max):
        """The run of complete frames at data[start:end] (4-byte length prefix + body each) that
        `run_frames` takes as one unit: (frames, end offset, ledger events, body bytes).  It stops
        before a frame `peek` does not take, an incomplete one, one whose length is refused (0 or
        past frame_bytes_max: the caller's own cutting answers those), and once frames_max frames
        or body_bytes_budget bytes are taken or events_max would be passed (one frame at least)."""
        cdef Py_ssize_t frames = 0, events = 0, body_bytes = 0, length, taken
        cdef uint64_t request_id
        if end > data.shape[0] or start < 0:
            raise ValueError("cut: start/end outside the buffer")
        while frames < frames_max and body_bytes < body_bytes_budget and end - start >= 4:
            length = ((<Py_ssize_t>data[start] << 24) | (<Py_ssize_t>data[start + 1] << 16)
                      | (<Py_ssize_t>data[start + 2] << 8) | data[start + 3])
            if length == 0 or length > frame_bytes_max or end - start - 4 < length:
                break
            taken = peek_body(&data[start + 4], length, &request_id)
            if taken < 0 or (frames and events + taken > events_max):
                break
            frames += 1
            events += taken
            body_bytes += length
            start += 4 + length
        return (frames, start, events, body_bytes)

    @staticmethod
    def refuse_frames(bytes frames, uint32_t code):
        """The answer [request id, code, nil] to every frame of `frames` (length-prefixed bodies
        back to back, as `cut` took them), each under its own request id (0 where `peek` reads
        none), in one pass: what a shed or failed FrameRun is answered.  The same bytes as
        protocol.refusal_frames with peek's id."""
        cdef const unsigned char* data = <const unsigned char*>PyBytes_AS_STRING(frames)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(frames), position = 0, length, start, body_bytes
        cdef uint64_t request_id
        cdef Out answers
        answers.data, answers.size, answers.capacity = NULL, 0, 0
        try:
            while position < size:
                length = read_length(data + position, size - position)
                if length < 0:
                    raise ValueError("refuse_frames: a frame runs past the end")
                request_id = 0
                if peek_body(data + position + 4, length, &request_id) < 0:
                    request_id = 0
                # 4 prefix bytes, then fixarray(3), uint id (<= 9 bytes), uint code (<= 5), nil.
                out_reserve(&answers, 4 + 1 + 9 + 5 + 1)
                start = answers.size
                answers.size += 4
                put_byte(&answers, 0x93)
                put_uint(&answers, request_id)
                put_uint(&answers, code)
                put_byte(&answers, 0xC0)
                body_bytes = answers.size - start - 4          # at most 16: one length byte
                answers.data[start], answers.data[start + 1], answers.data[start + 2] = 0, 0, 0
                answers.data[start + 3] = <unsigned char>body_bytes
                position += 4 + length
            return PyBytes_FromStringAndSize(<const char*>answers.data, answers.size)
        finally:
            free(answers.data)

    def run(self, participant_id, bytes body, int64_t now_ns):
        """One raw request body in, its whole response frame out (a bytes object)."""
        cdef Reader r
        cdef uint64_t request_id = 0, started_ns = monotonic_ns()
        cdef bint batch = False
        cdef Py_ssize_t count
        r.data, r.size, r.position = <const unsigned char*>PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body), 0
        count = read_request(&r, &request_id, self.items, &batch)
        if count < 0:
            return self._run_decoded(participant_id, body, now_ns, started_ns)
        self.fast_decodes += 1
        self._payloads = [None] * count
        self.stage_ns[STAGE_DECODE] += monotonic_ns() - started_ns
        self._execute(participant_id, count, now_ns)
        return self._frame(request_id, batch, count)

    def run_frames(self, participant_id, bytes frames, int64_t now_ns):
        """Every frame of `frames` (length-prefixed bodies back to back, as `cut` took them) run in
        order, as `run` would one by one: (their response frames back to back, {request-level code:
        frames}).  No Python object per frame unless one takes the slow decoder."""
        cdef const unsigned char* data = <const unsigned char*>PyBytes_AS_STRING(frames)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(frames), position = 0, length, count, same = 0
        cdef uint64_t request_id, started_ns, yielded_ns = monotonic_ns()
        cdef uint32_t code = 0, previous = 0
        cdef bint batch
        cdef Reader r
        cdef Out answers
        answers.data, answers.size, answers.capacity = NULL, 0, 0
        codes = {}
        try:
            while position < size:
                length = read_length(data + position, size - position)
                if length < 0:
                    raise ValueError("run_frames: a frame runs past the end")
                started_ns = monotonic_ns()
                if started_ns - yielded_ns > RUN_FRAMES_YIELD_NS:
                    # C holds the GIL without ever offering it: let the event loop and the storage
                    # writer (back from its fsync) in between two frames.
                    with nogil:
                        pass
                    yielded_ns = started_ns = monotonic_ns()
                r.data, r.size, r.position = data + position + 4, length, 0
                request_id, batch = 0, False
                count = read_request(&r, &request_id, self.items, &batch)
                if count < 0:
                    frame = self._run_decoded(participant_id, PyBytes_FromStringAndSize(<const char*>r.data, length),
                                              now_ns, started_ns)
                    out_append(&answers, <const unsigned char*>PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame))
                else:
                    self.fast_decodes += 1
                    self._payloads = _NO_PAYLOADS
                    self.stage_ns[STAGE_DECODE] += monotonic_ns() - started_ns
                    self._execute(participant_id, count, now_ns)
                    self._encode_frame(request_id, batch, count)
                    out_append(&answers, self._response.data, self._response.size)
                code = self.last_code
                if same and code != previous:
                    codes[previous] = codes.get(previous, 0) + same
                    same = 0
                previous = code
                same += 1
                position += 4 + length
            if same:
                codes[previous] = codes.get(previous, 0) + same
            return (PyBytes_FromStringAndSize(<const char*>answers.data, answers.size), codes)
        finally:
            free(answers.data)

    cdef object _run_decoded(self, participant_id, bytes body, int64_t now_ns, uint64_t started_ns):
        """The slow path's decoder decides a body the C reader does not take (errors included)."""
        from switch import protocol

        self.slow_decodes += 1
        request = protocol.decode_request(body)
        self.stage_ns[STAGE_DECODE] += monotonic_ns() - started_ns
        if request.error is not None or request.op not in (protocol.OP_PAY, protocol.OP_PAY_BATCH):
            code = request.error if request.error is not None else CODE_UNKNOWN_OPERATION
            self.last_code = code
            return protocol.pack_frame(protocol.response(request.request_id, code, None))
        items = [request.args] if request.op == protocol.OP_PAY else request.args
        count = self._load_items(items)
        self._execute(participant_id, count, now_ns)
        return self._frame(request.request_id, request.op == protocol.OP_PAY_BATCH, count)

    def pay(self, participant_id, items, int64_t now_ns):
        """Every payment of `items` (protocol.PayItem) in order; one (code, detail) each."""
        cdef Py_ssize_t count = self._load_items(items), index
        cdef PayC* item
        self._execute(participant_id, count, now_ns)
        answers = []
        for index in range(count):
            item = &self.items[index]
            if item.has_detail:
                merchant = &self.merchant_rows[item.merchant]
                detail = [item.answer_amount_minor, item.fee_minor, merchant.ledger, self._merchant_names[item.merchant]]
            else:
                detail = None
            answers.append((item.code, detail))
        return answers

    cdef Py_ssize_t _load_items(self, items) except -1:
        """Decoded PayItems into the C array; their text is kept alive for the call."""
        cdef Py_ssize_t index
        cdef PayC* item
        cdef bytes payload_bytes, device_bytes
        if len(items) > <Py_ssize_t>LIMIT_BATCH_FRAME_ITEMS_MAX:
            raise ValueError(f"at most {LIMIT_BATCH_FRAME_ITEMS_MAX} payments per call")
        self._payloads = [None] * len(items)
        kept = []
        for index, source in enumerate(items):
            item = &self.items[index]
            item.id_hi, item.id_lo = source.transfer_id >> 64, source.transfer_id & 0xFFFFFFFFFFFFFFFF
            item.payer_account_id, item.amount_minor = source.payer_account_id, source.amount_minor
            try:
                payload_bytes = source.qr_payload.encode("utf-8")
            except UnicodeEncodeError:
                payload_bytes = None
            if payload_bytes is None:
                item.qr, item.qr_bytes = NULL, -1      # QR_BAD_ENCODING, as parse_qr answers
            else:
                kept.append(payload_bytes)
                item.qr, item.qr_bytes = <const unsigned char*>PyBytes_AS_STRING(payload_bytes), len(payload_bytes)
            self._payloads[index] = source.qr_payload
            item.device, item.device_bytes = NULL, 0
            if source.device_id:
                device_bytes = source.device_id.encode("utf-8", "surrogatepass")
                kept.append(device_bytes)
                item.device, item.device_bytes = <const unsigned char*>PyBytes_AS_STRING(device_bytes), len(device_bytes)
        self._kept_items = kept
        return len(items)

    # ---- one call: the stages -------------------------------------------------------------

    cdef int _execute(self, participant_id, Py_ssize_t count, int64_t now_ns) except -1:
        cdef ParticipantC* participant = self._participant(participant_id)
        cdef uint64_t started_ns = monotonic_ns(), checked_ns
        cdef int64_t now_s = now_ns // <int64_t>NS_PER_SECOND
        cdef Py_ssize_t index
        cdef QrVerdict verdict
        cdef PartClock clock
        if self._rules is not None:
            self._refresh_rule_tables()
        for index in range(count):
            self._qr_stage(&self.items[index], now_s, &verdict)
        checked_ns = monotonic_ns()
        self.stage_ns[STAGE_QR] += checked_ns - started_ns
        self._audit.size = 0
        self._audit_count = 0
        for index in range(count):
            part_start(&clock, ((self.payments + index) & (PART_SAMPLE_INTERVAL_PAYMENTS - 1)) == 0)
            self._decide_post(participant, &self.items[index], index, now_ns, &clock)
            part_end(&clock, self.part_sampled_ns)
            if self.items[index].code < 1000:
                self.code_counts[self.items[index].code] += 1
        self._flush_audit()
        self.stage_ns[STAGE_DECIDE_POST] += monotonic_ns() - checked_ns
        self.payments += count
        self.calls += 1
        return 0

    cdef void _qr_stage(self, PayC* item, int64_t now_s, QrVerdict* verdict) noexcept:
        cdef QrCacheC* entry
        item.merchant = -1
        if item.qr == NULL:
            item.qr_code = CODE_QR_BAD_ENCODING
            return
        # A hit takes the digest stored with the same bytes: digest_u64 runs on a miss only.
        entry = &self.qr_cache[cache_slot_hash(item.qr, item.qr_bytes) & (QR_CACHE_SLOTS - 1)]
        if item.qr_bytes > 0 and entry.payload_bytes == item.qr_bytes \
                and memcmp(entry.payload, item.qr, item.qr_bytes) == 0:
            self.qr_cache_hits += 1
            item.qr_digest = entry.digest
            item.qr_code, item.dynamic, item.has_expiry, item.expiry_s = 0, False, False, 0
            item.has_amount, item.qr_amount_minor = entry.has_amount, entry.qr_amount_minor
            item.currency, item.merchant = entry.currency, entry.merchant
            return
        item.qr_digest = digest_u64(SEED_QR, item.qr, item.qr_bytes)
        item.qr_code = qr_validate(item.qr, item.qr_bytes, now_s, verdict)
        if item.qr_code != 0:
            return
        item.dynamic, item.has_amount, item.qr_amount_minor = verdict.dynamic, verdict.has_amount, verdict.amount_minor
        item.has_expiry, item.expiry_s, item.currency = verdict.has_expiry, verdict.expiry_s, verdict.currency
        item.merchant = self._resolve(item.qr, verdict)
        if not item.dynamic and not item.has_expiry and 0 < item.qr_bytes <= QR_CACHE_PAYLOAD_BYTES_MAX:
            # A static code without an expiry: the same bytes always get this verdict and merchant.
            entry.digest, entry.payload_bytes, entry.merchant = item.qr_digest, item.qr_bytes, item.merchant
            entry.has_amount, entry.qr_amount_minor, entry.currency = item.has_amount, item.qr_amount_minor, item.currency
            memcpy(entry.payload, item.qr, item.qr_bytes)

    cdef int _decide_post(self, ParticipantC* participant, PayC* item, Py_ssize_t index, int64_t now_ns,
                          PartClock* clock) except -1:
        """One payment, every step in order (core_ext/reference/pipeline.py, Pipeline.pay_one); `clock`
        is switched to the rules part and back around the rules' steps (the caller closes it)."""
        cdef const MerchantC* merchant
        cdef const AccountC* payer
        cdef const AccountC* payee
        cdef const TransferC* stored
        cdef PaymentCtx ctx
        cdef DecisionOut decision
        item.has_detail = False
        item.code = self._resolve_payment(participant, item, now_ns)
        if item.code:
            return 0
        merchant = &self.merchant_rows[item.merchant]
        payer = self.ledger.lookup_account_c(item.payer_account_id)
        payee = self.ledger.lookup_account_c(merchant.account_id)
        if payer == NULL or payee == NULL:
            item.code = CODE_DEBIT_ACCOUNT_NOT_FOUND if payer == NULL else CODE_CREDIT_ACCOUNT_NOT_FOUND
            return 0
        stored = self.ledger.lookup_transfer_c(item.id_lo, item.id_hi)
        if stored != NULL:
            # A retry: the ledger answers it; it is not decided again (the counters hold the first attempt).
            return self._post(participant, item, merchant, (stored.flags & FLAG_PENDING) != 0, now_ns)
        decision.action, decision.code, decision.fired_mask = ACTION_APPROVE, CODE_OK, 0
        decision.found.payer = decision.found.payee = decision.found.device = -1
        if self._rules is not None:
            part_switch(clock, PART_RULES)
            if self._fill_context(&ctx, item, merchant, payer, payee, now_ns):
                decision.action, decision.code = ACTION_DECLINE, CODE_RISK_CONTEXT_INVALID
            else:
                self._rules.evaluate_struct(&ctx, &decision)
            part_switch(clock, PART_POST)
        self._act_on(participant, item, index, merchant, &decision, now_ns)
        if self._rules is not None:
            part_switch(clock, PART_RULES)      # observe, the hold's report, audit
        if self._rules is not None and (item.code == CODE_OK or item.code == CODE_RISK_REVIEW):
            self._rules.observe_struct(&ctx, &decision)
        if item.code == CODE_RISK_REVIEW:
            self._hold(participant, item, decision.fired_mask, now_ns)
        if decision.fired_mask or decision.action != ACTION_APPROVE:
            self._write_audit(item, merchant, &decision, now_ns)
        return 0

    cdef uint32_t _resolve_payment(self, ParticipantC* participant, PayC* item, int64_t now_ns) except? 0xFFFFFFFF:
        """ids -> rate -> ownership -> QR -> merchant -> currency -> amount -> fee; 0 when all passed."""
        cdef const MerchantC* merchant
        cdef const LedgerC* entry
        if item.id_lo == 0 and item.id_hi == 0:
            return CODE_ID_MUST_NOT_BE_ZERO
        if item.id_lo == UINT64_MAX and item.id_hi == UINT64_MAX:
            return CODE_ID_MUST_NOT_BE_INT_MAX
        if participant == NULL:
            return CODE_ACCOUNT_NOT_OWNED
        if not self._take(participant, 1, now_ns):
            return CODE_RATE_LIMITED
        if not self._owns(participant, item.payer_account_id):
            return CODE_ACCOUNT_NOT_OWNED
        if item.qr_code:
            return item.qr_code
        if item.merchant < 0:
            return CODE_MERCHANT_NOT_REGISTERED
        merchant = &self.merchant_rows[item.merchant]
        if item.currency and merchant.ledger and <uint32_t>item.currency != merchant.ledger:
            return CODE_CURRENCY_MISMATCH
        if item.has_amount and item.qr_amount_minor:
            if item.amount_minor and item.amount_minor != <uint64_t>item.qr_amount_minor:
                return CODE_AMOUNT_MISMATCH
            item.answer_amount_minor = <uint64_t>item.qr_amount_minor
        elif not item.amount_minor:
            return CODE_PAYMENT_AMOUNT_INVALID
        else:
            item.answer_amount_minor = item.amount_minor
        entry = self._ledger_of(merchant.ledger)
        # Floor: the merchant never pays more than the stated rate.
        item.fee_minor = floor_scaled(item.answer_amount_minor, entry.fee_bps, 10000) if entry != NULL else 0
        return 0

    cdef bint _fill_context(self, PaymentCtx* ctx, const PayC* item, const MerchantC* merchant, const AccountC* payer,
                            const AccountC* payee, int64_t now_ns) noexcept:
        """The rules' view of the payment (docs/INTERNALS.md); True when a field is out of the
        rules' range (the same verdict as rules_types.context_problem)."""
        cdef const LedgerC* entry = self._ledger_of(merchant.ledger)
        cdef bint personal = payee.code == ACCOUNT_CODE_PERSONAL_RECEIVING_C
        cdef int64_t expires_ns = 0
        if payer.user_data_32 >= LIMIT_RULES_KYC_TIERS or payer.timestamp > <uint64_t>INT64_MAX \
                or merchant.ledger > 999 or now_ns < 0 or (personal and payee.user_data_32 >= LIMIT_RULES_KYC_TIERS):
            return True
        if item.has_expiry and item.expiry_s:
            if item.expiry_s < 0 or item.expiry_s > INT64_MAX // <int64_t>NS_PER_SECOND:
                return True
            expires_ns = item.expiry_s * <int64_t>NS_PER_SECOND
        if item.dynamic and not expires_ns:
            if now_ns > INT64_MAX - <int64_t>UNDATED_LIFETIME_NS:
                return True
            expires_ns = now_ns + <int64_t>UNDATED_LIFETIME_NS
        ctx.payer_account_id, ctx.payer_kyc_tier, ctx.payer_created_ns = payer.id, payer.user_data_32, payer.timestamp
        ctx.payer_balance_minor = available_minor(payer)
        ctx.merchant_account_id, ctx.merchant_mcc = merchant.account_id, merchant.mcc
        ctx.merchant_is_personal, ctx.merchant_country = personal, merchant.country
        ctx.payer_country = LEDGER_COUNTRY_C[payer.ledger] if payer.ledger < 1000 else 0
        ctx.device_id = digest_u64(SEED_DEVICE, item.device, item.device_bytes) if item.device_bytes > 0 else 0
        ctx.qr_digest = item.qr_digest
        ctx.qr_dynamic, ctx.amount_minor, ctx.currency = item.dynamic, item.answer_amount_minor, merchant.ledger
        ctx.amount_usd_minor = floor_scaled(item.answer_amount_minor, entry.usd_minor_per_million_minor,
                                            1000000) if entry != NULL else 0
        # The wallet holds a full-KYC payer's name and address; the switch holds the registered merchant's.
        ctx.originator_info_present, ctx.beneficiary_info_present = payer.user_data_32 >= 1, True
        ctx.now_ns, ctx.qr_merchant_account_id, ctx.qr_expires_ns = now_ns, merchant.account_id, expires_ns
        ctx.qr_amount_minor = <uint64_t>item.qr_amount_minor if item.has_amount else 0
        ctx.merchant_kyc_tier = payee.user_data_32 if personal else 0
        ctx.merchant_balance_minor = available_minor(payee) if personal else 0
        return self._fill_reference_rate(ctx, merchant.ledger, entry)

    cdef bint _fill_reference_rate(self, PaymentCtx* ctx, uint32_t ledger, const LedgerC* entry) noexcept:
        """The rule set's currency per payment currency, as the exact fraction of the two USD rates
        (core_ext/rules_types.py); True (the payment is declined RISK_CONTEXT_INVALID) when either
        rate is missing, so no amount rule ever compares unconverted money."""
        if self._reference_ledger == 0 or self._reference_ledger == ledger:
            ctx.reference_rate_numerator, ctx.reference_rate_denominator = 1, 1
            return False
        ctx.reference_rate_numerator = entry.usd_minor_per_million_minor if entry != NULL else 0
        ctx.reference_rate_denominator = self._reference_usd_minor_per_million_minor
        return ctx.reference_rate_numerator == 0 or ctx.reference_rate_denominator == 0

    cdef int _act_on(self, ParticipantC* participant, PayC* item, Py_ssize_t index, const MerchantC* merchant,
                     const DecisionOut* decision, int64_t now_ns) except -1:
        if decision.action == ACTION_DECLINE:
            item.code = decision.code
            return 0
        if decision.action == ACTION_REVIEW and self.review_slots_free <= 0:
            item.code = CODE_REVIEW_QUEUE_FULL      # before the QR guard: a dynamic code stays unused
            return 0
        if item.dynamic:
            item.code = self._guard(item, index, now_ns)
            if item.code:
                return 0
        self._post(participant, item, merchant, decision.action == ACTION_REVIEW, now_ns)
        if item.code == CODE_OK:
            item.code = decision.code
        return 0

    cdef uint32_t _guard(self, PayC* item, Py_ssize_t index, int64_t now_ns) except? 0xFFFFFFFF:
        """The directory's dynamic-QR guard (single use, expiry, bound amount): Python, dynamic codes only."""
        payload = self._payloads[index]
        if payload is None:
            payload = PyBytes_FromStringAndSize(<const char*>item.qr, item.qr_bytes).decode("utf-8")
        now_s = now_ns // <int64_t>NS_PER_SECOND
        qr = _qr_module.parse_qr(payload, now_s)
        return self.merchants.check_and_consume(qr, payload, item.answer_amount_minor, now_s)

    cdef int _post(self, ParticipantC* participant, PayC* item, const MerchantC* merchant, bint held,
                   int64_t now_ns) except -1:
        """Approved: payer->merchant linked to merchant->fee; held: payer->merchant pending with the review timeout."""
        cdef TransferC legs[2]
        cdef uint16_t results[2]
        cdef Py_ssize_t count = 1
        cdef const LedgerC* entry
        memset(legs, 0, sizeof(legs))
        legs[0].id_lo, legs[0].id_hi = item.id_lo, item.id_hi
        legs[0].debit_account_id, legs[0].credit_account_id = item.payer_account_id, merchant.account_id
        legs[0].amount, legs[0].ledger, legs[0].code = item.answer_amount_minor, merchant.ledger, TRANSFER_CODE_PAYMENT_C
        legs[0].flags = FLAG_PENDING if held else 0
        legs[0].timeout = self.review_timeout_seconds if held else 0
        legs[0].user_data_64, legs[0].user_data_32 = participant.id, merchant.mcc
        if item.fee_minor and not held:
            entry = self._ledger_of(merchant.ledger)
            legs[0].flags |= FLAG_LINKED
            fee_id_c(item.id_lo, item.id_hi, &legs[1].id_lo, &legs[1].id_hi)
            legs[1].debit_account_id, legs[1].credit_account_id = merchant.account_id, entry.fee_account_id
            legs[1].amount, legs[1].ledger, legs[1].code = item.fee_minor, merchant.ledger, TRANSFER_CODE_MERCHANT_FEE_C
            legs[1].user_data_64 = participant.id
            count = 2
        self.ledger.create_transfers_c(legs, results, count, <uint64_t>now_ns)
        item.code = payment_answer(results, count)
        item.has_detail = item.code == CODE_OK or item.code == CODE_EXISTS
        return 0

    cdef int _hold(self, ParticipantC* participant, const PayC* item, uint64_t fired_mask, int64_t now_ns) except -1:
        """A held payment, for the review queue (rare: Python objects are fine here)."""
        rules = self._rules.ruleset.rules if self._rules is not None else ()
        rule_ids = tuple(rule.id for bit, rule in enumerate(rules) if (fired_mask >> bit) & 1)
        self.review_slots_free -= 1
        self._holds.append((((<object>item.id_hi) << 64) | item.id_lo, now_ns, participant.id, rule_ids))
        return 0

    # ---- audit records ----------------------------------------------------------------------

    cdef int _write_audit(self, const PayC* item, const MerchantC* merchant, const DecisionOut* decision,
                          int64_t now_ns) except -1:
        """pipeline_types.encode_audit_record, into the call's audit buffer."""
        cdef Py_ssize_t size = AUDIT_HEADER_BYTES, start, index
        cdef uint64_t mask = decision.fired_mask
        cdef int fired = 0
        cdef unsigned char* at
        for index in range(RULES_CAPACITY):
            if (mask >> index) & 1:
                size += self._rule_audit[index].entry_bytes
                fired += 1
        out_reserve(&self._audit, size)
        at = self._audit.data + self._audit.size
        at[0], at[1] = <unsigned char>size, <unsigned char>(size >> 8)
        for index in range(8):
            at[2 + index] = <unsigned char>(item.id_hi >> (56 - 8 * index))
            at[10 + index] = <unsigned char>(item.id_lo >> (56 - 8 * index))
        put_u64_le(at + 18, item.payer_account_id)
        put_u64_le(at + 26, merchant.account_id)
        put_u64_le(at + 34, item.answer_amount_minor)
        for index in range(4):
            at[42 + index] = <unsigned char>(merchant.ledger >> (8 * index))
        put_u64_le(at + 46, <uint64_t>now_ns)
        at[54] = <unsigned char>decision.action
        at[55], at[56] = <unsigned char>item.code, <unsigned char>(item.code >> 8)
        memcpy(at + 57, self._ruleset_hash, 32)
        at[89] = <unsigned char>fired
        start = AUDIT_HEADER_BYTES
        for index in range(RULES_CAPACITY):
            if (mask >> index) & 1:
                memcpy(at + start, self._rule_audit[index].entry, self._rule_audit[index].entry_bytes)
                start += self._rule_audit[index].entry_bytes
        self._audit.size += size
        self._audit_count += 1
        return 0

    cdef int _flush_audit(self) except -1:
        if self._audit_count:
            self.audit.append_encoded(PyBytes_FromStringAndSize(<const char*>self._audit.data, self._audit.size),
                                      self._audit_count)
            self._audit.size = 0
            self._audit_count = 0
        return 0

    # ---- the response frame --------------------------------------------------------------------

    cdef bytes _frame(self, uint64_t request_id, bint batch, Py_ssize_t count):
        self._encode_frame(request_id, batch, count)
        return PyBytes_FromStringAndSize(<const char*>self._response.data, self._response.size)

    cdef int _encode_frame(self, uint64_t request_id, bint batch, Py_ssize_t count) except -1:
        """The response frame of the items just run, into self._response (from its start)."""
        cdef uint64_t started_ns = monotonic_ns()
        cdef Out* out = &self._response
        cdef Py_ssize_t index, body_bytes
        out.size = 0
        out_reserve(out, 32)
        out.size = 4
        put_byte(out, 0x93)
        put_uint(out, request_id)
        self.last_code = CODE_OK if batch else self.items[0].code
        if batch:
            put_byte(out, 0)
            put_array_header(out, count)
            for index in range(count):
                out_reserve(out, 1)
                put_byte(out, 0x92)
                self._put_answer(&self.items[index])
        else:
            self._put_answer(&self.items[0])
        body_bytes = out.size - 4
        out.data[0], out.data[1] = <unsigned char>(body_bytes >> 24), <unsigned char>(body_bytes >> 16)
        out.data[2], out.data[3] = <unsigned char>(body_bytes >> 8), <unsigned char>body_bytes
        self.stage_ns[STAGE_RESPOND] += monotonic_ns() - started_ns
        return 0

    cdef int _put_answer(self, const PayC* item) except -1:
        """code, then [amount_minor, fee_minor, ledger, merchant_name] or nil."""
        cdef const MerchantC* merchant
        out_reserve(&self._response, 40)
        put_uint(&self._response, item.code)
        if not item.has_detail:
            put_byte(&self._response, 0xC0)
            return 0
        merchant = &self.merchant_rows[item.merchant]
        put_byte(&self._response, 0x94)
        put_uint(&self._response, item.answer_amount_minor)
        put_uint(&self._response, item.fee_minor)
        put_uint(&self._response, merchant.ledger)
        out_reserve(&self._response, merchant.name_msgpack_bytes)
        memcpy(self._response.data + self._response.size, merchant.name_msgpack, merchant.name_msgpack_bytes)
        self._response.size += merchant.name_msgpack_bytes
        return 0


