"""Fuzz target: UPI `upi://pay?` links, compiled core against its twin.

    python tests/fuzz/fuzz_upi.py -atheris_runs=100000 tests/fuzz/corpus/upi

The input is the link's UTF-8 bytes; one that does not start with `upi:` gets
`upi://pay?` put in front, so mutations spend their time in the query rather
than in the scheme.  Besides the checks every QR payload gets (qr_checks), a
valid link must survive a round trip: the link rebuilt from its verdict --
every value percent-encoded, the amount in its shortest decimal form -- parses
to the very same verdict.
"""
from __future__ import annotations

import sys
import urllib.parse

import harness  # noqa: F401  (puts the repository on sys.path)
import qr_checks
from harness import check

TARGET = "upi"
# Coverage of these guides the mutations (see harness.instrument).
INSTRUMENTED = ("core_ext.reference.qr", "qr_checks", "__main__")
PREFIX = "upi://pay?"


def shortest_amount(amount_minor: int) -> str:
    """Paise as the shortest decimal rupee text: 15000 -> '150', 15050 -> '150.5'."""
    rupees, paise = divmod(amount_minor, 100)
    if paise == 0:
        return str(rupees)
    return f"{rupees}.{paise:02d}".rstrip("0")


def rebuilt_link(result) -> str:
    """The link a careful payee would print for `result`: only the fields the verdict carries."""
    params = [("pa", result.merchant_keys[0][1]), ("pn", result.merchant_name)]
    if result.amount_minor is not None:
        params.append(("am", shortest_amount(result.amount_minor)))
    params += [(key, value) for key, value in (("mc", result.mcc), ("tr", result.reference)) if value]
    if result.dynamic:
        params.append(("mode", "15"))
    params.append(("cu", "INR"))
    return PREFIX + "&".join(f"{key}={urllib.parse.quote(value, safe='')}" for key, value in params)


def check_round_trip(result) -> None:
    check(len(result.merchant_keys) == 1 and result.merchant_keys[0][0] == "upi",
          "a valid UPI verdict pays exactly one ('upi', pa) key", result)
    link = rebuilt_link(result)
    again = qr_checks.check_text(link)
    check(again == result, "the link rebuilt from a valid verdict parses differently", link, result, again)


def test_one_input(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        qr_checks.check_bytes(data)
        return
    if text[:4].lower() != "upi:":
        text = PREFIX + text
    result = qr_checks.check_text(text)
    if result.valid:
        check(result.profile == "upi", "a valid upi: link must have the upi profile", text, result)
        check_round_trip(result)


if __name__ == "__main__":
    harness.main(test_one_input, INSTRUMENTED)
    sys.exit(0)
