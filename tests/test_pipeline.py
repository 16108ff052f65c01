"""The payment pipeline's raw path on both cores: a pay / pay_batch body in, the response
frame out -- byte for byte what the slow path (protocol.decode_request, the engine,
protocol.pack_frame) answers, malformed bodies included."""
from __future__ import annotations

import sys

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from core_ext import limits
from core_ext.codes import Code
from core_ext.pipeline_types import device_digest, fee_id_for
from core_ext.reference.pipeline import Pipeline as ReferencePipeline
from switch import protocol
from switch.engine import OP_RAW_PAY, Encoded
from switch.protocol import Request
import test_server_helpers as fixtures
from test_pipeline_rules import NOW_NS, make_engine, rule

ID = protocol.id_to_wire


def body(request_id: int, op: str, args) -> bytes:
    return msgpack.packb([request_id, op, args], use_bin_type=True)


def pay_args(transfer_id: int, amount: int = 100, payload: str | None = None, device=None, reference=None) -> list:
    return [ID(transfer_id), fixtures.PAYER, payload or fixtures.static_qr(), amount, device, reference]


def slow_frame(engine, raw: bytes) -> bytes:
    """What the server answered before the fast path: decode in Python, run, pack in Python."""
    request = protocol.decode_request(raw)
    participant = engine.config.participants[fixtures.WALLET_ID]
    outcome, = engine.process_batch([(participant, request)])
    return protocol.pack_frame(protocol.response(request.request_id, *outcome))


def fast_frame(engine, raw: bytes) -> bytes:
    participant = engine.config.participants[fixtures.WALLET_ID]
    outcome, = engine.process_batch([(participant, Request(0, OP_RAW_PAY, raw, None, 2))])
    assert isinstance(outcome, Encoded)
    return outcome.frame


def both_ways(impl, *bodies: bytes, rules: tuple = ()) -> tuple[list[bytes], list[bytes]]:
    slow, fast = make_engine(impl, *rules), make_engine(impl, *rules)
    return [slow_frame(slow, raw) for raw in bodies], [fast_frame(fast, raw) for raw in bodies]


def test_a_pay_is_answered_with_the_slow_paths_bytes(impl):
    raw = body(7, "pay", pay_args(1, 10_000, device="phone", reference="r"))
    slow, fast = both_ways(impl, raw)
    assert fast == slow
    assert msgpack.unpackb(fast[0][4:]) == [7, 0, [10_000, 50, fixtures.THB, fixtures.MERCHANT_NAME]]


def test_a_pay_batch_mixing_outcomes_is_answered_with_the_slow_paths_bytes(impl):
    items = [pay_args(1, 10), pay_args(2, fixtures.PAYER_OPENING_MINOR * 2), pay_args(1, 10),
             pay_args(3, 5, payload=fixtures.unregistered_qr()), pay_args(4, 5, payload="garbage"),
             pay_args(0, 5), pay_args(5, 0), pay_args(6, 300, payload=fixtures.dynamic_qr(300, "D1")),
             pay_args(7, 0, payload=fixtures.dynamic_qr(300, "D1"))]
    slow, fast = both_ways(impl, body(2**32 - 1, "pay_batch", items))
    assert fast == slow
    codes = [entry[0] for entry in msgpack.unpackb(fast[0][4:])[2]]
    assert codes == [Code.OK, Code.EXCEEDS_CREDITS, Code.EXISTS, Code.MERCHANT_NOT_REGISTERED, codes[4],
                     Code.ID_MUST_NOT_BE_ZERO, Code.PAYMENT_AMOUNT_INVALID, Code.OK, Code.QR_REPLAYED]
    assert 300 <= codes[4] < 400


def test_rule_decisions_and_review_details_are_the_same_on_the_fast_path(impl):
    rules = (rule("review-large", "payment_cap_tier", "review", limit_minor=5000),
             rule("block-phone", "blocklist", "decline", field="device", entries=[device_digest("stolen-phone")]),
             rule("flag-first", "first_payee", "flag", amount_min_minor=0))
    raw = body(3, "pay_batch", [pay_args(1, 10_000), pay_args(2, 10, device="stolen-phone"), pay_args(3, 10)])
    slow, fast = both_ways(impl, raw, rules=rules)
    assert fast == slow
    codes = [entry[0] for entry in msgpack.unpackb(fast[0][4:])[2]]
    assert codes == [Code.RISK_REVIEW, Code.RISK_DECLINED, Code.OK]


MALFORMED = [
    b"\xc1",                                                        # never-used msgpack byte
    b"\x93\x01\xa3pay",                                             # truncated
    body(1, "pay", pay_args(1)) + b"\x00",                          # trailing bytes
    body(0, "pay", pay_args(1)),                                    # request id 0
    body(2**32, "pay", pay_args(1)),                                # request id past u32
    body(1, "pay", [ID(1), fixtures.PAYER, fixtures.static_qr()]),  # 3 fields
    body(1, "pay", pay_args(1) + ["extra"]),                        # 7 fields
    body(1, "pay", [b"\x00" * 15, fixtures.PAYER, "x", 1]),         # id of 15 bytes
    body(1, "pay", [ID(1), -1, "x", 1]),                            # negative payer
    body(1, "pay", [ID(1), True, "x", 1]),                          # bool is not an integer
    body(1, "pay", [ID(1), 1, "x", 1.5]),                           # float amount
    body(1, "pay", [ID(1), 1, b"bytes", 1]),                        # bin instead of str
    body(1, "pay", [ID(1), 1, "x", 1, 5]),                          # device not str
    body(1, "pay", [ID(1), 1, "x" * (limits.STRING_BYTES_MAX + 1), 1]),
    body(1, "pay_batch", []),
    body(1, "pay_batch", [pay_args(1)] * (limits.BATCH_FRAME_ITEMS_MAX + 1)),
    body(1, "pay_batch", [pay_args(1), "not an item"]),
    b"\x93\x01\xa3pay\x94\xc4\x10" + b"\x00" * 15 + b"\x01\x01\xa2\xff\xfe\x01",   # invalid UTF-8 str
    b"\x93\x01\xa3pay\x94\xc7\x00\x05\x01\xa1x\x01",                                   # ext type
    b"\x93\xcf\x00\x00\x00\x00\x00\x00\x00\x01\xa3pay" + msgpack.packb(pay_args(1)),   # long-form id: valid
    b"\x93\x01\xd9\x03pay" + msgpack.packb(pay_args(1)),                                 # str8 "pay": valid
]


@pytest.mark.parametrize("raw", MALFORMED, ids=range(len(MALFORMED)))
def test_any_body_gets_the_slow_paths_answer(impl, raw):
    slow, fast = both_ways(impl, raw)
    assert fast == slow


def test_peek_takes_only_pay_headers_and_counts_their_events(impl):
    peek = impl.Pipeline.peek
    assert peek(body(1, "pay", pay_args(1))) == (2, 1)
    assert peek(body(2**32 - 1, "pay_batch", [pay_args(1)] * 3)) == (6, 2**32 - 1)
    assert peek(body(3, "pay_batch", [pay_args(1)] * limits.BATCH_FRAME_ITEMS_MAX)) == (
        2 * limits.BATCH_FRAME_ITEMS_MAX, 3)
    assert peek(body(4, "pay_batch", [pay_args(1)] * (limits.BATCH_FRAME_ITEMS_MAX + 1))) == (1, 4)
    assert peek(body(5, "pay_batch", [])) == (1, 5)
    # b"\xac": a str of 12 bytes, of which only "pay" follows (fuzz finding F4)
    for other in (body(1, "ping", None), body(1, "transfers", []), b"", b"\x93", body(0, "pay", []), b"\x93\x01\xacpay"):
        assert peek(other) == (-1, 0)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=40), st.sampled_from([b"\x93\x01\xa3pay", b"\x93\xcd\x01\x00\xa9pay_batch", b"\x93\x05", b""]))
def test_peek_of_the_two_cores_agrees_on_any_bytes(compiled, prefix, tail):
    raw = tail + prefix if len(tail) % 2 else prefix + tail
    assert compiled.Pipeline.peek(raw) == ReferencePipeline.peek(raw)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_the_compiled_fee_leg_id_is_the_twins(compiled, payment_id):
    from core_ext._pipeline import fee_id_check

    assert fee_id_check(payment_id) == fee_id_for(payment_id)


STAGES = ("decode", "qr", "rules", "post", "respond")


def test_stage_clocks_and_counts_are_reported(impl):
    engine = make_engine(impl)
    fast_frame(engine, body(1, "pay_batch", [pay_args(1), pay_args(2)]))
    stats = engine.pipeline.stats()
    assert stats["payments"] == 2 and stats["calls"] == 1
    assert {f"{stage}_ns" for stage in STAGES} <= set(stats) and "decide_post_ns" not in stats
    assert all(stats[f"{stage}_ns"] > 0 for stage in ("qr", "post", "respond"))
    assert stats["rules_ns"] == 0                    # no rule set: no rules stage


def test_the_rules_are_timed_apart_from_posting(impl):
    engine = make_engine(impl, rule("cap", "payment_cap_tier", "decline", limit_minor=10**9))
    # The compiled core times the parts of the 1st, 65th, 129th and 193rd payment (4 samples: one
    # the scheduler interrupts is dropped, so a single sample could leave nothing on a busy machine).
    fast_frame(engine, body(1, "pay_batch", [pay_args(index) for index in range(1, 201)]))
    stats = engine.pipeline.stats()
    assert stats["rules_ns"] > 0 and stats["post_ns"] > 0


def test_the_sampled_split_shares_out_the_exact_total(compiled):
    from core_ext._pipeline import split_stage_ns

    assert split_stage_ns(1000, 1, 3) == (250, 750)
    assert split_stage_ns(1001, 2, 1) == (667, 334)
    assert split_stage_ns(1000, 0, 0) == (0, 1000)           # nothing sampled yet: all post
    assert split_stage_ns(2**64 - 1, 2**64 - 1, 2**64 - 1) == (2**63 - 1, 2**63)    # no u64 overflow


def test_the_compiled_reader_takes_well_formed_bodies_and_hands_on_the_rest(compiled):
    engine = make_engine(compiled)
    fast_frame(engine, body(1, "pay_batch", [pay_args(1), pay_args(2, device="d", reference="r")]))
    fast_frame(engine, body(2, "pay", pay_args(3)))
    fast_frame(engine, body(3, "pay", [ID(1), 1, "x", 1.5]))
    stats = engine.pipeline.stats()
    assert (stats["fast_decodes"], stats["slow_decodes"]) == (2, 1)


def test_a_participant_the_switch_does_not_know_owns_nothing(impl):
    engine = make_engine(impl)
    answers = engine.pipeline.pay(999, [protocol.PayItem(1, fixtures.PAYER, fixtures.static_qr(), 10, None, None)],
                                  NOW_NS)
    assert answers == [(Code.ACCOUNT_NOT_OWNED, None)]
    assert not engine.pipeline.take_tokens(999, 1, NOW_NS)


UTF8_EDGES = [b"abcdefgh\xc3\xa9ijklmnop", b"\xed\xa0\x80abcdefghij", b"abcdefghijklmnop\xf4\x90\x80\x80",
              b"a" * 7 + b"\xe2\x82\xac" + b"b" * 9, b"abcdefghi\xc0\xaf", b"x" * 16 + b"\xe0\x80\xaf",
              b"ok" * 20 + b"\xf0\x9f\x98\x80", b"\xff" + b"a" * 20]


@pytest.mark.parametrize("device", UTF8_EDGES, ids=range(len(UTF8_EDGES)))
def test_a_device_id_is_utf8_exactly_as_the_slow_path_decodes_it(impl, device):
    """The reader's UTF-8 check (eight ASCII bytes at a time) agrees with Python's strict decoder."""
    item = msgpack.packb(pay_args(1)[:4], use_bin_type=True)
    raw_item = bytes([item[0] + 1]) + item[1:] + bytes([0xD9, len(device)]) + device
    raw = b"\x93\x01\xa3pay" + raw_item
    slow, fast = both_ways(impl, raw)
    assert fast == slow
    try:
        device.decode("utf-8")
        expected = Code.OK
    except UnicodeDecodeError:
        expected = Code.MALFORMED_MSGPACK
    assert msgpack.unpackb(fast[0][4:])[1] == expected


def test_a_merchant_registered_later_is_paid_once_the_mirror_is_synced(impl):
    """The compiled core caches static codes' verdicts and merchants; a re-sync forgets them."""
    engine = make_engine(impl)
    unregistered = body(1, "pay", pay_args(1, payload=fixtures.unregistered_qr()))
    assert msgpack.unpackb(fast_frame(engine, unregistered)[4:])[1] == Code.MERCHANT_NOT_REGISTERED
    code = engine.merchants.register(scheme="promptpay", merchant_id="0066899999999", account_id=fixtures.MERCHANT_ACCOUNT,
                                     name="Nobody", mcc="4121", country="TH", currency=fixtures.THB)
    assert code == Code.OK
    engine.pipeline.sync_merchants()
    assert msgpack.unpackb(fast_frame(engine, unregistered)[4:])[1:] == [Code.OK, [100, 0, fixtures.THB, "Nobody"]]


def test_a_static_code_seen_again_is_answered_alike_from_the_cache(compiled):
    engine = make_engine(compiled)
    first = fast_frame(engine, body(1, "pay_batch", [pay_args(1, 200), pay_args(2, 200)]))
    assert engine.pipeline.stats()["qr_cache_hits"] == 1
    assert [entry[0] for entry in msgpack.unpackb(first[4:])[2]] == [Code.OK, Code.OK]


def test_a_batch_keeps_no_python_object_per_payment(compiled):
    """The fast path decides a whole frame in C: a batch of 200 leaves no more Python memory
    blocks allocated than a batch of 20 (the response frame is one bytes object either way;
    the twin, whose ledger holds Python objects, keeps some 1,500 more)."""
    engine = make_engine(compiled, rule("cap", "payment_cap_tier", "decline", limit_minor=10**9))
    pipeline, next_id = engine.pipeline, iter(range(1, 10**6))

    def blocks_kept_by_a_batch_of(count: int) -> int:
        raw = body(1, "pay_batch", [pay_args(next(next_id)) for _ in range(count)])
        before = sys.getallocatedblocks()
        frame = pipeline.run(fixtures.WALLET_ID, raw, NOW_NS)
        kept = sys.getallocatedblocks() - before
        assert frame[4:].startswith(b"\x93\x01\x00")       # [request id, OK, answers]: the fast path answered
        return kept

    blocks_kept_by_a_batch_of(20)                           # warm: the first call sizes its buffers
    assert blocks_kept_by_a_batch_of(200) - blocks_kept_by_a_batch_of(20) < 20
