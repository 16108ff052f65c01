"""Fuzz target: the framing buffer and request decoding of switch/protocol.py.

    python tests/fuzz/fuzz_frames.py -atheris_runs=100000 tests/fuzz/corpus/frames

Input layout: byte 0 picks the frame limit ((byte + 1) * 16 bytes, small so the
limit is met often), byte 1 seeds how the rest is cut into reads, and the rest
is the byte stream a client sends.  The stream is fed through FrameBuffer the
way the server's BufferedProtocol does (writable / wrote, then drain with
next_frame) and checked against a plain model of the framing:

* the buffer never holds more than one maximal frame (limit + 4-byte prefix);
* the frames cut are exactly the model's, in order, and a fatal error comes
  exactly where the model says, with its code (FRAME_EMPTY, FRAME_TOO_LARGE);
* every frame decodes without an exception, to a Request with a registered
  protocol code or to a well-formed request of a known operation; the first
  frame also goes through the handshake decoder, which may only raise a fatal
  ProtocolError.
"""
from __future__ import annotations

import random
import sys

import harness  # noqa: F401  (puts the repository on sys.path)
from harness import check

from core_ext.codes import ENTRIES, Code
from switch import protocol
from switch.protocol import FrameBuffer, ProtocolError

TARGET = "frames"
# Coverage of these guides the mutations (see harness.instrument).
INSTRUMENTED = ("switch.protocol", "__main__")
FRAME_LIMIT_STEP_BYTES = 16
INITIAL_BUFFER_BYTES = 16      # tiny, so that every run exercises the buffer's growth
READ_BYTES_MAX = 97
PREFIX_BYTES = protocol.LENGTH_PREFIX_BYTES
# Codes a request may be answered with before it reaches the engine.
REQUEST_ERRORS = {Code.MALFORMED_MSGPACK, Code.MSGPACK_LIMIT_EXCEEDED, Code.MALFORMED_REQUEST,
                  Code.ALREADY_AUTHENTICATED, Code.UNKNOWN_OPERATION, Code.INVALID_ARGUMENTS, Code.TOO_MANY_ITEMS}


def model_frames(stream: bytes, frame_bytes_max: int) -> tuple[list[bytes], Code | None]:
    """The frames a correct reader cuts from `stream`, and the fatal code it stops at, if any."""
    frames, pos = [], 0
    while len(stream) - pos >= PREFIX_BYTES:
        length = int.from_bytes(stream[pos:pos + PREFIX_BYTES], "big")
        if length == 0:
            return frames, Code.FRAME_EMPTY
        if length > frame_bytes_max:
            return frames, Code.FRAME_TOO_LARGE
        if len(stream) - pos - PREFIX_BYTES < length:
            break
        frames.append(stream[pos + PREFIX_BYTES:pos + PREFIX_BYTES + length])
        pos += PREFIX_BYTES + length
    return frames, None


def feed(stream: bytes, frame_bytes_max: int, seed: int) -> tuple[list[bytes], Code | None]:
    """Reads of random sizes into the buffer, drained after each read, as the server does."""
    buffer = FrameBuffer(frame_bytes_max, initial_bytes=INITIAL_BUFFER_BYTES)
    sizes = random.Random(seed)
    frames, pos = [], 0
    while pos < len(stream):
        window = buffer.writable()
        count = min(len(window), len(stream) - pos, sizes.randint(1, READ_BYTES_MAX))
        check(count > 0, "writable() offered no room", frame_bytes_max, buffer.pending_bytes())
        window[:count] = stream[pos:pos + count]
        window.release()
        buffer.wrote(count)
        pos += count
        # The capacity is what the limit bounds, and FrameBuffer has no public accessor for it.
        check(len(buffer._data) <= frame_bytes_max + PREFIX_BYTES, "buffer grew past one maximal frame",
              frame_bytes_max, len(buffer._data))
        try:
            while (body := buffer.next_frame()) is not None:
                frames.append(body)
        except ProtocolError as error:
            check(error.fatal, "a framing error must close the connection", error)
            return frames, error.code
    return frames, None


def check_body(body: bytes, first: bool) -> None:
    request = protocol.decode_request(body)
    if request.error is not None:
        check(request.error in REQUEST_ERRORS, "request refused with an unexpected code", body, request.error)
    else:
        check(request.op in protocol.OPERATIONS, "accepted an unknown operation", body, request.op)
        check(1 <= request.request_id <= protocol.REQUEST_ID_MAX, "accepted a bad request id", body)
        check(type(request.events) is int and request.events >= 0, "events must be a count", body, request.events)
    if first:
        try:
            protocol.decode_auth(protocol.unpack_body(body))
        except ProtocolError as error:
            check(ENTRIES.get(error.code) is not None, "handshake refused with an unregistered code", error)


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    frame_bytes_max = (data[0] + 1) * FRAME_LIMIT_STEP_BYTES
    stream = data[2:]
    frames, fatal = feed(stream, frame_bytes_max, data[1])
    expected_frames, expected_fatal = model_frames(stream, frame_bytes_max)
    check(frames == expected_frames, "frames cut differ from the model", frame_bytes_max, len(frames),
          len(expected_frames))
    check(fatal == expected_fatal, "fatal framing error differs from the model", fatal, expected_fatal)
    for index, body in enumerate(frames):
        check_body(body, index == 0)


if __name__ == "__main__":
    harness.main(test_one_input, INSTRUMENTED)
    sys.exit(0)
