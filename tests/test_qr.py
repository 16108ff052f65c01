"""QR validation rules, one behaviour per test, each run on the compiled core and on its twin."""
from __future__ import annotations

import pytest

from core_ext import limits
from core_ext.codes import Code
from core_ext.reference.qr import crc16_ccitt_false
from switch.qrmake import tlv, with_crc

MERCHANT_ACCOUNT = (26, tlv(0, "com.example") + tlv(1, "M1"))
BASE = [(0, "01"), (1, "11"), MERCHANT_ACCOUNT, (52, "5411"), (53, "764"), (58, "TH"), (59, "SHOP"),
        (60, "BANGKOK")]


def emv(*objects, base=BASE, drop=()) -> str:
    """A payload of BASE with `objects` replacing or adding data objects, CRC appended."""
    replaced = dict(base)
    for tag in drop:
        replaced.pop(tag)
    replaced.update(dict(objects))
    ordered = [0] + sorted(tag for tag in replaced if tag != 0)
    return with_crc("".join(tlv(tag, replaced[tag]) for tag in ordered if tag in replaced))


def padded(length_chars: int) -> str:
    """A valid payload of exactly `length_chars` characters, filled with RFU objects (65-79 are ignored)."""
    body = "".join(tlv(tag, value) for tag, value in BASE)
    missing = length_chars - len(body) - 8
    tag = 65
    while missing > 0:
        take = min(missing, 103)
        if missing - take in (1, 2, 3, 4):   # leave room for a whole last object
            take -= 5
        body += tlv(tag, "x" * (take - 4))
        missing -= take
        tag += 1
    return with_crc(body)


def verdict(impl, payload: str, now_s: int = 0) -> tuple[int, str]:
    result = impl.parse_qr(payload, now_s)
    assert impl.validate_qr(payload.encode("utf-8"), now_s) == result.code
    return result.code, result.tag


def test_the_base_payload_is_valid(impl):
    result = impl.parse_qr(emv())
    assert result.valid and result.profile == "emvco"
    assert result.merchant_keys == (("com.example", "M1"),)
    assert (result.currency, result.country, result.merchant_name, result.mcc) == (764, "TH", "SHOP", "5411")
    assert result.amount_minor is None and result.dynamic is False


# ---- CRC -----------------------------------------------------------------------------------
def test_crc_is_ccitt_false_with_its_check_value():
    assert crc16_ccitt_false(b"123456789") == 0x29B1


def test_lowercase_crc_is_a_format_error(impl):
    payload = next(candidate for candidate in (emv((59, f"SHOP{index}")) for index in range(100))
                   if any(char in "ABCDEF" for char in candidate[-4:]))
    assert verdict(impl, payload) == (0, "")
    assert verdict(impl, payload[:-4] + payload[-4:].lower()) == (Code.QR_CRC_FORMAT, "63")


def test_crc_is_anchored_at_the_end_not_at_the_first_6304(impl):
    payload = emv((59, "SHOP6304ABCD"))
    assert verdict(impl, payload) == (0, "")


def test_a_wrong_crc_is_a_mismatch(impl):
    payload = emv()
    wrong = f"{(int(payload[-4:], 16) + 1) % 65536:04X}"
    assert verdict(impl, payload[:-4] + wrong) == (Code.QR_CRC_MISMATCH, "63")


def test_a_missing_crc_is_a_format_error(impl):
    assert verdict(impl, emv()[:-8]) == (Code.QR_CRC_FORMAT, "63")


# ---- structure --------------------------------------------------------------------------------
def test_payload_format_indicator_must_come_first(impl):
    body = tlv(1, "11") + tlv(0, "01") + "".join(tlv(tag, value) for tag, value in BASE[2:])
    assert verdict(impl, with_crc(body)) == (Code.QR_TAG_ORDER, "00")


def test_a_crc_object_before_the_end_is_out_of_order(impl):
    body = "".join(tlv(tag, value) for tag, value in BASE) + tlv(63, "ABCD")
    assert verdict(impl, with_crc(body)) == (Code.QR_TAG_ORDER, "63")


def test_a_duplicate_root_tag_is_rejected(impl):
    body = "".join(tlv(tag, value) for tag, value in BASE) + tlv(59, "AGAIN")
    assert verdict(impl, with_crc(body)) == (Code.QR_DUPLICATE_TAG, "59")


def test_a_duplicate_sub_tag_names_its_template(impl):
    payload = emv((62, tlv(5, "A") + tlv(5, "B")))
    assert verdict(impl, payload) == (Code.QR_DUPLICATE_TAG, "62.05")


def test_a_zero_length_is_rejected(impl):
    body = "".join(tlv(tag, value) for tag, value in BASE) + "6100"
    assert verdict(impl, with_crc(body)) == (Code.QR_ZERO_LENGTH, "61")


def test_a_length_past_the_template_is_an_overrun(impl):
    payload = emv((62, "0509ABC"))
    assert verdict(impl, payload) == (Code.QR_LENGTH_OVERRUN, "62.05")


def test_a_non_numeric_length_is_a_bad_header(impl):
    body = "".join(tlv(tag, value) for tag, value in BASE) + "61AB"
    assert verdict(impl, with_crc(body)) == (Code.QR_BAD_TLV_HEADER, "61")


def test_lengths_count_characters_not_bytes(impl):
    payload = emv((64, tlv(0, "ZH") + tlv(1, "最佳运输")))
    assert "0104最佳运输" in payload
    assert verdict(impl, payload) == (0, "")


def test_primitive_merchant_accounts_are_never_parsed_as_templates(impl):
    payload = emv((15, "0010A000000000"), drop=(26,))
    result = impl.parse_qr(payload)
    assert result.valid and result.merchant_keys == (("unionpay", "0010A000000000"),)


def test_unknown_sub_ids_and_rfu_tags_are_ignored(impl):
    payload = emv((62, tlv(0, "ph.ppmi.qrph") + tlv(30, "anything")), (70, "\u00e9\u00e9 not ans"))
    assert verdict(impl, payload) == (0, "")


def test_a_merchant_account_template_needs_a_guid(impl):
    assert verdict(impl, emv((26, tlv(1, "M1")))) == (Code.QR_MISSING_TAG, "26.00")


def test_a_payment_system_template_in_62_needs_a_guid(impl):
    assert verdict(impl, emv((62, tlv(50, tlv(1, "X"))))) == (Code.QR_MISSING_TAG, "62.50.00")


def test_no_merchant_account_is_rejected(impl):
    assert verdict(impl, emv(drop=(26,))) == (Code.QR_NO_MERCHANT_ACCOUNT, "")


@pytest.mark.parametrize("tag", [52, 53, 58, 59, 60])
def test_mandatory_root_tags(impl, tag):
    assert verdict(impl, emv(drop=(tag,))) == (Code.QR_MISSING_TAG, f"{tag:02d}")


def test_format_indicator_02_is_for_duitnow_only(impl):
    assert verdict(impl, emv((0, "02"))) == (Code.QR_BAD_FORMAT_INDICATOR, "00")


def test_initiation_method_is_11_or_12(impl):
    assert verdict(impl, emv((1, "13"))) == (Code.QR_BAD_INITIATION_METHOD, "01")


# ---- field formats ------------------------------------------------------------------------------
@pytest.mark.parametrize("mcc", ["x121", "111", "59991", "-100"])
def test_mcc_is_four_digits(impl, mcc):
    assert verdict(impl, emv((52, mcc))) == (Code.QR_BAD_MCC, "52")


def test_currency_must_be_a_known_iso_code(impl):
    assert verdict(impl, emv((53, "849"))) == (Code.QR_UNKNOWN_CURRENCY, "53")
    assert verdict(impl, emv((53, "AB1"))) == (Code.QR_BAD_CURRENCY, "53")


@pytest.mark.parametrize("text, currency, minor", [
    ("98.73", "764", 9873), ("98", "764", 9800), ("98.", "764", 9800), ("0.9", "764", 90),
    ("100.00", "392", 100), ("1.234", "048", 1234), ("1234567890.12", "764", 123456789012),
])
def test_amount_converts_exactly_to_minor_units(impl, text, currency, minor):
    result = impl.parse_qr(emv((53, currency), (54, text)))
    assert result.valid and result.amount_minor == minor


@pytest.mark.parametrize("text", ["98,73", "3 705", "0", "0.00", "1.2.3", ".", "12345678901.23", "-1"])
def test_a_malformed_or_zero_amount_is_rejected(impl, text):
    assert verdict(impl, emv((54, text))) == (Code.QR_BAD_AMOUNT, "54")


def test_an_amount_finer_than_the_minor_unit_is_rejected(impl):
    assert verdict(impl, emv((53, "392"), (54, "999.123"))) == (Code.QR_AMOUNT_PRECISION, "54")


def test_tip_and_convenience_fee_rules(impl):
    assert verdict(impl, emv((55, "01"))) == (0, "")
    assert verdict(impl, emv((55, "04"))) == (Code.QR_BAD_TIP_INDICATOR, "55")
    assert verdict(impl, emv((55, "02"))) == (Code.QR_MISSING_TAG, "56")
    assert verdict(impl, emv((55, "02"), (56, "5.00"))) == (0, "")
    assert verdict(impl, emv((55, "02"), (56, "0"))) == (Code.QR_BAD_CONVENIENCE_FEE, "56")
    assert verdict(impl, emv((55, "01"), (56, "5.00"))) == (Code.QR_BAD_CONVENIENCE_FEE, "56")
    assert verdict(impl, emv((55, "03"), (57, "99.99"))) == (0, "")
    assert verdict(impl, emv((55, "03"), (57, "100"))) == (Code.QR_BAD_CONVENIENCE_FEE, "57")
    assert verdict(impl, emv((55, "03"), (57, "5%"))) == (Code.QR_BAD_CONVENIENCE_FEE, "57")


def test_country_is_two_upper_case_letters(impl):
    assert verdict(impl, emv((58, "th"))) == (Code.QR_BAD_COUNTRY, "58")


def test_ans_fields_refuse_accents_and_emoji(impl):
    assert verdict(impl, emv((60, "Brasília"))) == (Code.QR_NOT_ANS, "60")
    assert verdict(impl, emv((62, tlv(5, "1234\U0001F440")))) == (Code.QR_NOT_ANS, "62.05")


def test_consumer_data_request_is_a_set_of_a_m_e(impl):
    assert verdict(impl, emv((62, tlv(9, "AME")))) == (0, "")
    assert verdict(impl, emv((62, tlv(9, "AA")))) == (Code.QR_BAD_FIELD_VALUE, "62.09")
    assert verdict(impl, emv((62, tlv(9, "INV-2024")))) == (Code.QR_BAD_FIELD_VALUE, "62.09")


def test_language_template_needs_language_and_name(impl):
    assert verdict(impl, emv((64, tlv(1, "名")))) == (Code.QR_MISSING_TAG, "64.00")
    assert verdict(impl, emv((64, tlv(0, "ZH")))) == (Code.QR_MISSING_TAG, "64.01")


# ---- limits: at the limit and one past -----------------------------------------------------------
def test_payload_chars_at_and_past_the_limit(impl):
    at_limit = padded(limits.QR_PAYLOAD_CHARS_MAX)
    past = padded(limits.QR_PAYLOAD_CHARS_MAX + 1)
    assert (len(at_limit), len(past)) == (512, 513)
    assert verdict(impl, at_limit) == (0, "")
    assert verdict(impl, past) == (Code.QR_TOO_LONG, "")


def test_payload_bytes_at_and_past_the_limit(impl):
    head = "upi://pay?pa=a.b@bank&pn=X&tn="
    at_limit = head + "a" * (limits.QR_PAYLOAD_BYTES_MAX - len(head))
    assert verdict(impl, at_limit) == (0, "")
    assert verdict(impl, at_limit + "a") == (Code.QR_TOO_LONG, "")


@pytest.mark.parametrize("tag, chars_max", [
    (59, limits.QR_MERCHANT_NAME_CHARS_MAX), (60, limits.QR_MERCHANT_CITY_CHARS_MAX),
    (61, limits.QR_POSTAL_CODE_CHARS_MAX),
])
def test_root_text_fields_at_and_past_their_limit(impl, tag, chars_max):
    assert verdict(impl, emv((tag, "A" * chars_max))) == (0, "")
    assert verdict(impl, emv((tag, "A" * (chars_max + 1)))) == (Code.QR_FIELD_TOO_LONG, f"{tag}")


@pytest.mark.parametrize("sub, chars_max", [(5, limits.QR_ADDITIONAL_DATA_CHARS_MAX), (10, limits.QR_TAX_ID_CHARS_MAX)])
def test_additional_data_fields_at_and_past_their_limit(impl, sub, chars_max):
    assert verdict(impl, emv((62, tlv(sub, "A" * chars_max)))) == (0, "")
    assert verdict(impl, emv((62, tlv(sub, "A" * (chars_max + 1))))) == (Code.QR_FIELD_TOO_LONG, f"62.{sub:02d}")


def test_guid_at_and_past_its_limit(impl):
    guid = "G" * limits.QR_GUID_CHARS_MAX
    assert verdict(impl, emv((26, tlv(0, guid) + tlv(1, "M1")))) == (0, "")
    assert verdict(impl, emv((26, tlv(0, guid + "G") + tlv(1, "M1")))) == (Code.QR_BAD_GUID, "26.00")


def test_amount_at_and_past_its_length_limit(impl):
    assert verdict(impl, emv((54, "1" * limits.QR_AMOUNT_CHARS_MAX))) == (0, "")
    assert verdict(impl, emv((54, "1" * (limits.QR_AMOUNT_CHARS_MAX + 1)))) == (Code.QR_BAD_AMOUNT, "54")


def test_fee_percentage_at_and_past_its_length_limit(impl):
    assert verdict(impl, emv((55, "03"), (57, "01.50"))) == (0, "")
    assert verdict(impl, emv((55, "03"), (57, "001.50"))) == (Code.QR_BAD_CONVENIENCE_FEE, "57")


def test_merchant_keys_stop_at_their_limit(impl):
    primitives = [(tag, f"PAN{tag:02d}") for tag in range(2, 2 + limits.QR_MERCHANT_KEYS_MAX + 1)]
    result = impl.parse_qr(emv(*primitives, drop=(26,)))
    assert result.valid and len(result.merchant_keys) == limits.QR_MERCHANT_KEYS_MAX
    assert result.merchant_keys[0] == ("visa", "PAN02")


def test_upi_parameters_at_and_past_the_limit(impl):
    base = ["pa=a.b@bank", "pn=X"]
    at_limit = base + [f"x{index}=1" for index in range(limits.UPI_PARAMS_MAX - len(base))]
    assert verdict(impl, "upi://pay?" + "&".join(at_limit)) == (0, "")
    assert verdict(impl, "upi://pay?" + "&".join(at_limit + ["y=1"])) == (Code.UPI_TOO_MANY_PARAMS, "")


def test_vpa_at_and_past_its_limit(impl):
    handle = "a" * (limits.UPI_VPA_CHARS_MAX - len("@bank"))
    assert verdict(impl, f"upi://pay?pa={handle}@bank&pn=X") == (0, "")
    assert verdict(impl, f"upi://pay?pa={handle}a@bank&pn=X") == (Code.UPI_BAD_VPA, "pa")


# ---- encodings ------------------------------------------------------------------------------------
def test_empty_payload(impl):
    assert verdict(impl, "") == (Code.QR_EMPTY, "")


def test_invalid_utf8_is_rejected(impl):
    assert impl.validate_qr(b"000201\xff\xfe") == Code.QR_BAD_ENCODING
    assert impl.validate_qr(b"upi://pay?pa=\xed\xa0\x80") == Code.QR_BAD_ENCODING   # a surrogate
    assert impl.parse_qr("0002\ud800").code == Code.QR_BAD_ENCODING


# ---- UPI ----------------------------------------------------------------------------------------------
def test_upi_link_fields(impl):
    result = impl.parse_qr("upi://pay?pa=shop.1@okaxis&pn=Tea%20Stall&am=12.50&cu=INR&mc=5411&tr=T1")
    assert result.valid and result.profile == "upi" and result.dynamic is False
    assert (result.amount_minor, result.currency, result.country) == (1250, 356, "IN")
    assert (result.merchant_name, result.mcc, result.reference) == ("Tea Stall", "5411", "T1")
    assert result.merchant_keys == (("upi", "shop.1@okaxis"),)


def test_upi_scheme_is_case_insensitive(impl):
    assert verdict(impl, "UPI://PAY?pa=a.b@bank&pn=X") == (0, "")
    assert verdict(impl, "upi://send?pa=a.b@bank&pn=X") == (Code.UPI_BAD_SCHEME, "")


def test_upi_percent_decodes_exactly_once(impl):
    result = impl.parse_qr("upi://pay?pa=a.b@bank&pn=A%2520B+C")
    assert result.valid and result.merchant_name == "A%20B+C"
    assert verdict(impl, "upi://pay?pa=a.b@bank&pn=A%zz") == (Code.UPI_BAD_ENCODING, "pn")
    assert verdict(impl, "upi://pay?pa=a.b@bank&pn=A%ff") == (Code.UPI_BAD_ENCODING, "pn")


def test_upi_html_escaped_separator_is_rejected(impl):
    assert verdict(impl, "upi://pay?pa=a.b@bank&amp;pn=X") == (Code.UPI_MALFORMED_QUERY, "&amp;")


def test_upi_duplicate_keys_are_rejected(impl):
    assert verdict(impl, "upi://pay?pa=a.b@bank&pn=X&pn=Y") == (Code.UPI_DUPLICATE_KEY, "pn")
    assert verdict(impl, "upi://pay?pa=a.b@bank&pn=X&orgid=1&orgId=2") == (Code.UPI_DUPLICATE_KEY, "orgId")


def test_upi_empty_value_is_absent(impl):
    assert verdict(impl, "upi://pay?pa=a.b@bank&pn=X&am=&tid=") == (0, "")
    assert verdict(impl, "upi://pay?pa=a.b@bank&pn=") == (Code.UPI_MISSING_PARAM, "pn")


def test_upi_raw_space_and_malformed_parameters(impl):
    assert verdict(impl, "upi://pay?pa=a.b@bank&pn=A B") == (Code.UPI_BAD_ENCODING, "")
    assert verdict(impl, "upi://pay?pa=a.b@bank&pn=X&&x=1") == (Code.UPI_MALFORMED_QUERY, "")
    assert verdict(impl, "upi://pay?pa=a.b@bank&pn=X&flag") == (Code.UPI_MALFORMED_QUERY, "flag")


@pytest.mark.parametrize("query, code, tag", [
    ("pa=ab&pn=X", Code.UPI_BAD_VPA, "pa"),
    ("pa=a.b@bank&pn=X&am=1.234", Code.UPI_BAD_AMOUNT, "am"),
    ("pa=a.b@bank&pn=X&am=0", Code.UPI_BAD_AMOUNT, "am"),
    ("pa=a.b@bank&pn=X&mam=abc", Code.UPI_BAD_AMOUNT, "mam"),
    ("pa=a.b@bank&pn=X&cu=USD", Code.UPI_BAD_CURRENCY, "cu"),
    ("pa=a.b@bank&pn=X&mc=54", Code.UPI_BAD_MCC, "mc"),
    ("pa=a.b@bank&pn=X&url=ftp://x", Code.UPI_BAD_URL, "url"),
    ("pa=a.b@bank&pn=X&mid=M1", Code.UPI_MISSING_PARAM, "tr"),
    ("pa=a.b@bank&pn=X&mode=15", Code.UPI_MISSING_PARAM, "tr"),
])
def test_upi_field_rules(impl, query, code, tag):
    assert verdict(impl, "upi://pay?" + query) == (code, tag)


def test_upi_mam_null_from_the_npci_sample_is_absent(impl):
    assert verdict(impl, "upi://pay?pa=a.b@bank&pn=X&am=10&mam=null") == (0, "")


def test_upi_dynamic_link(impl):
    result = impl.parse_qr("upi://pay?pa=a.b@bank&pn=X&mode=15&tr=ORDER1&am=10")
    assert result.valid and result.dynamic and result.reference == "ORDER1"
