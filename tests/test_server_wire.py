"""The server over real TCP on 127.0.0.1, with a tiny engine double: framing, handshake,
hostile input, limits.  Every test runs on uvloop and on the stock asyncio loop.

The double answers `ping` with OK and echoes the participant id, so these tests
pin down the connection layer alone; test_server_e2e.py runs the real engine.
"""
from __future__ import annotations

import asyncio
import socket
import threading

import msgpack
import pytest

from core_ext import limits
from core_ext.codes import Code
from switch import config as config_module, protocol
from switch.engine import Outcome
from test_server_helpers import (
    OTHER_ID, OTHER_SECRET, WALLET_ID, WALLET_SECRET, Raw, base_document, run_on, running)


class EngineDouble:
    """Answers every request from the participant it came from; optionally slow."""

    def __init__(self, delay_seconds: float = 0.0) -> None:
        self.delay_seconds = delay_seconds
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def process_batch(self, batch):
        if self.delay_seconds:
            threading.Event().wait(self.delay_seconds)
        with self.lock:
            self.batches.append(len(batch))
        return [self._answer(participant, request) for participant, request in batch]

    @staticmethod
    def _answer(participant, request):
        if request.error is not None:
            return Outcome(request.error, None)
        if request.op == "lookup_accounts":
            return Outcome(Code.OK, request.args)   # a large answer, for the slow-reader test
        return Outcome(Code.OK, participant.id)


@pytest.fixture
def config():
    return config_module.parse(base_document())


async def assert_still_serving(port: int) -> None:
    """Another client is unaffected by whatever the hostile one did."""
    other = await Raw.authenticated(port, OTHER_ID, OTHER_SECRET)
    other.send([1, "ping", None])
    assert await other.frame() == [1, Code.OK, OTHER_ID]
    await other.close()


class TestHandshake:
    def test_challenge_then_auth_then_requests(self, loop_kind, config):
        async def body():
            async with running(EngineDouble(), config) as (_, port):
                raw = await Raw.open(port)
                kind, version, name, nonce = raw.challenge
                assert (kind, version, name, len(nonce)) == ("challenge", protocol.PROTOCOL_VERSION, "test-switch", 32)
                raw.send(protocol.auth_message(WALLET_ID, WALLET_SECRET.encode(), nonce))
                assert await raw.frame() == [0, Code.OK, {"participant_id": WALLET_ID, "role": "wallet"}]
                raw.send([5, "ping", None])
                assert await raw.frame() == [5, Code.OK, WALLET_ID]
                await raw.close()
        run_on(loop_kind, body)

    def test_each_connection_gets_a_fresh_nonce(self, loop_kind, config):
        async def body():
            async with running(EngineDouble(), config) as (_, port):
                first, second = await Raw.open(port), await Raw.open(port)
                assert first.challenge[3] != second.challenge[3]
                await first.close()
                await second.close()
        run_on(loop_kind, body)

    @pytest.mark.parametrize("participant_id, secret", [(WALLET_ID, "wrong-secret-0123456789"), (77, WALLET_SECRET)])
    def test_wrong_hmac_or_unknown_participant_is_refused_and_closed(self, loop_kind, config, participant_id, secret):
        async def body():
            async with running(EngineDouble(), config) as (_, port):
                raw = await Raw.open(port)
                raw.send(protocol.auth_message(participant_id, secret.encode(), raw.challenge[3]))
                assert await raw.frame() == [0, Code.AUTHENTICATION_FAILED, None]
                assert await raw.is_closed_by_server()
                await assert_still_serving(port)
        run_on(loop_kind, body)

    def test_replayed_handshake_from_another_connection_is_refused(self, loop_kind, config):
        async def body():
            async with running(EngineDouble(), config) as (_, port):
                victim = await Raw.open(port)
                recorded = protocol.auth_message(WALLET_ID, WALLET_SECRET.encode(), victim.challenge[3])
                victim.send(recorded)
                assert (await victim.frame())[1] == Code.OK
                attacker = await Raw.open(port)
                attacker.send(recorded)
                assert await attacker.frame() == [0, Code.AUTHENTICATION_FAILED, None]
                assert await attacker.is_closed_by_server()
                await victim.close()
        run_on(loop_kind, body)

    def test_payment_before_authentication_is_refused_and_closed(self, loop_kind, config):
        async def body():
            engine = EngineDouble()
            async with running(engine, config) as (_, port):
                raw = await Raw.open(port)
                raw.send([1, "pay", [b"\1" * 16, 1001, "QR", 100]])
                assert await raw.frame() == [0, Code.NOT_AUTHENTICATED, None]
                assert await raw.is_closed_by_server()
                assert engine.batches == []
        run_on(loop_kind, body)

    def test_second_auth_on_an_open_connection_is_refused_but_keeps_it_open(self, loop_kind, config):
        async def body():
            async with running(EngineDouble(), config) as (_, port):
                raw = await Raw.authenticated(port)
                raw.send(protocol.auth_message(OTHER_ID, OTHER_SECRET.encode(), raw.challenge[3]))
                assert await raw.frame() == [0, Code.ALREADY_AUTHENTICATED, None]
                raw.send([2, "ping", None])
                assert await raw.frame() == [2, Code.OK, WALLET_ID]   # still wallet one
                await raw.close()
        run_on(loop_kind, body)

    def test_silent_client_is_closed_after_the_handshake_timeout(self, loop_kind, config):
        async def body():
            async with running(EngineDouble(), config, handshake_timeout_ms=100) as (_, port):
                raw = await Raw.open(port)
                assert await raw.frame() == [0, Code.HANDSHAKE_TIMEOUT, None]
                assert await raw.is_closed_by_server()
        run_on(loop_kind, body)

    def test_unsupported_version_is_refused(self, loop_kind, config):
        async def body():
            async with running(EngineDouble(), config) as (_, port):
                raw = await Raw.open(port)
                raw.send(protocol.auth_message(WALLET_ID, WALLET_SECRET.encode(), raw.challenge[3], version=99))
                assert await raw.frame() == [0, Code.UNSUPPORTED_VERSION, None]
                assert await raw.is_closed_by_server()
        run_on(loop_kind, body)


class TestFraming:
    def test_length_prefix_past_the_limit_answers_earlier_requests_then_closes(self, loop_kind, config):
        async def body():
            async with running(EngineDouble(), config) as (_, port):
                raw = await Raw.authenticated(port)
                raw.send([1, "ping", None])
                raw.send_bytes((limits.FRAME_BYTES_MAX + 1).to_bytes(4, "big") + b"\0" * 64)
                assert await raw.frame() == [1, Code.OK, WALLET_ID]
                assert await raw.frame() == [0, Code.FRAME_TOO_LARGE, None]
                assert await raw.is_closed_by_server()
                await assert_still_serving(port)
        run_on(loop_kind, body)

    def test_frame_at_the_server_limit_is_read_and_one_past_is_refused(self, loop_kind, config):
        async def body():
            async with running(EngineDouble(), config, frame_bytes_max=4096) as (_, port):
                raw = await Raw.authenticated(port)
                # Exactly 4096 bytes of valid msgpack (an array16 of 4093 zeros): the frame is
                # taken whole; it is not a request, which is answered without closing.
                at_limit = b"\xdc" + (4093).to_bytes(2, "big") + b"\0" * 4093
                assert len(at_limit) == 4096
                raw.send_bytes((4096).to_bytes(4, "big") + at_limit)
                assert await raw.frame() == [0, Code.MALFORMED_REQUEST, None]
                raw.send([1, "ping", None])
                assert await raw.frame() == [1, Code.OK, WALLET_ID]
                raw.send_bytes((4097).to_bytes(4, "big"))
                assert await raw.frame() == [0, Code.FRAME_TOO_LARGE, None]
                assert await raw.is_closed_by_server()
        run_on(loop_kind, body)

    def test_zero_length_frame_is_refused_and_closed(self, loop_kind, config):
        async def body():
            async with running(EngineDouble(), config) as (_, port):
                raw = await Raw.authenticated(port)
                raw.send_bytes(b"\0\0\0\0")
                assert await raw.frame() == [0, Code.FRAME_EMPTY, None]
                assert await raw.is_closed_by_server()
                await assert_still_serving(port)
        run_on(loop_kind, body)

    def test_truncated_frame_then_disconnect_does_not_disturb_the_server(self, loop_kind, config):
        async def body():
            async with running(EngineDouble(), config) as (_, port):
                raw = await Raw.authenticated(port)
                raw.send_bytes(protocol.pack_frame([1, "ping", None])[:-2])
                await raw.close()
                await assert_still_serving(port)
        run_on(loop_kind, body)

    def test_frames_split_at_every_byte_boundary_are_answered(self, loop_kind, config):
        async def body():
            async with running(EngineDouble(), config) as (_, port):
                raw = await Raw.authenticated(port)
                frames = b"".join(protocol.pack_frame([i, "ping", None]) for i in (1, 2, 3))
                for index in range(len(frames)):
                    raw.send_bytes(frames[index:index + 1])
                    await raw.writer.drain()
                    await asyncio.sleep(0)
                assert [await raw.frame() for _ in range(3)] == [[i, Code.OK, WALLET_ID] for i in (1, 2, 3)]
                await raw.close()
        run_on(loop_kind, body)

    def test_many_frames_in_one_write_are_answered_in_order(self, loop_kind, config):
        async def body():
            engine = EngineDouble()
            async with running(engine, config) as (_, port):
                raw = await Raw.authenticated(port)
                raw.send_bytes(b"".join(protocol.pack_frame([i, "ping", None]) for i in range(1, 2001)))
                answers = [await raw.frame() for _ in range(2000)]
                assert [answer[0] for answer in answers] == list(range(1, 2001))
                assert len(engine.batches) < 2000   # batched, not one engine call per frame
                await raw.close()
        run_on(loop_kind, body)

    def test_invalid_msgpack_is_answered_and_the_connection_stays_open(self, loop_kind, config):
        async def body():
            async with running(EngineDouble(), config) as (_, port):
                raw = await Raw.authenticated(port)
                raw.send_bytes(b"\0\0\0\1\xc1")
                assert await raw.frame() == [0, Code.MALFORMED_MSGPACK, None]
                raw.send([2, "ping", None])
                assert await raw.frame() == [2, Code.OK, WALLET_ID]
                await raw.close()
        run_on(loop_kind, body)

    @pytest.mark.parametrize("message, expected", [
        ([3, "teleport", None], [3, Code.UNKNOWN_OPERATION, None]),
        ([3, "pay", ["not", "a", "payment", 1]], [3, Code.INVALID_ARGUMENTS, None]),
        ([3, "pay", [b"\1" * 16, 1001, "QR", 1.25]], [3, Code.INVALID_ARGUMENTS, None]),
        (["three", "ping", None], [0, Code.MALFORMED_REQUEST, None]),
        ("x" * (limits.STRING_BYTES_MAX + 1), [0, Code.MSGPACK_LIMIT_EXCEEDED, None]),
    ])
    def test_bad_requests_get_their_code_and_the_connection_stays_open(self, loop_kind, config, message, expected):
        async def body():
            async with running(EngineDouble(), config) as (_, port):
                raw = await Raw.authenticated(port)
                raw.send(message)
                assert await raw.frame() == expected
                raw.send([4, "ping", None])
                assert await raw.frame() == [4, Code.OK, WALLET_ID]
                await raw.close()
        run_on(loop_kind, body)


class TestLimits:
    def test_connection_past_the_limit_is_told_and_closed(self, loop_kind, config):
        async def body():
            async with running(EngineDouble(), config, connections_max=2) as (_, port):
                first, second = await Raw.open(port), await Raw.open(port)
                third = await Raw.open(port, read_challenge=False)
                assert await third.frame() == [0, Code.TOO_MANY_CONNECTIONS, None]
                assert await third.is_closed_by_server()
                await first.close()
                await asyncio.sleep(0.05)
                fourth = await Raw.open(port)   # a slot freed up
                assert fourth.challenge[0] == "challenge"
                await second.close()
                await fourth.close()
        run_on(loop_kind, body)

    def test_in_flight_limit_pauses_reading_but_answers_everything_in_order(self, loop_kind, config):
        async def body():
            engine = EngineDouble(delay_seconds=0.002)
            async with running(engine, config, in_flight_requests_max=4) as (_, port):
                raw = await Raw.authenticated(port)
                raw.send_bytes(b"".join(protocol.pack_frame([i, "ping", None]) for i in range(1, 101)))
                answers = [await raw.frame() for _ in range(100)]
                assert [answer[0] for answer in answers] == list(range(1, 101))
                assert max(engine.batches) <= 4
                await raw.close()
        run_on(loop_kind, body)

    def test_client_that_never_reads_is_cut_off_and_others_are_served(self, loop_kind, config):
        async def body():
            async with running(EngineDouble(), config, write_buffer_bytes_high=16 * 1024,
                               write_stall_ms_max=200) as (server, port):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect(("127.0.0.1", port))
                sock.setblocking(False)
                reader, writer = await asyncio.open_connection(sock=sock)
                raw = Raw(reader, writer)
                raw.challenge = await raw.frame()
                raw.send(protocol.auth_message(WALLET_ID, WALLET_SECRET.encode(), raw.challenge[3]))
                assert (await raw.frame())[1] == Code.OK
                # Ask for big answers and never read them.
                big = [1, "lookup_accounts", list(range(1, limits.BATCH_FRAME_ITEMS_MAX + 1))]
                frame = protocol.pack_frame(big)
                for _ in range(400):
                    if writer.is_closing():
                        break
                    writer.write(frame)
                    await asyncio.sleep(0.002)
                    if not server.connections - {c for c in server.connections if c.participant is None}:
                        break
                await asyncio.sleep(0.5)
                assert all(c.participant is None or c.participant.id != WALLET_ID for c in server.connections)
                await assert_still_serving(port)
                writer.transport.abort()
        run_on(loop_kind, body)


class TestInFlightBytes:
    def test_in_flight_bytes_limit_pauses_reading_and_everything_is_answered(self, loop_kind, config):
        async def body():
            engine = EngineDouble(delay_seconds=0.002)
            # Each lookup frame is ~5 KiB, past the 4 KiB bound: one request in flight at a time.
            async with running(engine, config, in_flight_bytes_max=4096) as (_, port):
                raw = await Raw.authenticated(port)
                frame = [0, "lookup_accounts", list(range(100_000, 101_000))]
                raw.send_bytes(b"".join(protocol.pack_frame([i] + frame[1:]) for i in range(1, 41)))
                answers = [await raw.frame() for _ in range(40)]
                assert [answer[0] for answer in answers] == list(range(1, 41))
                assert max(engine.batches) == 1
                await raw.close()
        run_on(loop_kind, body)


class TestLoadShedding:
    def test_work_past_the_queue_limit_is_answered_busy_in_order(self, loop_kind, config):
        def pay(request_id):
            return [request_id, "pay", [request_id.to_bytes(16, "big"), 1001, "QR", 5]]   # two ledger events

        async def body():
            engine = EngineDouble(delay_seconds=0.05)
            async with running(engine, config, queue_events_max=4) as (_, port):
                raw = await Raw.authenticated(port)
                raw.send(pay(1))
                await asyncio.sleep(0.02)      # the first batch (one payment) is now executing
                raw.send_bytes(b"".join(protocol.pack_frame(pay(i)) for i in range(2, 6)))
                answers = [await raw.frame() for _ in range(5)]
                assert [answer[0] for answer in answers] == list(range(1, 6))
                # Two payments (4 events, the limit) queue behind the first; the ones past it are shed.
                assert [answer[1] for answer in answers] == [Code.OK] * 3 + [Code.BUSY] * 2
                raw.send(pay(6))
                assert await raw.frame() == [6, Code.OK, WALLET_ID]   # the queue drained: served again
                await raw.close()
        run_on(loop_kind, body)
