"""One generator connection: handshake, then pre-encoded frames out, answers counted in.

Answers are read with a streaming msgpack Unpacker that decodes only what the generator needs
-- the request id and the code (and each item's code in a `pay_batch` answer) -- and skips the
rest.  The switch answers in request order on a connection (docs/PROTOCOL.md 3), so the n-th
answer belongs to the n-th frame sent; the request id is checked against that, not looked up.
Latency of a frame = arrival of its answer - its send time, where the send time is the moment
it was *due* in open loop (intended time: no coordinated omission) and the moment of the write
that carried it in closed loop.
"""
from __future__ import annotations

import asyncio
import collections
import time

import msgpack

from core_ext import limits
from core_ext.codes import Code, name_of
from switch import protocol
from switch.loadgen.frames import FrameRing
from switch.loadgen.recorder import Recorder

_PREFIX_BYTES = protocol.LENGTH_PREFIX_BYTES
_OK = int(Code.OK)
_BIG = "big"


class LoadConnection(asyncio.Protocol):
    """The bytes of one connection; a Runner decides when to send."""

    def __init__(self, ring: FrameRing, participant_id: int, secret: bytes, recorder: Recorder,
                 on_answers=None) -> None:
        self.ring = ring
        self.participant_id, self.secret = participant_id, secret
        self.recorder = recorder
        self.on_answers = on_answers          # called with the connection after each read
        self.batch = ring.items_per_frame > 1
        self.unpacker = msgpack.Unpacker(
            raw=False, max_str_len=limits.STRING_BYTES_MAX, max_bin_len=limits.BIN_BYTES_MAX,
            max_array_len=limits.ARRAY_ITEMS_MAX, max_map_len=limits.MAP_ENTRIES_MAX, max_ext_len=0)
        self.buffered_bytes = 0
        self.frame_bytes: int | None = None   # length of a frame whose prefix was read, body not yet here
        self.transport: asyncio.Transport | None = None
        self.ready = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.handshaking = True
        self.next_frame = 0                    # ring index of the next frame to send
        self.sent_frames = 0                   # ever, across wraps
        self.answered_frames = 0
        # Send groups, oldest first: [send_ns, frames_left]; an answer belongs to the oldest group.
        self.groups: collections.deque[list[int]] = collections.deque()
        self.expected_request_id = 1

    # ---- asyncio ------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed during the handshake: {exc}"))
        elif self.in_flight_frames():
            self.recorder.errors.append(f"connection lost with {self.in_flight_frames()} frames unanswered: {exc}")
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.unpacker.feed(data)
        self.buffered_bytes += len(data)
        if self.handshaking:
            self._handshake()
            return
        try:
            self._read_answers(time.monotonic_ns())
        except (ValueError, msgpack.UnpackException) as error:
            self.recorder.errors.append(f"bad answer from the switch: {error!r}")
            self.transport.abort()
            return
        if self.on_answers is not None:
            self.on_answers(self)

    # ---- handshake -----------------------------------------------------------------

    def _next_object(self):
        """One whole frame's object during the handshake (rare: decode it all)."""
        if self.frame_bytes is None:
            if self.buffered_bytes < _PREFIX_BYTES:
                return None
            self.frame_bytes = int.from_bytes(self.unpacker.read_bytes(_PREFIX_BYTES), _BIG)
            self.buffered_bytes -= _PREFIX_BYTES
        if self.buffered_bytes < self.frame_bytes:
            return None
        self.buffered_bytes -= self.frame_bytes
        self.frame_bytes = None
        return self.unpacker.unpack()

    def _handshake(self) -> None:
        while (message := self._next_object()) is not None:
            if isinstance(message, list) and message and message[0] == "challenge":
                _, _, nonce = protocol.decode_challenge(message)
                auth = protocol.auth_message(self.participant_id, self.secret, nonce)
                self.transport.write(protocol.pack_frame(auth))
            elif isinstance(message, list) and len(message) == 3 and message[:2] == [0, Code.OK]:
                self.handshaking = False
                self.ready.set_result(message[2])
                return  # anything after the welcome is an answer, read by _read_answers
            else:
                code = message[1] if isinstance(message, list) and len(message) == 3 else Code.MALFORMED_HANDSHAKE
                self.ready.set_exception(ConnectionError(f"handshake refused: {name_of(code)}"))
                self.transport.close()
                return

    # ---- sending ---------------------------------------------------------------------

    def in_flight_frames(self) -> int:
        return self.sent_frames - self.answered_frames

    def send(self, count: int, send_ns: int, interval_ns: int = 0) -> None:
        """Send the next `count` frames, as one write (two when the ring wraps).

        Closed loop: every frame is stamped `send_ns`, the moment of the write.  Open loop
        (`interval_ns` > 0): frame i is stamped `send_ns + i * interval_ns`, the moment it was
        due, so a late write counts in its latency."""
        ring, groups = self.ring, self.groups
        while count:
            taken = ring.span(self.next_frame, count)
            self.transport.write(ring.take(self.next_frame, taken))
            self.next_frame += taken
            if self.next_frame == ring.frame_count:
                self.next_frame = 0
                ring.wrapped()
                self.recorder.wraps += 1
            count -= taken
            self.sent_frames += taken
            if interval_ns:
                groups.extend([send_ns + index * interval_ns, 1] for index in range(taken))
                send_ns += taken * interval_ns
            else:
                groups.append([send_ns, taken])

    # ---- answers ---------------------------------------------------------------------

    def _read_answers(self, now_ns: int) -> None:
        """Every complete answer in the buffer: check its id, count its codes, record latency.

        The hot loop of the generator: locals only, one Unpacker call per field it needs, and
        latency recorded once per send group answered in this read, not once per frame."""
        unpacker, groups = self.unpacker, self.groups
        by_code = self.recorder.by_code
        items, batch, frame_count = self.ring.items_per_frame, self.batch, self.ring.frame_count
        read_bytes, read_array_header, unpack, skip = (
            unpacker.read_bytes, unpacker.read_array_header, unpacker.unpack, unpacker.skip)
        buffered, length, expected = self.buffered_bytes, self.frame_bytes, self.expected_request_id
        group = groups[0] if groups else None
        measured = group is not None and self.recorder.measured(group[0])
        group_frames = 0          # frames of `group` answered in this read
        answered = 0
        try:
            while True:
                if length is None:
                    if buffered < _PREFIX_BYTES:
                        break
                    length = int.from_bytes(read_bytes(_PREFIX_BYTES), _BIG)
                    buffered -= _PREFIX_BYTES
                if buffered < length:
                    break
                buffered -= length
                length = None
                read_array_header()
                request_id = unpack()
                code = unpack()
                if request_id == protocol.CONNECTION_REQUEST_ID:
                    # About the connection itself (e.g. SHUTTING_DOWN), not an answer to a frame.
                    skip()
                    self.recorder.errors.append(f"switch says {name_of(code)} about the connection")
                    continue
                if group is None:
                    skip()
                    self.recorder.errors.append(f"answer {request_id} with no request in flight")
                    continue
                if batch and code == _OK:
                    for _ in range(read_array_header()):
                        read_array_header()
                        item_code = unpack()
                        skip()
                        if measured:
                            by_code[item_code] += 1
                else:
                    skip()
                    if measured:
                        by_code[code] += items
                if request_id != expected:
                    self.recorder.errors.append(f"answer {request_id} where {expected} was due")
                expected = request_id % frame_count + 1
                answered += 1
                group_frames += 1
                group[1] -= 1
                if not group[1]:
                    groups.popleft()
                    self._record(group, now_ns, group_frames * items)
                    group_frames = 0
                    group = groups[0] if groups else None
                    measured = group is not None and self.recorder.measured(group[0])
        finally:
            self.buffered_bytes, self.frame_bytes, self.expected_request_id = buffered, length, expected
            self.answered_frames += answered
            if group_frames:
                self._record(group, now_ns, group_frames * items)

    def _record(self, group: list[int], now_ns: int, payment_count: int) -> None:
        self.recorder.completed_total += payment_count
        if self.recorder.measure_start_ns <= group[0] < self.recorder.measure_end_ns:
            self.recorder.record(group[0], now_ns - group[0], payment_count)
