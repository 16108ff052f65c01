# cython: boundscheck=False, wraparound=False, cdivision=True
"""QR payload validation, compiled: EMVCo MPM with national profiles, and UPI links.

The same steps in the same order as the reference twin core_ext/reference/qr.py
(read that one for the why of each rule); here they run on the UTF-8 bytes with
no Python object and without the GIL.  EMVCo lengths count characters, so a
value is stepped over character by character (the payload was checked to be
valid UTF-8 first, so a lead byte tells each character's size).
"""
cimport cython
from libc.stdint cimport int32_t, int64_t, uint16_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from core_ext import limits as _limits
from core_ext import qr_tables as _tables
from core_ext.qr_tables import QrResult
from urllib.parse import unquote as _unquote

include "codes.pxi"
include "limits.pxi"

# ---- profiles and schemes (indexes shared with qr_tables.PROFILES) -----------------
cdef enum:
    P_NONE = 0
    P_EMVCO = 1
    P_PROMPTPAY = 2
    P_PAYNOW = 3
    P_SGQR = 4
    P_DUITNOW = 5
    P_QRIS = 6
    P_QRPH = 7
    P_VIETQR = 8
    P_KHQR = 9
    P_PIX = 10
    P_BHARATQR = 11
    P_UPI = 12

cdef enum:
    S_PROMPTPAY = 1
    S_PROMPTPAY_BILLER = 2
    S_PAYNOW = 3
    S_SGQR = 4
    S_DUITNOW = 5
    S_QRIS = 6
    S_QRPH = 7
    S_VIETQR = 8
    S_KHQR = 9
    S_PIX = 10
    S_PIX_LOCATION = 11
    S_UPI = 12

SCHEME_NAMES = ("", "promptpay", "promptpay.biller", "paynow", "sgqr", "duitnow", "qris", "qrph",
                "vietqr", "khqr", "pix", "pix.location", "upi")

assert _tables.PROFILES[P_UPI] == "upi" and _tables.PROFILES[P_BHARATQR] == "bharatqr"
assert _tables.PROFILES[P_EMVCO] == "emvco" and _tables.PROFILES[P_PROMPTPAY] == "promptpay"
assert _limits.QR_MERCHANT_KEYS_MAX == QR_KEYS_CAPACITY

# ---- tables copied into C once, at import -------------------------------------------
cdef signed char CURRENCY_EXPONENT[1000]
memset(CURRENCY_EXPONENT, -1, sizeof(CURRENCY_EXPONENT))
for _code, _exponent in _tables.CURRENCY_EXPONENTS.items():
    CURRENCY_EXPONENT[_code] = _exponent

cdef uint16_t CRC_TABLE[256]
# CRC_PAIR_TABLE[i]: the register after byte i and then a zero byte.  CRC is linear, so two
# bytes step as CRC_PAIR_TABLE[x >> 8] ^ CRC_TABLE[x & 0xFF]: half the steps of the byte loop.
cdef uint16_t CRC_PAIR_TABLE[256]


cdef void _fill_crc_table() noexcept:
    cdef int byte, bit
    cdef uint16_t crc
    for byte in range(256):
        crc = <uint16_t>(byte << 8)
        for bit in range(8):
            crc = <uint16_t>(((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1))
        CRC_TABLE[byte] = crc
    for byte in range(256):
        CRC_PAIR_TABLE[byte] = <uint16_t>((CRC_TABLE[byte] << 8) ^ CRC_TABLE[CRC_TABLE[byte] >> 8])


_fill_crc_table()

# GUIDs, as C strings (the literals live for the module's lifetime).
cdef const char* G_PROMPTPAY = b"A000000677010111"
cdef const char* G_THAI_BILL = b"A000000677010112"
cdef const char* G_PAYNOW = b"SG.PAYNOW"
cdef const char* G_SGQR = b"SG.SGQR"
cdef const char* G_DUITNOW = b"A0000006150001"
cdef const char* G_QRIS = b"ID.CO.QRIS.WWW"
cdef const char* G_QRIS_LEGACY = b"ID.OR.GPNQR.WWW"
cdef const char* G_QRPH_P2P = b"com.p2pqrpay"
cdef const char* G_QRPH_P2M = b"ph.ppmi.p2m"
cdef const char* G_VIETQR = b"A000000727"
cdef const char* G_PIX = b"br.gov.bcb.pix"
cdef const char* G_PIX_LEGACY = b"br.gov.bcb.spi"
cdef const char* G_BHARAT = b"A000000524"
assert G_PROMPTPAY.decode() == _tables.GUID_PROMPTPAY and G_DUITNOW.decode() == _tables.GUID_DUITNOW
assert (G_PIX.decode(), G_PIX_LEGACY.decode()) == _tables.GUIDS_PIX_LOWER
assert (G_QRIS.decode(), G_QRIS_LEGACY.decode()) == _tables.GUIDS_QRIS


# ---- the scan state ---------------------------------------------------------------------
cdef struct Tlv:
    uint64_t seen[2]
    int32_t start[100]
    int32_t end[100]


cdef struct Ctx:
    const unsigned char* data
    int32_t size
    int64_t now_s
    QrVerdict* verdict
    Tlv root
    Tlv additional          # the objects of 62, for its payment-system templates 50-99
    Tlv scratch
    int32_t root_count      # the root's tags in ascending order, so loops visit only present ones
    unsigned char root_tags[100]
    int32_t profile
    int32_t exponent
    int32_t expiry_depth
    int32_t expiry_ids[2]
    bint ascii              # no multibyte character: a character is a byte
    signed char kind[52]    # profile_of_guid of each merchant account template 26-51


cdef extern from *:
    int __builtin_ctzll(unsigned long long) nogil


cdef void list_root_tags(Ctx* c) noexcept nogil:
    cdef int word
    cdef uint64_t bits
    c.root_count = 0
    for word in range(2):
        bits = c.root.seen[word]
        while bits:
            c.root_tags[c.root_count] = <unsigned char>(word * 64 + __builtin_ctzll(bits))
            c.root_count += 1
            bits &= bits - 1


# ---- small helpers --------------------------------------------------------------------------
cdef inline bint has(const Tlv* tlv, int tag) noexcept nogil:
    return (tlv.seen[tag >> 6] >> (tag & 63)) & 1


cdef inline bint is_digit(unsigned char byte) noexcept nogil:
    return 48 <= byte <= 57


cdef inline int lower(unsigned char byte) noexcept nogil:
    return byte + 32 if 65 <= byte <= 90 else byte


cdef inline int fail(Ctx* c, int code, int depth, int a, int b, int d) noexcept nogil:
    c.verdict.code = code
    c.verdict.tag_depth = depth
    c.verdict.tag_ids[0] = a
    c.verdict.tag_ids[1] = b
    c.verdict.tag_ids[2] = d
    return code


cdef inline int fail_text(Ctx* c, int code, int32_t start, int32_t length) noexcept nogil:
    c.verdict.code = code
    c.verdict.tag_depth = -1
    c.verdict.tag_text.start = start
    c.verdict.tag_text.length = length
    return code


cdef inline int char_size(unsigned char lead) noexcept nogil:
    if lead < 0x80:
        return 1
    if lead < 0xE0:
        return 2
    if lead < 0xF0:
        return 3
    return 4


cdef int32_t advance(const unsigned char* data, int32_t pos, int32_t end, int count) noexcept nogil:
    """The byte offset `count` characters after pos, or -1 when that passes end."""
    cdef int index
    for index in range(count):
        if pos >= end:
            return -1
        pos += char_size(data[pos])
    return pos if pos <= end else -1


cdef int32_t char_count(const unsigned char* data, int32_t start, int32_t end) noexcept nogil:
    cdef int32_t count = 0
    while start < end:
        start += char_size(data[start])
        count += 1
    return count


cdef inline int32_t chars(Ctx* c, int32_t start, int32_t end) noexcept nogil:
    return end - start if c.ascii else char_count(c.data, start, end)


cdef inline int32_t step(Ctx* c, int32_t pos, int32_t end, int count) noexcept nogil:
    """`count` characters after pos, or -1 past end: O(1) for an ASCII payload."""
    if c.ascii:
        return pos + count if pos + count <= end else -1
    return advance(c.data, pos, end, count)


cdef bint is_ascii(const unsigned char* data, int32_t size) noexcept nogil:
    """No byte with the high bit set; eight bytes at a time."""
    cdef int32_t pos = 0
    cdef uint64_t word
    while pos + 8 <= size:
        memcpy(&word, data + pos, 8)
        if word & 0x8080808080808080ULL:
            return False
        pos += 8
    while pos < size:
        if data[pos] & 0x80:
            return False
        pos += 1
    return True


cdef bint utf8_valid(const unsigned char* data, Py_ssize_t size) noexcept nogil:
    """Well-formed UTF-8 exactly as Python's strict decoder: no overlong forms, surrogates or > U+10FFFF.

    The one validator of the core: the QR parser and the pipeline's msgpack reader both call it."""
    cdef Py_ssize_t index = 0
    cdef unsigned char lead, second
    cdef int extra, step
    cdef uint64_t word
    while index < size:
        lead = data[index]
        if lead < 0x80:
            # QR payloads are mostly ASCII: step over eight such bytes at a time.
            if index + 8 <= size:
                memcpy(&word, data + index, 8)
                if word & 0x8080808080808080ULL == 0:
                    index += 8
                    continue
            index += 1
            continue
        if 0xC2 <= lead <= 0xDF:
            extra = 1
        elif 0xE0 <= lead <= 0xEF:
            extra = 2
        elif 0xF0 <= lead <= 0xF4:
            extra = 3
        else:
            return False
        if index + extra >= size:
            return False
        second = data[index + 1]
        if (lead == 0xE0 and second < 0xA0) or (lead == 0xED and second > 0x9F) \
                or (lead == 0xF0 and second < 0x90) or (lead == 0xF4 and second > 0x8F):
            return False
        for step in range(1, extra + 1):
            if data[index + step] & 0xC0 != 0x80:
                return False
        index += extra + 1
    return True


cdef inline bint span_is(Ctx* c, int32_t start, int32_t end, const char* text) noexcept nogil:
    cdef int32_t index = 0
    while text[index] != 0:
        if start + index >= end or c.data[start + index] != <unsigned char>text[index]:
            return False
        index += 1
    return start + index == end


cdef bint span_is_ci(Ctx* c, int32_t start, int32_t end, const char* text) noexcept nogil:
    """ASCII case-insensitive equality (`text` is lower case)."""
    cdef int32_t index = 0
    while text[index] != 0:
        if start + index >= end or lower(c.data[start + index]) != text[index]:
            return False
        index += 1
    return start + index == end


cdef bint span_digits(Ctx* c, int32_t start, int32_t end) noexcept nogil:
    if start >= end:
        return False
    while start < end:
        if not is_digit(c.data[start]):
            return False
        start += 1
    return True


cdef bint span_ans(Ctx* c, int32_t start, int32_t end) noexcept nogil:
    while start < end:
        if c.data[start] < 0x20 or c.data[start] > 0x7E:
            return False
        start += 1
    return True


cdef int64_t span_number(Ctx* c, int32_t start, int32_t end) noexcept nogil:
    cdef int64_t value = 0
    while start < end:
        value = value * 10 + (c.data[start] - 48)
        start += 1
    return value


cdef inline void set_span(QrSpan* span, int32_t start, int32_t end) noexcept nogil:
    span.start = start
    span.length = end - start


# ---- TLV ----------------------------------------------------------------------------------
cdef int scan(Ctx* c, int32_t start, int32_t end, int depth, int a, int b, bint root,
              Tlv* out) noexcept nogil:
    """Check the data objects of [start, end) and record them; `a`, `b` name the parent path."""
    cdef int32_t pos = start, value_end
    cdef int tag, length, count = 0
    out.seen[0] = 0
    out.seen[1] = 0
    while pos < end:
        if end - pos < 2 or not is_digit(c.data[pos]) or not is_digit(c.data[pos + 1]):
            return fail(c, CODE_QR_BAD_TLV_HEADER, depth, a, b, 0)
        tag = (c.data[pos] - 48) * 10 + (c.data[pos + 1] - 48)
        if end - pos < 4 or not is_digit(c.data[pos + 2]) or not is_digit(c.data[pos + 3]):
            return fail_path(c, CODE_QR_BAD_TLV_HEADER, depth, a, b, tag)
        length = (c.data[pos + 2] - 48) * 10 + (c.data[pos + 3] - 48)
        if length == 0:
            return fail_path(c, CODE_QR_ZERO_LENGTH, depth, a, b, tag)
        value_end = step(c, pos + 4, end, length)
        if value_end < 0:
            return fail_path(c, CODE_QR_LENGTH_OVERRUN, depth, a, b, tag)
        if root and count == 0 and tag != 0:
            return fail(c, CODE_QR_TAG_ORDER, 1, 0, 0, 0)
        if root and tag == 63:
            return fail(c, CODE_QR_TAG_ORDER, 1, 63, 0, 0)
        if has(out, tag):
            return fail_path(c, CODE_QR_DUPLICATE_TAG, depth, a, b, tag)
        out.seen[tag >> 6] |= (<uint64_t>1) << (tag & 63)
        out.start[tag] = pos + 4
        out.end[tag] = value_end
        count += 1
        pos = value_end
    return 0


cdef inline int fail_path(Ctx* c, int code, int depth, int a, int b, int tag) noexcept nogil:
    if depth == 0:
        return fail(c, code, 1, tag, 0, 0)
    if depth == 1:
        return fail(c, code, 2, a, tag, 0)
    return fail(c, code, 3, a, b, tag)


cdef bint next_object(Ctx* c, int32_t* pos, int32_t end, int* tag, int32_t* start,
                      int32_t* stop) noexcept nogil:
    """Step through an already checked template: the next object after *pos, if any."""
    if pos[0] >= end:
        return False
    tag[0] = (c.data[pos[0]] - 48) * 10 + (c.data[pos[0] + 1] - 48)
    start[0] = pos[0] + 4
    stop[0] = step(c, start[0], end,
                      (c.data[pos[0] + 2] - 48) * 10 + (c.data[pos[0] + 3] - 48))
    pos[0] = stop[0]
    return True


cdef bint find_in(Ctx* c, int32_t start, int32_t end, int wanted, int32_t* value_start,
                  int32_t* value_end) noexcept nogil:
    cdef int32_t pos = start
    cdef int tag
    while next_object(c, &pos, end, &tag, value_start, value_end):
        if tag == wanted:
            return True
    return False


cdef inline bint find_sub(Ctx* c, int tag, int sub, int32_t* value_start,
                          int32_t* value_end) noexcept nogil:
    """Sub-object `sub` of root template `tag` (both checked already)."""
    if not has(&c.root, tag):
        return False
    return find_in(c, c.root.start[tag], c.root.end[tag], sub, value_start, value_end)


cdef inline bint sub_is(Ctx* c, int tag, int sub, const char* text) noexcept nogil:
    cdef int32_t start, end
    return find_sub(c, tag, sub, &start, &end) and span_is(c, start, end, text)


cdef inline bint root_is(Ctx* c, int tag, const char* text) noexcept nogil:
    return has(&c.root, tag) and span_is(c, c.root.start[tag], c.root.end[tag], text)


cdef inline int32_t root_length(Ctx* c, int tag) noexcept nogil:
    return c.root.end[tag] - c.root.start[tag]


# ---- CRC -----------------------------------------------------------------------------------
cdef uint16_t crc16(const unsigned char* data, int32_t size) noexcept nogil:
    """CRC-16/CCITT-FALSE, two bytes per step (see CRC_PAIR_TABLE)."""
    cdef uint16_t crc = 0xFFFF, pair
    cdef int32_t index = 0
    while index + 2 <= size:
        pair = crc ^ <uint16_t>((data[index] << 8) | data[index + 1])
        crc = CRC_PAIR_TABLE[pair >> 8] ^ CRC_TABLE[pair & 0xFF]
        index += 2
    if index < size:
        crc = <uint16_t>((crc << 8) ^ CRC_TABLE[((crc >> 8) ^ data[index]) & 0xFF])
    return crc


cdef int hex_upper(unsigned char byte) noexcept nogil:
    if is_digit(byte):
        return byte - 48
    if 65 <= byte <= 70:
        return byte - 55
    return -1


cdef int check_crc(Ctx* c) noexcept nogil:
    cdef int32_t size = c.size
    cdef int index, nibble
    cdef uint16_t printed = 0
    if chars(c, 0, size) > <int64_t>LIMIT_QR_PAYLOAD_CHARS_MAX:
        return fail(c, CODE_QR_TOO_LONG, 0, 0, 0, 0)
    if size < 8 or memcmp(c.data + size - 8, b"6304", 4) != 0:
        return fail(c, CODE_QR_CRC_FORMAT, 1, 63, 0, 0)
    for index in range(size - 4, size):
        nibble = hex_upper(c.data[index])
        if nibble < 0:
            return fail(c, CODE_QR_CRC_FORMAT, 1, 63, 0, 0)
        printed = <uint16_t>((printed << 4) | nibble)
    if crc16(c.data, size - 4) != printed:
        return fail(c, CODE_QR_CRC_MISMATCH, 1, 63, 0, 0)
    return 0


# ---- structure and profile ------------------------------------------------------------
cdef int scan_structure(Ctx* c) noexcept nogil:
    cdef int slot, word
    cdef uint64_t bits
    cdef int rc, tag, sub
    cdef int32_t start, end
    rc = scan(c, 0, c.size - 8, 0, 0, 0, True, &c.root)
    if rc:
        return rc
    list_root_tags(c)
    if not has(&c.root, 0):
        return fail(c, CODE_QR_MISSING_TAG, 1, 0, 0, 0)
    for slot in range(c.root_count):
        tag = c.root_tags[slot]
        if tag < 26:
            continue
        if tag >= 52:
            break
        if has(&c.root, tag):
            rc = scan(c, c.root.start[tag], c.root.end[tag], 1, tag, 0, False, &c.scratch)
            if rc:
                return rc
    c.profile = detect_profile(c)
    c.verdict.profile = c.profile
    for slot in range(c.root_count):
        tag = c.root_tags[slot]
        if tag < 62:
            continue
        if tag >= 100:
            break
        if not has(&c.root, tag) or (tag != 62 and tag != 64 and tag < 80):
            continue
        if tag == 82 and c.profile == P_DUITNOW:
            continue
        rc = scan(c, c.root.start[tag], c.root.end[tag], 1, tag, 0, False,
                  &c.additional if tag == 62 else &c.scratch)
        if rc:
            return rc
    if c.profile == P_QRIS or not has(&c.root, 62):
        return 0
    # Payment-system templates 62.50-99 in ascending order: the set bits from 50 up.
    for word in range(2):
        bits = c.additional.seen[word] & (~((<uint64_t>1 << 50) - 1) if word == 0 else ~(<uint64_t>0))
        while bits:
            sub = word * 64 + __builtin_ctzll(bits)
            rc = scan(c, c.additional.start[sub], c.additional.end[sub], 2, 62, sub, False, &c.scratch)
            if rc:
                return rc
            bits &= bits - 1
    return 0


cdef int profile_of_guid(Ctx* c, int tag, int32_t start, int32_t end) noexcept nogil:
    cdef int32_t index
    if span_is(c, start, end, G_PROMPTPAY) or span_is(c, start, end, G_THAI_BILL):
        return P_PROMPTPAY
    if span_is(c, start, end, G_PAYNOW):
        return P_PAYNOW
    if span_is(c, start, end, G_SGQR):
        return P_SGQR
    if span_is(c, start, end, G_DUITNOW):
        return P_DUITNOW
    if span_is(c, start, end, G_QRIS) or span_is(c, start, end, G_QRIS_LEGACY):
        return P_QRIS
    if span_is(c, start, end, G_QRPH_P2P) or span_is(c, start, end, G_QRPH_P2M):
        return P_QRPH
    if span_is(c, start, end, G_VIETQR):
        return P_VIETQR
    if span_is_ci(c, start, end, G_PIX) or span_is_ci(c, start, end, G_PIX_LEGACY):
        return P_PIX
    if span_is(c, start, end, G_BHARAT):
        return P_BHARATQR
    if tag == 29 or tag == 30:
        for index in range(start, end):
            if c.data[index] == 64:   # '@': a Bakong account id where the GUID goes
                return P_KHQR
    return P_NONE


cdef inline int template_kind(Ctx* c, int tag) noexcept nogil:
    """The profile the GUID of template `tag` (26-51) selects; computed once by detect_profile."""
    return c.kind[tag]


cdef int guid_kind(Ctx* c, int tag) noexcept nogil:
    cdef int32_t start, end
    if not find_sub(c, tag, 0, &start, &end):
        return P_NONE
    return profile_of_guid(c, tag, start, end)


cdef int detect_profile(Ctx* c) noexcept nogil:
    cdef int slot
    cdef int tag, kind, found = P_NONE
    cdef bint sgqr = False
    for slot in range(c.root_count):
        tag = c.root_tags[slot]
        if tag < 26:
            continue
        if tag >= 52:
            break
        c.kind[tag] = P_NONE
        if not has(&c.root, tag):
            continue
        kind = guid_kind(c, tag)
        c.kind[tag] = kind
        if kind == P_SGQR:
            sgqr = True
        elif kind != P_NONE and found == P_NONE:
            found = kind
    if found == P_NONE and sgqr:
        found = P_SGQR
    if found == P_NONE and root_is(c, 58, b"ID") and has_qris_pan(c):
        found = P_QRIS
    if found == P_NONE and root_is(c, 58, b"IN") and (has(&c.root, 6) or has(&c.root, 7)
                                                     or has(&c.root, 8)):
        found = P_BHARATQR
    return found if found != P_NONE else P_EMVCO


cdef bint has_qris_pan(Ctx* c) noexcept nogil:
    cdef int slot
    cdef int tag
    cdef int32_t start, end
    for slot in range(c.root_count):
        tag = c.root_tags[slot]
        if tag < 26:
            continue
        if tag >= 46:
            break
        if find_sub(c, tag, 1, &start, &end) and span_digits(c, start, end) \
                and end - start >= _QRIS_PAN_CHARS_MIN and memcmp(c.data + start, b"936", 3) == 0:
            return True
    return False


cdef enum:
    _QRIS_PAN_CHARS_MIN = 15
assert _QRIS_PAN_CHARS_MIN == _tables.QRIS_PAN_CHARS_MIN and _tables.QRIS_PAN_PREFIX == "936"


# ---- root fields -------------------------------------------------------------------------
cdef int check_root_presence(Ctx* c) noexcept nogil:
    cdef int tag
    cdef bint name_optional = c.profile == P_PROMPTPAY or c.profile == P_VIETQR
    if not (root_is(c, 0, b"01") or (c.profile == P_DUITNOW and root_is(c, 0, b"02"))):
        return fail(c, CODE_QR_BAD_FORMAT_INDICATOR, 1, 0, 0, 0)
    if has(&c.root, 1) and not (root_is(c, 1, b"11") or root_is(c, 1, b"12")):
        return fail(c, CODE_QR_BAD_INITIATION_METHOD, 1, 1, 0, 0)
    if (c.root.seen[0] >> 2) & ((<uint64_t>1 << 50) - 1) == 0:
        return fail(c, CODE_QR_NO_MERCHANT_ACCOUNT, 0, 0, 0, 0)
    if c.profile == P_DUITNOW and not has(&c.root, 1):
        return fail(c, CODE_QR_MISSING_TAG, 1, 1, 0, 0)
    cdef int[5] mandatory = [52, 53, 58, 59, 60]
    for tag in mandatory:
        if name_optional and tag != 53 and tag != 58:
            continue
        if not has(&c.root, tag):
            return fail(c, CODE_QR_MISSING_TAG, 1, tag, 0, 0)
    return 0


cdef int check_guid_template(Ctx* c, int32_t start, int32_t end, int depth, int a,
                             int b) noexcept nogil:
    cdef int32_t guid_start, guid_end
    if not find_in(c, start, end, 0, &guid_start, &guid_end):
        return fail_path(c, CODE_QR_MISSING_TAG, depth, a, b, 0)
    if chars(c, guid_start, guid_end) > <int64_t>LIMIT_QR_GUID_CHARS_MAX \
            or not span_ans(c, guid_start, guid_end):
        return fail_path(c, CODE_QR_BAD_GUID, depth, a, b, 0)
    return 0


cdef int check_merchant_accounts(Ctx* c) noexcept nogil:
    cdef int slot
    cdef int tag, sub, rc
    cdef int32_t pos, start, end
    for slot in range(c.root_count):
        tag = c.root_tags[slot]
        if tag < 2:
            continue
        if tag >= 26:
            break
        if has(&c.root, tag) and not span_ans(c, c.root.start[tag], c.root.end[tag]):
            return fail(c, CODE_QR_NOT_ANS, 1, tag, 0, 0)
    for slot in range(c.root_count):
        tag = c.root_tags[slot]
        if tag < 26:
            continue
        if tag >= 52:
            break
        if not has(&c.root, tag):
            continue
        rc = check_guid_template(c, c.root.start[tag], c.root.end[tag], 1, tag, 0)
        if rc:
            return rc
        pos = c.root.start[tag]
        while next_object(c, &pos, c.root.end[tag], &sub, &start, &end):
            if sub != 0 and not span_ans(c, start, end):
                return fail(c, CODE_QR_NOT_ANS, 2, tag, sub, 0)
    return 0


cdef int amount_minor(Ctx* c, int32_t start, int32_t end, int exponent, int reject_code,
                      int tag, int64_t* out) noexcept nogil:
    """'98.73' at exponent 2 -> 9873, exactly; digits past the exponent must be zeros."""
    cdef int32_t index, dots = 0, digits = 0, fraction_index = 0
    cdef int64_t whole = 0, fraction = 0
    cdef bint in_fraction = False
    cdef unsigned char byte
    if chars(c, start, end) > <int64_t>LIMIT_QR_AMOUNT_CHARS_MAX:
        return fail(c, reject_code, 1, tag, 0, 0)
    for index in range(start, end):
        if c.data[index] == 46:
            dots += 1
            in_fraction = True
        elif is_digit(c.data[index]):
            digits += 1
        else:
            return fail(c, reject_code, 1, tag, 0, 0)
    if dots > 1 or digits == 0:
        return fail(c, reject_code, 1, tag, 0, 0)
    in_fraction = False
    for index in range(start, end):
        byte = c.data[index]
        if byte == 46:
            in_fraction = True
        elif not in_fraction:
            whole = whole * 10 + (byte - 48)
        elif fraction_index < exponent:
            fraction = fraction * 10 + (byte - 48)
            fraction_index += 1
        elif byte != 48:
            return fail(c, CODE_QR_AMOUNT_PRECISION if reject_code == CODE_QR_BAD_AMOUNT
                        else reject_code, 1, tag, 0, 0)
    while fraction_index < exponent:
        fraction *= 10
        fraction_index += 1
    # At most 13 digits times 10^4 (the largest exponent): far below 2^63.
    out[0] = whole * power_of_ten(exponent) + fraction
    if out[0] == 0:
        return fail(c, reject_code, 1, tag, 0, 0)
    return 0


cdef inline int64_t power_of_ten(int exponent) noexcept nogil:
    cdef int64_t value = 1
    while exponent > 0:
        value *= 10
        exponent -= 1
    return value


cdef int check_fields(Ctx* c) noexcept nogil:
    cdef int rc, code
    cdef int64_t minor
    if has(&c.root, 52) and not (root_length(c, 52) == 4
                                 and span_digits(c, c.root.start[52], c.root.end[52])):
        return fail(c, CODE_QR_BAD_MCC, 1, 52, 0, 0)
    if not (root_length(c, 53) == 3 and span_digits(c, c.root.start[53], c.root.end[53])):
        return fail(c, CODE_QR_BAD_CURRENCY, 1, 53, 0, 0)
    code = <int>span_number(c, c.root.start[53], c.root.end[53])
    if CURRENCY_EXPONENT[code] < 0:
        return fail(c, CODE_QR_UNKNOWN_CURRENCY, 1, 53, 0, 0)
    c.exponent = CURRENCY_EXPONENT[code]
    c.verdict.currency = code
    if has(&c.root, 54):
        rc = amount_minor(c, c.root.start[54], c.root.end[54], c.exponent, CODE_QR_BAD_AMOUNT, 54,
                          &minor)
        if rc:
            return rc
        c.verdict.has_amount = True
        c.verdict.amount_minor = minor
    rc = check_convenience_fee(c)
    if rc:
        return rc
    if not (root_length(c, 58) == 2 and 65 <= c.data[c.root.start[58]] <= 90
            and 65 <= c.data[c.root.start[58] + 1] <= 90):
        return fail(c, CODE_QR_BAD_COUNTRY, 1, 58, 0, 0)
    rc = check_root_ans(c, 59, LIMIT_QR_MERCHANT_NAME_CHARS_MAX)
    if rc == 0:
        rc = check_root_ans(c, 60, LIMIT_QR_MERCHANT_CITY_CHARS_MAX)
    if rc == 0:
        rc = check_root_ans(c, 61, LIMIT_QR_POSTAL_CODE_CHARS_MAX)
    return rc


cdef int check_ans_span(Ctx* c, int32_t start, int32_t end, int chars_max, int depth, int a,
                        int b) noexcept nogil:
    if chars(c, start, end) > chars_max:
        return fail(c, CODE_QR_FIELD_TOO_LONG, depth, a, b, 0)
    if not span_ans(c, start, end):
        return fail(c, CODE_QR_NOT_ANS, depth, a, b, 0)
    return 0


cdef inline int check_root_ans(Ctx* c, int tag, int chars_max) noexcept nogil:
    if not has(&c.root, tag):
        return 0
    return check_ans_span(c, c.root.start[tag], c.root.end[tag], chars_max, 1, tag, 0)


cdef int check_convenience_fee(Ctx* c) noexcept nogil:
    cdef int rc
    cdef int64_t minor
    cdef bint fixed_wanted = root_is(c, 55, b"02"), percentage_wanted = root_is(c, 55, b"03")
    if has(&c.root, 55) and not (root_is(c, 55, b"01") or fixed_wanted or percentage_wanted):
        return fail(c, CODE_QR_BAD_TIP_INDICATOR, 1, 55, 0, 0)
    if fixed_wanted and not has(&c.root, 56):
        return fail(c, CODE_QR_MISSING_TAG, 1, 56, 0, 0)
    if has(&c.root, 56):
        if not fixed_wanted:
            return fail(c, CODE_QR_BAD_CONVENIENCE_FEE, 1, 56, 0, 0)
        rc = amount_minor(c, c.root.start[56], c.root.end[56], c.exponent,
                          CODE_QR_BAD_CONVENIENCE_FEE, 56, &minor)
        if rc:
            return rc
    if percentage_wanted and not has(&c.root, 57):
        return fail(c, CODE_QR_MISSING_TAG, 1, 57, 0, 0)
    if has(&c.root, 57):
        if not percentage_wanted or chars(c, c.root.start[57], c.root.end[57]) \
                > <int64_t>LIMIT_QR_FEE_PERCENT_CHARS_MAX:
            return fail(c, CODE_QR_BAD_CONVENIENCE_FEE, 1, 57, 0, 0)
        rc = amount_minor(c, c.root.start[57], c.root.end[57], 2, CODE_QR_BAD_CONVENIENCE_FEE, 57,
                          &minor)
        if rc:
            return rc
        if minor >= 100 * 100:
            return fail(c, CODE_QR_BAD_CONVENIENCE_FEE, 1, 57, 0, 0)
    return 0


# ---- templates 62, 64, 80-99 ---------------------------------------------------------------
cdef int check_additional_data(Ctx* c) noexcept nogil:
    cdef int sub, rc = 0
    cdef int32_t pos, start, end
    if not has(&c.root, 62):
        return 0
    pos = c.root.start[62]
    while next_object(c, &pos, c.root.end[62], &sub, &start, &end):
        if 1 <= sub <= 8:
            rc = check_ans_span(c, start, end, LIMIT_QR_ADDITIONAL_DATA_CHARS_MAX, 2, 62, sub)
        elif sub == 9:
            if not consumer_data_request_ok(c, start, end):
                rc = fail(c, CODE_QR_BAD_FIELD_VALUE, 2, 62, 9, 0)
        elif sub == 10:
            rc = check_ans_span(c, start, end, LIMIT_QR_TAX_ID_CHARS_MAX, 2, 62, sub)
        elif sub == 11:
            if not (end - start == 3 and 48 <= c.data[start] <= 55 and 48 <= c.data[start + 1] <= 51
                    and 48 <= c.data[start + 2] <= 51):
                rc = fail(c, CODE_QR_BAD_FIELD_VALUE, 2, 62, 11, 0)
        elif sub >= 50 and c.profile != P_QRIS:
            rc = check_guid_template(c, start, end, 2, 62, sub)
        if rc:
            return rc
    return 0


cdef bint consumer_data_request_ok(Ctx* c, int32_t start, int32_t end) noexcept nogil:
    """62.09: any of A (address), M (mobile), E (email), each at most once."""
    cdef int seen = 0, bit
    cdef int32_t index
    if end - start > 3:
        return False
    for index in range(start, end):
        if c.data[index] == 65:
            bit = 1
        elif c.data[index] == 77:
            bit = 2
        elif c.data[index] == 69:
            bit = 4
        else:
            return False
        if seen & bit:
            return False
        seen |= bit
    return True


cdef int check_language_template(Ctx* c) noexcept nogil:
    cdef int32_t start, end
    cdef int index
    if not has(&c.root, 64):
        return 0
    if not find_sub(c, 64, 0, &start, &end):
        return fail(c, CODE_QR_MISSING_TAG, 2, 64, 0, 0)
    if end - start != 2:
        return fail(c, CODE_QR_BAD_FIELD_VALUE, 2, 64, 0, 0)
    for index in range(start, end):
        if not (65 <= lower(c.data[index]) - 32 <= 90):
            return fail(c, CODE_QR_BAD_FIELD_VALUE, 2, 64, 0, 0)
    if not find_sub(c, 64, 1, &start, &end):
        return fail(c, CODE_QR_MISSING_TAG, 2, 64, 1, 0)
    if chars(c, start, end) > <int64_t>LIMIT_QR_MERCHANT_NAME_CHARS_MAX:
        return fail(c, CODE_QR_FIELD_TOO_LONG, 2, 64, 1, 0)
    if find_sub(c, 64, 2, &start, &end) and \
            chars(c, start, end) > <int64_t>LIMIT_QR_MERCHANT_CITY_CHARS_MAX:
        return fail(c, CODE_QR_FIELD_TOO_LONG, 2, 64, 2, 0)
    return 0


cdef int check_unreserved_templates(Ctx* c) noexcept nogil:
    cdef int slot
    cdef int tag, rc
    for slot in range(c.root_count):
        tag = c.root_tags[slot]
        if tag < 80:
            continue
        if tag >= 100:
            break
        if not has(&c.root, tag):
            continue
        if tag == 82 and c.profile == P_DUITNOW:
            if not span_ans(c, c.root.start[82], c.root.end[82]):
                return fail(c, CODE_QR_NOT_ANS, 1, 82, 0, 0)
            continue
        rc = check_guid_template(c, c.root.start[tag], c.root.end[tag], 1, tag, 0)
        if rc:
            return rc
    return 0


# ---- national profile rules ------------------------------------------------------------------
cdef int check_currency_and_country(Ctx* c, int currency, int other_currency,
                                    const char* country) noexcept nogil:
    if c.verdict.currency != currency and c.verdict.currency != other_currency:
        return fail(c, CODE_QR_CURRENCY_NOT_ALLOWED, 1, 53, 0, 0)
    if not root_is(c, 58, country):
        return fail(c, CODE_QR_COUNTRY_NOT_ALLOWED, 1, 58, 0, 0)
    return 0


cdef int digits_of(Ctx* c, int tag, int sub, int count) noexcept nogil:
    cdef int32_t start, end
    if find_sub(c, tag, sub, &start, &end) and not (end - start == count
                                                   and span_digits(c, start, end)):
        return fail(c, CODE_QR_BAD_ACCOUNT, 2, tag, sub, 0)
    return 0


cdef int sub_too_long(Ctx* c, int tag, int sub, int chars_max) noexcept nogil:
    cdef int32_t start, end
    if find_sub(c, tag, sub, &start, &end) and chars(c, start, end) > chars_max:
        return fail(c, CODE_QR_FIELD_TOO_LONG, 2, tag, sub, 0)
    return 0


cdef inline bint sub_present(Ctx* c, int tag, int sub) noexcept nogil:
    cdef int32_t start, end
    return find_sub(c, tag, sub, &start, &end)


cdef int next_template(Ctx* c, int* slot, int kind) noexcept nogil:
    """The next merchant account template (26-51) of profile `kind` at or after root slot *slot,
    or 0 when there is none; advances *slot past it.  Root tags are held in ascending order, so
    the walk stops at the first tag past the templates."""
    cdef int tag
    while slot[0] < c.root_count:
        tag = c.root_tags[slot[0]]
        slot[0] += 1
        if tag >= 52:
            slot[0] = c.root_count
            return 0
        if tag >= 26 and has(&c.root, tag) and template_kind(c, tag) == kind:
            return tag
    return 0


cdef int rules_promptpay(Ctx* c) noexcept nogil:
    cdef int slot
    cdef int tag, rc
    rc = check_currency_and_country(c, 764, 764, b"TH")
    slot = 0
    tag = next_template(c, &slot, P_PROMPTPAY)
    while tag and not rc:
        if sub_is(c, tag, 0, G_PROMPTPAY):
            if not (sub_present(c, tag, 1) or sub_present(c, tag, 2) or sub_present(c, tag, 3)
                    or sub_present(c, tag, 4)):
                return fail(c, CODE_QR_MISSING_TAG, 2, tag, 1, 0)
            rc = digits_of(c, tag, 1, 13) or digits_of(c, tag, 2, 13) or digits_of(c, tag, 3, 15)
        else:
            if not sub_present(c, tag, 1):
                return fail(c, CODE_QR_MISSING_TAG, 2, tag, 1, 0)
            rc = digits_of(c, tag, 1, 15) or sub_too_long(c, tag, 2, 20) or sub_too_long(c, tag, 3, 20)
        tag = next_template(c, &slot, P_PROMPTPAY)
    return rc


cdef int rules_paynow(Ctx* c) noexcept nogil:
    cdef int slot
    cdef int tag, rc
    cdef int32_t start, end
    cdef bint editable_given, editable_yes
    rc = check_currency_and_country(c, 702, 702, b"SG")
    slot = 0
    tag = next_template(c, &slot, P_PAYNOW)
    while tag and not rc:
        if not (sub_is(c, tag, 1, b"0") or sub_is(c, tag, 1, b"2")):
            return fail(c, CODE_QR_BAD_ACCOUNT, 2, tag, 1, 0)
        if not sub_present(c, tag, 2):
            return fail(c, CODE_QR_MISSING_TAG, 2, tag, 2, 0)
        editable_given = sub_present(c, tag, 3)
        editable_yes = sub_is(c, tag, 3, b"1")
        if editable_given and not (editable_yes or sub_is(c, tag, 3, b"0")):
            return fail(c, CODE_QR_BAD_FIELD_VALUE, 2, tag, 3, 0)
        if not c.verdict.has_amount and not editable_yes:
            return fail(c, CODE_QR_PROFILE_RULE, 2, tag, 3, 0)
        if find_sub(c, tag, 4, &start, &end):
            rc = paynow_expiry(c, start, end, tag)
        tag = next_template(c, &slot, P_PAYNOW)
    return rc


cdef int64_t days_from_civil(int64_t year, int64_t month, int64_t day) noexcept nogil:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    cdef int64_t era, year_of_era, day_of_year, day_of_era
    year -= month <= 2
    era = (year if year >= 0 else year - 399) // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


cdef int days_in_month(int64_t year, int64_t month) noexcept nogil:
    if month == 2:
        return 29 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 28
    return 30 if month == 4 or month == 6 or month == 9 or month == 11 else 31


cdef int paynow_expiry(Ctx* c, int32_t start, int32_t end, int tag) noexcept nogil:
    """YYYYMMDD (good through that Singapore day) or YYYYMMDDHHMMSS (through that second)."""
    cdef int64_t year, month, day, hour = 0, minute = 0, second = 0, instant_s
    cdef int32_t length = end - start
    if not ((length == 8 or length == 14) and span_digits(c, start, end)):
        return fail(c, CODE_QR_BAD_EXPIRY, 2, tag, 4, 0)
    year = span_number(c, start, start + 4)
    month = span_number(c, start + 4, start + 6)
    day = span_number(c, start + 6, start + 8)
    if length == 14:
        hour = span_number(c, start + 8, start + 10)
        minute = span_number(c, start + 10, start + 12)
        second = span_number(c, start + 12, start + 14)
    if not (year >= 1 and 1 <= month <= 12 and 1 <= day <= days_in_month(year, month)
            and hour <= 23 and minute <= 59 and second <= 59):
        return fail(c, CODE_QR_BAD_EXPIRY, 2, tag, 4, 0)
    instant_s = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
    instant_s -= _PAYNOW_UTC_OFFSET_S
    c.verdict.has_expiry = True
    c.verdict.expiry_s = instant_s + (86400 if length == 8 else 1)
    c.expiry_depth = 2
    c.expiry_ids[0] = tag
    c.expiry_ids[1] = 4
    return 0


cdef enum:
    _PAYNOW_UTC_OFFSET_S = 8 * 3600
assert _PAYNOW_UTC_OFFSET_S == _tables.PAYNOW_UTC_OFFSET_S


cdef int rules_duitnow(Ctx* c) noexcept nogil:
    cdef int slot = 0
    cdef int tag
    cdef int32_t start, end
    cdef int rc = check_currency_and_country(c, 458, 458, b"MY") or rules_sub_required(c, P_DUITNOW, 2)
    tag = next_template(c, &slot, P_DUITNOW)
    while tag and not rc:
        if find_sub(c, tag, 3, &start, &end):
            rc = duitnow_expiry(c, start, end, tag)
        tag = next_template(c, &slot, P_DUITNOW)
    return rc


cdef int duitnow_expiry(Ctx* c, int32_t start, int32_t end, int tag) noexcept nogil:
    """Epoch milliseconds, at most qr_expiry_ms_digits_max digits; zero (all zeros: Maybank's
    static stickers write 0000000000) means the code does not expire."""
    cdef int64_t expiry_ms
    if not (end - start <= <int32_t>LIMIT_QR_EXPIRY_MS_DIGITS_MAX and span_digits(c, start, end)):
        return fail(c, CODE_QR_BAD_EXPIRY, 2, tag, 3, 0)
    expiry_ms = span_number(c, start, end)
    if expiry_ms:
        c.verdict.has_expiry = True
        c.verdict.expiry_s = (expiry_ms + 999) // 1000
        c.expiry_depth = 2
        c.expiry_ids[0] = tag
        c.expiry_ids[1] = 3
    return 0


cdef int rules_sub_required(Ctx* c, int kind, int sub) noexcept nogil:
    cdef int slot
    cdef int tag
    slot = 0
    tag = next_template(c, &slot, kind)
    while tag:
        if not sub_present(c, tag, sub):
            return fail(c, CODE_QR_MISSING_TAG, 2, tag, sub, 0)
        tag = next_template(c, &slot, kind)
    return 0


cdef int rules_vietqr(Ctx* c) noexcept nogil:
    cdef int slot
    cdef int tag, rc
    cdef int32_t start, end, bank_start, bank_end, account_start, account_end
    rc = check_currency_and_country(c, 704, 704, b"VN")
    slot = 0
    tag = next_template(c, &slot, P_VIETQR)
    while tag and not rc:
        if not find_sub(c, tag, 1, &start, &end):
            return fail(c, CODE_QR_MISSING_TAG, 2, tag, 1, 0)
        rc = scan(c, start, end, 2, tag, 1, False, &c.scratch)
        if rc:
            return rc
        if not (find_in(c, start, end, 0, &bank_start, &bank_end) and bank_end - bank_start == 6
                and span_digits(c, bank_start, bank_end)):
            return fail(c, CODE_QR_BAD_ACCOUNT, 3, tag, 1, 0)
        if not find_in(c, start, end, 1, &account_start, &account_end) or \
                chars(c, account_start, account_end) > 19:
            return fail(c, CODE_QR_BAD_ACCOUNT, 3, tag, 1, 1)
        if find_sub(c, tag, 2, &start, &end) and not (span_is(c, start, end, b"QRIBFTTA")
                                                       or span_is(c, start, end, b"QRIBFTTC")):
            return fail(c, CODE_QR_BAD_FIELD_VALUE, 2, tag, 2, 0)
        tag = next_template(c, &slot, P_VIETQR)
    return rc


cdef int rules_khqr(Ctx* c) noexcept nogil:
    cdef int slot
    cdef int tag, rc
    rc = check_currency_and_country(c, 116, 840, b"KH")
    slot = 0
    tag = next_template(c, &slot, P_KHQR)
    while tag and not rc:
        rc = sub_too_long(c, tag, 1, LIMIT_QR_GUID_CHARS_MAX) or \
            sub_too_long(c, tag, 2, LIMIT_QR_GUID_CHARS_MAX)
        tag = next_template(c, &slot, P_KHQR)
    if rc:
        return rc
    if has(&c.root, 15) and c.verdict.currency == 840:
        return fail(c, CODE_QR_PROFILE_RULE, 1, 15, 0, 0)
    if root_is(c, 1, b"12"):
        return khqr_dynamic(c)
    return 0


cdef int khqr_dynamic(Ctx* c) noexcept nogil:
    """A dynamic KHQR carries its amount and, in 99, its creation and expiry in ms."""
    cdef int sub
    cdef int32_t start, end
    if not c.verdict.has_amount:
        return fail(c, CODE_QR_MISSING_TAG, 1, 54, 0, 0)
    if not has(&c.root, 99):
        return fail(c, CODE_QR_MISSING_TAG, 1, 99, 0, 0)
    for sub in range(2):
        if not find_sub(c, 99, sub, &start, &end):
            return fail(c, CODE_QR_MISSING_TAG, 2, 99, sub, 0)
        if not (end - start == 13 and span_digits(c, start, end)):
            return fail(c, CODE_QR_BAD_EXPIRY, 2, 99, sub, 0)
    c.verdict.has_expiry = True
    c.verdict.expiry_s = (span_number(c, start, end) + 999) // 1000
    c.expiry_depth = 2
    c.expiry_ids[0] = 99
    c.expiry_ids[1] = 1
    return 0


cdef int rules_pix(Ctx* c) noexcept nogil:
    cdef int slot
    cdef int tag
    cdef int32_t start, end, index
    cdef int rc = check_currency_and_country(c, 986, 986, b"BR")
    slot = 0
    tag = next_template(c, &slot, P_PIX)
    while tag and not rc:
        if find_sub(c, tag, 25, &start, &end):
            for index in range(start, end - 2):
                if memcmp(c.data + index, b"://", 3) == 0:   # the location URL has no scheme
                    return fail(c, CODE_QR_PROFILE_RULE, 2, tag, 25, 0)
        tag = next_template(c, &slot, P_PIX)
    return rc


cdef int rules_bharatqr(Ctx* c) noexcept nogil:
    cdef int32_t start, end
    cdef int rc = check_currency_and_country(c, 356, 356, b"IN")
    if rc:
        return rc
    if has(&c.root, 26) and sub_is(c, 26, 0, G_BHARAT) and find_sub(c, 26, 1, &start, &end) \
            and not is_vpa(c.data, start, end):
        return fail(c, CODE_UPI_BAD_VPA, 2, 26, 1, 0)
    return 0


cdef int check_profile_rules(Ctx* c) noexcept nogil:
    cdef int profile = c.profile
    if profile == P_PROMPTPAY:
        return rules_promptpay(c)
    if profile == P_PAYNOW:
        return rules_paynow(c)
    if profile == P_SGQR:
        return check_currency_and_country(c, 702, 702, b"SG")
    if profile == P_DUITNOW:
        return rules_duitnow(c)
    if profile == P_QRIS:
        return check_currency_and_country(c, 360, 360, b"ID") or rules_sub_required(c, P_QRIS, 2)
    if profile == P_QRPH:
        return check_currency_and_country(c, 608, 608, b"PH") or rules_sub_required(c, P_QRPH, 1)
    if profile == P_VIETQR:
        return rules_vietqr(c)
    if profile == P_KHQR:
        return rules_khqr(c)
    if profile == P_PIX:
        return rules_pix(c)
    if profile == P_BHARATQR:
        return rules_bharatqr(c)
    return 0


# ---- merchant keys ---------------------------------------------------------------------------
cdef void add_key(Ctx* c, int scheme, int32_t scheme_start, int32_t scheme_end, int32_t start,
                  int32_t end, int32_t second_start, int32_t second_end) noexcept nogil:
    cdef QrKey* key
    if c.verdict.key_count >= QR_KEYS_CAPACITY:
        return
    key = &c.verdict.keys[c.verdict.key_count]
    key.scheme = scheme
    set_span(&key.scheme_text, scheme_start, scheme_end)
    set_span(&key.first, start, end)
    set_span(&key.second, second_start, second_end)
    if second_start < 0:
        key.second.length = -1
    c.verdict.key_count += 1


cdef bint national_key(Ctx* c, int tag) noexcept nogil:
    """Emit the national scheme's key for template `tag`, if it is one; True when emitted."""
    cdef int kind, sub
    cdef int32_t start, end, first_start, first_end, second_start, second_end
    if tag < 26 or not has(&c.root, tag):
        return False
    kind = template_kind(c, tag)
    if kind == P_PROMPTPAY and sub_is(c, tag, 0, G_PROMPTPAY):
        for sub in range(1, 5):
            if find_sub(c, tag, sub, &start, &end):
                add_key(c, S_PROMPTPAY, 0, 0, start, end, -1, -1)
                return True
    elif kind == P_PROMPTPAY and sub_is(c, tag, 0, G_THAI_BILL) and find_sub(c, tag, 1, &start, &end):
        add_key(c, S_PROMPTPAY_BILLER, 0, 0, start, end, -1, -1)
        return True
    elif (kind == P_PAYNOW or kind == P_DUITNOW) and find_sub(c, tag, 2, &start, &end):
        add_key(c, S_PAYNOW if kind == P_PAYNOW else S_DUITNOW, 0, 0, start, end, -1, -1)
        return True
    elif kind == P_SGQR and find_sub(c, tag, 1, &start, &end):
        add_key(c, S_SGQR, 0, 0, start, end, -1, -1)
        return True
    elif kind == P_QRIS and find_sub(c, tag, 2, &start, &end):
        add_key(c, S_QRIS, 0, 0, start, end, -1, -1)
        return True
    elif kind == P_QRPH and find_sub(c, tag, 1, &first_start, &first_end):
        for sub in range(3, 6):
            if find_sub(c, tag, sub, &start, &end):
                add_key(c, S_QRPH, 0, 0, first_start, first_end, start, end)
                return True
    elif kind == P_VIETQR and c.profile == P_VIETQR:
        if find_sub(c, tag, 1, &start, &end) and find_in(c, start, end, 0, &first_start, &first_end) \
                and find_in(c, start, end, 1, &second_start, &second_end):
            add_key(c, S_VIETQR, 0, 0, first_start, first_end, second_start, second_end)
            return True
    elif kind == P_KHQR and c.profile == P_KHQR and find_sub(c, tag, 0, &start, &end):
        add_key(c, S_KHQR, 0, 0, start, end, -1, -1)
        return True
    elif kind == P_PIX and find_sub(c, tag, 1, &start, &end):
        add_key(c, S_PIX, 0, 0, start, end, -1, -1)
        return True
    elif kind == P_PIX and find_sub(c, tag, 25, &start, &end):
        add_key(c, S_PIX_LOCATION, 0, 0, start, end, -1, -1)
        return True
    elif kind == P_BHARATQR and tag == 26 and find_sub(c, tag, 1, &start, &end):
        add_key(c, S_UPI, 0, 0, start, end, -1, -1)
        return True
    return False


cdef void generic_key(Ctx* c, int tag) noexcept nogil:
    cdef int sub, lowest = 100
    cdef int32_t pos, start, end, guid_start = 0, guid_end = 0, lowest_start = 0, lowest_end = 0
    if tag < 26:
        add_key(c, (QR_SCHEME_BHARAT_PRIMITIVE if c.profile == P_BHARATQR and 6 <= tag <= 8
                    else QR_SCHEME_PRIMITIVE) + tag, 0, 0, c.root.start[tag], c.root.end[tag], -1, -1)
        return
    pos = c.root.start[tag]
    while next_object(c, &pos, c.root.end[tag], &sub, &start, &end):
        if sub == 0:
            guid_start, guid_end = start, end
        elif sub < lowest:
            lowest, lowest_start, lowest_end = sub, start, end
    if lowest < 100:
        add_key(c, QR_SCHEME_FROM_TEXT, guid_start, guid_end, lowest_start, lowest_end, -1, -1)


cdef void merchant_keys(Ctx* c) noexcept nogil:
    cdef int slot
    """National keys first (the scheme this switch pays through), then every other account object."""
    cdef uint64_t national = 0
    cdef int tag
    for slot in range(c.root_count):
        tag = c.root_tags[slot]
        if tag < 2:
            continue
        if tag >= 52:
            break
        if national_key(c, tag):
            national |= (<uint64_t>1) << tag
    for slot in range(c.root_count):
        tag = c.root_tags[slot]
        if tag < 2:
            continue
        if tag >= 52:
            break
        if has(&c.root, tag) and not (national >> tag) & 1:
            generic_key(c, tag)


# ---- EMVCo: the whole sequence -----------------------------------------------------------
cdef int emv_validate(Ctx* c) noexcept nogil:
    cdef int rc
    c.profile = P_NONE
    c.expiry_depth = 0
    rc = check_crc(c)
    if rc == 0:
        rc = scan_structure(c)
    if rc == 0:
        rc = check_root_presence(c)
    if rc == 0:
        rc = check_merchant_accounts(c)
    if rc == 0:
        rc = check_fields(c)
    if rc == 0:
        rc = check_additional_data(c)
    if rc == 0:
        rc = check_language_template(c)
    if rc == 0:
        rc = check_unreserved_templates(c)
    if rc == 0:
        rc = check_profile_rules(c)
    if rc:
        return rc
    if c.verdict.has_expiry and c.now_s > 0 and c.now_s >= c.verdict.expiry_s:
        return fail(c, CODE_QR_EXPIRED, c.expiry_depth, c.expiry_ids[0], c.expiry_ids[1], 0)
    fill_emv_fields(c)
    return 0


cdef void fill_emv_fields(Ctx* c) noexcept nogil:
    cdef int32_t start, end
    c.verdict.dynamic = root_is(c, 1, b"12")
    set_root_span(c, &c.verdict.country, 58)
    set_root_span(c, &c.verdict.merchant_name, 59)
    set_root_span(c, &c.verdict.merchant_city, 60)
    set_root_span(c, &c.verdict.mcc, 52)
    if find_sub(c, 62, 5, &start, &end):
        set_span(&c.verdict.reference, start, end)
    merchant_keys(c)


cdef inline void set_root_span(Ctx* c, QrSpan* span, int tag) noexcept nogil:
    if has(&c.root, tag):
        set_span(span, c.root.start[tag], c.root.end[tag])


# ---- UPI links ---------------------------------------------------------------------------------
cdef bint is_vpa(const unsigned char* data, int32_t start, int32_t end) noexcept nogil:
    """handle@psp: [A-Za-z0-9.-_]+ '@' [A-Za-z][A-Za-z0-9.-]+ (SPEC_NOTES §7.3)."""
    cdef int32_t index = start, at
    cdef unsigned char byte
    if char_count(data, start, end) > <int64_t>LIMIT_UPI_VPA_CHARS_MAX:
        return False
    while index < end and (is_alnum(data[index]) or data[index] in b".-_"):
        index += 1
    if index == start or index >= end or data[index] != 64:
        return False
    at = index
    index += 1
    if index >= end or not is_alpha(data[index]):
        return False
    index += 1
    if index >= end:
        return False
    while index < end:
        byte = data[index]
        if not (is_alnum(byte) or byte == 46 or byte == 45):
            return False
        index += 1
    return at > start


cdef inline bint is_alpha(unsigned char byte) noexcept nogil:
    return 65 <= byte <= 90 or 97 <= byte <= 122


cdef inline bint is_alnum(unsigned char byte) noexcept nogil:
    return is_alpha(byte) or is_digit(byte)


cdef inline bint upi_raw_ok(unsigned char byte) noexcept nogil:
    """RFC 3986 query characters a UPI link may carry unescaped."""
    return is_alnum(byte) or (byte != 0 and byte in b"-._~!$&'()*+,;=:@/?%")


cdef int hex_any(unsigned char byte) noexcept nogil:
    if is_digit(byte):
        return byte - 48
    if 65 <= byte <= 70:
        return byte - 55
    if 97 <= byte <= 102:
        return byte - 87
    return -1


cdef int32_t percent_decode(const unsigned char* data, int32_t start, int32_t end,
                            unsigned char* out) noexcept nogil:
    """Decode %XX once into out; its length, or -1 for a broken escape or non-UTF-8 result."""
    cdef int32_t size = 0, index = start
    cdef int high, low
    while index < end:
        if data[index] == 37:
            if index + 2 >= end:
                return -1
            high = hex_any(data[index + 1])
            low = hex_any(data[index + 2])
            if high < 0 or low < 0:
                return -1
            out[size] = <unsigned char>(high * 16 + low)
            index += 3
        else:
            out[size] = data[index]
            index += 1
        size += 1
    return size if utf8_valid(out, size) else -1


cdef enum:
    LIMIT_UPI_PARAMS_MAX_ENUM = 64
assert _limits.UPI_PARAMS_MAX == LIMIT_UPI_PARAMS_MAX_ENUM


cdef struct UpiParams:
    int32_t count
    int32_t key_start[LIMIT_UPI_PARAMS_MAX_ENUM]
    int32_t key_end[LIMIT_UPI_PARAMS_MAX_ENUM]
    int32_t value_start[LIMIT_UPI_PARAMS_MAX_ENUM]
    int32_t value_end[LIMIT_UPI_PARAMS_MAX_ENUM]


cdef bint same_key(Ctx* c, UpiParams* params, int left, int right) noexcept nogil:
    cdef int32_t left_start = params.key_start[left], left_end = params.key_end[left]
    cdef int32_t right_start = params.key_start[right], right_end = params.key_end[right]
    if (span_is(c, left_start, left_end, b"orgId") or span_is(c, left_start, left_end, b"orgid")) \
            and (span_is(c, right_start, right_end, b"orgId") or span_is(c, right_start, right_end, b"orgid")):
        return True   # the one case variant seen in real codes
    return left_end - left_start == right_end - right_start and \
        memcmp(c.data + left_start, c.data + right_start, left_end - left_start) == 0


cdef int upi_split(Ctx* c, int32_t start, UpiParams* params, unsigned char* scratch) noexcept nogil:
    cdef int32_t index, part_start, part_end, equals
    cdef int count = 1, earlier
    for index in range(start, c.size):
        if not upi_raw_ok(c.data[index]):
            return fail(c, CODE_UPI_BAD_ENCODING, 0, 0, 0, 0)
    for index in range(start, c.size - 4):
        if memcmp(c.data + index, b"&amp;", 5) == 0:
            return fail_text(c, CODE_UPI_MALFORMED_QUERY, index, 5)
    for index in range(start, c.size):
        count += c.data[index] == 38
    if start == c.size:
        count = 0
    if count > <int64_t>LIMIT_UPI_PARAMS_MAX:
        return fail(c, CODE_UPI_TOO_MANY_PARAMS, 0, 0, 0, 0)
    params.count = 0
    part_start = start
    while params.count < count:
        part_end = part_start
        while part_end < c.size and c.data[part_end] != 38:
            part_end += 1
        equals = part_start
        while equals < part_end and c.data[equals] != 61:
            equals += 1
        if equals == part_start or equals == part_end:
            return fail_text(c, CODE_UPI_MALFORMED_QUERY, part_start, equals - part_start)
        params.key_start[params.count] = part_start
        params.key_end[params.count] = equals
        params.value_start[params.count] = equals + 1
        params.value_end[params.count] = part_end
        for earlier in range(params.count):
            if same_key(c, params, earlier, params.count):
                return fail_text(c, CODE_UPI_DUPLICATE_KEY, part_start, equals - part_start)
        if percent_decode(c.data, equals + 1, part_end, scratch) < 0:
            return fail_text(c, CODE_UPI_BAD_ENCODING, part_start, equals - part_start)
        params.count += 1
        part_start = part_end + 1
    return 0


cdef int upi_find(Ctx* c, UpiParams* params, const char* key) noexcept nogil:
    """The index of a non-empty parameter `key`, or -1 (an empty value counts as absent)."""
    cdef int index
    for index in range(params.count):
        if params.value_end[index] > params.value_start[index] and \
                span_is(c, params.key_start[index], params.key_end[index], key):
            return index
    return -1


cdef int upi_amount(Ctx* c, const unsigned char* value, int32_t size, int64_t* out) noexcept nogil:
    """A positive decimal with at most two decimals and 13 characters -> paise; -1 when not."""
    cdef int32_t index = 0, fraction_digits = 0
    cdef int64_t whole = 0, fraction = 0
    if char_count(value, 0, size) > <int64_t>LIMIT_QR_AMOUNT_CHARS_MAX:
        return -1
    while index < size and is_digit(value[index]):
        whole = whole * 10 + (value[index] - 48)
        index += 1
    if index == 0:
        return -1
    if index < size:
        if value[index] != 46:
            return -1
        index += 1
        while index < size:
            if not is_digit(value[index]) or fraction_digits == 2:
                return -1
            fraction = fraction * 10 + (value[index] - 48)
            fraction_digits += 1
            index += 1
    while fraction_digits < 2:
        fraction *= 10
        fraction_digits += 1
    out[0] = whole * 100 + fraction
    return 0 if out[0] > 0 else -1


cdef int upi_validate(Ctx* c) noexcept nogil:
    cdef UpiParams params
    cdef unsigned char scratch[LIMIT_QR_PAYLOAD_BYTES_MAX_ENUM]
    cdef int rc, index, pa, mam
    cdef int32_t size
    cdef int64_t minor
    c.verdict.profile = P_UPI
    if c.size < 10 or not span_is_ci(c, 0, 10, b"upi://pay?"):
        return fail(c, CODE_UPI_BAD_SCHEME, 0, 0, 0, 0)
    rc = upi_split(c, 10, &params, scratch)
    if rc:
        return rc
    pa = upi_find(c, &params, b"pa")
    if pa < 0:
        return fail_key(c, CODE_UPI_MISSING_PARAM, K_PA)
    size = percent_decode(c.data, params.value_start[pa], params.value_end[pa], scratch)
    if not is_vpa(scratch, 0, size):
        return fail_key(c, CODE_UPI_BAD_VPA, K_PA)
    if upi_find(c, &params, b"pn") < 0:
        return fail_key(c, CODE_UPI_MISSING_PARAM, K_PN)
    index = upi_find(c, &params, b"am")
    if index >= 0:
        size = percent_decode(c.data, params.value_start[index], params.value_end[index], scratch)
        if upi_amount(c, scratch, size, &minor) < 0:
            return fail_key(c, CODE_UPI_BAD_AMOUNT, K_AM)
        c.verdict.has_amount = True
        c.verdict.amount_minor = minor
    mam = upi_find(c, &params, b"mam")
    if mam >= 0:
        size = percent_decode(c.data, params.value_start[mam], params.value_end[mam], scratch)
        if not (size == 4 and memcmp(scratch, b"null", 4) == 0) and upi_amount(c, scratch, size, &minor) < 0:
            return fail_key(c, CODE_UPI_BAD_AMOUNT, K_MAM)
    return upi_validate_rest(c, &params, scratch)


cdef int upi_validate_rest(Ctx* c, UpiParams* params, unsigned char* scratch) noexcept nogil:
    cdef int index, rc
    cdef int32_t size
    index = upi_find(c, params, b"cu")
    if index >= 0:
        size = percent_decode(c.data, params.value_start[index], params.value_end[index], scratch)
        if not (size == 3 and memcmp(scratch, b"INR", 3) == 0):
            return fail_key(c, CODE_UPI_BAD_CURRENCY, K_CU)
    index = upi_find(c, params, b"mc")
    if index >= 0:
        size = percent_decode(c.data, params.value_start[index], params.value_end[index], scratch)
        if not (size == 4 and is_digit(scratch[0]) and is_digit(scratch[1]) and is_digit(scratch[2])
                and is_digit(scratch[3])):
            return fail_key(c, CODE_UPI_BAD_MCC, K_MC)
        set_span(&c.verdict.mcc, params.value_start[index], params.value_end[index])
    index = upi_find(c, params, b"url")
    if index >= 0:
        size = percent_decode(c.data, params.value_start[index], params.value_end[index], scratch)
        if not (starts_with_ci(scratch, size, b"http://") or starts_with_ci(scratch, size, b"https://")):
            return fail_key(c, CODE_UPI_BAD_URL, K_URL)
    index = upi_find(c, params, b"mode")
    if index >= 0:
        size = percent_decode(c.data, params.value_start[index], params.value_end[index], scratch)
        c.verdict.dynamic = size == 2 and scratch[0] == 49 and scratch[1] == 53
    # A merchant link carries the acquirer's merchant id; merchant and dynamic links need tr.
    if (upi_find(c, params, b"mid") >= 0 or c.verdict.dynamic) and upi_find(c, params, b"tr") < 0:
        return fail_key(c, CODE_UPI_MISSING_PARAM, K_TR)
    rc = upi_expiry(c, params, scratch)
    if rc:
        return rc
    fill_upi_fields(c, params)
    return 0


cdef int upi_expiry(Ctx* c, UpiParams* params, unsigned char* scratch) noexcept nogil:
    """QRexpire: the verdict's expiry; QR_BAD_EXPIRY when malformed, QR_EXPIRED once past (with a clock)."""
    cdef int index = upi_find(c, params, b"QRexpire")
    cdef int32_t size
    cdef int64_t expiry_s
    if index < 0:
        return 0
    size = percent_decode(c.data, params.value_start[index], params.value_end[index], scratch)
    if not upi_expiry_s(scratch, size, &expiry_s):
        return fail_key(c, CODE_QR_BAD_EXPIRY, K_QREXPIRE)
    c.verdict.has_expiry = True
    c.verdict.expiry_s = expiry_s
    if c.now_s > 0 and c.now_s >= expiry_s:
        return fail_key(c, CODE_QR_EXPIRED, K_QREXPIRE)
    return 0


cdef bint upi_expiry_s(const unsigned char* value, int32_t size, int64_t* expiry_s) noexcept nogil:
    """QRexpire, ISO 8601 to the second: YYYY-MM-DDTHH:MM:SS, then Z, +HH:MM or -HH:MM, or nothing
    for Indian time; good through that second, so *expiry_s is the next one.  False when malformed."""
    cdef int64_t year, month, day, hour, minute, second, offset_s
    if not (size == 19 or size == 20 or size == 25) or value[4] != 45 or value[7] != 45 or value[10] != 84 \
            or value[13] != 58 or value[16] != 58:
        return False
    offset_s = utc_offset_s(value + 19, size - 19)
    year, month, day = digits_at(value, 0, 4), digits_at(value, 5, 2), digits_at(value, 8, 2)
    hour, minute, second = digits_at(value, 11, 2), digits_at(value, 14, 2), digits_at(value, 17, 2)
    if offset_s == NO_UTC_OFFSET or not (year >= 1 and 1 <= month <= 12 and 1 <= day <= days_in_month(year, month)
                                         and 0 <= hour <= 23 and 0 <= minute <= 59 and 0 <= second <= 59):
        return False
    expiry_s[0] = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset_s + 1
    return True


cdef enum:
    NO_UTC_OFFSET = 1 << 30         # utc_offset_s: the text is not an offset
    _UPI_UTC_OFFSET_S = 5 * 3600 + 30 * 60
assert _UPI_UTC_OFFSET_S == _tables.UPI_UTC_OFFSET_S


cdef int64_t utc_offset_s(const unsigned char* text, int32_t size) noexcept nogil:
    """"" (Indian time), "Z", or +HH:MM / -HH:MM up to 14:00, in seconds east; NO_UTC_OFFSET otherwise."""
    cdef int64_t hours, minutes
    if size == 0:
        return _UPI_UTC_OFFSET_S
    if size == 1 and text[0] == 90:
        return 0
    if size != 6 or not (text[0] == 43 or text[0] == 45) or text[3] != 58:
        return NO_UTC_OFFSET
    hours, minutes = digits_at(text, 1, 2), digits_at(text, 4, 2)
    if hours < 0 or minutes < 0 or hours > 14 or minutes > 59 or (hours == 14 and minutes):
        return NO_UTC_OFFSET
    return (hours * 3600 + minutes * 60) * (1 if text[0] == 43 else -1)


cdef int64_t digits_at(const unsigned char* value, int32_t start, int32_t count) noexcept nogil:
    """The decimal number value[start:start + count], or -1 when a byte is not a digit."""
    cdef int64_t number = 0
    cdef int32_t index
    for index in range(start, start + count):
        if not is_digit(value[index]):
            return -1
        number = number * 10 + (value[index] - 48)
    return number


cdef void fill_upi_fields(Ctx* c, UpiParams* params) noexcept nogil:
    cdef int index = upi_find(c, params, b"pa")
    c.verdict.currency = 356
    add_key(c, S_UPI, 0, 0, params.value_start[index], params.value_end[index], -1, -1)
    index = upi_find(c, params, b"pn")
    set_span(&c.verdict.merchant_name, params.value_start[index], params.value_end[index])
    index = upi_find(c, params, b"tr")
    if index >= 0:
        set_span(&c.verdict.reference, params.value_start[index], params.value_end[index])


cdef bint starts_with_ci(const unsigned char* value, int32_t size, const char* prefix) noexcept nogil:
    cdef int32_t index = 0
    while prefix[index] != 0:
        if index >= size or lower(value[index]) != prefix[index]:
            return False
        index += 1
    return True


cdef int fail_key(Ctx* c, int code, int key) noexcept nogil:
    """A UPI rejection naming a key that may be absent from the link: tag_ids[0] indexes UPI_KEY_NAMES."""
    c.verdict.code = code
    c.verdict.tag_depth = -2
    c.verdict.tag_ids[0] = key
    return code


cdef enum:
    LIMIT_QR_PAYLOAD_BYTES_MAX_ENUM = 2048
assert _limits.QR_PAYLOAD_BYTES_MAX == LIMIT_QR_PAYLOAD_BYTES_MAX_ENUM

cdef enum:
    K_PA = 0
    K_PN = 1
    K_AM = 2
    K_MAM = 3
    K_CU = 4
    K_MC = 5
    K_URL = 6
    K_TR = 7
    K_QREXPIRE = 8
UPI_KEY_NAMES = ("pa", "pn", "am", "mam", "cu", "mc", "url", "tr", "QRexpire")


# ---- entry points -----------------------------------------------------------------------------
cdef int qr_validate(const unsigned char* data, Py_ssize_t size, int64_t now_s,
                     QrVerdict* verdict) noexcept nogil:
    cdef Ctx c
    memset(verdict, 0, sizeof(QrVerdict))
    verdict.country.length = -1
    verdict.merchant_name.length = -1
    verdict.merchant_city.length = -1
    verdict.mcc.length = -1
    verdict.reference.length = -1
    c.verdict = verdict
    c.data = data
    c.now_s = now_s
    if size == 0:
        return fail(&c, CODE_QR_EMPTY, 0, 0, 0, 0)
    if size > <int64_t>LIMIT_QR_PAYLOAD_BYTES_MAX:
        return fail(&c, CODE_QR_TOO_LONG, 0, 0, 0, 0)
    c.size = <int32_t>size
    c.ascii = is_ascii(data, c.size)
    if not c.ascii and not utf8_valid(data, c.size):
        return fail(&c, CODE_QR_BAD_ENCODING, 0, 0, 0, 0)
    if size >= 4 and lower(data[0]) == 117 and lower(data[1]) == 112 and lower(data[2]) == 105 \
            and data[3] == 58:
        return upi_validate(&c)
    return emv_validate(&c)


# ---- Python API ---------------------------------------------------------------------------------
def validate_qr(payload_utf8, long long now_s=0) -> int:
    """The verdict code only (0 = OK): no result object, the hot path and the benchmark."""
    cdef QrVerdict verdict
    cdef const unsigned char* data
    cdef Py_ssize_t size
    if type(payload_utf8) is not bytes:
        payload_utf8 = bytes(payload_utf8)
    data = <const unsigned char*>(<bytes>payload_utf8)
    size = len(<bytes>payload_utf8)
    with nogil:
        qr_validate(data, size, now_s, &verdict)
    return verdict.code


def parse_qr(str payload, long long now_s=0):
    """The full result (core_ext.qr_tables.QrResult); `now_s` > 0 checks the expiry against that time."""
    cdef QrVerdict verdict
    cdef bytes data
    try:
        data = payload.encode("utf-8")
    except UnicodeEncodeError:
        return QrResult(False, CODE_QR_BAD_ENCODING)
    qr_validate(<const unsigned char*>data, len(data), now_s, &verdict)
    return _result(data, &verdict)


cdef str _text(bytes data, QrSpan span, bint percent_encoded):
    if span.length < 0:
        return ""
    text = data[span.start:span.start + span.length].decode("utf-8")
    return _unquote(text, errors="strict") if percent_encoded else text


cdef str _tag(bytes data, QrVerdict* verdict):
    if verdict.tag_depth == -1:
        return _text(data, verdict.tag_text, False)
    if verdict.tag_depth == -2:
        return UPI_KEY_NAMES[verdict.tag_ids[0]]
    return ".".join(f"{verdict.tag_ids[index]:02d}" for index in range(verdict.tag_depth))


cdef tuple _keys(bytes data, QrVerdict* verdict):
    cdef int index
    cdef QrKey* key
    cdef bint upi = verdict.profile == P_UPI
    keys = []
    for index in range(verdict.key_count):
        key = &verdict.keys[index]
        if key.scheme == QR_SCHEME_FROM_TEXT:
            scheme = _text(data, key.scheme_text, False)
        elif key.scheme >= QR_SCHEME_BHARAT_PRIMITIVE:
            scheme = _tables.BHARAT_PRIMITIVE_SCHEMES[key.scheme - QR_SCHEME_BHARAT_PRIMITIVE]
        elif key.scheme >= QR_SCHEME_PRIMITIVE:
            scheme = _tables.PRIMITIVE_SCHEMES[key.scheme - QR_SCHEME_PRIMITIVE]
        else:
            scheme = SCHEME_NAMES[key.scheme]
        identifier = _text(data, key.first, upi)
        if key.second.length >= 0:
            identifier = f"{identifier}:{_text(data, key.second, False)}"
        keys.append((scheme, identifier))
    return tuple(keys)


cdef object _result(bytes data, QrVerdict* verdict):
    profile = _tables.PROFILES[verdict.profile]
    if verdict.code != 0:
        return QrResult(False, verdict.code, _tag(data, verdict), profile)
    upi = verdict.profile == P_UPI
    return QrResult(
        valid=True, code=0, tag="", profile=profile, dynamic=bool(verdict.dynamic),
        merchant_keys=_keys(data, verdict),
        amount_minor=verdict.amount_minor if verdict.has_amount else None,
        currency=verdict.currency,
        country="IN" if upi else _text(data, verdict.country, False),
        merchant_name=_text(data, verdict.merchant_name, upi),
        merchant_city=_text(data, verdict.merchant_city, upi),
        mcc=_text(data, verdict.mcc, upi),
        reference=_text(data, verdict.reference, upi),
        expiry_s=verdict.expiry_s if verdict.has_expiry else None,
    )


def validate_repeat(bytes payload_utf8, long count, long long now_s=0) -> int:
    """Benchmark hook: validate the same payload `count` times in a C loop, without the GIL.

    Measures qr_validate itself, as the compiled pipeline calls it (no Python call per payload).
    """
    cdef QrVerdict verdict
    cdef const unsigned char* data = payload_utf8
    cdef Py_ssize_t size = len(payload_utf8)
    cdef long index
    cdef int code = 0
    with nogil:
        for index in range(count):
            code = qr_validate(data, size, now_s, &verdict)
    return code
