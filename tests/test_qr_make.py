"""`qr make` output parses back to the same fields for every profile; the `switch qr` commands."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import core_ext
from core_ext.codes import Code
from core_ext.qr_tables import PROFILE_COUNTRIES, PROFILE_CURRENCIES
from switch.cli import main
from switch.qrmake import PROFILES_MAKEABLE, QrMakeError, QrSpec, format_amount, make_payload, write_symbol

NOW_S = 1_764_000_000
IDENTIFIERS = {
    "promptpay": ("promptpay", "0066812345678"), "paynow": ("paynow", "201912345K"),
    "sgqr": ("sgqr", "180909001762"), "duitnow": ("duitnow", "MAEPP111134456652"),
    "qris": ("qris", "ID1019004699079"), "qrph": ("qrph", "GXCHPHM2XXX:217020000000602"),
    "vietqr": ("vietqr", "970422:0123456789"), "khqr": ("khqr", "temple@aclb"),
    "pix": ("pix", "cinema@example.com"), "bharatqr": ("upi", "cinema@okaxis"),
    "upi": ("upi", "taxi.raju@okaxis"), "emvco": ("com.example.switch", "M-12345"),
}
ANS_NAME = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghij0123456789.&'-", min_size=1, max_size=25) \
    .filter(lambda name: name.strip() == name)


def test_every_makeable_profile_has_an_identifier_example():
    assert set(IDENTIFIERS) == set(PROFILES_MAKEABLE)


@pytest.mark.parametrize("profile", PROFILES_MAKEABLE)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=ANS_NAME, amount_minor=st.one_of(st.none(), st.integers(min_value=1, max_value=10**11)),
       dynamic=st.booleans(), reference=st.sampled_from(["", "INV42", "***"]))
def test_made_codes_parse_back_to_the_same_fields(impl, profile, name, amount_minor, dynamic, reference):
    scheme, identifier = IDENTIFIERS[profile]
    if profile == "khqr" and dynamic and amount_minor is None:
        amount_minor = 100   # a dynamic KHQR must carry its amount
    if profile == "upi" and dynamic and not reference:
        reference = "T1"     # a dynamic UPI link must carry tr
    country = "CN" if profile == "emvco" else None
    currency = 156 if profile == "emvco" else None
    spec = QrSpec(profile, identifier, name, "CITY", "5411", currency=currency, country=country,
                  amount_minor=amount_minor, dynamic=dynamic, reference=reference, now_s=NOW_S)
    result = impl.parse_qr(make_payload(spec, validate=impl.parse_qr))
    assert result.valid and result.profile == profile
    assert result.merchant_keys[0] == (scheme, identifier)
    assert (result.amount_minor, result.dynamic, result.merchant_name) == (amount_minor, dynamic, name)
    assert result.currency == (currency or (356 if profile == "upi" else PROFILE_CURRENCIES[profile][0]))
    assert result.country == (country or PROFILE_COUNTRIES.get(profile, "IN"))
    assert result.mcc == "5411" and result.reference == reference
    if profile != "upi":
        assert result.merchant_city == "CITY"


def test_a_made_paynow_code_is_good_through_its_expiry_day(impl):
    payload = make_payload(QrSpec("paynow", "201912345K", "KOPI", "Singapore", "5814", expiry_s=NOW_S),
                           validate=impl.parse_qr)
    result = impl.parse_qr(payload)
    assert result.expiry_s > NOW_S and result.expiry_s - NOW_S <= 86400
    assert impl.parse_qr(payload, result.expiry_s - 1).valid
    assert impl.parse_qr(payload, result.expiry_s).code == Code.QR_EXPIRED


def test_a_made_khqr_code_expires_when_told(impl):
    payload = make_payload(QrSpec("khqr", "temple@aclb", "WAT", "Phnom Penh", "8661", currency=116, amount_minor=4000,
                                  dynamic=True, now_s=NOW_S, expiry_s=NOW_S + 900), validate=impl.parse_qr)
    assert impl.parse_qr(payload, NOW_S + 899).valid
    assert (impl.parse_qr(payload, NOW_S + 900).code, impl.parse_qr(payload, NOW_S + 900).tag) == (Code.QR_EXPIRED, "99.01")


def test_amounts_are_formatted_exactly():
    assert format_amount(123456, 764) == "1234.56"
    assert format_amount(5, 764) == "0.05"
    assert format_amount(50000, 704) == "50000"
    assert format_amount(1234, 48) == "1.234"
    with pytest.raises(QrMakeError):
        format_amount(0, 764)


def test_inputs_that_make_an_invalid_code_are_refused():
    with pytest.raises(QrMakeError, match="QR_NOT_ANS"):
        make_payload(QrSpec("pix", "a@b.com", "Loja", "Brasília", "0000"))
    with pytest.raises(QrMakeError, match="QR_FIELD_TOO_LONG"):
        make_payload(QrSpec("pix", "a@b.com", "N" * 26, "RIO", "0000"))
    with pytest.raises(QrMakeError, match="unknown profile"):
        make_payload(QrSpec("nope", "x", "N", "C"))


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_the_symbol_is_written(tmp_path, suffix):
    payload = make_payload(QrSpec("promptpay", "0066812345678", "TUK TUK", "BANGKOK", "4121"))
    path = write_symbol(payload, tmp_path / f"poster{suffix}")
    head = path.read_bytes()[:64]
    assert head.startswith(b"\x89PNG") if suffix == ".png" else b"<svg" in path.read_bytes()[:400] or b"<?xml" in head


def test_a_symbol_needs_a_png_or_svg_name(tmp_path):
    with pytest.raises(QrMakeError):
        write_symbol("x", tmp_path / "poster.gif")


# ---- the commands -------------------------------------------------------------------------------------
VALID = "00020101021129370016A000000677010111011300668012345675802TH530376463046197"


def run(*args, input_text=None):
    return CliRunner().invoke(main, ["qr", *args], input=input_text)


def test_qr_parse_exits_0_for_a_valid_code_and_1_for_an_invalid_one():
    assert run("parse", VALID).exit_code == 0
    result = run("parse", VALID[:-1] + "8")
    assert result.exit_code == 1 and "QR_CRC_MISMATCH" in result.output


def test_qr_parse_json_prints_the_fields():
    result = run("parse", "--json", VALID)
    verdict = json.loads(result.output)
    assert result.exit_code == 0 and verdict["valid"] is True and verdict["profile"] == "promptpay"
    assert verdict["merchant_keys"] == [["promptpay", "0066801234567"]] and verdict["currency"] == 764


def test_qr_check_prints_one_verdict_per_line(tmp_path):
    lines = [json.dumps({"payload": VALID}), json.dumps({"payload": "garbage"}), "not json", json.dumps([1]), ""]
    result = run("check", "-", input_text="\n".join(lines) + "\n")
    verdicts = [json.loads(line) for line in result.output.splitlines()]
    assert result.exit_code == 1
    assert [verdict["valid"] for verdict in verdicts] == [True, False, False, False]
    assert [verdict["line"] for verdict in verdicts] == [1, 2, 3, 4]
    assert verdicts[0]["profile"] == "promptpay" and verdicts[1]["code_name"] == "QR_CRC_FORMAT"
    assert "error" in verdicts[2] and "error" in verdicts[3]


def test_qr_check_judges_an_overlong_line_without_reading_it_whole():
    from switch.commands.qr import CHECK_LINE_BYTES_MAX

    lines = [json.dumps({"payload": VALID}), "x" * (3 * CHECK_LINE_BYTES_MAX), json.dumps({"payload": VALID})]
    verdicts = [json.loads(line) for line in run("check", "-", input_text="\n".join(lines) + "\n").output.splitlines()]
    assert [verdict["valid"] for verdict in verdicts] == [True, False, True]
    assert "longer than" in verdicts[1]["error"] and verdicts[2]["line"] == 3


def test_qr_check_of_only_valid_codes_exits_0():
    assert run("check", "-", input_text=json.dumps({"payload": VALID}) + "\n").exit_code == 0


def test_qr_make_prints_a_payload_that_parses(tmp_path):
    out = tmp_path / "taxi.svg"
    result = run("make", "--profile", "promptpay", "--merchant-id", "0066812345678", "--name", "TUK TUK",
                 "--city", "BANGKOK", "--mcc", "4121", "--amount-minor", "15000", "--dynamic", "--out", str(out))
    assert result.exit_code == 0, result.output
    payload = result.output.splitlines()[0]
    parsed = core_ext.implementation("compiled").parse_qr(payload)
    assert parsed.valid and parsed.amount_minor == 15000 and parsed.dynamic and out.exists()


def test_qr_make_with_a_config_refuses_an_unregistered_merchant(tmp_path):
    config = tmp_path / "switch.toml"
    config.write_text('[[merchants]]\nscheme = "promptpay"\nmerchant_id = "0066812345678"\naccount_id = 5001\n'
                      'name = "TUK TUK SOMCHAI"\nmcc = "4121"\ncountry = "TH"\ncurrency = 764\n')
    pytest.importorskip("switch.config")
    registered = run("make", "--profile", "promptpay", "--merchant-id", "0066812345678", "--city", "BANGKOK",
                     "--config", str(config))
    if registered.exit_code != 0 and "ConfigError" in repr(registered.exception):
        pytest.skip("switch.config needs a complete switch.toml")
    assert registered.exit_code == 0, registered.output
    parsed = core_ext.implementation("compiled").parse_qr(registered.output.splitlines()[0])
    assert parsed.merchant_name == "TUK TUK SOMCHAI" and parsed.mcc == "4121"
    unknown = run("make", "--profile", "promptpay", "--merchant-id", "0066899999999", "--name", "X",
                  "--city", "BANGKOK", "--config", str(config))
    assert unknown.exit_code != 0 and "no merchant registered" in unknown.output
