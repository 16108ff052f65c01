"""Request frames encoded once, before the measured run, into one buffer per connection.

A frame is `[request_id, "pay", args]` or `[request_id, "pay_batch", [args, ...]]` behind its
4-byte length (docs/PROTOCOL.md 1, 4.1, 4.2).  The request id is always written as a msgpack
uint32 (0xce + 4 bytes), so every frame's layout is fixed when it is built and the runner only
slices the buffer: sending N frames is one slice and one write, with no per-request Python work.

The buffer is a ring.  When a connection has sent every frame it starts again from the first
one with a new *epoch*: before a frame is sent again, the first 4 bytes of each transfer id in
it are XORed with the change of epoch, so every payment id stays fresh (the ids are random, so a
clash is as unlikely as any).  Only then does a frame cost Python work per id; size the stream
so a run does not wrap (the report counts wraps).  Dynamic QR codes sent again after a wrap are
answered QR_REPLAYED: a wrapped run is no longer the seeded workload.
"""
from __future__ import annotations

import struct
from typing import Sequence

from switch import protocol
from switch.loadgen.stream import Item

_U32 = struct.Struct(">I")
_REQUEST_HEAD = b"\x93\xce"
_OP_PAY = b"\xa3pay"
_OP_PAY_BATCH = b"\xa9pay_batch"


def _array_header(count: int) -> bytes:
    if count < 16:
        return bytes([0x90 | count])
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


class FrameRing:
    """All the frames one connection sends, in order, with what the runner needs to slice them."""

    __slots__ = ("buffer", "frame_ends", "items_per_frame", "id_offsets", "id_starts", "epoch", "epochs_patched",
                 "frame_count")

    def __init__(self, items: Sequence[Item], batch_items: int = 1) -> None:
        if not items:
            raise ValueError("a connection needs at least one item to send")
        if batch_items < 1:
            raise ValueError("batch_items must be at least 1")
        self.items_per_frame = batch_items
        usable = len(items) - len(items) % batch_items
        if not usable:
            raise ValueError(f"a connection needs at least {batch_items} items for one batch frame")
        self.buffer = bytearray()
        self.frame_ends: list[int] = []
        self.id_offsets: list[int] = []      # absolute offset of every transfer id
        self.id_starts: list[int] = [0]      # frame j's ids are id_offsets[id_starts[j]:id_starts[j+1]]
        for start in range(0, usable, batch_items):
            self._append(len(self.frame_ends) + 1, items[start:start + batch_items], batch_items > 1)
        self.frame_count = len(self.frame_ends)
        self.epoch = 0
        # Per frame, the epoch its ids carry now: a frame is patched once per epoch, when next sent.
        self.epochs_patched = [0] * len(self.frame_ends)

    def _append(self, request_id: int, items: Sequence[Item], batch: bool) -> None:
        if request_id > protocol.REQUEST_ID_MAX:
            raise ValueError("more frames than request ids on one connection")
        head = _REQUEST_HEAD + request_id.to_bytes(4, "big")
        head += _OP_PAY_BATCH + _array_header(len(items)) if batch else _OP_PAY
        body_length = len(head) + sum(len(item.args) for item in items)
        frame_start = len(self.buffer)
        self.buffer += _U32.pack(body_length) + head
        for item in items:
            self.id_offsets.append(len(self.buffer) + item.transfer_id_offset)
            self.buffer += item.args
        self.frame_ends.append(len(self.buffer))
        self.id_starts.append(len(self.id_offsets))
        assert len(self.buffer) - frame_start == 4 + body_length

    def frame_start(self, index: int) -> int:
        return self.frame_ends[index - 1] if index else 0

    def take(self, first: int, count: int) -> bytes:
        """The bytes of frames first..first+count-1 (no wrap inside: see `span`), ids patched."""
        if self.epoch:
            self._patch(first, first + count)
        return bytes(self.buffer[self.frame_start(first):self.frame_ends[first + count - 1]])

    def span(self, first: int, wanted: int) -> int:
        """How many of `wanted` frames can be taken from `first` before the ring's end."""
        return min(wanted, len(self.frame_ends) - first)

    def wrapped(self) -> None:
        self.epoch += 1

    def _patch(self, first: int, end: int) -> None:
        epoch, buffer, patched = self.epoch, self.buffer, self.epochs_patched
        offsets, starts = self.id_offsets, self.id_starts
        for frame in range(first, end):
            delta = patched[frame] ^ epoch
            if not delta:
                continue
            for offset in offsets[starts[frame]:starts[frame + 1]]:
                _U32.pack_into(buffer, offset, _U32.unpack_from(buffer, offset)[0] ^ delta)
            patched[frame] = epoch
