"""The wire protocol without a socket: framing, msgpack limits, handshake, request schema."""
from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from core_ext import limits
from core_ext.codes import Code
from switch import protocol
from switch.protocol import FrameBuffer, ProtocolError

TRANSFER_ID = protocol.id_to_wire(0x0123456789ABCDEF0123456789ABCDEF)


def feed(buffer: FrameBuffer, data: bytes) -> None:
    while data:
        space = buffer.writable()
        count = min(len(space), len(data))
        space[:count] = data[:count]
        buffer.wrote(count)
        data = data[count:]


def frames_of(buffer: FrameBuffer) -> list[bytes]:
    out = []
    while (body := buffer.next_frame()) is not None:
        out.append(body)
    return out


def request_body(request_id, op, args) -> bytes:
    return msgpack.packb([request_id, op, args], use_bin_type=True)


# ---- framing -------------------------------------------------------------------------------

def test_frame_is_a_big_endian_length_then_one_msgpack_body():
    frame = protocol.pack_frame([1, "ping", None])
    assert frame[:4] == len(frame[4:]).to_bytes(4, "big")
    assert msgpack.unpackb(frame[4:]) == [1, "ping", None]


def test_many_frames_in_one_read_all_come_out_in_order():
    buffer = FrameBuffer()
    feed(buffer, b"".join(protocol.pack_frame([i, "ping", None]) for i in range(1, 501)))
    assert [msgpack.unpackb(body)[0] for body in frames_of(buffer)] == list(range(1, 501))


def test_a_frame_split_at_every_byte_boundary_comes_out_whole():
    frame = protocol.pack_frame([7, "pay", [TRANSFER_ID, 1001, "0002" * 40, 500, "dev", "ref"]])
    for cut in range(len(frame) + 1):
        buffer = FrameBuffer()
        feed(buffer, frame[:cut])
        assert frames_of(buffer) == ([frame[4:]] if cut == len(frame) else [])
        feed(buffer, frame[cut:])
        assert frames_of(buffer) == ([] if cut == len(frame) else [frame[4:]])


def test_frame_at_the_size_limit_is_accepted_and_one_past_is_fatal():
    buffer = FrameBuffer(frame_bytes_max=1000, initial_bytes=64)
    feed(buffer, (1000).to_bytes(4, "big") + b"\x00" * 1000)
    assert len(buffer.next_frame()) == 1000
    feed(buffer, (1001).to_bytes(4, "big"))
    with pytest.raises(ProtocolError) as error:
        buffer.next_frame()
    assert error.value.code == Code.FRAME_TOO_LARGE and error.value.fatal


def test_zero_length_frame_is_fatal():
    buffer = FrameBuffer()
    feed(buffer, b"\x00\x00\x00\x00")
    with pytest.raises(ProtocolError) as error:
        buffer.next_frame()
    assert error.value.code == Code.FRAME_EMPTY and error.value.fatal


def test_truncated_frame_waits_for_the_rest():
    buffer = FrameBuffer()
    frame = protocol.pack_frame([1, "ping", None])
    feed(buffer, frame[:-1])
    assert buffer.next_frame() is None
    assert buffer.pending_bytes() == len(frame) - 1


def test_default_frame_limit_is_the_documented_one():
    buffer = FrameBuffer()
    feed(buffer, (limits.FRAME_BYTES_MAX + 1).to_bytes(4, "big"))
    with pytest.raises(ProtocolError):
        buffer.next_frame()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=2**32 - 1), min_size=1, max_size=30),
       st.lists(st.integers(min_value=1, max_value=97), max_size=40))
def test_any_chunking_of_a_stream_yields_the_same_frames(request_ids, chunk_sizes):
    stream = b"".join(protocol.pack_frame([rid, "ping", None]) for rid in request_ids)
    buffer = FrameBuffer(initial_bytes=16)
    got, position = [], 0
    for size in chunk_sizes + [len(stream)]:
        feed(buffer, stream[position:position + size])
        position += size
        got += [msgpack.unpackb(body)[0] for body in frames_of(buffer)]
    assert got == request_ids


# ---- msgpack limits ------------------------------------------------------------------------

@pytest.mark.parametrize("make, limit", [
    (lambda n: "x" * n, limits.STRING_BYTES_MAX),
    (lambda n: b"x" * n, limits.BIN_BYTES_MAX),
    (lambda n: [0] * n, limits.ARRAY_ITEMS_MAX),
    (lambda n: {str(i): 0 for i in range(n)}, limits.MAP_ENTRIES_MAX),
])
def test_msgpack_limits_accept_the_limit_and_refuse_one_past(make, limit):
    assert protocol.unpack_body(msgpack.packb(make(limit), use_bin_type=True)) is not None
    with pytest.raises(ProtocolError) as error:
        protocol.unpack_body(msgpack.packb(make(limit + 1), use_bin_type=True))
    assert error.value.code == Code.MSGPACK_LIMIT_EXCEEDED


def test_deep_nesting_is_a_limit_error_not_a_crash():
    with pytest.raises(ProtocolError) as error:
        protocol.unpack_body(b"\x91" * 100_000 + b"\x00")
    assert error.value.code == Code.MSGPACK_LIMIT_EXCEEDED


@pytest.mark.parametrize("body", [b"\xc1", b"\x92\x01", msgpack.packb(1) + b"\x01", b"\xa2\xff\xfe"])
def test_invalid_msgpack_is_malformed(body):
    assert protocol.decode_request(body).error == Code.MALFORMED_MSGPACK


@pytest.mark.parametrize("ext", [msgpack.ExtType(1, b"a"), msgpack.ExtType(5, b""), msgpack.ExtType(127, b"\0" * 4)])
def test_ext_types_are_refused_even_empty_ones(ext):
    body = msgpack.packb([1, "ping", ext])
    assert protocol.decode_request(body).error == Code.MSGPACK_LIMIT_EXCEEDED


# ---- requests ------------------------------------------------------------------------------

def test_pay_decodes_field_by_field():
    request = protocol.decode_request(request_body(9, "pay", [TRANSFER_ID, 1001, "QR", 250, "dev-1", "order-7"]))
    assert request.error is None and request.request_id == 9 and request.events == protocol.PAY_EVENTS
    assert request.args == protocol.PayItem(0x0123456789ABCDEF0123456789ABCDEF, 1001, "QR", 250, "dev-1", "order-7")


def test_pay_device_and_reference_are_optional():
    request = protocol.decode_request(request_body(1, "pay", [TRANSFER_ID, 1001, "QR", 0]))
    assert request.args.device_id is None and request.args.reference is None


@pytest.mark.parametrize("args", [
    [TRANSFER_ID[:15], 1001, "QR", 0],          # id not 16 bytes
    [TRANSFER_ID, -1, "QR", 0],                  # negative account
    [TRANSFER_ID, 1001, b"QR", 0],               # payload as bin
    [TRANSFER_ID, 1001, "QR", 1.5],              # float money
    [TRANSFER_ID, 1001, "QR", True],             # bool is not an integer on this wire
    [TRANSFER_ID, 1001, "QR", -5],               # negative money
    [TRANSFER_ID, 1001, "QR"],                   # too few fields
    [TRANSFER_ID, 1001, "QR", 0, None, None, 1],  # too many
    {"id": TRANSFER_ID},                         # map instead of array
])
def test_pay_with_wrong_types_is_invalid_arguments(args):
    assert protocol.decode_request(request_body(1, "pay", args)).error == Code.INVALID_ARGUMENTS


def test_pay_batch_at_the_item_limit_and_one_past():
    item = [TRANSFER_ID, 1001, "QR", 1]
    full = protocol.decode_request(request_body(1, "pay_batch", [item] * limits.BATCH_FRAME_ITEMS_MAX))
    assert full.error is None and len(full.args) == limits.BATCH_FRAME_ITEMS_MAX
    over = protocol.decode_request(request_body(1, "pay_batch", [item] * (limits.BATCH_FRAME_ITEMS_MAX + 1)))
    assert over.error == Code.TOO_MANY_ITEMS


def test_a_full_pay_batch_fits_in_one_ledger_batch():
    assert limits.BATCH_FRAME_ITEMS_MAX * protocol.PAY_EVENTS <= limits.BATCH_EVENTS_MAX


@pytest.mark.parametrize("obj, code", [
    ({"op": "ping"}, Code.MALFORMED_REQUEST),
    ([0, "ping", None], Code.MALFORMED_REQUEST),          # request id 0 is the server's
    (["1", "ping", None], Code.MALFORMED_REQUEST),
    ([2**32, "ping", None], Code.MALFORMED_REQUEST),
    ([1, "teleport", None], Code.UNKNOWN_OPERATION),
    ([1, "ping", [1]], Code.INVALID_ARGUMENTS),
    (["auth", 1, 1, b"\0" * 32], Code.ALREADY_AUTHENTICATED),
])
def test_request_shape_errors(obj, code):
    assert protocol.decode_request(msgpack.packb(obj, use_bin_type=True)).error == code


def test_request_id_at_its_maximum_is_accepted():
    assert protocol.decode_request(request_body(2**32 - 1, "ping", None)).error is None


def test_transfers_map_requires_its_fields_and_refuses_unknown_ones():
    good = {"id": TRANSFER_ID, "debit_account_id": 1, "credit_account_id": 2, "amount": 5, "ledger": 764, "code": 1}
    request = protocol.decode_request(request_body(1, "transfers", [good]))
    assert request.error is None and request.args[0].amount == 5
    missing = dict(good)
    del missing["amount"]
    assert protocol.decode_request(request_body(1, "transfers", [missing])).error == Code.INVALID_ARGUMENTS
    assert protocol.decode_request(request_body(1, "transfers", [{**good, "x": 1}])).error == Code.INVALID_ARGUMENTS
    assert protocol.decode_request(request_body(1, "transfers", [])).error == Code.INVALID_ARGUMENTS


def test_account_history_limit_bounds():
    assert protocol.decode_request(request_body(1, "account_history", [5, limits.BATCH_FRAME_ITEMS_MAX])).error is None
    over = request_body(1, "account_history", [5, limits.BATCH_FRAME_ITEMS_MAX + 1])
    assert protocol.decode_request(over).error == Code.INVALID_ARGUMENTS
    assert protocol.decode_request(request_body(1, "account_history", [5, 0])).error == Code.INVALID_ARGUMENTS


# ---- handshake -----------------------------------------------------------------------------

def test_handshake_mac_verifies_only_with_the_right_secret_and_nonce():
    nonce, other_nonce = protocol.new_nonce(), protocol.new_nonce()
    auth = protocol.decode_auth(protocol.auth_message(3, b"s" * 32, nonce))
    assert protocol.verify_mac(b"s" * 32, nonce, auth.mac)
    assert not protocol.verify_mac(b"t" * 32, nonce, auth.mac)
    assert not protocol.verify_mac(b"s" * 32, other_nonce, auth.mac)   # a replay on another connection
    assert not protocol.verify_mac(None, nonce, auth.mac)              # unknown participant


@pytest.mark.parametrize("obj, code", [
    (["auth", 2, 3, b"\0" * 32], Code.UNSUPPORTED_VERSION),
    (["auth", 1, 3, b"\0" * 31], Code.MALFORMED_HANDSHAKE),
    (["hello"], Code.MALFORMED_HANDSHAKE),
    ([1, "pay", []], Code.NOT_AUTHENTICATED),
])
def test_bad_handshakes_are_fatal(obj, code):
    with pytest.raises(ProtocolError) as error:
        protocol.decode_auth(obj)
    assert error.value.code == code and error.value.fatal


def test_challenge_round_trips():
    nonce = protocol.new_nonce()
    assert protocol.decode_challenge(protocol.challenge_message("sw", nonce)) == (protocol.PROTOCOL_VERSION, "sw", nonce)


def test_protocol_doc_examples_are_generated_from_the_code():
    import pathlib

    doc = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md").read_text()
    assert protocol.examples_markdown() in doc, "docs/PROTOCOL.md examples are stale: python -m switch.protocol --examples"


def test_protocol_doc_quotes_the_current_limits():
    import pathlib

    doc = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md").read_text()
    for value in (limits.FRAME_BYTES_MAX, limits.STRING_BYTES_MAX, limits.BATCH_FRAME_ITEMS_MAX,
                  limits.IN_FLIGHT_REQUESTS_MAX, limits.ARRAY_ITEMS_MAX):
        assert f"{value:,}" in doc, value
