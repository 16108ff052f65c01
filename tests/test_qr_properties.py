"""Damaged payloads are refused, and the compiled core agrees with its twin on everything.

Mutations of every valid EMVCo vector: any flipped character, any truncation and
any changed length digit is refused (the CRC catches each; a changed CRC is only
ever detected).  Then hypothesis feeds both cores random, mutated and
structurally random payloads (with their CRC recomputed so that the checks past
the CRC run) and requires the same result, field by field.
"""
from __future__ import annotations

import json
import pathlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import core_ext
from core_ext.codes import Code
from switch.qrmake import tlv, with_crc

COMPILED = core_ext.implementation("compiled")
REFERENCE = core_ext.implementation("reference")
ROOT = pathlib.Path(__file__).resolve().parent.parent
VECTORS = [json.loads(line) for line in (ROOT.parent / "shared" / "qr" / "vectors.jsonl")
           .read_text(encoding="utf-8").splitlines() if line.strip()]
VALID_EMV = [vector["payload"] for vector in VECTORS
             if vector["scheme"] == "emvco" and COMPILED.parse_qr(vector["payload"]).valid]
ALL_PAYLOADS = [vector["payload"] for vector in VECTORS]
LABEL_CLOCK_S = 1735689600
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def both_agree(payload: str, now_s: int = 0):
    compiled, reference = COMPILED.parse_qr(payload, now_s), REFERENCE.parse_qr(payload, now_s)
    assert compiled == reference, payload
    try:
        data = payload.encode("utf-8")
    except UnicodeEncodeError:
        return compiled
    assert COMPILED.validate_qr(data, now_s) == REFERENCE.validate_qr(data, now_s) == compiled.code
    return compiled


def flipped(char: str) -> str:
    return "X" if char != "X" else "Y"


def length_digit_positions(payload: str) -> list[int]:
    """Indexes of every length digit of the root objects and of their nested objects."""
    positions, pos, end = [], 0, len(payload) - 8
    while pos < end:
        length = int(payload[pos + 2:pos + 4])
        positions += [pos + 2, pos + 3]
        tag = int(payload[pos:pos + 2])
        if 26 <= tag <= 51 or tag in (62, 64) or tag >= 80:
            inner, inner_end = pos + 4, pos + 4 + length
            while inner + 4 <= inner_end and payload[inner:inner + 4].isdigit():
                positions += [inner + 2, inner + 3]
                inner += 4 + int(payload[inner + 2:inner + 4])
        pos += 4 + length
    return positions


def test_there_are_valid_emv_vectors_to_mutate():
    assert len(VALID_EMV) > 90


def test_every_flipped_character_is_refused():
    for payload in VALID_EMV:
        for index, char in enumerate(payload):
            mutant = payload[:index] + flipped(char) + payload[index + 1:]
            code = COMPILED.validate_qr(mutant.encode("utf-8"))
            expected = {Code.QR_CRC_FORMAT} if index >= len(payload) - 8 else {Code.QR_CRC_MISMATCH}
            assert code in expected | {Code.QR_CRC_MISMATCH}, (payload, index)
            if index % 5 == 0:   # the twin on a fifth of them: the exhaustive run is the compiled core's
                assert REFERENCE.validate_qr(mutant.encode("utf-8")) == code


def test_every_truncation_is_refused():
    for payload in VALID_EMV:
        for length in range(len(payload)):
            code = COMPILED.validate_qr(payload[:length].encode("utf-8"))
            assert code != 0, (payload, length)
            if length % 5 == 0:
                assert REFERENCE.validate_qr(payload[:length].encode("utf-8")) == code


def test_every_changed_length_digit_is_refused():
    for payload in VALID_EMV:
        for index in length_digit_positions(payload):
            for digit in "0123456789":
                if digit == payload[index]:
                    continue
                mutant = payload[:index] + digit + payload[index + 1:]
                code = COMPILED.validate_qr(mutant.encode("utf-8"))
                assert code == Code.QR_CRC_MISMATCH, (payload, index, digit)
                if digit == "0":
                    assert REFERENCE.validate_qr(mutant.encode("utf-8")) == code


def test_a_changed_length_digit_with_a_recomputed_crc_still_agrees():
    for payload in VALID_EMV[::4]:
        for index in length_digit_positions(payload):
            for digit in "09":
                mutant = with_crc(payload[:index] + digit + payload[index + 1:-8])
                both_agree(mutant)


def test_the_vectors_agree_field_by_field():
    for payload in ALL_PAYLOADS:
        both_agree(payload)
        both_agree(payload, LABEL_CLOCK_S)


@SETTINGS
@given(st.sampled_from(VALID_EMV), st.integers(min_value=0), st.text(min_size=0, max_size=3))
def test_an_edit_with_the_crc_recomputed_agrees(payload, where, insert):
    body = payload[:-8]
    index = where % (len(body) + 1)
    cut = (where // 7) % 4
    both_agree(with_crc(body[:index] + insert + body[index + cut:]))


@SETTINGS
@given(st.text(max_size=120))
def test_random_text_agrees(text):
    both_agree(text)
    both_agree(with_crc(text))


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_agree(data):
    assert COMPILED.validate_qr(data) == REFERENCE.validate_qr(data)
    assert COMPILED.validate_qr(b"upi:" + data) == REFERENCE.validate_qr(b"upi:" + data)


VALUES = st.one_of(
    st.text(alphabet="0123456789", min_size=1, max_size=14),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123456789 .@*+-:/", min_size=1, max_size=30),
    st.text(min_size=1, max_size=12),
    st.sampled_from(["01", "02", "11", "12", "03", "764", "702", "360", "116", "840", "986", "TH", "SG", "KH",
                     "A000000677010111", "SG.PAYNOW", "SG.SGQR", "A0000006150001", "ID.CO.QRIS.WWW",
                     "ph.ppmi.p2m", "com.p2pqrpay", "A000000727", "br.gov.bcb.pix", "A000000524",
                     "name@bank", "0066812345678", "20301231", "1773894775819", "***", "AME", "https://x"]),
)


@st.composite
def objects(draw, depth: int = 0):
    tags = draw(st.lists(st.integers(min_value=0, max_value=99), min_size=1, max_size=8))
    out = []
    for tag in tags:
        if depth < 2 and (26 <= tag <= 51 or tag in (62, 64, 1) or tag >= 80) and draw(st.booleans()):
            value = "".join(draw(objects(depth + 1)))
        else:
            value = draw(VALUES)
        if 1 <= len(value) <= 99:
            out.append(tlv(tag, value))
    return out


@SETTINGS
@given(objects(), st.booleans(), st.sampled_from([0, LABEL_CLOCK_S, 4102444800]))
def test_structurally_random_payloads_agree(parts, start_with_indicator, now_s):
    body = ("000201" if start_with_indicator else "") + "".join(parts)
    both_agree(with_crc(body), now_s)


@st.composite
def upi_links(draw):
    keys = st.sampled_from(["pa", "pn", "am", "mam", "cu", "mc", "tr", "tn", "url", "mode", "mid", "orgid",
                            "orgId", "tid", "", "amp;am"])
    values = st.one_of(st.sampled_from(["a.b@bank", "x@y", "10", "10.50", "0", "null", "INR", "USD", "5411",
                                        "15", "%20", "%2", "%zz", "%E2%82%AC", "%ff", "https://a", "", "a b"]),
                       st.text(alphabet="abc09.@%&=+-_", max_size=12))
    pairs = draw(st.lists(st.tuples(keys, values), max_size=10))
    prefix = draw(st.sampled_from(["upi://pay?", "UPI://pay?", "upi://pay", "upi:pay?"]))
    return prefix + "&".join(f"{key}={value}" for key, value in pairs)


@SETTINGS
@given(upi_links())
def test_random_upi_links_agree(link):
    both_agree(link)


def test_every_verdict_of_a_mutation_fuzz_is_a_registered_qr_code():
    """20,000 random edits of the vectors (compiled core): never a crash, always a documented code."""
    import random

    from core_ext.codes import ENTRIES

    qr_codes = {value for value, entry in ENTRIES.items() if entry.category == "qr"} | {0}
    rnd = random.Random(20261126)
    alphabet = "0123456789ABCDEF@.:/%&=+ é最\x00\x7f"
    for _ in range(20_000):
        payload = rnd.choice(ALL_PAYLOADS)
        for _ in range(rnd.randint(1, 4)):
            index = rnd.randrange(len(payload) + 1)
            payload = payload[:index] + rnd.choice(alphabet) + payload[index + rnd.randint(0, 3):]
        if not payload.startswith("upi") and len(payload) > 8 and rnd.random() < 0.7:
            payload = with_crc(payload[:-8])
        data = payload.encode("utf-8")
        assert COMPILED.validate_qr(data) in qr_codes
        assert COMPILED.validate_qr(data[:rnd.randint(0, len(data))]) in qr_codes
