"""QR expiries the switch enforces, on both cores: DuitNow 26.03 (epoch milliseconds) and the UPI
link parameter QRexpire (ISO 8601), answered QR_BAD_EXPIRY when malformed and QR_EXPIRED once past,
as PayNow 26.04 and KHQR 99.01 are."""
from __future__ import annotations

import calendar

import pytest
from hypothesis import given, settings, strategies as st

import core_ext
from core_ext import limits
from core_ext.codes import Code
from switch.qrmake import tlv, with_crc

NOW_S = calendar.timegm((2026, 3, 1, 12, 0, 0))
DUITNOW_GUID = "A0000006150001"


def duitnow(expiry: str | None) -> str:
    account = tlv(0, DUITNOW_GUID) + tlv(1, "588734") + tlv(2, "MAEPP1111")
    if expiry is not None:
        account += tlv(3, expiry)
    objects = [(0, "02"), (1, "11"), (26, account), (52, "0000"), (53, "458"), (58, "MY"), (59, "KEDAI"),
               (60, "KL")]
    return with_crc("".join(tlv(tag, value) for tag, value in objects))


def upi(expire: str | None) -> str:
    link = "upi://pay?pa=shop.1@okaxis&pn=Tea%20Stall&mc=5411"
    return link if expire is None else f"{link}&QRexpire={expire}"


def verdict(impl, payload: str, now_s: int = NOW_S) -> tuple[int, str]:
    result = impl.parse_qr(payload, now_s)
    assert impl.validate_qr(payload.encode("utf-8"), now_s) == result.code
    return result.code, result.tag


# ---- DuitNow 26.03 -----------------------------------------------------------------------------

def test_a_duitnow_code_is_good_until_its_expiry_millisecond(impl):
    expiry_ms = NOW_S * 1000 + 1
    result = impl.parse_qr(duitnow(str(expiry_ms)), NOW_S)
    assert result.valid and result.profile == "duitnow" and result.expiry_s == NOW_S + 1
    assert verdict(impl, duitnow(str(expiry_ms)), NOW_S + 1) == (Code.QR_EXPIRED, "26.03")


def test_a_duitnow_code_past_its_expiry_is_expired_and_valid_without_a_clock(impl):
    payload = duitnow(str((NOW_S - 60) * 1000))
    assert verdict(impl, payload) == (Code.QR_EXPIRED, "26.03")
    assert verdict(impl, payload, 0) == (0, "")


def test_a_zero_duitnow_expiry_never_expires(impl):
    result = impl.parse_qr(duitnow("0000000000"), NOW_S)
    assert result.valid and result.expiry_s is None


@pytest.mark.parametrize("expiry", ["1772366400000x", "-1", "17723664000.0", " 1772366400000"])
def test_a_duitnow_expiry_that_is_not_digits_is_bad(impl, expiry):
    assert verdict(impl, duitnow(expiry)) == (Code.QR_BAD_EXPIRY, "26.03")


def test_a_short_duitnow_expiry_is_milliseconds_too(impl):
    assert verdict(impl, duitnow("17727")) == (Code.QR_EXPIRED, "26.03")      # 17.727 s after the epoch


def test_duitnow_expiry_digits_at_and_past_the_limit(impl):
    at_limit = "9" * limits.QR_EXPIRY_MS_DIGITS_MAX
    assert impl.parse_qr(duitnow(at_limit), NOW_S).expiry_s == (int(at_limit) + 999) // 1000
    assert verdict(impl, duitnow("0" + at_limit)) == (Code.QR_BAD_EXPIRY, "26.03")


def test_a_duitnow_code_without_26_03_has_no_expiry(impl):
    result = impl.parse_qr(duitnow(None), NOW_S)
    assert result.valid and result.expiry_s is None


# ---- UPI QRexpire ------------------------------------------------------------------------------

@pytest.mark.parametrize("expire, instant", [
    ("2026-03-01T12:00:00Z", NOW_S),
    ("2026-03-01T17:30:00%2B05:30", NOW_S),
    ("2026-03-01T17:30:00+05:30", NOW_S),          # '+' stays '+': a UPI link is not a form
    ("2026-03-01T07:00:00-05:00", NOW_S),
    ("2026-03-01T17%3A30%3A00", NOW_S),            # no offset: Indian time
])
def test_a_upi_link_is_good_through_its_qrexpire_second(impl, expire, instant):
    result = impl.parse_qr(upi(expire), instant)
    assert result.valid and result.expiry_s == instant + 1
    assert verdict(impl, upi(expire), instant + 1) == (Code.QR_EXPIRED, "QRexpire")


def test_an_expired_upi_link_is_valid_without_a_clock(impl):
    assert verdict(impl, upi("2020-01-01T00:00:00Z")) == (Code.QR_EXPIRED, "QRexpire")
    assert verdict(impl, upi("2020-01-01T00:00:00Z"), 0) == (0, "")


def test_a_upi_link_without_qrexpire_or_with_it_empty_has_no_expiry(impl):
    for payload in (upi(None), upi("")):
        result = impl.parse_qr(payload, NOW_S)
        assert result.valid and result.expiry_s is None


@pytest.mark.parametrize("expire", [
    "2026-03-01", "2026-03-01%2012:00:00", "2026-03-01T12:00", "2026-03-01T12:00:00.5Z", "20260301T120000Z",
    "2026-02-29T12:00:00Z", "2026-13-01T12:00:00Z", "2026-03-01T24:00:00Z", "2026-03-01T12:60:00Z",
    "2026-03-01T12:00:60Z", "0000-03-01T12:00:00Z", "2026-03-01T12:00:00+15:00", "2026-03-01T12:00:00+14:30",
    "2026-03-01T12:00:00+0530", "2026-03-01T12:00:00+05:60", "2026-03-01T12:00:00z", "2026-0a-01T12:00:00Z",
    "1772366400",
])
def test_a_malformed_qrexpire_is_a_bad_expiry(impl, expire):
    assert verdict(impl, upi(expire)) == (Code.QR_BAD_EXPIRY, "QRexpire")


def test_qrexpire_offsets_at_and_past_fourteen_hours(impl):
    assert verdict(impl, upi("2026-03-02T01:59:59%2B14:00")) == (Code.QR_EXPIRED, "QRexpire")
    assert verdict(impl, upi("2026-03-02T02:00:00%2B14:00")) == (0, "")
    assert verdict(impl, upi("2026-03-01T00:00:00-14:00")) == (0, "")
    assert verdict(impl, upi("2026-03-01T00:00:00-14:01")) == (Code.QR_BAD_EXPIRY, "QRexpire")


def test_a_leap_day_qrexpire_is_a_date(impl):
    assert impl.parse_qr(upi("2028-02-29T00:00:00Z"), NOW_S).expiry_s == calendar.timegm((2028, 2, 29, 0, 0, 1))


# ---- both cores agree on any value -------------------------------------------------------------

CORES = [core_ext.implementation(name) for name in ("compiled", "reference")]


def verdicts(payload: str, now_s: int) -> list[tuple]:
    results = [core.parse_qr(payload, now_s) for core in CORES]
    return [(result.code, result.tag, result.expiry_s) for result in results]


DATETIME_PIECES = st.sampled_from(["2026", "03", "01", "29", "12", "59", "60", "00", "-", ":", "T", "Z", "+",
                                   "%2B", "%3A", "14", "05", "30", "9", "a", ".", ""])


# Near-valid datetimes: fields a little past their ranges, every offset form.
DATETIMES = st.builds(
    "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}{}".format,
    st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32), st.integers(0, 24), st.integers(0, 60),
    st.integers(0, 60), st.sampled_from(["", "Z", "z", "+05:30", "%2B14:00", "-14:00", "+14:01", "-00:00", "+5:30"]))


@settings(max_examples=300, deadline=None)
@given(st.one_of(DATETIMES, st.lists(DATETIME_PIECES, max_size=14).map("".join)), st.integers(0, 2**33))
def test_both_cores_agree_on_any_qrexpire(expire, now_s):
    compiled, reference = verdicts(upi(expire), now_s)
    assert compiled == reference


@settings(max_examples=300, deadline=None)
@given(st.text("0123456789x-.", min_size=1, max_size=16), st.integers(0, 2**35))
def test_both_cores_agree_on_any_duitnow_expiry(expiry, now_s):
    compiled, reference = verdicts(duitnow(expiry), now_s)
    assert compiled == reference
