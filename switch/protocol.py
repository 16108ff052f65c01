"""The wire protocol: framing, msgpack limits, the handshake, the request schema.

Everything here is pure and synchronous so that the server, the client and the
tests share one definition of the bytes; docs/PROTOCOL.md is the prose of this
module.  Frames are a 4-byte big-endian length and one msgpack body.  Requests
are `[request_id, operation, arguments]`; responses are
`[request_id, code, result]`.  Hot operations (`pay`, `pay_batch`) carry
positional arrays, rare ones carry maps.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from typing import Any, Callable, NamedTuple

import msgpack

from core_ext import limits
from core_ext.codes import Code
from core_ext.types import Account, Transfer

PROTOCOL_VERSION = 1
NONCE_BYTES = 32
MAC_BYTES = 32
ID_BYTES = 16
LENGTH_PREFIX = struct.Struct(">I")
LENGTH_PREFIX_BYTES = LENGTH_PREFIX.size
# Request id 0 is reserved for messages about the connection itself (handshake
# answer, framing errors), so a client can never confuse them with its own.
CONNECTION_REQUEST_ID = 0
REQUEST_ID_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1
U16_MAX = 2**16 - 1
U128_MAX = 2**128 - 1

OP_PAY = "pay"
OP_PAY_BATCH = "pay_batch"
OP_TRANSFERS = "transfers"
OP_ACCOUNTS = "accounts"
OP_POST_PENDING = "post_pending"
OP_VOID_PENDING = "void_pending"
OP_LOOKUP_ACCOUNTS = "lookup_accounts"
OP_LOOKUP_TRANSFERS = "lookup_transfers"
OP_ACCOUNT_HISTORY = "account_history"
OP_PING = "ping"
# Operator operations (docs/PROTOCOL.md 4.8-4.10).
OP_STATS = "stats"
OP_RELOAD_RULES = "reload_rules"
OP_LIST_PENDING = "list_pending"

# What each operation costs in ledger events (for sizing a server batch).
PAY_EVENTS = 2


class ProtocolError(Exception):
    """A violation with its registry code; `fatal` means the connection must close."""

    def __init__(self, code: Code, fatal: bool = False, detail: str = "") -> None:
        super().__init__(f"{code.name}: {detail}" if detail else code.name)
        self.code = code
        self.fatal = fatal


# ---- framing -----------------------------------------------------------------

def pack_frame(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return LENGTH_PREFIX.pack(len(body)) + body


class _ExtRefused(Exception):
    pass


def _refuse_ext(code: int, data: bytes) -> Any:
    # max_ext_len=0 still lets a zero-length ext through; the protocol has no ext at all.
    raise _ExtRefused(code)


def unpack_body(body: bytes) -> Any:
    """One msgpack object, unpacked with every limit; raises ProtocolError (not fatal)."""
    try:
        return msgpack.unpackb(
            body, raw=False, use_list=True, strict_map_key=True,
            max_str_len=limits.STRING_BYTES_MAX, max_bin_len=limits.BIN_BYTES_MAX,
            max_array_len=limits.ARRAY_ITEMS_MAX, max_map_len=limits.MAP_ENTRIES_MAX,
            max_ext_len=0, ext_hook=_refuse_ext,
        )
    except _ExtRefused as error:
        raise ProtocolError(Code.MSGPACK_LIMIT_EXCEEDED, detail="msgpack ext types are not part of the protocol") from error
    except msgpack.StackError as error:
        raise ProtocolError(Code.MSGPACK_LIMIT_EXCEEDED, detail="nesting too deep") from error
    except ValueError as error:
        # msgpack reports a limit as a plain ValueError naming the max_*_len it broke.
        if "exceeds max_" in str(error):
            raise ProtocolError(Code.MSGPACK_LIMIT_EXCEEDED, detail=str(error)) from error
        raise ProtocolError(Code.MALFORMED_MSGPACK, detail=str(error)) from error


class FrameBuffer:
    """A read buffer that a BufferedProtocol fills in place and frames are cut from.

    Allocated once per connection; it grows (by copy, never by resizing an
    exported buffer) only up to one maximal frame.
    """

    __slots__ = ("_data", "_start", "_end", "_frame_bytes_max")

    def __init__(self, frame_bytes_max: int = limits.FRAME_BYTES_MAX, initial_bytes: int = 256 * 1024) -> None:
        self._frame_bytes_max = frame_bytes_max
        self._data = bytearray(min(initial_bytes, frame_bytes_max + LENGTH_PREFIX_BYTES))
        self._start = 0
        self._end = 0

    def writable(self) -> memoryview:
        """Free space at the end, after making room for the frame being received."""
        if self._end == len(self._data):
            self._make_room()
        return memoryview(self._data)[self._end:]

    def wrote(self, count: int) -> None:
        self._end += count

    def pending_bytes(self) -> int:
        return self._end - self._start

    def next_frame(self) -> bytes | None:
        """The next complete frame body, None if incomplete; raises a fatal ProtocolError."""
        available = self._end - self._start
        if available < LENGTH_PREFIX_BYTES:
            return None
        (length,) = LENGTH_PREFIX.unpack_from(self._data, self._start)
        if length == 0:
            raise ProtocolError(Code.FRAME_EMPTY, fatal=True)
        if length > self._frame_bytes_max:
            raise ProtocolError(Code.FRAME_TOO_LARGE, fatal=True, detail=f"{length} bytes")
        if available < LENGTH_PREFIX_BYTES + length:
            return None
        body_start = self._start + LENGTH_PREFIX_BYTES
        body = bytes(memoryview(self._data)[body_start:body_start + length])   # one copy, not two
        self._start = body_start + length
        if self._start == self._end:
            self._start = self._end = 0
        return body

    def take_run(self, cut: Any, frames_max: int, body_bytes_budget: int, events_max: int) -> "FrameRun | None":
        """The complete frames at the front that the pipeline's `cut` takes as one unit (see
        Pipeline.cut), as a FrameRun holding them with their length prefixes; None if it takes none."""
        frames, end, events, body_bytes = cut(self._data, self._start, self._end, frames_max, body_bytes_budget,
                                              events_max, self._frame_bytes_max)
        if not frames:
            return None
        blob = bytes(memoryview(self._data)[self._start:end])
        self._start = end
        if self._start == self._end:
            self._start = self._end = 0
        return FrameRun(blob, frames, events, body_bytes)

    def _make_room(self) -> None:
        live = self._end - self._start
        if self._start > 0:
            # Same-length slice assignment never resizes the bytearray.
            self._data[0:live] = self._data[self._start:self._end]
            self._start, self._end = 0, live
            return
        capacity = min(2 * len(self._data), self._frame_bytes_max + LENGTH_PREFIX_BYTES)
        if capacity <= len(self._data):
            # Cannot happen: next_frame() rejects a prefix past the limit first.
            raise ProtocolError(Code.FRAME_TOO_LARGE, fatal=True)
        grown = bytearray(capacity)
        grown[0:live] = self._data[0:live]
        self._data = grown


# ---- handshake ---------------------------------------------------------------

def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def challenge_message(server_name: str, nonce: bytes) -> list:
    return ["challenge", PROTOCOL_VERSION, server_name, nonce]


def compute_mac(secret: bytes, nonce: bytes) -> bytes:
    return hmac.new(secret, nonce, hashlib.sha256).digest()


def auth_message(participant_id: int, secret: bytes, nonce: bytes, version: int = PROTOCOL_VERSION) -> list:
    return ["auth", version, participant_id, compute_mac(secret, nonce)]


def verify_mac(secret: bytes | None, nonce: bytes, mac: bytes) -> bool:
    """Constant-time: an unknown participant costs the same as a wrong MAC."""
    expected = compute_mac(secret if secret is not None else b"\0" * 32, nonce)
    return hmac.compare_digest(expected, mac) and secret is not None


class AuthRequest(NamedTuple):
    version: int
    participant_id: int
    mac: bytes


def decode_auth(obj: Any) -> AuthRequest:
    """The client's first frame; anything else is fatal for the connection."""
    if isinstance(obj, list) and len(obj) == 3 and _is_uint(obj[0]) and obj[0] >= 1 and isinstance(obj[1], str):
        # A well-formed request before authentication: the client skipped the handshake.
        raise ProtocolError(Code.NOT_AUTHENTICATED, fatal=True)
    if not (isinstance(obj, list) and len(obj) == 4 and obj[0] == "auth"):
        raise ProtocolError(Code.MALFORMED_HANDSHAKE, fatal=True)
    _, version, participant_id, mac = obj
    if not (_is_uint(version) and _is_uint(participant_id) and isinstance(mac, bytes) and len(mac) == MAC_BYTES):
        raise ProtocolError(Code.MALFORMED_HANDSHAKE, fatal=True)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(Code.UNSUPPORTED_VERSION, fatal=True, detail=f"version {version}")
    return AuthRequest(version, participant_id, mac)


def decode_challenge(obj: Any) -> tuple[int, str, bytes]:
    """For clients: (version, server_name, nonce) from the server's first frame."""
    if not (isinstance(obj, list) and len(obj) == 4 and obj[0] == "challenge"
            and _is_uint(obj[1]) and isinstance(obj[2], str)
            and isinstance(obj[3], bytes) and len(obj[3]) == NONCE_BYTES):
        raise ProtocolError(Code.MALFORMED_HANDSHAKE, detail=f"not a challenge: {obj!r:.80}")
    return obj[1], obj[2], obj[3]


# ---- requests ----------------------------------------------------------------

class PayItem(NamedTuple):
    transfer_id: int
    payer_account_id: int
    qr_payload: str
    amount_minor: int            # 0: the amount is in the QR
    device_id: str | None
    reference: str | None


class PendingItem(NamedTuple):
    transfer_id: int
    pending_id: int
    amount_minor: int            # post only: 0 posts the full pending amount


class HistoryQuery(NamedTuple):
    account_id: int
    limit: int


class PendingPage(NamedTuple):
    after_cursor: int            # 0: from the oldest held payment
    limit: int


class Request:
    """One decoded request; `error` set means it is answered without the engine."""

    __slots__ = ("request_id", "op", "args", "error", "events")
    count = 1                   # the frames it answers (a FrameRun: several)

    def __init__(self, request_id: int, op: str, args: Any, error: Code | None = None, events: int = 1) -> None:
        self.request_id = request_id
        self.op = op
        self.args = args
        self.error = error
        self.events = events


class FrameRun(Request):
    """`count` pay / pay_batch frames of one connection, back to back with their length prefixes
    (`args`), queued, run and answered as one request (op "raw_run", see switch/engine.py):
    no Python object per frame.  `body_bytes` is what they count against in_flight_bytes_max."""

    __slots__ = ("count", "body_bytes")

    def __init__(self, frames: bytes, count: int, events: int, body_bytes: int) -> None:
        super().__init__(CONNECTION_REQUEST_ID, "raw_run", frames, None, events)
        self.count = count
        self.body_bytes = body_bytes


def refusal_frames(frames: bytes, code: int, request_id_of: Callable[[bytes], int]) -> bytes:
    """The answer `code` (BUSY, STORAGE_FAILED, ...) to every frame of a FrameRun's bytes, each under
    its own request id; `request_id_of(body)` reads it."""
    answers = []
    position = 0
    while position < len(frames):
        if position + LENGTH_PREFIX_BYTES > len(frames):
            raise ValueError("refusal_frames: a frame runs past the end")
        (length,) = LENGTH_PREFIX.unpack_from(frames, position)
        body = frames[position + LENGTH_PREFIX_BYTES:position + LENGTH_PREFIX_BYTES + length]
        if len(body) < length:
            raise ValueError("refusal_frames: a frame runs past the end")
        answers.append(pack_frame(response(request_id_of(body), code)))
        position += LENGTH_PREFIX_BYTES + length
    return b"".join(answers)


def decode_request(body: bytes) -> Request:
    """A frame body as a Request; every violation becomes Request.error, never an exception."""
    try:
        obj = unpack_body(body)
    except ProtocolError as error:
        return Request(CONNECTION_REQUEST_ID, "", None, error.code)
    if not (isinstance(obj, list) and len(obj) == 3 and _is_uint(obj[0])
            and 1 <= obj[0] <= REQUEST_ID_MAX and isinstance(obj[1], str)):
        if isinstance(obj, list) and obj and obj[0] == "auth":
            return Request(CONNECTION_REQUEST_ID, "auth", None, Code.ALREADY_AUTHENTICATED)
        return Request(CONNECTION_REQUEST_ID, "", None, Code.MALFORMED_REQUEST)
    request_id, op, raw_args = obj
    decoder = _DECODERS.get(op)
    if decoder is None:
        return Request(request_id, op, None, Code.UNKNOWN_OPERATION)
    try:
        args, events = decoder(raw_args)
    except ProtocolError as error:
        return Request(request_id, op, None, error.code)
    return Request(request_id, op, args, None, events)


def _is_uint(value: Any) -> bool:
    # msgpack gives bool for true/false; bool is an int subclass in Python.
    return type(value) is int and value >= 0


def _uint(value: Any, maximum: int = U64_MAX) -> int:
    if not (_is_uint(value) and value <= maximum):
        raise ProtocolError(Code.INVALID_ARGUMENTS, detail=f"not a uint <= {maximum}: {value!r:.40}")
    return value


def id_from_wire(value: Any) -> int:
    """A 16-byte big-endian u128 id."""
    if not (isinstance(value, bytes) and len(value) == ID_BYTES):
        raise ProtocolError(Code.INVALID_ARGUMENTS, detail="an id is 16 bytes of bin")
    return int.from_bytes(value, "big")


def id_to_wire(value: int) -> bytes:
    return value.to_bytes(ID_BYTES, "big")


def _optional_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ProtocolError(Code.INVALID_ARGUMENTS, detail="expected str or nil")


def _items(value: Any) -> list:
    if not isinstance(value, list) or not value:
        raise ProtocolError(Code.INVALID_ARGUMENTS, detail="expected a non-empty array of items")
    if len(value) > limits.BATCH_FRAME_ITEMS_MAX:
        raise ProtocolError(Code.TOO_MANY_ITEMS)
    return value


def decode_pay_item(value: Any) -> PayItem:
    """[transfer_id, payer_account_id, qr_payload, amount_minor, device_id?, reference?]."""
    if not (isinstance(value, list) and 4 <= len(value) <= 6):
        raise ProtocolError(Code.INVALID_ARGUMENTS, detail="a pay item is an array of 4 to 6 fields")
    device_id = _optional_str(value[4]) if len(value) > 4 else None
    reference = _optional_str(value[5]) if len(value) > 5 else None
    if not isinstance(value[2], str):
        raise ProtocolError(Code.INVALID_ARGUMENTS, detail="qr_payload is a str")
    return PayItem(id_from_wire(value[0]), _uint(value[1]), value[2], _uint(value[3]), device_id, reference)


def _decode_pay(args: Any) -> tuple[PayItem, int]:
    return decode_pay_item(args), PAY_EVENTS


def _decode_pay_batch(args: Any) -> tuple[list[PayItem], int]:
    items = [decode_pay_item(item) for item in _items(args)]
    return items, PAY_EVENTS * len(items)


_TRANSFER_FIELDS = {
    "id": (True, "id"), "debit_account_id": (True, U64_MAX), "credit_account_id": (True, U64_MAX),
    "amount": (True, U64_MAX), "ledger": (True, U32_MAX), "code": (True, U16_MAX),
    "flags": (False, U16_MAX), "pending_id": (False, "id"), "timeout": (False, U32_MAX),
    "user_data_128": (False, "id"), "user_data_64": (False, U64_MAX), "user_data_32": (False, U32_MAX),
}
_ACCOUNT_FIELDS = {
    "id": (True, U64_MAX), "ledger": (True, U32_MAX), "code": (True, U16_MAX), "flags": (False, U16_MAX),
    "user_data_128": (False, "id"), "user_data_64": (False, U64_MAX), "user_data_32": (False, U32_MAX),
}


def _record(value: Any, fields: dict) -> dict:
    """A map checked against a field table: known keys only, required ones present, typed."""
    if not isinstance(value, dict) or not set(value) <= set(fields):
        raise ProtocolError(Code.INVALID_ARGUMENTS, detail="unknown or missing fields")
    record = {}
    for name, (required, kind) in fields.items():
        if name not in value:
            if required:
                raise ProtocolError(Code.INVALID_ARGUMENTS, detail=f"{name} is required")
            continue
        record[name] = id_from_wire(value[name]) if kind == "id" else _uint(value[name], kind)
    return record


def _decode_transfers(args: Any) -> tuple[list[Transfer], int]:
    transfers = [Transfer(**_record(item, _TRANSFER_FIELDS)) for item in _items(args)]
    return transfers, len(transfers)


def _decode_accounts(args: Any) -> tuple[list[Account], int]:
    accounts = [Account(**_record(item, _ACCOUNT_FIELDS)) for item in _items(args)]
    return accounts, len(accounts)


def _decode_pending(args: Any) -> tuple[list[PendingItem], int]:
    fields = {"id": (True, "id"), "pending_id": (True, "id"), "amount": (False, U64_MAX)}
    items = []
    for item in _items(args):
        record = _record(item, fields)
        items.append(PendingItem(record["id"], record["pending_id"], record.get("amount", 0)))
    return items, len(items)


def _decode_lookup_accounts(args: Any) -> tuple[list[int], int]:
    ids = [_uint(item) for item in _items(args)]
    return ids, 0


def _decode_lookup_transfers(args: Any) -> tuple[list[int], int]:
    ids = [id_from_wire(item) for item in _items(args)]
    return ids, 0


def _decode_account_history(args: Any) -> tuple[HistoryQuery, int]:
    if not (isinstance(args, list) and len(args) == 2):
        raise ProtocolError(Code.INVALID_ARGUMENTS, detail="[account_id, limit]")
    limit = _uint(args[1], limits.BATCH_FRAME_ITEMS_MAX)
    if limit == 0:
        raise ProtocolError(Code.INVALID_ARGUMENTS, detail="limit is at least 1")
    return HistoryQuery(_uint(args[0]), limit), 0


def _decode_ping(args: Any) -> tuple[None, int]:
    if args is not None:
        raise ProtocolError(Code.INVALID_ARGUMENTS, detail="ping takes nil")
    return None, 0


def _decode_stats(args: Any) -> tuple[None, int]:
    if args is not None:
        raise ProtocolError(Code.INVALID_ARGUMENTS, detail="stats takes nil")
    return None, 0


def _decode_reload_rules(args: Any) -> tuple[str, int]:
    """An array of str chunks whose concatenation is the rule set's TOML text: a rule set is
    larger than one msgpack str may be (string_bytes_max), so it travels in pieces."""
    if not (isinstance(args, list) and 1 <= len(args) <= limits.RELOAD_RULES_CHUNKS_MAX
            and all(isinstance(chunk, str) for chunk in args)):
        raise ProtocolError(Code.INVALID_ARGUMENTS,
                            detail=f"an array of 1 to {limits.RELOAD_RULES_CHUNKS_MAX} str chunks")
    return "".join(args), 0


def split_text(text: str, chunk_bytes_max: int = limits.STRING_BYTES_MAX) -> list[str]:
    """Cut text into str chunks of at most chunk_bytes_max UTF-8 bytes, never inside a character."""
    chunks, current, current_bytes = [], [], 0
    for character in text:
        size = len(character.encode())
        if current_bytes + size > chunk_bytes_max:
            chunks.append("".join(current))
            current, current_bytes = [], 0
        current.append(character)
        current_bytes += size
    if current or not chunks:
        chunks.append("".join(current))
    return chunks


def _decode_list_pending(args: Any) -> tuple[PendingPage, int]:
    record = _record(args, {"after": (False, U64_MAX), "limit": (False, limits.LIST_PENDING_ITEMS_MAX)})
    limit = record.get("limit", limits.LIST_PENDING_ITEMS_MAX)
    if limit == 0:
        raise ProtocolError(Code.INVALID_ARGUMENTS, detail="limit is at least 1")
    return PendingPage(record.get("after", 0), limit), 0


_DECODERS = {
    OP_PAY: _decode_pay, OP_PAY_BATCH: _decode_pay_batch,
    OP_TRANSFERS: _decode_transfers, OP_ACCOUNTS: _decode_accounts,
    OP_POST_PENDING: _decode_pending, OP_VOID_PENDING: _decode_pending,
    OP_LOOKUP_ACCOUNTS: _decode_lookup_accounts, OP_LOOKUP_TRANSFERS: _decode_lookup_transfers,
    OP_ACCOUNT_HISTORY: _decode_account_history, OP_PING: _decode_ping,
    OP_STATS: _decode_stats, OP_RELOAD_RULES: _decode_reload_rules, OP_LIST_PENDING: _decode_list_pending,
}
OPERATIONS = tuple(_DECODERS)


# ---- results -----------------------------------------------------------------

def account_to_wire(account: Account) -> dict:
    return {
        "id": account.id, "ledger": account.ledger, "code": account.code, "flags": account.flags,
        "user_data_128": id_to_wire(account.user_data_128), "user_data_64": account.user_data_64,
        "user_data_32": account.user_data_32,
        "debits_pending": account.debits_pending, "debits_posted": account.debits_posted,
        "credits_pending": account.credits_pending, "credits_posted": account.credits_posted,
        "timestamp": account.timestamp,
    }


def transfer_to_wire(transfer: Transfer) -> dict:
    return {
        "id": id_to_wire(transfer.id), "debit_account_id": transfer.debit_account_id,
        "credit_account_id": transfer.credit_account_id, "amount": transfer.amount,
        "ledger": transfer.ledger, "code": transfer.code, "flags": transfer.flags,
        "pending_id": id_to_wire(transfer.pending_id), "timeout": transfer.timeout,
        "user_data_128": id_to_wire(transfer.user_data_128), "user_data_64": transfer.user_data_64,
        "user_data_32": transfer.user_data_32, "timestamp": transfer.timestamp,
    }


def response(request_id: int, code: int, result: Any = None) -> list:
    return [request_id, int(code), result]


# ---- worked examples for docs/PROTOCOL.md ----------------------------------------

# The demo's Indian wallet (switch/demo/switch.toml) donating at the demo temple.
EXAMPLE_PARTICIPANT_ID = 3
EXAMPLE_SECRET = b"demo-bharatwallet-secret-03"
EXAMPLE_NONCE = bytes(range(NONCE_BYTES))
EXAMPLE_PAYER_ACCOUNT_ID = 3001
EXAMPLE_PAYLOAD = "upi://pay?pa=kashitemple@okaxis&pn=Shri%20Kashi%20Temple%20Trust&mc=8661&cu=INR"
EXAMPLE_PAY_ARGS = [id_to_wire(1), EXAMPLE_PAYER_ACCOUNT_ID, EXAMPLE_PAYLOAD, 15000, "dev-7", "merit-box"]
# What the switch answers to it (tests/test_engine_pay.py checks the real engine says exactly this).
EXAMPLE_PAY_RESULT = [15000, 0, 356, "Shri Kashi Temple Trust"]


def hex_dump(data: bytes) -> str:
    """16 bytes a line: offset, hex, printable ASCII."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset:offset + 16]
        text = "".join(chr(byte) if 32 <= byte < 127 else "." for byte in chunk)
        lines.append(f"{offset:04x}  {chunk.hex(' '):<47}  {text}")
    return "\n".join(lines)


def example_frames() -> list[tuple[str, str, bytes]]:
    """(direction, description, frame) for a complete handshake and one `pay` exchange,
    built by the same functions the server and client use."""
    return [
        ("S->C", "challenge: version 1, server name, 32-byte nonce",
         pack_frame(challenge_message("qr-switch-demo", EXAMPLE_NONCE))),
        ("C->S", "auth: version 1, participant 3, HMAC-SHA256(secret, nonce)",
         pack_frame(auth_message(EXAMPLE_PARTICIPANT_ID, EXAMPLE_SECRET, EXAMPLE_NONCE))),
        ("S->C", "welcome: request id 0, code 0 (OK), participant and role",
         pack_frame(response(CONNECTION_REQUEST_ID, Code.OK,
                             {"participant_id": EXAMPLE_PARTICIPANT_ID, "role": "wallet"}))),
        ("C->S", "pay: request 1, transfer id 1, payer account 3001, UPI link, 15000 paise, device, reference",
         pack_frame([1, OP_PAY, EXAMPLE_PAY_ARGS])),
        ("S->C", "answer: request 1, code 0 (OK), [amount_minor, fee_minor, ledger, merchant name]",
         pack_frame(response(1, Code.OK, EXAMPLE_PAY_RESULT))),
    ]


def examples_markdown() -> str:
    parts = []
    for direction, description, frame in example_frames():
        parts += [f"{direction} {description} ({len(frame)} bytes):", "", "```", hex_dump(frame), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--examples"]:
        sys.stdout.write(examples_markdown())
    else:
        sys.exit("usage: python -m switch.protocol --examples")
