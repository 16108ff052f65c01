"""Fuzz target: EMVCo Merchant-Presented Mode payloads, compiled core against its twin.

    python tests/fuzz/fuzz_qr.py -atheris_runs=100000 tests/fuzz/corpus/qr

The input is the payload's bytes.  Each is checked as text (parse_qr) and as bytes
(validate_qr); bytes that are not UTF-8 go in as bytes, and as a str with lone
surrogates, which must be QR_BAD_ENCODING.  Then -- because a mutated
payload almost never keeps a correct CRC, and then nothing past the CRC check
would be reached -- once more with its CRC object recomputed.
"""
from __future__ import annotations

import sys

import harness  # noqa: F401  (puts the repository on sys.path)
import qr_checks
from core_ext import limits
from core_ext.reference.qr import crc16_ccitt_false

TARGET = "qr"
# Coverage of these guides the mutations (see harness.instrument).
INSTRUMENTED = ("core_ext.reference.qr", "qr_checks", "__main__")
CRC_OBJECT_CHARS = 8           # "6304" and four hex digits


def with_fresh_crc(text: str) -> str:
    """The payload with its CRC object (or, if it has none, an appended one) made correct."""
    body = text[:-CRC_OBJECT_CHARS] if text[-CRC_OBJECT_CHARS:-4] == "6304" else text
    head = body + "6304"
    return head + f"{crc16_ccitt_false(head.encode('utf-8')):04X}"


def test_one_input(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        qr_checks.check_bytes(data)
        qr_checks.check_text(data.decode("utf-8", "surrogateescape"))
        return
    qr_checks.check_text(text)
    if len(text) <= limits.QR_PAYLOAD_CHARS_MAX and not text[:4].lower() == "upi:":
        qr_checks.check_text(with_fresh_crc(text))


if __name__ == "__main__":
    harness.main(test_one_input, INSTRUMENTED)
    sys.exit(0)
