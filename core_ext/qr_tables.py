"""Data the QR validator's two implementations share: tables and the result type.

Nothing here is on the hot path.  The compiled core copies the tables into C
arrays once, at import; the reference twin reads them directly.  Keeping them
here means the two can never disagree about which currency has which exponent
or which GUID selects which national profile.
"""
from __future__ import annotations

import dataclasses

# ---- ISO 4217 ---------------------------------------------------------------
# Active numeric currency codes and their minor-unit exponent (ISO 4217, list
# one, 2024).  Funds codes without a minor unit (XAU, XDR, ...) are left out:
# nobody pays a merchant in them.  An amount converts to minor units exactly
# with the exponent; a currency missing here is QR_UNKNOWN_CURRENCY.
CURRENCY_EXPONENTS: dict[int, int] = {
    8: 2, 12: 2, 32: 2, 36: 2, 44: 2, 48: 3, 50: 2, 51: 2, 52: 2, 60: 2, 64: 2, 68: 2,
    72: 2, 84: 2, 90: 2, 96: 2, 104: 2, 108: 0, 116: 2, 124: 2, 132: 2, 136: 2, 144: 2,
    152: 0, 156: 2, 170: 2, 174: 0, 188: 2, 192: 2, 203: 2, 208: 2, 214: 2, 222: 2,
    230: 2, 232: 2, 238: 2, 242: 2, 262: 0, 270: 2, 292: 2, 320: 2, 324: 0, 328: 2,
    332: 2, 340: 2, 344: 2, 348: 2, 352: 0, 356: 2, 360: 2, 364: 2, 368: 3, 376: 2,
    388: 2, 392: 0, 398: 2, 400: 3, 404: 2, 408: 2, 410: 0, 414: 3, 417: 2, 418: 2,
    422: 2, 426: 2, 430: 2, 434: 3, 446: 2, 454: 2, 458: 2, 462: 2, 480: 2, 484: 2,
    496: 2, 498: 2, 504: 2, 512: 3, 516: 2, 524: 2, 532: 2, 533: 2, 548: 0, 554: 2,
    558: 2, 566: 2, 578: 2, 586: 2, 590: 2, 598: 2, 600: 0, 604: 2, 608: 2, 634: 2,
    643: 2, 646: 0, 654: 2, 682: 2, 690: 2, 702: 2, 704: 0, 706: 2, 710: 2, 728: 2,
    748: 2, 752: 2, 756: 2, 760: 2, 764: 2, 776: 2, 780: 2, 784: 2, 788: 3, 800: 0,
    807: 2, 818: 2, 826: 2, 834: 2, 840: 2, 858: 2, 860: 2, 882: 2, 886: 2, 901: 2,
    924: 2, 925: 2, 926: 2, 927: 4, 928: 2, 929: 2, 930: 2, 933: 2, 934: 2, 936: 2,
    938: 2, 940: 0, 941: 2, 943: 2, 944: 2, 946: 2, 947: 2, 948: 2, 949: 2, 950: 0,
    951: 2, 952: 0, 953: 0, 967: 2, 968: 2, 969: 2, 970: 2, 971: 2, 972: 2, 973: 2,
    975: 2, 976: 2, 977: 2, 978: 2, 980: 2, 981: 2, 984: 2, 985: 2, 986: 2, 990: 4,
    997: 2,
}
CURRENCY_CODE_MAX = 999

# ---- profiles ---------------------------------------------------------------
# Stable lowercase names; the index is the compiled core's profile number.
PROFILES: tuple[str, ...] = (
    "", "emvco", "promptpay", "paynow", "sgqr", "duitnow", "qris", "qrph",
    "vietqr", "khqr", "pix", "bharatqr", "upi",
)
PROFILE_INDEX: dict[str, int] = {name: index for index, name in enumerate(PROFILES)}

# The currency and country each national profile allows (KHQR allows two currencies).
PROFILE_CURRENCIES: dict[str, tuple[int, ...]] = {
    "promptpay": (764,), "paynow": (702,), "sgqr": (702,), "duitnow": (458,), "qris": (360,),
    "qrph": (608,), "vietqr": (704,), "khqr": (116, 840), "pix": (986,), "bharatqr": (356,),
}
PROFILE_COUNTRIES: dict[str, str] = {
    "promptpay": "TH", "paynow": "SG", "sgqr": "SG", "duitnow": "MY", "qris": "ID",
    "qrph": "PH", "vietqr": "VN", "khqr": "KH", "pix": "BR", "bharatqr": "IN",
}
# Profiles that do not require 52 (MCC), 59 (name) and 60 (city): Thai QR and
# NAPAS publish codes without them (SPEC_NOTES §6).
PROFILES_NAME_OPTIONAL = frozenset({"promptpay", "vietqr"})

# GUIDs (sub-ID 00 of a merchant account template) that select a profile.
# Matching is exact except for Pix, whose GUID real codes print in both cases.
GUID_PROMPTPAY = "A000000677010111"
GUID_THAI_BILL = "A000000677010112"
GUID_PAYNOW = "SG.PAYNOW"
GUID_SGQR = "SG.SGQR"
GUID_DUITNOW = "A0000006150001"
GUIDS_QRIS = ("ID.CO.QRIS.WWW", "ID.OR.GPNQR.WWW")
GUID_QRPH_P2P = "com.p2pqrpay"
GUID_QRPH_P2M = "ph.ppmi.p2m"
GUID_VIETQR = "A000000727"
GUIDS_PIX_LOWER = ("br.gov.bcb.pix", "br.gov.bcb.spi")
GUID_BHARAT_UPI = "A000000524"
# A QRIS acquirer (PJSP) template's merchant PAN starts with the national
# network prefix 936; such a code is QRIS even without the national 51 template.
QRIS_PAN_PREFIX = "936"
QRIS_PAN_CHARS_MIN = 15
# PayNow dates are Singapore dates (UTC+8); a code is good through its expiry day.
PAYNOW_UTC_OFFSET_S = 8 * 3600
# A UPI link's QRexpire without a UTC offset is an Indian time (IST, UTC+5:30).
UPI_UTC_OFFSET_S = 5 * 3600 + 30 * 60
VIETQR_SERVICE_CODES = ("QRIBFTTA", "QRIBFTTC")

# Scheme names of the primitive merchant account IDs 02-25 (EMVCo Table 3.6).
# Bharat QR gives the EMVCo-reserved 06/07 to RuPay and 08 to IFSC + account.
PRIMITIVE_SCHEMES: dict[int, str] = {
    **{tag: "visa" for tag in (2, 3)}, **{tag: "mastercard" for tag in (4, 5)},
    **{tag: f"emvco.{tag:02d}" for tag in (6, 7, 8)}, **{tag: "discover" for tag in (9, 10)},
    **{tag: "amex" for tag in (11, 12)}, **{tag: "jcb" for tag in (13, 14)},
    **{tag: "unionpay" for tag in (15, 16)}, **{tag: f"emvco.{tag:02d}" for tag in range(17, 26)},
}
BHARAT_PRIMITIVE_SCHEMES: dict[int, str] = {6: "rupay", 7: "rupay", 8: "ifsc"}


@dataclasses.dataclass(frozen=True, slots=True)
class QrResult:
    """What a QR payload says, or why it was refused.

    `merchant_keys` holds (scheme, merchant identifier) pairs, most specific
    first; the merchant directory pays the first one registered.  Amounts are
    integer minor units of `currency` (ISO 4217 numeric), never floats.
    """
    valid: bool
    code: int
    tag: str = ""
    profile: str = ""
    dynamic: bool = False
    merchant_keys: tuple[tuple[str, str], ...] = ()
    amount_minor: int | None = None
    currency: int = 0
    country: str = ""
    merchant_name: str = ""
    merchant_city: str = ""
    mcc: str = ""
    reference: str = ""
    expiry_s: int | None = None

    def as_dict(self) -> dict:
        """A JSON-ready dict (for `switch qr parse --json` and `qr check`)."""
        out = dataclasses.asdict(self)
        out["merchant_keys"] = [list(pair) for pair in self.merchant_keys]
        return out
