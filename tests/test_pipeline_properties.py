"""The compiled pipeline against its twin on generated payment streams: valid and invalid
QR codes, unregistered merchants, insufficient funds, rule hits, dynamic codes paid twice,
retries with the same ids -- the same response bytes, the same ledger, rules and audit
journals, batch after batch."""
from __future__ import annotations

import msgpack
from hypothesis import HealthCheck, given, settings, strategies as st

from core_ext.pipeline_types import device_digest
from switch import protocol
from switch.engine import OP_RAW_PAY
from switch.protocol import Request
import test_server_helpers as fixtures
from test_pipeline_rules import make_engine, rule

RULES = (
    rule("two-a-batch-day", "payer_day_count", "decline", limit=6),
    rule("review-large", "payment_cap_tier", "review", limit_minor=[4_000, 50_000, 50_000]),
    rule("block-phone", "blocklist", "decline", field="device", entries=[device_digest("phone-9")]),
    rule("flag-first", "first_payee", "flag", amount_min_minor=0),
    rule("shadow-burst", "burst", "review", mode="shadow", interval_seconds=300, count=2),
    rule("dynamic", "dynamic_qr", "decline"),
)
PAYLOADS = [fixtures.static_qr(), fixtures.unregistered_qr(), "000201garbage",
            fixtures.dynamic_qr(700, "P1"), fixtures.dynamic_qr(900, "P2")]

payment = st.tuples(
    st.integers(min_value=0, max_value=12),                      # transfer id (small: retries happen)
    st.sampled_from([fixtures.PAYER, fixtures.OTHER_PAYER, 1500]),   # own, not own, absent account
    st.integers(min_value=0, max_value=len(PAYLOADS) - 1),
    st.sampled_from([0, 1, 700, 3_999, 4_000, 60_000, fixtures.PAYER_OPENING_MINOR + 1]),
    st.sampled_from([None, "phone-1", "phone-9"]),
)
streams = st.lists(st.lists(payment, min_size=1, max_size=6), min_size=1, max_size=5)


def frame_body(request_id: int, items: list) -> bytes:
    wire = [[protocol.id_to_wire(transfer_id), payer, PAYLOADS[payload], amount, device, None]
            for transfer_id, payer, payload, amount, device in items]
    return msgpack.packb([request_id, "pay_batch", wire], use_bin_type=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(streams)
def test_compiled_and_twin_answer_and_journal_alike(compiled, reference, stream):
    engines = {"compiled": make_engine(compiled, *RULES), "reference": make_engine(reference, *RULES)}
    for request_id, items in enumerate(stream, start=1):
        raw = frame_body(request_id, items)
        frames = {}
        for name, engine in engines.items():
            participant = engine.config.participants[fixtures.WALLET_ID]
            outcome, = engine.process_batch([(participant, Request(0, OP_RAW_PAY, raw, None, 2 * len(items)))])
            frames[name] = outcome.frame
        assert frames["compiled"] == frames["reference"], msgpack.unpackb(frames["reference"][4:])
    journals = {name: engine.storage.records for name, engine in engines.items()}
    for compiled_batch, reference_batch in zip(journals["compiled"], journals["reference"]):
        for section in ("audit", "rules", "merchants"):
            assert compiled_batch.get(section) == reference_batch.get(section), section
    assert engines["compiled"].ledger.state_hash() == engines["reference"].ledger.state_hash()
