"""QR payload validation, the reference twin of core_ext/_qr.pyx.

Written to be read against /work/shared/qr/SPEC_NOTES.md: EMVCo Merchant-Presented
Mode with its national profiles, and UPI `upi://pay?` links.  The compiled core
follows the same steps in the same order, so both give the same code and tag
for every input; the tests compare them on real, mutated and random payloads.

The order of checks (it decides which code a payload with several faults gets):
input size and encoding; then for EMVCo the CRC (format, value), the root TLV
structure, the structure of merchant account templates, the profile, the
structure of 62 / 64 / 80-99, then field by field, then the profile's own
rules, then the expiry.
"""
from __future__ import annotations

import calendar
import re

from core_ext import limits
from core_ext import qr_tables as tables
from core_ext.codes import Code
from core_ext.qr_tables import QrResult

DIGITS = frozenset("0123456789")
HEX_UPPER = frozenset("0123456789ABCDEF")
HEX_ANY = frozenset("0123456789ABCDEFabcdef")
UPPER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
# RFC 3986 query characters a UPI link may carry unescaped.
UPI_RAW_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/?%"
)
VPA_PATTERN = re.compile(r"[A-Za-z0-9.\-_]+@[A-Za-z][A-Za-z0-9.\-]+")
UPI_PREFIX = "upi://pay?"


class _Reject(Exception):
    """A verdict found deep in the checks; carried up to the result."""

    def __init__(self, code: int, tag: str = "", profile: str = ""):
        super().__init__(code, tag)
        self.code = int(code)
        self.tag = tag
        self.profile = profile


def _path(parent: str, tag: int) -> str:
    return f"{parent}.{tag:02d}" if parent else f"{tag:02d}"


def _is_digits(text: str) -> bool:
    return bool(text) and all(char in DIGITS for char in text)


def _is_ans(text: str) -> bool:
    """EMVCo 'ans': printable ASCII 0x20-0x7E (SPEC_NOTES §1)."""
    return all(" " <= char <= "~" for char in text)


# ---- public API ---------------------------------------------------------------

def validate_qr(payload_utf8: bytes, now_s: int = 0) -> int:
    """The verdict code only (0 = OK)."""
    return _analyse(bytes(payload_utf8), now_s).code


def parse_qr(payload: str, now_s: int = 0) -> QrResult:
    """The full result; `now_s` > 0 checks the expiry against that time."""
    try:
        data = payload.encode("utf-8")
    except UnicodeEncodeError:
        return QrResult(False, int(Code.QR_BAD_ENCODING))
    return _analyse(data, now_s)


def _analyse(data: bytes, now_s: int) -> QrResult:
    try:
        return _analyse_or_reject(data, now_s)
    except _Reject as reject:
        return QrResult(False, reject.code, reject.tag, reject.profile)


def _analyse_or_reject(data: bytes, now_s: int) -> QrResult:
    if not data:
        raise _Reject(Code.QR_EMPTY)
    if len(data) > limits.QR_PAYLOAD_BYTES_MAX:
        raise _Reject(Code.QR_TOO_LONG)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Reject(Code.QR_BAD_ENCODING) from None
    if data[:4].lower() == b"upi:":
        return _upi(text, now_s)
    return _Emv(text, data, now_s).run()


# ---- EMVCo TLV ----------------------------------------------------------------

def _scan(text: str, start: int, end: int, parent: str, root: bool = False) -> dict[int, tuple[int, int]]:
    """The data objects of text[start:end] as {id: (value start, value end)}, in payload order.

    Lengths count characters (EMVCo 4.4.1.1), so the index arithmetic is on str.
    """
    objects: dict[int, tuple[int, int]] = {}
    pos = start
    while pos < end:
        if end - pos < 2 or not _is_digits(text[pos:pos + 2]):
            raise _Reject(Code.QR_BAD_TLV_HEADER, parent)
        tag = int(text[pos:pos + 2])
        path = _path(parent, tag)
        if end - pos < 4 or not _is_digits(text[pos + 2:pos + 4]):
            raise _Reject(Code.QR_BAD_TLV_HEADER, path)
        length = int(text[pos + 2:pos + 4])
        if length == 0:
            raise _Reject(Code.QR_ZERO_LENGTH, path)
        value_end = pos + 4 + length
        if value_end > end:
            raise _Reject(Code.QR_LENGTH_OVERRUN, path)
        if root and not objects and tag != 0:
            raise _Reject(Code.QR_TAG_ORDER, "00")
        if root and tag == 63:
            raise _Reject(Code.QR_TAG_ORDER, "63")
        if tag in objects:
            raise _Reject(Code.QR_DUPLICATE_TAG, path)
        objects[tag] = (pos + 4, value_end)
        pos = value_end
    return objects


def _crc_table() -> list[int]:
    """CRC-16/CCITT-FALSE of each byte value shifted to the top: poly 0x1021, no reflection."""
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


CRC_TABLE = _crc_table()


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: init 0xFFFF, xorout 0; one table step per byte."""
    crc = 0xFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ CRC_TABLE[(crc >> 8) ^ byte]
    return crc


def amount_to_minor(value: str, exponent: int, reject_code: int, tag: str) -> int:
    """'98.73' at exponent 2 -> 9873, exactly; digits past the exponent must be zeros."""
    if len(value) > limits.QR_AMOUNT_CHARS_MAX or value.count(".") > 1:
        raise _Reject(reject_code, tag)
    whole, _, fraction = value.partition(".")
    if not (whole + fraction) or not all(char in DIGITS for char in whole + fraction):
        raise _Reject(reject_code, tag)
    if fraction[exponent:].strip("0"):
        raise _Reject(Code.QR_AMOUNT_PRECISION if reject_code == Code.QR_BAD_AMOUNT else reject_code, tag)
    fraction = fraction[:exponent].ljust(exponent, "0")
    minor = int(whole or "0") * 10**exponent + int(fraction or "0")
    if minor == 0:
        raise _Reject(reject_code, tag)
    return minor


class _Emv:
    """One EMVCo payload on its way through the checks; fields are (start, end) spans of `text`."""

    def __init__(self, text: str, data: bytes, now_s: int):
        self.text = text
        self.data = data
        self.now_s = now_s
        self.profile = ""
        self.root: dict[int, tuple[int, int]] = {}
        self.templates: dict[int, dict[int, tuple[int, int]]] = {}
        self.expiry_s: int | None = None
        self.expiry_tag = ""
        self.payment_system: dict[int, dict[int, tuple[int, int]]] = {}
        self.amount_minor: int | None = None
        self.exponent = 0

    def value(self, span: tuple[int, int] | None) -> str | None:
        return None if span is None else self.text[span[0]:span[1]]

    def root_value(self, tag: int) -> str | None:
        return self.value(self.root.get(tag))

    def sub_value(self, tag: int, sub: int) -> str | None:
        return self.value(self.templates.get(tag, {}).get(sub))

    def reject(self, code: int, tag: str = "") -> _Reject:
        return _Reject(code, tag, self.profile)

    def run(self) -> QrResult:
        try:
            return self.run_checks()
        except _Reject as reject:
            reject.profile = reject.profile or self.profile
            raise

    def run_checks(self) -> QrResult:
        self.check_crc()
        self.scan_structure()
        self.check_root_presence()
        self.check_merchant_accounts()
        self.check_fields()
        self.check_additional_data()
        self.check_language_template()
        self.check_unreserved_templates()
        _PROFILE_RULES.get(self.profile, lambda emv: None)(self)
        if self.expiry_s is not None and self.now_s > 0 and self.now_s >= self.expiry_s:
            raise self.reject(Code.QR_EXPIRED, self.expiry_tag)
        return self.result()

    # -- CRC and structure --------------------------------------------------
    def check_crc(self) -> None:
        text = self.text
        if len(text) > limits.QR_PAYLOAD_CHARS_MAX:
            raise self.reject(Code.QR_TOO_LONG)
        # Anchored at the end: a search for the first "6304" can hit data (SPEC_NOTES §4).
        if len(text) < 8 or text[-8:-4] != "6304" or not all(c in HEX_UPPER for c in text[-4:]):
            raise self.reject(Code.QR_CRC_FORMAT, "63")
        if crc16_ccitt_false(self.data[:-4]) != int(text[-4:], 16):
            raise self.reject(Code.QR_CRC_MISMATCH, "63")

    def scan_structure(self) -> None:
        self.root = _scan(self.text, 0, len(self.text) - 8, "", root=True)
        if 0 not in self.root:
            raise self.reject(Code.QR_MISSING_TAG, "00")
        for tag in range(26, 52):
            if tag in self.root:
                self.templates[tag] = _scan(self.text, *self.root[tag], _path("", tag))
        self.profile = self.detect_profile()
        for tag in [62, 64] + list(range(80, 100)):
            if tag not in self.root or (tag == 82 and self.profile == "duitnow"):
                continue  # DuitNow prints 82 as a primitive hex value (SPEC_NOTES §6)
            self.templates[tag] = _scan(self.text, *self.root[tag], _path("", tag))
        self.scan_payment_system_templates()

    def scan_payment_system_templates(self) -> None:
        """62.50-99 are templates, except in QRIS whose acquirers fill them with their own data."""
        additional = self.templates.get(62, {})
        if self.profile == "qris":
            return
        for sub in range(50, 100):
            if sub in additional:
                self.payment_system[sub] = _scan(self.text, *additional[sub], f"62.{sub:02d}")

    # -- profile --------------------------------------------------------------
    def detect_profile(self) -> str:
        found = ""
        sgqr = False
        for tag in sorted(self.templates):
            guid = self.sub_value(tag, 0)
            profile = _profile_of_guid(tag, guid) if guid is not None else ""
            if profile == "sgqr":
                sgqr = True
            elif profile and not found:
                found = profile
        if not found and sgqr:
            found = "sgqr"
        country = self.root_value(58)
        if not found and country == "ID" and self.has_qris_pan():
            found = "qris"
        if not found and country == "IN" and any(tag in self.root for tag in (6, 7, 8)):
            found = "bharatqr"
        return found or "emvco"

    def has_qris_pan(self) -> bool:
        for tag in range(26, 46):
            pan = self.sub_value(tag, 1)
            if pan is not None and _is_digits(pan) and pan.startswith(tables.QRIS_PAN_PREFIX) \
                    and len(pan) >= tables.QRIS_PAN_CHARS_MIN:
                return True
        return False

    # -- root fields ----------------------------------------------------------
    def check_root_presence(self) -> None:
        indicator = self.root_value(0)
        allowed = ("01", "02") if self.profile == "duitnow" else ("01",)
        if indicator not in allowed:
            raise self.reject(Code.QR_BAD_FORMAT_INDICATOR, "00")
        initiation = self.root_value(1)
        if initiation is not None and initiation not in ("11", "12"):
            raise self.reject(Code.QR_BAD_INITIATION_METHOD, "01")
        if not any(tag in self.root for tag in range(2, 52)):
            raise self.reject(Code.QR_NO_MERCHANT_ACCOUNT, "")
        mandatory = [1] if self.profile == "duitnow" else []
        mandatory += [53, 58] if self.profile in tables.PROFILES_NAME_OPTIONAL else [52, 53, 58, 59, 60]
        for tag in sorted(mandatory):
            if tag not in self.root:
                raise self.reject(Code.QR_MISSING_TAG, _path("", tag))

    def check_merchant_accounts(self) -> None:
        for tag in range(2, 26):
            value = self.root_value(tag)
            if value is not None and not _is_ans(value):
                raise self.reject(Code.QR_NOT_ANS, _path("", tag))
        for tag in range(26, 52):
            if tag in self.templates:
                self.check_guid_template(tag, self.templates[tag], _path("", tag))
                for sub, span in self.templates[tag].items():
                    if sub != 0 and not _is_ans(self.value(span)):
                        raise self.reject(Code.QR_NOT_ANS, _path(_path("", tag), sub))

    def check_guid_template(self, tag: int, objects: dict, path: str) -> None:
        guid = self.value(objects.get(0))
        if guid is None:
            raise self.reject(Code.QR_MISSING_TAG, _path(path, 0))
        if len(guid) > limits.QR_GUID_CHARS_MAX or not _is_ans(guid):
            raise self.reject(Code.QR_BAD_GUID, _path(path, 0))

    def check_fields(self) -> None:
        mcc = self.root_value(52)
        if mcc is not None and not (len(mcc) == 4 and _is_digits(mcc)):
            raise self.reject(Code.QR_BAD_MCC, "52")
        currency = self.root_value(53)
        if not (len(currency) == 3 and _is_digits(currency)):
            raise self.reject(Code.QR_BAD_CURRENCY, "53")
        if int(currency) not in tables.CURRENCY_EXPONENTS:
            raise self.reject(Code.QR_UNKNOWN_CURRENCY, "53")
        self.exponent = tables.CURRENCY_EXPONENTS[int(currency)]
        amount = self.root_value(54)
        self.amount_minor = None
        if amount is not None:
            self.amount_minor = amount_to_minor(amount, self.exponent, Code.QR_BAD_AMOUNT, "54")
        self.check_convenience_fee()
        country = self.root_value(58)
        if not (len(country) == 2 and all(c in UPPER for c in country)):
            raise self.reject(Code.QR_BAD_COUNTRY, "58")
        for tag, chars_max in ((59, limits.QR_MERCHANT_NAME_CHARS_MAX), (60, limits.QR_MERCHANT_CITY_CHARS_MAX),
                               (61, limits.QR_POSTAL_CODE_CHARS_MAX)):
            self.check_ans_field(self.root_value(tag), chars_max, _path("", tag))

    def check_ans_field(self, value: str | None, chars_max: int, path: str) -> None:
        if value is None:
            return
        if len(value) > chars_max:
            raise self.reject(Code.QR_FIELD_TOO_LONG, path)
        if not _is_ans(value):
            raise self.reject(Code.QR_NOT_ANS, path)

    def check_convenience_fee(self) -> None:
        indicator = self.root_value(55)
        if indicator is not None and indicator not in ("01", "02", "03"):
            raise self.reject(Code.QR_BAD_TIP_INDICATOR, "55")
        fixed, percentage = self.root_value(56), self.root_value(57)
        if indicator == "02" and fixed is None:
            raise self.reject(Code.QR_MISSING_TAG, "56")
        if fixed is not None:
            if indicator != "02":
                raise self.reject(Code.QR_BAD_CONVENIENCE_FEE, "56")
            amount_to_minor(fixed, self.exponent, Code.QR_BAD_CONVENIENCE_FEE, "56")
        if indicator == "03" and percentage is None:
            raise self.reject(Code.QR_MISSING_TAG, "57")
        if percentage is not None:
            if indicator != "03" or len(percentage) > limits.QR_FEE_PERCENT_CHARS_MAX:
                raise self.reject(Code.QR_BAD_CONVENIENCE_FEE, "57")
            hundredths = amount_to_minor(percentage, 2, Code.QR_BAD_CONVENIENCE_FEE, "57")
            if hundredths >= 100 * 100:
                raise self.reject(Code.QR_BAD_CONVENIENCE_FEE, "57")

    # -- templates 62, 64, 80-99 ------------------------------------------------
    def check_additional_data(self) -> None:
        for sub, span in self.templates.get(62, {}).items():
            value, path = self.value(span), f"62.{sub:02d}"
            if 1 <= sub <= 8:
                self.check_ans_field(value, limits.QR_ADDITIONAL_DATA_CHARS_MAX, path)
            elif sub == 9:
                if len(value) > 3 or not set(value) <= set("AME") or len(set(value)) != len(value):
                    raise self.reject(Code.QR_BAD_FIELD_VALUE, path)
            elif sub == 10:
                self.check_ans_field(value, limits.QR_TAX_ID_CHARS_MAX, path)
            elif sub == 11:
                if not (len(value) == 3 and "0" <= value[0] <= "7" and "0" <= value[1] <= "3"
                        and "0" <= value[2] <= "3"):
                    raise self.reject(Code.QR_BAD_FIELD_VALUE, path)
            elif sub >= 50 and self.profile != "qris":
                self.check_guid_template(sub, self.payment_system[sub], path)

    def check_language_template(self) -> None:
        if 64 not in self.root:
            return
        language, name = self.sub_value(64, 0), self.sub_value(64, 1)
        if language is None:
            raise self.reject(Code.QR_MISSING_TAG, "64.00")
        if not (len(language) == 2 and all("A" <= c.upper() <= "Z" and c.isascii() for c in language)):
            raise self.reject(Code.QR_BAD_FIELD_VALUE, "64.00")
        if name is None:
            raise self.reject(Code.QR_MISSING_TAG, "64.01")
        if len(name) > limits.QR_MERCHANT_NAME_CHARS_MAX:
            raise self.reject(Code.QR_FIELD_TOO_LONG, "64.01")
        city = self.sub_value(64, 2)
        if city is not None and len(city) > limits.QR_MERCHANT_CITY_CHARS_MAX:
            raise self.reject(Code.QR_FIELD_TOO_LONG, "64.02")

    def check_unreserved_templates(self) -> None:
        for tag in range(80, 100):
            if tag == 82 and self.profile == "duitnow" and 82 in self.root:
                if not _is_ans(self.root_value(82)):
                    raise self.reject(Code.QR_NOT_ANS, "82")
            elif tag in self.templates:
                self.check_guid_template(tag, self.templates[tag], _path("", tag))

    # -- result ---------------------------------------------------------------------
    def result(self) -> QrResult:
        return QrResult(
            valid=True, code=0, tag="", profile=self.profile,
            dynamic=self.root_value(1) == "12",
            merchant_keys=tuple(self.merchant_keys()[:limits.QR_MERCHANT_KEYS_MAX]),
            amount_minor=self.amount_minor,
            currency=int(self.root_value(53)),
            country=self.root_value(58),
            merchant_name=self.root_value(59) or "",
            merchant_city=self.root_value(60) or "",
            mcc=self.root_value(52) or "",
            reference=self.sub_value(62, 5) or "",
            expiry_s=self.expiry_s,
        )

    def merchant_keys(self) -> list[tuple[str, str]]:
        """National keys first (the scheme this switch pays through), then every other account object."""
        keys: list[tuple[str, str]] = []
        national: set[int] = set()
        for tag in range(2, 52):
            key = self.national_key(tag)
            if key is not None:
                keys.append(key)
                national.add(tag)
        for tag in range(2, 52):
            if tag in self.root and tag not in national:
                key = self.generic_key(tag)
                if key is not None:
                    keys.append(key)
        return keys

    def generic_key(self, tag: int) -> tuple[str, str] | None:
        if tag < 26:
            schemes = tables.BHARAT_PRIMITIVE_SCHEMES if self.profile == "bharatqr" else {}
            return (schemes.get(tag, tables.PRIMITIVE_SCHEMES[tag]), self.root_value(tag))
        subs = [sub for sub in sorted(self.templates[tag]) if sub != 0]
        if not subs:
            return None
        return (self.sub_value(tag, 0), self.sub_value(tag, subs[0]))

    def national_key(self, tag: int) -> tuple[str, str] | None:
        if tag < 26 or tag not in self.templates:
            return None
        guid = self.sub_value(tag, 0)
        kind = _profile_of_guid(tag, guid)
        value = lambda sub: self.sub_value(tag, sub)  # noqa: E731
        if kind == "promptpay" and guid == tables.GUID_PROMPTPAY:
            for sub in (1, 2, 3, 4):
                if value(sub) is not None:
                    return ("promptpay", value(sub))
        elif kind == "promptpay" and guid == tables.GUID_THAI_BILL and value(1) is not None:
            return ("promptpay.biller", value(1))
        elif kind in ("paynow", "duitnow") and value(2) is not None:
            return (kind, value(2))
        elif kind == "sgqr" and value(1) is not None:
            return ("sgqr", value(1))
        elif kind == "qris" and value(2) is not None:
            return ("qris", value(2))
        elif kind == "qrph" and value(1) is not None:
            # P2M puts the merchant id in 03; P2P codes may carry only the reference 04 or mobile 05.
            account = next((value(sub) for sub in (3, 4, 5) if value(sub) is not None), None)
            return ("qrph", f"{value(1)}:{account}") if account is not None else None
        elif kind == "vietqr" and self.profile == "vietqr":
            return self.vietqr_key(tag)
        elif kind == "khqr" and self.profile == "khqr":
            return ("khqr", guid)
        elif kind == "pix" and value(1) is not None:
            return ("pix", value(1))
        elif kind == "pix" and value(25) is not None:
            return ("pix.location", value(25))
        elif kind == "bharatqr" and tag == 26 and value(1) is not None:
            return ("upi", value(1))
        return None

    def vietqr_key(self, tag: int) -> tuple[str, str] | None:
        beneficiary = self.templates[tag].get(1)
        if beneficiary is None:
            return None
        objects = _scan(self.text, *beneficiary, f"{tag:02d}.01")
        bank, account = self.value(objects.get(0)), self.value(objects.get(1))
        if bank is None or account is None:
            return None
        return ("vietqr", f"{bank}:{account}")


def _profile_of_guid(tag: int, guid: str) -> str:
    if guid in (tables.GUID_PROMPTPAY, tables.GUID_THAI_BILL):
        return "promptpay"
    if guid == tables.GUID_PAYNOW:
        return "paynow"
    if guid == tables.GUID_SGQR:
        return "sgqr"
    if guid == tables.GUID_DUITNOW:
        return "duitnow"
    if guid in tables.GUIDS_QRIS:
        return "qris"
    if guid in (tables.GUID_QRPH_P2P, tables.GUID_QRPH_P2M):
        return "qrph"
    if guid == tables.GUID_VIETQR:
        return "vietqr"
    if guid.lower() in tables.GUIDS_PIX_LOWER:
        return "pix"
    if guid == tables.GUID_BHARAT_UPI:
        return "bharatqr"
    if tag in (29, 30) and "@" in guid:
        return "khqr"  # KHQR puts the Bakong account id name@bank where the GUID goes
    return ""


# ---- national profile rules ------------------------------------------------------------

def _check_currency_and_country(emv: _Emv) -> None:
    if int(emv.root_value(53)) not in tables.PROFILE_CURRENCIES[emv.profile]:
        raise emv.reject(Code.QR_CURRENCY_NOT_ALLOWED, "53")
    if emv.root_value(58) != tables.PROFILE_COUNTRIES[emv.profile]:
        raise emv.reject(Code.QR_COUNTRY_NOT_ALLOWED, "58")


def _templates_with(emv: _Emv, kind: str) -> list[int]:
    return [tag for tag in range(26, 52)
            if tag in emv.templates and _profile_of_guid(tag, emv.sub_value(tag, 0)) == kind]


def _digits_of(emv: _Emv, tag: int, sub: int, count: int) -> None:
    value = emv.sub_value(tag, sub)
    if value is not None and not (len(value) == count and _is_digits(value)):
        raise emv.reject(Code.QR_BAD_ACCOUNT, f"{tag:02d}.{sub:02d}")


def _rules_promptpay(emv: _Emv) -> None:
    _check_currency_and_country(emv)
    for tag in _templates_with(emv, "promptpay"):
        if emv.sub_value(tag, 0) == tables.GUID_PROMPTPAY:
            if all(emv.sub_value(tag, sub) is None for sub in (1, 2, 3, 4)):
                raise emv.reject(Code.QR_MISSING_TAG, f"{tag:02d}.01")
            _digits_of(emv, tag, 1, 13)   # mobile: 0066 + 9 digits, zero padded
            _digits_of(emv, tag, 2, 13)   # national id or tax id
            _digits_of(emv, tag, 3, 15)   # e-wallet id
        else:
            if emv.sub_value(tag, 1) is None:
                raise emv.reject(Code.QR_MISSING_TAG, f"{tag:02d}.01")
            _digits_of(emv, tag, 1, 15)   # biller id
            for sub in (2, 3):
                value = emv.sub_value(tag, sub)
                if value is not None and len(value) > 20:
                    raise emv.reject(Code.QR_FIELD_TOO_LONG, f"{tag:02d}.{sub:02d}")


def _rules_paynow(emv: _Emv) -> None:
    _check_currency_and_country(emv)
    for tag in _templates_with(emv, "paynow"):
        path = f"{tag:02d}"
        if emv.sub_value(tag, 1) not in ("0", "2"):
            raise emv.reject(Code.QR_BAD_ACCOUNT, path + ".01")
        if emv.sub_value(tag, 2) is None:
            raise emv.reject(Code.QR_MISSING_TAG, path + ".02")
        editable = emv.sub_value(tag, 3)
        if editable is not None and editable not in ("0", "1"):
            raise emv.reject(Code.QR_BAD_FIELD_VALUE, path + ".03")
        if emv.amount_minor is None and editable != "1":
            raise emv.reject(Code.QR_PROFILE_RULE, path + ".03")  # no amount: the payer must enter it
        expiry = emv.sub_value(tag, 4)
        if expiry is not None:
            emv.expiry_s = _paynow_expiry_s(emv, expiry, path + ".04")
            emv.expiry_tag = path + ".04"


def _paynow_expiry_s(emv: _Emv, value: str, path: str) -> int:
    """YYYYMMDD (good through that Singapore day) or YYYYMMDDHHMMSS (through that second)."""
    if len(value) not in (8, 14) or not _is_digits(value):
        raise emv.reject(Code.QR_BAD_EXPIRY, path)
    year, month, day = int(value[0:4]), int(value[4:6]), int(value[6:8])
    hour, minute, second = (int(value[8:10]), int(value[10:12]), int(value[12:14])) if len(value) == 14 else (0, 0, 0)
    if not (1 <= year and 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]
            and hour <= 23 and minute <= 59 and second <= 59):
        raise emv.reject(Code.QR_BAD_EXPIRY, path)
    instant_s = calendar.timegm((year, month, day, hour, minute, second)) - tables.PAYNOW_UTC_OFFSET_S
    return instant_s + (86400 if len(value) == 8 else 1)


def _rules_national_only(emv: _Emv) -> None:
    _check_currency_and_country(emv)


def _rules_duitnow(emv: _Emv) -> None:
    _check_currency_and_country(emv)
    for tag in _templates_with(emv, "duitnow"):
        if emv.sub_value(tag, 2) is None:
            raise emv.reject(Code.QR_MISSING_TAG, f"{tag:02d}.02")
    for tag in _templates_with(emv, "duitnow"):
        expiry = emv.sub_value(tag, 3)
        if expiry is not None:
            _duitnow_expiry(emv, expiry, f"{tag:02d}.03")


def _duitnow_expiry(emv: _Emv, value: str, path: str) -> None:
    """Epoch milliseconds, at most qr_expiry_ms_digits_max digits; zero (all zeros: Maybank's
    static stickers write 0000000000) means the code does not expire."""
    if not (len(value) <= limits.QR_EXPIRY_MS_DIGITS_MAX and _is_digits(value)):
        raise emv.reject(Code.QR_BAD_EXPIRY, path)
    if int(value):
        emv.expiry_s = (int(value) + 999) // 1000
        emv.expiry_tag = path


def _rules_qris(emv: _Emv) -> None:
    _check_currency_and_country(emv)
    for tag in _templates_with(emv, "qris"):
        if emv.sub_value(tag, 2) is None:
            raise emv.reject(Code.QR_MISSING_TAG, f"{tag:02d}.02")


def _rules_qrph(emv: _Emv) -> None:
    _check_currency_and_country(emv)
    for tag in _templates_with(emv, "qrph"):
        if emv.sub_value(tag, 1) is None:  # the acquirer's BIC
            raise emv.reject(Code.QR_MISSING_TAG, f"{tag:02d}.01")


def _rules_vietqr(emv: _Emv) -> None:
    _check_currency_and_country(emv)
    for tag in _templates_with(emv, "vietqr"):
        path = f"{tag:02d}"
        beneficiary = emv.templates[tag].get(1)
        if beneficiary is None:
            raise emv.reject(Code.QR_MISSING_TAG, path + ".01")
        objects = _scan(emv.text, *beneficiary, path + ".01")
        bank, account = emv.value(objects.get(0)), emv.value(objects.get(1))
        if bank is None or not (len(bank) == 6 and _is_digits(bank)):
            raise emv.reject(Code.QR_BAD_ACCOUNT, path + ".01.00")
        if account is None or len(account) > 19:
            raise emv.reject(Code.QR_BAD_ACCOUNT, path + ".01.01")
        service = emv.sub_value(tag, 2)
        if service is not None and service not in tables.VIETQR_SERVICE_CODES:
            raise emv.reject(Code.QR_BAD_FIELD_VALUE, path + ".02")


def _rules_khqr(emv: _Emv) -> None:
    _check_currency_and_country(emv)
    for tag in _templates_with(emv, "khqr"):
        for sub in (1, 2):
            value = emv.sub_value(tag, sub)
            if value is not None and len(value) > limits.QR_GUID_CHARS_MAX:
                raise emv.reject(Code.QR_FIELD_TOO_LONG, f"{tag:02d}.{sub:02d}")
    if 15 in emv.root and int(emv.root_value(53)) == 840:
        raise emv.reject(Code.QR_PROFILE_RULE, "15")  # UnionPay is not offered in USD
    if emv.root_value(1) == "12":
        _khqr_dynamic(emv)


def _khqr_dynamic(emv: _Emv) -> None:
    """A dynamic KHQR carries its amount and, in 99, its creation and expiry in ms."""
    if emv.amount_minor is None:
        raise emv.reject(Code.QR_MISSING_TAG, "54")
    if 99 not in emv.templates:
        raise emv.reject(Code.QR_MISSING_TAG, "99")
    for sub in (0, 1):
        value = emv.sub_value(99, sub)
        if value is None:
            raise emv.reject(Code.QR_MISSING_TAG, f"99.{sub:02d}")
        if not (len(value) == 13 and _is_digits(value)):
            raise emv.reject(Code.QR_BAD_EXPIRY, f"99.{sub:02d}")
    emv.expiry_s = (int(emv.sub_value(99, 1)) + 999) // 1000
    emv.expiry_tag = "99.01"


def _rules_pix(emv: _Emv) -> None:
    _check_currency_and_country(emv)
    for tag in _templates_with(emv, "pix"):
        location = emv.sub_value(tag, 25)
        if location is not None and "://" in location:
            raise emv.reject(Code.QR_PROFILE_RULE, f"{tag:02d}.25")  # the location URL has no scheme


def _rules_bharatqr(emv: _Emv) -> None:
    _check_currency_and_country(emv)
    if 26 in emv.templates and emv.sub_value(26, 0) == tables.GUID_BHARAT_UPI:
        vpa = emv.sub_value(26, 1)
        if vpa is not None and not _is_vpa(vpa):
            raise emv.reject(Code.UPI_BAD_VPA, "26.01")


_PROFILE_RULES = {
    "promptpay": _rules_promptpay, "paynow": _rules_paynow, "sgqr": _rules_national_only,
    "duitnow": _rules_duitnow, "qris": _rules_qris, "qrph": _rules_qrph, "vietqr": _rules_vietqr,
    "khqr": _rules_khqr, "pix": _rules_pix, "bharatqr": _rules_bharatqr,
}


# ---- UPI links ---------------------------------------------------------------------------

def _is_vpa(value: str) -> bool:
    return len(value) <= limits.UPI_VPA_CHARS_MAX and VPA_PATTERN.fullmatch(value) is not None


def percent_decode(raw: str) -> str | None:
    """Decode %XX escapes exactly once; None when an escape is broken or the bytes are not UTF-8.

    '+' stays '+': a UPI link is a URI, not a form (SPEC_NOTES §8.6).
    """
    out = bytearray()
    index = 0
    while index < len(raw):
        char = raw[index]
        if char == "%":
            pair = raw[index + 1:index + 3]
            if len(pair) != 2 or not all(c in HEX_ANY for c in pair):
                return None
            out.append(int(pair, 16))
            index += 3
        else:
            out += char.encode("utf-8")
            index += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _upi_params(query: str) -> dict[str, str]:
    """The link's parameters, decoded; empty values are kept here and treated as absent by the caller."""
    if any(char not in UPI_RAW_CHARS for char in query):
        raise _Reject(Code.UPI_BAD_ENCODING, "", "upi")
    if "&amp;" in query:
        raise _Reject(Code.UPI_MALFORMED_QUERY, "&amp;", "upi")
    parts = query.split("&") if query else []
    if len(parts) > limits.UPI_PARAMS_MAX:
        raise _Reject(Code.UPI_TOO_MANY_PARAMS, "", "upi")
    params: dict[str, str] = {}
    for part in parts:
        key, equals, raw = part.partition("=")
        if not key or not equals:
            raise _Reject(Code.UPI_MALFORMED_QUERY, key, "upi")
        canonical = "orgid" if key == "orgId" else key  # the one case variant seen in real codes
        if canonical in params:
            raise _Reject(Code.UPI_DUPLICATE_KEY, key, "upi")
        value = percent_decode(raw)
        if value is None:
            raise _Reject(Code.UPI_BAD_ENCODING, key, "upi")
        params[canonical] = value
    return params


def _upi(text: str, now_s: int) -> QrResult:
    if text[:len(UPI_PREFIX)].lower() != UPI_PREFIX:
        raise _Reject(Code.UPI_BAD_SCHEME, "", "upi")
    params = _upi_params(text[len(UPI_PREFIX):])
    given = {key: value for key, value in params.items() if value != ""}  # empty value = absent
    if given.get("mam") == "null":
        del given["mam"]  # the NPCI spec's own sample writes mam=null
    if "pa" not in given:
        raise _Reject(Code.UPI_MISSING_PARAM, "pa", "upi")
    if not _is_vpa(given["pa"]):
        raise _Reject(Code.UPI_BAD_VPA, "pa", "upi")
    if "pn" not in given:
        raise _Reject(Code.UPI_MISSING_PARAM, "pn", "upi")
    amount_minor = None
    for key in ("am", "mam"):
        if key in given:
            minor = _upi_amount_minor(given[key], key)
            amount_minor = minor if key == "am" else amount_minor
    if "cu" in given and given["cu"] != "INR":
        raise _Reject(Code.UPI_BAD_CURRENCY, "cu", "upi")
    if "mc" in given and not (len(given["mc"]) == 4 and _is_digits(given["mc"])):
        raise _Reject(Code.UPI_BAD_MCC, "mc", "upi")
    if "url" in given and not given["url"].lower().startswith(("http://", "https://")):
        raise _Reject(Code.UPI_BAD_URL, "url", "upi")
    dynamic = given.get("mode") == "15"
    # A merchant link carries the acquirer's merchant id; merchant and dynamic links need tr.
    if ("mid" in given or dynamic) and "tr" not in given:
        raise _Reject(Code.UPI_MISSING_PARAM, "tr", "upi")
    expiry_s = _upi_expiry_s(given["QRexpire"]) if "QRexpire" in given else None
    if expiry_s is not None and now_s > 0 and now_s >= expiry_s:
        raise _Reject(Code.QR_EXPIRED, "QRexpire", "upi")
    return QrResult(
        valid=True, code=0, tag="", profile="upi", dynamic=dynamic,
        merchant_keys=(("upi", given["pa"]),), amount_minor=amount_minor, currency=356, country="IN",
        merchant_name=given["pn"], merchant_city="", mcc=given.get("mc", ""),
        reference=given.get("tr", ""), expiry_s=expiry_s,
    )


def _upi_expiry_s(value: str) -> int:
    """QRexpire, ISO 8601 to the second: YYYY-MM-DDTHH:MM:SS, then Z, +HH:MM or -HH:MM, or nothing
    for Indian time.  The code is good through that second (the instant returned is the next one)."""
    if len(value) not in (19, 20, 25) or value[4] + value[7] + value[10] + value[13] + value[16] != "--T::":
        raise _Reject(Code.QR_BAD_EXPIRY, "QRexpire", "upi")
    fields = (value[0:4], value[5:7], value[8:10], value[11:13], value[14:16], value[17:19])
    offset_s = _upi_utc_offset_s(value[19:])
    if offset_s is None or not all(_is_digits(field) for field in fields):
        raise _Reject(Code.QR_BAD_EXPIRY, "QRexpire", "upi")
    year, month, day, hour, minute, second = (int(field) for field in fields)
    if not (1 <= year and 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]
            and hour <= 23 and minute <= 59 and second <= 59):
        raise _Reject(Code.QR_BAD_EXPIRY, "QRexpire", "upi")
    return calendar.timegm((year, month, day, hour, minute, second)) - offset_s + 1


def _upi_utc_offset_s(text: str) -> int | None:
    """"" (Indian time), "Z", or +HH:MM / -HH:MM up to 14:00; None when it is none of these."""
    if text in ("", "Z"):
        return tables.UPI_UTC_OFFSET_S if text == "" else 0
    if len(text) != 6 or text[0] not in "+-" or text[3] != ":" or not _is_digits(text[1:3] + text[4:6]):
        return None
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 14 or minutes > 59 or (hours == 14 and minutes):
        return None
    return (hours * 3600 + minutes * 60) * (1 if text[0] == "+" else -1)


def _upi_amount_minor(value: str, key: str) -> int:
    whole, dot, fraction = value.partition(".")
    if (len(value) > limits.QR_AMOUNT_CHARS_MAX or not _is_digits(whole)
            or len(fraction) > 2 or (dot and fraction and not _is_digits(fraction))):
        raise _Reject(Code.UPI_BAD_AMOUNT, key, "upi")
    minor = int(whole) * 100 + int(fraction.ljust(2, "0"))
    if minor == 0:
        raise _Reject(Code.UPI_BAD_AMOUNT, key, "upi")
    return minor
