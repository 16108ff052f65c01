"""The invariants both QR fuzz targets hold the validator to.

For every payload, on the compiled core and on the reference twin:
* nothing raises: every input gets a verdict;
* the two cores give the same QrResult, field for field, and validate_qr (the
  bytes hot path) gives the same code as parse_qr;
* the code is registered under "qr" (or is 0), and `valid` means code 0;
* a valid verdict is well formed (integer amounts in range, key count within
  the limit) and re-parses identically; an expiring one flips to QR_EXPIRED
  exactly at its expiry second.
"""
from __future__ import annotations

import harness  # noqa: F401  (puts the repository on sys.path)
from harness import check

import core_ext
from core_ext import limits
from core_ext import qr_tables as tables
from core_ext.codes import ENTRIES, Code

COMPILED = core_ext.implementation("compiled")
REFERENCE = core_ext.implementation("reference")
NOW_S_MAX = 2**63 - 1          # the compiled core takes now_s as a C long long
U64_MAX = 2**64 - 1


def check_bytes(data: bytes) -> None:
    """The bytes entry point, validate_qr, on any bytes whatever."""
    compiled_code = COMPILED.validate_qr(data)
    reference_code = REFERENCE.validate_qr(data)
    check(compiled_code == reference_code, "validate_qr: compiled and twin disagree", data,
          compiled_code, reference_code)
    check_code(compiled_code, data)


def check_text(text: str) -> object:
    """Both entry points on one payload, with no clock; returns the verdict.

    The clock matters only to a code that is valid and expires: check_valid
    tries such a code on both sides of its expiry second.
    """
    result = check_parse(text, 0)
    if result.valid:
        check_valid(text, result)
    return result


def check_parse(text: str, now_s: int) -> object:
    compiled = COMPILED.parse_qr(text, now_s)
    reference = REFERENCE.parse_qr(text, now_s)
    check(compiled == reference, "parse_qr: compiled and twin disagree", text, now_s, compiled, reference)
    check_code(compiled.code, text)
    check(compiled.valid == (compiled.code == 0), "valid and code 0 must go together", text, compiled)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        check(compiled.code == Code.QR_BAD_ENCODING, "a str that is not UTF-8 encodable is QR_BAD_ENCODING",
              text, compiled)
        return compiled
    for name, core in (("compiled", COMPILED), ("twin", REFERENCE)):
        code = core.validate_qr(data, now_s)
        check(code == compiled.code, f"{name}: validate_qr and parse_qr disagree", text, now_s, code, compiled.code)
    return compiled


def check_code(code: int, payload) -> None:
    entry = ENTRIES.get(code)
    check(entry is not None and entry.category in ("success", "qr"), "verdict code is not a registered QR code",
          payload, code)


def check_valid(text: str, result) -> None:
    check(result.profile in tables.PROFILES and result.profile != "", "valid verdict without a profile", text, result)
    amount = result.amount_minor
    check(amount is None or (type(amount) is int and 1 <= amount <= U64_MAX),
          "amount_minor must be None or an int in 1..2^64-1", text, amount)
    check(len(result.merchant_keys) <= limits.QR_MERCHANT_KEYS_MAX, "more merchant keys than the limit", text, result)
    check(all(isinstance(s, str) and isinstance(i, str) for s, i in result.merchant_keys),
          "merchant keys are (str, str) pairs", text, result.merchant_keys)
    check(result.currency in tables.CURRENCY_EXPONENTS, "valid verdict with an unknown currency", text, result)
    again = COMPILED.parse_qr(text)
    check(again == result, "re-parsing a valid payload changed its verdict", text, result, again)
    if result.profile != "upi":
        check(text[-8:-4] == "6304", "a valid EMVCo payload ends with its CRC object", text)
    if result.expiry_s is not None:
        check_expiry_edge(text, result)


def check_expiry_edge(text: str, result) -> None:
    """Valid through expiry_s - 1, expired from expiry_s on, in both cores."""
    expiry_s = result.expiry_s
    check(type(expiry_s) is int, "expiry_s is an int", text, expiry_s)
    if not 1 < expiry_s <= NOW_S_MAX:
        return  # a clock value the compiled core cannot take: the edge is out of reach
    before = check_parse(text, expiry_s - 1)
    at = check_parse(text, expiry_s)
    check(before == result, "one second before its expiry the code must still be valid", text, before)
    check(at.code == Code.QR_EXPIRED, "at its expiry second the code must be QR_EXPIRED", text, at)
