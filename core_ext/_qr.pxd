# The compiled QR validator's C view, for the compiled payment pipeline:
#
#     from core_ext._qr cimport QrVerdict, qr_validate
#     cdef QrVerdict verdict
#     code = qr_validate(data, size, now_s, &verdict)     # no GIL, no Python object
#
# Text fields are spans into the caller's payload bytes (which must outlive the
# verdict); for a UPI link they are still %-encoded.  core_ext/_qr.pyx turns a
# verdict into a core_ext.qr_tables.QrResult for Python callers.
from libc.stdint cimport int32_t, int64_t


cdef enum:
    # Merchant keys a verdict holds; equal to limits.QR_MERCHANT_KEYS_MAX (checked at import).
    QR_KEYS_CAPACITY = 8
    # QrKey.scheme: the scheme is the GUID in scheme_text ...
    QR_SCHEME_FROM_TEXT = 0
    # ... or 100 + tag for a primitive merchant account 02-25, 200 + tag in Bharat QR
    # (RuPay, IFSC); smaller numbers index _qr.SCHEME_NAMES.
    QR_SCHEME_PRIMITIVE = 100
    QR_SCHEME_BHARAT_PRIMITIVE = 200


cdef struct QrSpan:
    int32_t start           # byte offset into the payload
    int32_t length          # bytes; -1 when the field is absent


cdef struct QrKey:
    int32_t scheme
    QrSpan scheme_text
    QrSpan first            # the merchant identifier ...
    QrSpan second           # ... or first + ":" + second when present


cdef struct QrVerdict:
    int32_t code            # core_ext.codes value; 0 = valid
    int32_t profile         # index into core_ext.qr_tables.PROFILES (0: not known yet)
    int32_t tag_depth       # 1-3: the EMVCo tag path tag_ids[:depth]; 0: none;
                            # -1: the UPI key in tag_text; -2: UPI key number tag_ids[0] (_qr.UPI_KEY_NAMES)
    int32_t tag_ids[3]
    QrSpan tag_text         # the UPI key at fault
    bint dynamic
    bint has_amount
    int64_t amount_minor
    int32_t currency        # ISO 4217 numeric
    QrSpan country
    QrSpan merchant_name
    QrSpan merchant_city
    QrSpan mcc
    QrSpan reference
    bint has_expiry
    int64_t expiry_s        # first second at which the code is no longer good
    int32_t key_count
    QrKey keys[QR_KEYS_CAPACITY]


# Well-formed UTF-8 as Python's strict decoder sees it; shared with the pipeline's msgpack reader.
cdef bint utf8_valid(const unsigned char* data, Py_ssize_t size) noexcept nogil

# %XX decoded once from data[start:end] into out: its length, or -1 for a broken escape or a
# non-UTF-8 result; shared with the pipeline (a UPI identifier as the merchant directory keys it).
cdef int32_t percent_decode(const unsigned char* data, int32_t start, int32_t end,
                            unsigned char* out) noexcept nogil

# Validate `size` bytes of payload into `verdict`; returns verdict.code.
cdef int qr_validate(const unsigned char* data, Py_ssize_t size, int64_t now_s,
                     QrVerdict* verdict) noexcept nogil
