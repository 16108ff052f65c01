"""The merchant directory: registration, resolution, the dynamic-QR guard, and its journal."""
from __future__ import annotations

import pytest

import core_ext
from core_ext import limits
from core_ext.codes import Code
from switch import merchants as merchants_module
from switch.merchants import Merchant, MerchantDirectory
from switch.qrmake import QrSpec, make_payload

CORE = core_ext.implementation("compiled")
TAXI = dict(scheme="promptpay", merchant_id="0066812345678", account_id=5001, name="TUK TUK SOMCHAI",
            mcc="4121", country="TH", currency=764)
NOW_S = 1_764_000_000


def payload(**changes) -> str:
    fields = dict(profile="promptpay", merchant_id="0066812345678", name="TUK TUK SOMCHAI", city="BANGKOK",
                  mcc="4121")
    fields.update(changes)
    return make_payload(QrSpec(**fields), validate=CORE.parse_qr)


@pytest.fixture
def directory() -> MerchantDirectory:
    directory = MerchantDirectory()
    assert directory.register(**TAXI) == Code.OK
    return directory


def test_a_registered_merchant_resolves_from_its_qr(directory):
    merchant = directory.resolve(CORE.parse_qr(payload()))
    assert merchant == Merchant(5001, "TUK TUK SOMCHAI", "4121", "TH", 764)


def test_the_first_registered_key_wins(directory):
    # An SGQR code lists its PayNow key first and its other schemes after it.
    directory.register(scheme="com.grab", merchant_id="G1", account_id=7, name="GRAB SHOP", mcc="5814",
                       country="SG", currency=702)
    result = CORE.parse_qr(make_payload(QrSpec("emvco", "G1", "GRAB SHOP", "Singapore", "5814", currency=702,
                                               country="SG", guid="com.grab"), validate=CORE.parse_qr))
    assert directory.resolve(result).account_id == 7


def test_an_unregistered_or_invalid_code_resolves_to_nothing(directory):
    assert directory.resolve(CORE.parse_qr(payload(merchant_id="0066899999999"))) is None
    assert directory.resolve(CORE.parse_qr("garbage")) is None


def test_registering_again_is_idempotent_but_a_conflict_is_refused(directory):
    assert directory.register(**TAXI) == Code.OK
    assert directory.take_journal() is not None      # the first registration only
    assert directory.register(**TAXI) == Code.OK
    assert directory.take_journal() is None
    assert directory.register(**{**TAXI, "account_id": 5002}) == Code.MERCHANT_ALREADY_REGISTERED


@pytest.mark.parametrize("field, value", [
    ("scheme", ""), ("scheme", "s" * (limits.QR_GUID_CHARS_MAX + 1)), ("merchant_id", ""),
    ("merchant_id", "m" * (limits.MERCHANT_ID_CHARS_MAX + 1)), ("account_id", 0), ("account_id", 2**64 - 1),
    ("account_id", True), ("name", ""), ("name", "n" * (limits.MERCHANT_NAME_CHARS_MAX + 1)), ("mcc", "41"),
    ("mcc", "41a1"), ("country", "th"), ("country", "THA"), ("currency", 849), ("currency", 764.0),
])
def test_a_bad_registration_field_is_refused(field, value):
    assert MerchantDirectory().register(**{**TAXI, field: value}) == Code.MERCHANT_FIELD_INVALID


def test_identifier_and_name_at_their_limits_are_accepted():
    directory = MerchantDirectory()
    assert directory.register(**{**TAXI, "merchant_id": "m" * limits.MERCHANT_ID_CHARS_MAX,
                                 "name": "n" * limits.MERCHANT_NAME_CHARS_MAX,
                                 "scheme": "s" * limits.QR_GUID_CHARS_MAX}) == Code.OK


def test_the_directory_refuses_past_its_size_limit(monkeypatch):
    monkeypatch.setattr(merchants_module.limits, "MERCHANT_KEYS_MAX", 2)
    directory = MerchantDirectory()
    assert directory.register(**{**TAXI, "merchant_id": "1"}) == Code.OK
    assert directory.register(**{**TAXI, "merchant_id": "2"}) == Code.OK
    assert directory.register(**{**TAXI, "merchant_id": "3"}) == Code.MERCHANTS_LIMIT_REACHED


# ---- dynamic QR ---------------------------------------------------------------------------------
def test_a_dynamic_code_is_single_use(directory):
    text = payload(dynamic=True, amount_minor=15000, reference="RIDE42")
    result = CORE.parse_qr(text)
    assert directory.check_and_consume(result, text, 15000, NOW_S) == Code.OK
    assert directory.check_and_consume(result, text, 15000, NOW_S) == Code.QR_REPLAYED


def test_a_static_code_may_be_paid_many_times(directory):
    text = payload()
    result = CORE.parse_qr(text)
    directory.take_journal()
    for _ in range(3):
        assert directory.check_and_consume(result, text, 5000, NOW_S) == Code.OK
    assert directory.take_journal() is None and not directory.was_used(text)


def test_a_code_binds_its_amount(directory):
    text = payload(dynamic=True, amount_minor=15000)
    result = CORE.parse_qr(text)
    assert directory.check_and_consume(result, text, 15001, NOW_S) == Code.AMOUNT_MISMATCH
    assert directory.check_and_consume(result, text, 15000, NOW_S) == Code.OK


@pytest.mark.parametrize("amount_minor", [0, -1, limits.AMOUNT_MINOR_MAX + 1, 1.5, True])
def test_a_bad_payment_amount_is_refused(directory, amount_minor):
    text = payload()
    assert directory.check_and_consume(CORE.parse_qr(text), text, amount_minor, NOW_S) == Code.PAYMENT_AMOUNT_INVALID


def test_a_dynamic_code_expires(directory):
    text = make_payload(QrSpec("khqr", "temple@aclb", "WAT MERIT BOX", "Phnom Penh", "8661", currency=116,
                               amount_minor=4000, dynamic=True, now_s=NOW_S, expiry_s=NOW_S + 60),
                        validate=CORE.parse_qr)
    result = CORE.parse_qr(text)
    assert result.expiry_s == NOW_S + 60
    assert directory.check_and_consume(result, text, 4000, NOW_S + 60) == Code.PAYMENT_QR_EXPIRED
    assert directory.check_and_consume(result, text, 4000, NOW_S + 59) == Code.OK


def test_an_invalid_code_keeps_its_own_code(directory):
    result = CORE.parse_qr("garbage")
    assert directory.check_and_consume(result, "garbage", 100, NOW_S) == result.code != Code.OK


def test_the_used_table_prunes_expired_codes_then_refuses_when_full(directory, monkeypatch):
    monkeypatch.setattr(merchants_module.limits, "USED_QR_COUNT_MAX", 2)

    def khqr(index: int, expiry_s: int) -> tuple:
        text = make_payload(QrSpec("khqr", "temple@aclb", f"BOX {index}", "Phnom Penh", "8661", currency=116,
                                   amount_minor=100, dynamic=True, now_s=NOW_S, expiry_s=expiry_s),
                            validate=CORE.parse_qr)
        return CORE.parse_qr(text), text

    short, long_lived = khqr(1, NOW_S + 10), khqr(2, NOW_S + 10_000)
    assert directory.check_and_consume(*short, 100, NOW_S) == Code.OK
    assert directory.check_and_consume(*long_lived, 100, NOW_S) == Code.OK
    third, fourth = khqr(3, NOW_S + 10_000), khqr(4, NOW_S + 10_000)
    assert directory.check_and_consume(*third, 100, NOW_S + 20) == Code.OK            # the short one was pruned
    assert directory.check_and_consume(*fourth, 100, NOW_S + 20) == Code.USED_QR_LIMIT_REACHED


# ---- journal -------------------------------------------------------------------------------------
def test_journal_round_trip_gives_the_same_state_and_refuses_a_replay(directory):
    text = payload(dynamic=True, amount_minor=15000)
    result = CORE.parse_qr(text)
    directory.register(**{**TAXI, "merchant_id": "0066899999999", "account_id": 5003})
    assert directory.check_and_consume(result, text, 15000, NOW_S) == Code.OK
    blob = directory.take_journal()
    assert directory.take_journal() is None

    restarted = MerchantDirectory()
    assert restarted.state_hash() != directory.state_hash()
    restarted.apply_journal(blob)
    assert restarted.state_hash() == directory.state_hash()
    assert restarted.take_journal() is None      # a replayed effect is not news to write back
    assert restarted.check_and_consume(result, text, 15000, NOW_S) == Code.QR_REPLAYED
    assert restarted.resolve(result).account_id == 5001


def test_journal_applied_in_batches_equals_one_blob():
    first, second = MerchantDirectory(), MerchantDirectory()
    blobs = []
    for index in range(3):
        first.register(**{**TAXI, "merchant_id": f"00668{index:08d}", "account_id": 10 + index})
        blobs.append(first.take_journal())
    for blob in blobs:
        second.apply_journal(blob)
    assert first.state_hash() == second.state_hash() and len(second) == 3


def test_a_corrupt_journal_is_refused():
    with pytest.raises(ValueError):
        MerchantDirectory().apply_journal(b"\x93\xa1x\x01\x02")


def test_reset_empties_the_directory(directory):
    directory.reset()
    assert len(directory) == 0 and directory.state_hash() == MerchantDirectory().state_hash()


def test_a_replay_is_refused_after_a_restart_from_lmdb(tmp_path):
    """Through switch/storage.py: the directory's effects are journaled in LMDB and replayed on open."""
    storage_module = pytest.importorskip("switch.storage")
    text = payload(dynamic=True, amount_minor=15000)
    result = CORE.parse_qr(text)
    directory = MerchantDirectory()
    with storage_module.Storage.open(tmp_path, [directory], durability="os") as storage:
        assert directory.register(**TAXI) == Code.OK
        assert directory.check_and_consume(result, text, 15000, NOW_S) == Code.OK
        storage.commit()
        state = directory.state_hash()
    restarted = MerchantDirectory()
    with storage_module.Storage.open(tmp_path, [restarted], durability="os"):
        assert restarted.state_hash() == state
        assert restarted.resolve(result).account_id == TAXI["account_id"]
        assert restarted.check_and_consume(result, text, 15000, NOW_S) == Code.QR_REPLAYED
