"""Writes the seed corpus of every fuzz target (tests/fuzz/corpus/<target>/seed-*).

    .venv/bin/python tests/fuzz/make_seeds.py

Seeds are the starting points the mutations grow from: the real payloads of
/work/shared/qr/vectors.jsonl when that file is present, payloads made by
switch.qrmake for every profile, one frame of every operation, and the demo
rule set plus one rule of every kind.  Reproducers (crash-*) and regression seeds (seed-regress-*) are never touched.
Each seed is named after the sha1 of its bytes, so re-running is idempotent.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import re
import sys

import msgpack

import harness
from core_ext.rules_types import JOURNAL_RECORD, JOURNAL_VERSION
from switch import protocol
from switch.qrmake import QrSpec, make_payload

VECTORS = pathlib.Path("/work/shared/qr/vectors.jsonl")
GENERATED_SEED = re.compile(r"seed-[0-9a-f]{16}")


def vector_payloads(scheme: str) -> list[bytes]:
    if not VECTORS.exists():
        return []
    rows = [json.loads(line) for line in VECTORS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row["payload"].encode("utf-8") for row in rows if row["scheme"] == scheme]


# (profile, merchant id) pairs that switch.qrmake accepts, one per profile.
MERCHANTS = (
    ("promptpay", "0066812345678"), ("paynow", "201403121W"), ("sgqr", "SGQR12345678"),
    ("duitnow", "MY0001234"), ("qris", "ID1020304050607"), ("qrph", "BNORPHMMXXX:M123"),
    ("vietqr", "970436:0123456789"), ("khqr", "shop@aclb"), ("pix", "user@example.com"),
    ("bharatqr", "shop@okaxis"), ("upi", "shop@okaxis"),
)
NOW_S = 1_800_000_000


def made_payloads(upi: bool) -> list[bytes]:
    """A static code, a dynamic one with amount and reference, and an expiring one, per profile."""
    out = []
    for profile, merchant_id in MERCHANTS:
        if (profile == "upi") != upi:
            continue
        specs = [QrSpec(profile, merchant_id, "SHOP", "CITY", "5411"),
                 QrSpec(profile, merchant_id, "Tuk Tuk 7", "Bangkok", "4121", amount_minor=15050,
                        dynamic=True, reference="INV-42")]
        if profile in ("paynow", "khqr"):
            specs.append(QrSpec(profile, merchant_id, "CINEMA", "CITY", "7832", amount_minor=900,
                                dynamic=True, reference="T1", expiry_s=NOW_S + 3600, now_s=NOW_S))
        out += [make_payload(spec).encode("utf-8") for spec in specs]
    return out


def recipes() -> list[bytes]:
    """qr_fields inputs: choice bytes; a run of zeros keeps every field valid, the rest vary it."""
    return [bytes([index]) * 8 + bytes(120) for index in range(24)] + [
        hashlib.sha256(bytes([index])).digest() * 8 for index in range(24)]


def requests() -> list:
    """One well-formed request of every operation."""
    transfer = {"id": protocol.id_to_wire(7), "debit_account_id": 1001, "credit_account_id": 2001,
                "amount": 15000, "ledger": 356, "code": 1, "flags": 0}
    account = {"id": 1001, "ledger": 356, "code": 1, "user_data_32": 1}
    pay = [protocol.id_to_wire(1), 1001, protocol.EXAMPLE_PAYLOAD, 15000, "dev-7", "temple-box"]
    return [
        [1, "pay", pay], [2, "pay_batch", [pay, pay[:4]]], [3, "transfers", [transfer]],
        [4, "accounts", [account]], [5, "post_pending", [{"id": protocol.id_to_wire(8),
                                                         "pending_id": protocol.id_to_wire(7), "amount": 1}]],
        [6, "void_pending", [{"id": protocol.id_to_wire(9), "pending_id": protocol.id_to_wire(7)}]],
        [7, "lookup_accounts", [1001, 2001]], [8, "lookup_transfers", [protocol.id_to_wire(7)]],
        [9, "account_history", [1001, 10]], [10, "ping", None],
    ]


def bodies() -> list[bytes]:
    auth = protocol.auth_message(1, protocol.EXAMPLE_SECRET, protocol.EXAMPLE_NONCE)
    # F1's reproducer (fixed): a ping whose argument is a zero-length ext, which must be refused.
    zero_length_ext = b"\x93\x01\xa4ping\xc7\x00\x05"
    return [msgpack.packb(obj, use_bin_type=True) for obj in [auth] + requests()] + [zero_length_ext]


def streams() -> list[bytes]:
    """Frames-target inputs: limit byte, chunking byte, then a stream of frames."""
    frames = b"".join(protocol.pack_frame(obj) for obj in requests())
    handshake = protocol.pack_frame(protocol.auth_message(1, protocol.EXAMPLE_SECRET, protocol.EXAMPLE_NONCE))
    return [bytes([255, 0]) + handshake + frames, bytes([3, 7]) + frames,
            bytes([0, 1]) + protocol.pack_frame([1, "ping", None]) + b"\0\0\0\0",
            bytes([1, 200]) + protocol.pack_frame([2, "ping", None]) + b"\x00\x40\x00\x00"]


def pipeline_bodies() -> list[bytes]:
    """pay / pay_batch bodies on the demo fixtures: answered, refused item by item, and malformed."""
    sys.path.insert(0, str(harness.ROOT / "tests"))
    import test_server_helpers as fixtures
    from test_pipeline import MALFORMED, body, pay_args
    answered = [
        body(7, "pay", pay_args(1, 10_000, device="phone", reference="r")),
        body(9, "pay_batch", [pay_args(1, 10), pay_args(2, 5, payload=fixtures.unregistered_qr()),
                              pay_args(3, 300, payload=fixtures.dynamic_qr(300, "D1")), pay_args(4, 0),
                              pay_args(3, 300, payload=fixtures.dynamic_qr(300, "D1"))]),
    ]
    return answered + list(MALFORMED)


def documents() -> list[bytes]:
    """Rule sets, and two rules journal blobs (inputs starting with the journal version byte)."""
    demo = (harness.ROOT / "switch" / "demo" / "rules.toml").read_bytes()
    journals = [bytes([JOURNAL_VERSION]) + JOURNAL_RECORD.pack(NOW_S * 10**9, 1, 5, 11, 21, 0, 15000, 0),
                bytes([JOURNAL_VERSION]) + JOURNAL_RECORD.pack(NOW_S * 10**9, 2, 6, 0, 22, 1, 900, 3) * 2]
    return [demo] + [rule.encode("utf-8") for rule in rules_one_per_kind()] + journals


def rules_one_per_kind() -> list[str]:
    head = 'id = "r{index}"\nkind = "{kind}"\nmode = "enforce"\naction = "decline"\nreason = "R{index}"\n'
    params = {
        "blocklist": 'field = "device"\nentries = [1, 2]', "payment_cap_tier": "limit_minor = [100, 200, 300]",
        "payment_cap_mcc": 'caps_minor = { "7995" = 0, "5411" = 5000 }', "payer_day_count": "limit = 3",
        "payer_day_amount": "limit_minor = 1000", "payer_hour_amount": "limit_minor = [10, 20, 30]",
        "new_account_cooling": "cooling_seconds = 86400\nlimit_minor = 500", "balance_cap": "limit_minor = 10000",
        "device_velocity": "limit = 2", "device_distinct_payers": "limit = 2",
        "structuring": "threshold_minor = 1000\nband_minor = 100\ncount = 2", "monthly_aggregate": "threshold_minor = 5000",
        "pass_through": "percent = 90\ninflow_min_minor = 100", "dormant_reactivation": "dormant_seconds = 60\namount_min_minor = 10",
        "burst": "interval_seconds = 300\ncount = 3", "first_payee": "amount_min_minor = 100",
        "fan_in": "limit = 2", "history_outlier": "mean_percent = 300\nmax_percent = 150\nhistory_min = 2",
        "merchant_category_deny": "mccs = [7995]", "static_qr_merchant": "", "dynamic_qr": "",
        "merchant_spike": "percent = 200\naverage_min_minor = 100", "travel_rule": "threshold_usd_minor = 100000",
    }
    return [f'[ruleset]\nname = "fuzz"\n[[rules]]\n' + head.format(index=index, kind=kind) + text + "\n"
            for index, (kind, text) in enumerate(params.items())]


def write(target: str, inputs: list[bytes]) -> int:
    directory = harness.corpus_dir(target)
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("seed-*"):
        if GENERATED_SEED.fullmatch(old.name):  # a fixed finding's seed-regress-* stays
            old.unlink()
    for data in inputs:
        (directory / f"seed-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)
    return len(set(inputs))


def main() -> None:
    counts = {
        "qr": write("qr", vector_payloads("emvco") + made_payloads(upi=False)),
        "qr_fields": write("qr_fields", recipes()),
        "upi": write("upi", vector_payloads("upi") + made_payloads(upi=True)),
        "frames": write("frames", streams()),
        "msgpack": write("msgpack", bodies()),
        "rules_config": write("rules_config", documents()),
        "pipeline": write("pipeline", pipeline_bodies()),
    }
    for target, count in counts.items():
        print(f"{target}: {count} seeds")


if __name__ == "__main__":
    main()
