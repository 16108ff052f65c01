"""A trivial peer that speaks just enough of the switch's protocol to be loaded: the ceiling.

It greets every connection with a challenge, accepts any `auth`, and answers every `pay` with a
canned OK and every `pay_batch` with one canned OK per item, without decoding the arguments.
Against it the generator's own cost is all that is measured: the generator's ceiling, which
bounds every figure it reports against the real switch.

With `service_s` set it becomes a slow server with one worker for all its connections: each
frame is answered `service_s` after the previous answer on any connection (or after it arrived,
if later), so an offered rate above 1/service_s builds a queue -- the fake slow peer that shows
an open-loop run measuring that queueing delay.
"""
from __future__ import annotations

import asyncio

import msgpack

from switch import protocol

_DETAIL = msgpack.packb([15_000, 187, 356, "Echo Merchant"], use_bin_type=True)
_PAY_ANSWER_TAIL = b"\x00" + _DETAIL              # code OK, then the detail
_BATCH_ITEM_ANSWER = b"\x92\x00" + _DETAIL        # [OK, detail]
_WELCOME = protocol.pack_frame([0, 0, {"participant_id": 1, "role": "wallet"}])
_OP_PAY_BATCH = b"\xa9pay_batch"


def _request_id_bytes(body: bytes) -> tuple[bytes, int]:
    """The request id exactly as encoded (it is echoed as is) and the offset after it."""
    marker = body[1]
    size = 1 if marker < 0x80 else {0xcc: 2, 0xcd: 3, 0xce: 5, 0xcf: 9}[marker]
    return body[1:1 + size], 1 + size


def answer_for(body: bytes) -> bytes:
    request_id, offset = _request_id_bytes(body)
    if body.startswith(_OP_PAY_BATCH, offset):
        header = offset + len(_OP_PAY_BATCH)
        marker = body[header]
        count = marker & 0x0F if marker < 0xdc else int.from_bytes(body[header + 1:header + 3], "big")
        answer = b"\x93" + request_id + b"\x00" + _array_header(count) + _BATCH_ITEM_ANSWER * count
    else:
        answer = b"\x93" + request_id + _PAY_ANSWER_TAIL
    return len(answer).to_bytes(4, "big") + answer


def _array_header(count: int) -> bytes:
    return bytes([0x90 | count]) if count < 16 else b"\xdc" + count.to_bytes(2, "big")


class _Worker:
    """The slow server's one worker, shared by its connections: when it is next free."""
    __slots__ = ("free_at",)

    def __init__(self) -> None:
        self.free_at = 0.0


class EchoPeer(asyncio.Protocol):
    def __init__(self, service_s: float = 0.0, worker: _Worker | None = None) -> None:
        self.service_s = service_s
        self.worker = worker or _Worker()
        self.buffer = bytearray()
        self.authenticated = False
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(protocol.pack_frame(protocol.challenge_message("echo-peer", protocol.new_nonce())))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        buffer, position, answers = self.buffer, 0, []
        while len(buffer) - position >= 4:
            length = int.from_bytes(buffer[position:position + 4], "big")
            if len(buffer) - position - 4 < length:
                break
            body = bytes(buffer[position + 4:position + 4 + length])
            position += 4 + length
            if not self.authenticated:
                self.authenticated = True
                answers.append(_WELCOME)
            else:
                answers.append(answer_for(body))
        del buffer[:position]
        if not answers:
            return
        if self.service_s:
            self._serve_slowly(answers)
        else:
            self.transport.write(b"".join(answers))

    def _serve_slowly(self, answers: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        worker = self.worker
        for answer in answers:
            worker.free_at = max(worker.free_at, loop.time()) + self.service_s
            loop.call_at(worker.free_at, self._write, answer)

    def _write(self, answer: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(answer)


async def start(host: str = "127.0.0.1", port: int = 0, service_s: float = 0.0) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    worker = _Worker()
    return await loop.create_server(lambda: EchoPeer(service_s, worker), host, port)
