"""Fuzz target: well-formed EMVCo payloads built field by field, compiled core against its twin.

    python tests/fuzz/fuzz_qr_fields.py -atheris_runs=100000 tests/fuzz/corpus/qr_fields

Byte mutations of a real payload mostly break its TLV lengths, so the byte
target (fuzz_qr) rarely gets past the structure checks into the profiles' own
rules.  Here the input is a recipe instead: the fuzzed bytes choose, object by
object, what goes in a payload that is always a correct TLV string with a
correct CRC -- a format indicator, merchant account templates under every known
GUID (or a fuzzed one) with fuzzed sub-objects, MCC, currency, amount, tip,
country, name, city, additional data, language template, KHQR timestamps,
unreserved templates -- with values drawn from near-valid forms (digits of the
right length, edge amounts, the profile's own currency and country) or
arbitrary text, Unicode included.  The same checks as fuzz_qr apply.
"""
from __future__ import annotations

import sys

import atheris

import harness  # noqa: F401  (puts the repository on sys.path)
import qr_checks
from core_ext import qr_tables as tables
from switch.qrmake import with_crc

TARGET = "qr_fields"
# Coverage of these guides the mutations (see harness.instrument).
INSTRUMENTED = ("core_ext.reference.qr", "qr_checks", "__main__")
GUIDS = (tables.GUID_PROMPTPAY, tables.GUID_THAI_BILL, tables.GUID_PAYNOW, tables.GUID_SGQR, tables.GUID_DUITNOW,
         *tables.GUIDS_QRIS, tables.GUID_QRPH_P2P, tables.GUID_QRPH_P2M, tables.GUID_VIETQR, "BR.GOV.BCB.PIX",
         *tables.GUIDS_PIX_LOWER, tables.GUID_BHARAT_UPI, "shop@aclb", "com.example", "D15600000000")
CURRENCIES = (764, 702, 458, 360, 608, 704, 116, 840, 986, 356, 48, 392, 990, 999, 0)
COUNTRIES = tuple(sorted(set(tables.PROFILE_COUNTRIES.values()))) + ("CN", "us", "X1")
AMOUNTS = ("1", "0", "0.00", "10.5", "10.50", "10.505", "99999999999.99", "9999999999999", "18446744073709551615",
           ".5", "5.", "1.2.3", "-1", "1e3", " 1", "０", "00000000000.01")
TEXT_FORMS = 6


def tlv(tag: int, value: str) -> str:
    """One data object; a value past 99 characters is cut (a template so cut fails its own scan, which is fine)."""
    value = value[:99] or "0"
    return f"{tag:02d}{len(value):02d}{value}"


class Recipe:
    """The fuzzed bytes read as choices."""

    def __init__(self, data: bytes):
        self.fdp = atheris.FuzzedDataProvider(data)

    def chance(self) -> bool:
        return self.fdp.ConsumeBool()

    def pick(self, options):
        return options[self.fdp.ConsumeIntInRange(0, len(options) - 1)]

    def digits(self, count: int) -> str:
        return "".join(str(self.fdp.ConsumeIntInRange(0, 9)) for _ in range(count))

    def text(self, typical_chars: int) -> str:
        """A value of 1-99 characters: digits, printable ASCII, near the typical length, or anything."""
        form = self.fdp.ConsumeIntInRange(0, TEXT_FORMS - 1)
        if form == 0:
            value = self.digits(max(1, typical_chars + self.fdp.ConsumeIntInRange(-1, 1)))
        elif form == 1:
            value = "".join(chr(self.fdp.ConsumeIntInRange(0x20, 0x7E)) for _ in range(typical_chars))
        elif form == 2:
            value = self.fdp.ConsumeUnicodeNoSurrogates(self.fdp.ConsumeIntInRange(1, 99))
        elif form == 3:
            value = self.pick(AMOUNTS)
        elif form == 4:
            value = "x" * self.fdp.ConsumeIntInRange(1, 99)
        else:
            value = self.fdp.ConsumeBytes(self.fdp.ConsumeIntInRange(1, 40)).decode("latin-1")  # controls too
        return (value or "0")[:99]

    def twist(self) -> int:
        """0 (keep the valid form) thirteen times in sixteen, and once the bytes run out; else 1-3."""
        return max(0, self.fdp.ConsumeIntInRange(0, 15) - 12)

    def template(self, guid: str | None, subs: range, typical_chars: int, used_chars: int = 0) -> str:
        """Sub-objects that fit in one 99-character value with `used_chars` already taken."""
        body = tlv(0, guid) if guid is not None else ""
        for sub in subs:
            room = 99 - used_chars - len(body) - 4
            if room >= 1 and self.chance():
                body += tlv(sub, self.text(typical_chars)[:room])
        return body or tlv(1, "0")


# (GUID, template tag, the sub-objects it needs, currency, country) of each profile, plus a generic one.
PROFILE_SHAPES = (
    (tables.GUID_PROMPTPAY, 29, ((1, "0066812345678"),), 764, "TH"),
    (tables.GUID_THAI_BILL, 30, ((1, "099400016550100"), (2, "INV1")), 764, "TH"),
    (tables.GUID_PAYNOW, 26, ((1, "2"), (2, "201403121W"), (3, "1"), (4, "20271231")), 702, "SG"),
    (tables.GUID_SGQR, 51, ((1, "SGQR12345678"),), 702, "SG"),
    (tables.GUID_DUITNOW, 26, ((1, "890087"), (2, "MY0001234")), 458, "MY"),
    (tables.GUIDS_QRIS[0], 51, ((2, "ID1020304050607"), (3, "UMI")), 360, "ID"),
    (tables.GUID_QRPH_P2M, 28, ((1, "BNORPHMMXXX"), (3, "M123")), 608, "PH"),
    (tables.GUID_VIETQR, 38, ((1, "0006970436011001234567890"), (2, "QRIBFTTA")), 704, "VN"),
    ("shop@aclb", 29, ((1, "85512345678"),), 116, "KH"),
    (tables.GUIDS_PIX_LOWER[0], 26, ((1, "user@example.com"),), 986, "BR"),
    (tables.GUID_BHARAT_UPI, 26, ((1, "shop@okaxis"),), 356, "IN"),
    ("com.example", 26, ((1, "M-1"),), 840, "US"),
)


def field(recipe: Recipe, valid: str, typical_chars: int, alternatives: tuple = ()) -> str:
    """`valid` mostly; sometimes one of `alternatives`, sometimes fuzzed text."""
    twist = recipe.twist()
    if twist == 0:
        return valid
    return recipe.pick(alternatives) if alternatives and twist == 1 else recipe.text(typical_chars)


def merchant_account(recipe: Recipe, shape) -> str:
    guid, tag, subs, _currency, _country = shape
    body = tlv(0, field(recipe, guid, 12, GUIDS))
    for sub, value in subs:
        if recipe.twist() != 2:  # now and then a needed sub-object is left out
            body += tlv(sub, field(recipe, value, len(value)))
    if recipe.twist() == 1:
        body += recipe.template(None, range(5, 8), 8, len(body))
    return tlv(tag if recipe.twist() != 1 else recipe.pick(range(26, 52)), body)


def build(recipe: Recipe) -> str:
    shape = recipe.pick(PROFILE_SHAPES)
    _guid, _tag, _subs, currency, country = shape
    body = tlv(0, field(recipe, "01", 2, ("02", "1")))
    body += tlv(1, field(recipe, recipe.pick(("11", "12")), 2, ("13",)))
    if recipe.twist() == 1:
        body += tlv(recipe.pick((2, 4, 6, 8, 15, 25)), recipe.text(16))
    body += merchant_account(recipe, shape)
    if recipe.twist() == 1:
        body += merchant_account(recipe, recipe.pick(PROFILE_SHAPES))
    body += tlv(52, field(recipe, "5411", 4, ("4121", "0000", "541", "54111")))
    body += tlv(53, field(recipe, f"{currency:03d}", 3, tuple(f"{code:03d}" for code in CURRENCIES)))
    if recipe.chance():
        body += tlv(54, field(recipe, recipe.pick(AMOUNTS[:4]), 6, AMOUNTS))
    if recipe.twist() == 1:
        body += tlv(55, recipe.pick(("01", "02", "03", "04")))
        body += tlv(56, recipe.pick(AMOUNTS)) if recipe.chance() else ""
        body += tlv(57, recipe.pick(("5", "99.99", "100", "0.5", "3.25", "12.345"))) if recipe.chance() else ""
    body += tlv(58, field(recipe, country, 2, COUNTRIES))
    body += tlv(59, field(recipe, "TUK TUK 7", 12)) + tlv(60, field(recipe, "BANGKOK", 8))
    if recipe.chance():
        body += tlv(62, recipe.template(None, range(1, 12), 8))
    if recipe.twist() == 1:
        body += tlv(64, tlv(0, recipe.pick(("ZH", "th", "E1", "ENG"))) + tlv(1, recipe.text(8))
                    + (tlv(2, recipe.text(6)) if recipe.chance() else ""))
    if recipe.chance():
        created = f"{1_800_000_000_000 + int(recipe.digits(6)):013d}"
        body += tlv(99, tlv(0, field(recipe, created, 13)) + tlv(1, field(recipe, created[:-7] + "9000000", 13)))
    if recipe.twist() == 1:
        body += tlv(recipe.pick(range(80, 99)), recipe.template(recipe.text(10)[:40], range(1, 3), 8, 44))
    return with_crc(body)


def test_one_input(data: bytes) -> None:
    payload = build(Recipe(data))
    qr_checks.check_text(payload)


if __name__ == "__main__":
    harness.main(test_one_input, INSTRUMENTED)
    sys.exit(0)
