"""Fuzz target: one frame body through msgpack and the request schema.

    python tests/fuzz/fuzz_msgpack.py -atheris_runs=100000 tests/fuzz/corpus/msgpack

The input is a frame body.  msgpack has its own compiled core and pure-Python
twin (msgpack._cmsgpack and msgpack.fallback); the switch unpacks with the
compiled one, so the two are held to the same answer under the switch's limits:
the same object, or both refusing.  Then, on what the switch itself does:

* unpack_body raises nothing but a non-fatal ProtocolError with
  MALFORMED_MSGPACK or MSGPACK_LIMIT_EXCEEDED (this one for any ext, empty
  ones too: finding F1, fixed), and what it returns respects every max_*_len
  limit;
* decode_request never raises, answers a registered protocol code or a
  well-formed request whose fields are in range;
* decode_auth raises nothing but a fatal ProtocolError.
"""
from __future__ import annotations

import sys

import msgpack
import msgpack.fallback

import harness  # noqa: F401  (puts the repository on sys.path)
from harness import check

from core_ext import limits
from core_ext.codes import Code
from switch import protocol
from switch.protocol import PayItem, ProtocolError

TARGET = "msgpack"
# Coverage of these guides the mutations (see harness.instrument).
INSTRUMENTED = ("switch.protocol", "msgpack.fallback", "__main__")
UNPACK_LIMITS = dict(
    raw=False, use_list=True, strict_map_key=True,
    max_str_len=limits.STRING_BYTES_MAX, max_bin_len=limits.BIN_BYTES_MAX,
    max_array_len=limits.ARRAY_ITEMS_MAX, max_map_len=limits.MAP_ENTRIES_MAX, max_ext_len=0,
)
BODY_ERRORS = {Code.MALFORMED_MSGPACK, Code.MSGPACK_LIMIT_EXCEEDED}
REQUEST_ERRORS = BODY_ERRORS | {Code.MALFORMED_REQUEST, Code.ALREADY_AUTHENTICATED, Code.UNKNOWN_OPERATION,
                                Code.INVALID_ARGUMENTS, Code.TOO_MANY_ITEMS}
HANDSHAKE_ERRORS = {Code.NOT_AUTHENTICATED, Code.MALFORMED_HANDSHAKE, Code.UNSUPPORTED_VERSION}
U64_MAX = 2**64 - 1


def unpack_with(unpackb, body: bytes):
    """("ok", object) or ("error", None): either unpacker, same limits."""
    try:
        return "ok", unpackb(body, **UNPACK_LIMITS)
    except (ValueError, TypeError, msgpack.StackError, msgpack.ExtraData, msgpack.FormatError):
        return "error", None
    except RecursionError:
        return "error", None


def check_limits(obj, depth: int = 0) -> None:
    """What unpack_body hands on respects the switch's msgpack limits (iterative would not be shorter)."""
    if isinstance(obj, str):
        check(len(obj.encode("utf-8", "surrogatepass")) <= limits.STRING_BYTES_MAX, "str past its limit", len(obj))
    elif isinstance(obj, bytes):
        check(len(obj) <= limits.BIN_BYTES_MAX, "bin past its limit", len(obj))
    elif isinstance(obj, list):
        check(len(obj) <= limits.ARRAY_ITEMS_MAX, "array past its limit", len(obj))
        for item in obj:
            check_limits(item, depth + 1)
    elif isinstance(obj, dict):
        check(len(obj) <= limits.MAP_ENTRIES_MAX, "map past its limit", len(obj))
        for key, value in obj.items():
            check(isinstance(key, (str, bytes)), "strict_map_key let a non-str key through", key)
            check_limits(key, depth + 1)
            check_limits(value, depth + 1)
    else:
        check(obj is None or isinstance(obj, (bool, int, float)), "unexpected msgpack type", type(obj))


def check_unpack(body: bytes) -> None:
    compiled = unpack_with(msgpack.unpackb, body)
    fallback = unpack_with(msgpack.fallback.unpackb, body)
    check(compiled == fallback or (compiled[0] == fallback[0] == "ok" and _same_nan(compiled[1], fallback[1])),
          "msgpack's compiled unpacker and its fallback disagree", body, compiled, fallback)
    # Bare msgpack accepts a zero-length ext under max_ext_len=0; the protocol refuses every ext.
    has_ext = compiled[0] == "ok" and _contains_ext(compiled[1])
    try:
        obj = protocol.unpack_body(body)
    except ProtocolError as error:
        check(not error.fatal and error.code in BODY_ERRORS, "unpack_body refused with the wrong code", body, error)
        check(compiled[0] == "error" or has_ext, "unpack_body refused what msgpack accepts", body, error)
        check(not has_ext or error.code == Code.MSGPACK_LIMIT_EXCEEDED, "an ext must be MSGPACK_LIMIT_EXCEEDED",
              body, error)
        return
    check(compiled[0] == "ok" and not has_ext, "unpack_body accepted what it must refuse", body, compiled)
    check_limits(obj)


def _contains_ext(obj) -> bool:
    if isinstance(obj, msgpack.ExtType):
        return True
    if isinstance(obj, list):
        return any(_contains_ext(item) for item in obj)
    if isinstance(obj, dict):
        return any(_contains_ext(key) or _contains_ext(value) for key, value in obj.items())
    return False


def _same_nan(left, right) -> bool:
    """Equality where NaN equals NaN (a float NaN is a legal msgpack value)."""
    return repr(left) == repr(right)


def check_request(body: bytes) -> None:
    request = protocol.decode_request(body)
    if request.error is not None:
        check(request.error in REQUEST_ERRORS, "request refused with an unexpected code", body, request.error)
        return
    check(request.op in protocol.OPERATIONS, "accepted an unknown operation", body, request.op)
    check(type(request.request_id) is int and 1 <= request.request_id <= protocol.REQUEST_ID_MAX,
          "accepted a bad request id", body, request.request_id)
    items = request.args if request.op == protocol.OP_PAY_BATCH else [request.args]
    if request.op in (protocol.OP_PAY, protocol.OP_PAY_BATCH):
        check(1 <= len(items) <= limits.BATCH_FRAME_ITEMS_MAX, "pay batch size out of range", body)
        for item in items:
            check_pay_item(body, item)
        check(request.events == protocol.PAY_EVENTS * len(items), "pay events miscounted", body, request.events)


def check_pay_item(body: bytes, item: PayItem) -> None:
    check(type(item.transfer_id) is int and 0 <= item.transfer_id < 2**128, "transfer id out of range", body, item)
    check(type(item.payer_account_id) is int and 0 <= item.payer_account_id <= U64_MAX, "payer id out of range",
          body, item)
    check(type(item.amount_minor) is int and 0 <= item.amount_minor <= U64_MAX, "amount out of range", body, item)
    check(isinstance(item.qr_payload, str), "qr_payload is a str", body, item)
    for optional in (item.device_id, item.reference):
        check(optional is None or isinstance(optional, str), "optional fields are str or None", body, item)


def check_handshake(body: bytes) -> None:
    try:
        auth = protocol.decode_auth(protocol.unpack_body(body))
    except ProtocolError as error:
        check(error.code in HANDSHAKE_ERRORS | BODY_ERRORS, "handshake refused with an unexpected code", body, error)
        check(error.fatal or error.code in BODY_ERRORS, "a bad handshake must close the connection", body, error)
        return
    check(auth.version == protocol.PROTOCOL_VERSION and len(auth.mac) == protocol.MAC_BYTES,
          "accepted a malformed auth", body, auth)


def test_one_input(data: bytes) -> None:
    check_unpack(data)
    check_request(data)
    check_handshake(data)


if __name__ == "__main__":
    harness.main(test_one_input, INSTRUMENTED)
    sys.exit(0)
