"""Make a QR payload for a registered merchant, and print it as PNG or SVG (`switch qr make`).

Every payload is checked by the switch's own validator before it is returned:
a poster that the switch would refuse is never printed.  The merchant
identifier is the one the validator reports as the payload's first merchant
key, so `parse_qr(make_payload(...)).merchant_keys[0] == (scheme, identifier)`.

Identifier forms per profile (the scheme is in brackets):
  promptpay  mobile 0066xxxxxxxxx, national/tax id (13 digits) or e-wallet id (15)  [promptpay]
  paynow     UEN, or +65 mobile                                                       [paynow]
  sgqr       12-character SGQR id                                                     [sgqr]
  duitnow    merchant account id                                                      [duitnow]
  qris       national merchant id (NMID, "ID...")                                     [qris]
  qrph       ACQUIRERBIC:merchantid                                                   [qrph]
  vietqr     BIN:account (6-digit bank BIN)                                           [vietqr]
  khqr       Bakong account id name@bank                                              [khqr]
  pix        Pix key (e-mail, phone, CPF/CNPJ, EVP)                                   [pix]
  bharatqr   UPI VPA handle@psp                                                       [upi]
  upi        UPI VPA handle@psp                                                       [upi]
  emvco      any identifier, under the GUID given as `guid`                          [the GUID]
"""
from __future__ import annotations

import dataclasses
import pathlib
import urllib.parse

from core_ext import qr_tables as tables
from core_ext.codes import name_of
from core_ext.reference.qr import crc16_ccitt_false

PROFILES_MAKEABLE = ("emvco", "promptpay", "paynow", "sgqr", "duitnow", "qris", "qrph", "vietqr",
                     "khqr", "pix", "bharatqr", "upi")
# A dynamic KHQR must expire; when the caller names no expiry it gets this long.
KHQR_DEFAULT_LIFETIME_S = 15 * 60
# Acquirer data the national templates need that a switch operator rarely has
# to choose; fixed, documented values keep the generated codes reproducible.
DUITNOW_ACQUIRER_ID = "890087"
QRIS_ACQUIRER_GUID = "ID.CO.SWITCH.WWW"
QRIS_ACQUIRER_PAN = "936000000000000001"


class QrMakeError(ValueError):
    """The inputs cannot make a valid payload; the message names the switch's code."""


@dataclasses.dataclass(frozen=True)
class QrSpec:
    profile: str
    merchant_id: str
    name: str
    city: str
    mcc: str = "0000"
    currency: int | None = None        # ISO 4217 numeric; the profile's own by default
    country: str | None = None         # ISO 3166 alpha-2; the profile's own by default
    amount_minor: int | None = None
    dynamic: bool = False
    reference: str = ""
    guid: str = "com.example.switch"   # emvco only: the merchant account template's GUID
    expiry_s: int | None = None        # paynow (its date is used) and khqr
    now_s: int = 0                     # khqr: creation time of a dynamic code


def tlv(tag: int, value: str) -> str:
    """One EMVCo data object; lengths count characters."""
    if not 1 <= len(value) <= 99:
        raise QrMakeError(f"data object {tag:02d} must hold 1-99 characters, not {len(value)}")
    return f"{tag:02d}{len(value):02d}{value}"


def with_crc(body: str) -> str:
    """Append the CRC object: CRC-16/CCITT-FALSE over the UTF-8 bytes up to and including 6304."""
    head = body + "6304"
    return head + f"{crc16_ccitt_false(head.encode('utf-8')):04X}"


def format_amount(amount_minor: int, currency: int) -> str:
    """Minor units as the decimal text EMVCo and UPI print, exactly (no floats)."""
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
        raise QrMakeError("amount_minor must be a positive integer count of minor units")
    exponent = tables.CURRENCY_EXPONENTS.get(currency)
    if exponent is None:
        raise QrMakeError(f"unknown ISO 4217 currency {currency}")
    if exponent == 0:
        return str(amount_minor)
    whole, fraction = divmod(amount_minor, 10**exponent)
    return f"{whole}.{fraction:0{exponent}d}"


def make_payload(spec: QrSpec, validate=None) -> str:
    """The payload text for `spec`, checked with `validate` (a parse_qr; the compiled core's by default)."""
    if spec.profile not in PROFILES_MAKEABLE:
        raise QrMakeError(f"unknown profile {spec.profile!r}; choose from {', '.join(PROFILES_MAKEABLE)}")
    payload = _make_upi(spec) if spec.profile == "upi" else _make_emv(spec)
    if validate is None:
        from core_ext import core
        validate = core.parse_qr
    result = validate(payload, 0)
    if not result.valid:
        raise QrMakeError(f"the inputs make an invalid code: {name_of(result.code)} at tag {result.tag or '-'}")
    return payload


def _make_upi(spec: QrSpec) -> str:
    params = [("pa", spec.merchant_id), ("pn", spec.name)]
    if spec.mcc:
        params.append(("mc", spec.mcc))
    if spec.dynamic:
        params.append(("mode", "15"))
    if spec.reference:
        params.append(("tr", spec.reference))
    if spec.amount_minor is not None:
        params.append(("am", format_amount(spec.amount_minor, 356)))
    params.append(("cu", "INR"))
    return "upi://pay?" + "&".join(f"{key}={urllib.parse.quote(value, safe='@')}" for key, value in params)


def _make_emv(spec: QrSpec) -> str:
    currency = spec.currency if spec.currency is not None else _default_currency(spec.profile)
    country = spec.country or tables.PROFILE_COUNTRIES.get(spec.profile, "")
    if not country:
        raise QrMakeError("the emvco profile needs a country")
    indicator = "02" if spec.profile == "duitnow" else "01"
    body = tlv(0, indicator) + tlv(1, "12" if spec.dynamic else "11")
    body += _merchant_account(spec)
    body += tlv(52, spec.mcc) + tlv(53, f"{currency:03d}")
    if spec.amount_minor is not None:
        body += tlv(54, format_amount(spec.amount_minor, currency))
    body += tlv(58, country) + tlv(59, spec.name) + tlv(60, spec.city)
    if spec.reference:
        body += tlv(62, tlv(5, spec.reference))
    if spec.profile == "khqr" and spec.dynamic:
        expiry_s = spec.expiry_s if spec.expiry_s is not None else spec.now_s + KHQR_DEFAULT_LIFETIME_S
        body += tlv(99, tlv(0, f"{spec.now_s * 1000:013d}") + tlv(1, f"{expiry_s * 1000:013d}"))
    return with_crc(body)


def _default_currency(profile: str) -> int:
    currencies = tables.PROFILE_CURRENCIES.get(profile)
    if not currencies:
        raise QrMakeError("the emvco profile needs a currency")
    return currencies[0]


def _merchant_account(spec: QrSpec) -> str:
    """The merchant account template(s) that make the validator report the right first key."""
    ident, profile = spec.merchant_id, spec.profile
    if profile == "promptpay":
        sub = 3 if len(ident) == 15 else (1 if ident.startswith("0066") else 2)
        return tlv(29, tlv(0, tables.GUID_PROMPTPAY) + tlv(sub, ident))
    if profile == "paynow":
        expiry = ""
        if spec.expiry_s is not None:
            expiry = tlv(4, _singapore_date(spec.expiry_s))
        editable = "0" if spec.amount_minor is not None else "1"
        proxy_type = "0" if ident.startswith("+") else "2"
        return tlv(26, tlv(0, tables.GUID_PAYNOW) + tlv(1, proxy_type) + tlv(2, ident) + tlv(3, editable) + expiry)
    if profile == "sgqr":
        return tlv(51, tlv(0, tables.GUID_SGQR) + tlv(1, ident) + tlv(2, "01.0001"))
    if profile == "duitnow":
        return tlv(26, tlv(0, tables.GUID_DUITNOW) + tlv(1, DUITNOW_ACQUIRER_ID) + tlv(2, ident))
    if profile == "qris":
        acquirer = tlv(26, tlv(0, QRIS_ACQUIRER_GUID) + tlv(1, QRIS_ACQUIRER_PAN) + tlv(3, "UMI"))
        return acquirer + tlv(51, tlv(0, tables.GUIDS_QRIS[0]) + tlv(2, ident) + tlv(3, "UMI"))
    if profile == "qrph":
        bic, _, merchant = ident.partition(":")
        return tlv(28, tlv(0, tables.GUID_QRPH_P2M) + tlv(1, bic) + tlv(3, merchant))
    if profile == "vietqr":
        bank, _, account = ident.partition(":")
        beneficiary = tlv(0, bank) + tlv(1, account)
        return tlv(38, tlv(0, tables.GUID_VIETQR) + tlv(1, beneficiary) + tlv(2, tables.VIETQR_SERVICE_CODES[0]))
    if profile == "khqr":
        return tlv(29, tlv(0, ident))
    if profile == "pix":
        return tlv(26, tlv(0, tables.GUIDS_PIX_LOWER[0]) + tlv(1, ident))
    if profile == "bharatqr":
        return tlv(26, tlv(0, tables.GUID_BHARAT_UPI) + tlv(1, ident))
    return tlv(26, tlv(0, spec.guid) + tlv(1, ident))


def _singapore_date(instant_s: int) -> str:
    import time
    return time.strftime("%Y%m%d", time.gmtime(instant_s + tables.PAYNOW_UTC_OFFSET_S))


def write_symbol(payload: str, out: pathlib.Path | str, scale: int = 8) -> pathlib.Path:
    """Print the payload as a QR symbol (.png or .svg) in byte mode, with ECI UTF-8 when not ASCII (EMVCo 4.12)."""
    import segno

    path = pathlib.Path(out)
    if path.suffix.lower() not in (".png", ".svg"):
        raise QrMakeError("the output file must end in .png or .svg")
    symbol = segno.make(payload, error="m", mode="byte", encoding="utf-8",
                        eci=not payload.isascii(), micro=False)
    symbol.save(str(path), scale=scale, border=4)
    return path
