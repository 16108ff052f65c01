"""The Python client: async with pipelining and automatic batching, plus a sync wrapper.

    async with AsyncClient("127.0.0.1", 7878, participant_id=1, secret="...") as client:
        result = await client.pay(transfer_id, payer_account_id=1001, qr_payload=payload)
        if result.ok: ...

Concurrent `pay` calls made in the same event-loop turn travel in one
`pay_batch` frame.  Every request may be pipelined; answers are matched by
request id.  If the connection drops, the client reconnects and re-sends every
unanswered request unchanged: transfer ids are idempotency keys, so a payment
that was already applied answers EXISTS and is never applied twice.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import ssl as ssl_module
from typing import Any, Iterable, NamedTuple

from core_ext import limits
from core_ext.codes import Code, name_of
from core_ext.types import Account, Transfer
from switch import protocol
from switch.protocol import FrameBuffer, ProtocolError

log = logging.getLogger("switch.client")

RECONNECT_ATTEMPTS = 5
RECONNECT_DELAY_SECONDS = 0.1


class SwitchError(Exception):
    """The switch refused a whole request or the connection; `code` says why."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(f"{name_of(code)} ({int(code)}){': ' + message if message else ''}")
        self.code = code


def _code(value: int) -> Code | int:
    try:
        return Code(value)
    except ValueError:
        return value  # a newer server may send a code this client does not know yet


class PaymentResult(NamedTuple):
    transfer_id: int
    code: Code | int
    amount_minor: int | None = None
    fee_minor: int | None = None
    ledger: int | None = None
    merchant_name: str | None = None

    @property
    def ok(self) -> bool:
        """Applied now, or applied by an earlier attempt with the same transfer id."""
        return self.code in (Code.OK, Code.EXISTS)


class PayRequest(NamedTuple):
    transfer_id: int
    payer_account_id: int
    qr_payload: str
    amount_minor: int = 0
    device_id: str | None = None
    reference: str | None = None

    def to_wire(self) -> list:
        return [protocol.id_to_wire(self.transfer_id), self.payer_account_id, self.qr_payload,
                self.amount_minor, self.device_id, self.reference]


class _Wire(asyncio.BufferedProtocol):
    """One TCP connection's bytes; the AsyncClient owns the logic."""

    def __init__(self, client: "AsyncClient") -> None:
        self.client = client
        self.buffer = FrameBuffer(limits.FRAME_BYTES_MAX)
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer.writable()

    def buffer_updated(self, nbytes: int) -> None:
        self.buffer.wrote(nbytes)
        try:
            while (body := self.buffer.next_frame()) is not None:
                self.client._on_frame(self, protocol.unpack_body(body))
        except ProtocolError as error:
            log.error("bad frame from the switch: %s", error)
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)
        self.client._on_lost(self)


class AsyncClient:
    def __init__(self, host: str, port: int, participant_id: int, secret: bytes | str, *,
                 ssl: ssl_module.SSLContext | None = None, batch_items_max: int = limits.BATCH_FRAME_ITEMS_MAX,
                 reconnect_attempts: int = RECONNECT_ATTEMPTS) -> None:
        self.host, self.port, self.ssl = host, port, ssl
        self.participant_id = participant_id
        self.secret = secret.encode() if isinstance(secret, str) else secret
        self.batch_items_max = batch_items_max
        self.reconnect_attempts = reconnect_attempts
        self.server_name: str | None = None
        self.role: str | None = None
        self._wire: _Wire | None = None
        self._handshake: asyncio.Future | None = None
        self._request_ids = itertools.count(1)
        # request id -> (the request as sent, its future); kept until answered, re-sent on reconnect.
        self._outstanding: dict[int, tuple[list, asyncio.Future]] = {}
        self._pay_queue: list[tuple[PayRequest, asyncio.Future]] = []
        self._pay_flush_scheduled = False
        self._out: list[bytes] = []
        self._reconnecting: asyncio.Task | None = None
        self._closed = False

    # ---- connection -------------------------------------------------------------------

    async def connect(self) -> "AsyncClient":
        loop = asyncio.get_running_loop()
        self._handshake = loop.create_future()
        _, wire = await loop.create_connection(lambda: _Wire(self), self.host, self.port, ssl=self.ssl)
        self._wire = wire
        try:
            await self._handshake
        except BaseException:
            wire.transport.close()
            raise
        for request_id, (message, _) in sorted(self._outstanding.items()):
            self._send(message)
        return self

    async def close(self) -> None:
        self._closed = True
        if self._wire is not None:
            self._wire.transport.close()
            await self._wire.lost
        for _, future in self._outstanding.values():
            if not future.done():
                future.set_exception(SwitchError(Code.CONNECTION_LOST, "client closed"))
        self._outstanding.clear()

    async def __aenter__(self) -> "AsyncClient":
        return await self.connect()

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    def _on_frame(self, wire: _Wire, message: Any) -> None:
        if self._handshake is not None and not self._handshake.done():
            self._on_handshake_frame(wire, message)
            return
        if not (isinstance(message, list) and len(message) == 3):
            log.error("unexpected frame from the switch: %r", message)
            return
        request_id, code, result = message
        if request_id == protocol.CONNECTION_REQUEST_ID:
            # About the connection itself; the server closes after fatal ones.
            log.warning("switch says %s", name_of(code))
            return
        entry = self._outstanding.pop(request_id, None)
        if entry is not None and not entry[1].done():
            entry[1].set_result((_code(code), result))

    def _on_handshake_frame(self, wire: _Wire, message: Any) -> None:
        if isinstance(message, list) and message and message[0] == "challenge":
            try:
                _, self.server_name, nonce = protocol.decode_challenge(message)
            except ProtocolError as error:
                self._handshake.set_exception(SwitchError(error.code, str(error)))
                return
            wire.transport.write(protocol.pack_frame(protocol.auth_message(self.participant_id, self.secret, nonce)))
            return
        if isinstance(message, list) and len(message) == 3 and message[1] == Code.OK:
            self.role = message[2]["role"]
            self._handshake.set_result(message[2])
        else:
            code = message[1] if isinstance(message, list) and len(message) == 3 else Code.MALFORMED_HANDSHAKE
            self._handshake.set_exception(SwitchError(code, "handshake refused"))

    def _on_lost(self, wire: _Wire) -> None:
        if wire is not self._wire:
            return
        self._wire = None
        self._out = []   # unsent frames: every unanswered request is re-sent after reconnecting
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_exception(SwitchError(Code.CONNECTION_LOST, "closed during the handshake"))
        if self._closed or not self._outstanding:
            return
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """Re-send every unanswered request on a new connection; ids make it idempotent."""
        for attempt in range(self.reconnect_attempts):
            await asyncio.sleep(RECONNECT_DELAY_SECONDS * (attempt + 1))
            if self._closed:
                return
            try:
                await self.connect()
                return
            except (OSError, SwitchError) as error:
                log.warning("reconnect attempt %d failed: %s", attempt + 1, error)
        for _, future in self._outstanding.values():
            if not future.done():
                future.set_exception(SwitchError(Code.CONNECTION_LOST, "could not reconnect"))
        self._outstanding.clear()

    # ---- requests ----------------------------------------------------------------------

    def _send(self, message: list) -> None:
        """Queue a frame; every frame queued in one loop turn leaves in one write (one syscall)."""
        if self._wire is None:
            return
        self._out.append(protocol.pack_frame(message))
        if len(self._out) == 1:
            asyncio.get_running_loop().call_soon(self._flush_out)

    def _flush_out(self) -> None:
        out, self._out = self._out, []
        if self._wire is not None and not self._wire.transport.is_closing():
            self._wire.transport.write(b"".join(out))

    def request_nowait(self, op: str, args: Any) -> asyncio.Future:
        """Send one request now; the future resolves to (code, result). Pipelining is free."""
        if self._closed:
            raise SwitchError(Code.CONNECTION_LOST, "client closed")
        request_id = next(self._request_ids)
        if request_id > protocol.REQUEST_ID_MAX:
            self._request_ids = itertools.count(1)
            request_id = next(self._request_ids)
        message = [request_id, op, args]
        future = asyncio.get_running_loop().create_future()
        self._outstanding[request_id] = (message, future)
        if self._wire is None and (self._reconnecting is None or self._reconnecting.done()):
            # The connection dropped while nothing was outstanding: reconnect now.
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())
        self._send(message)
        return future

    async def request(self, op: str, args: Any) -> Any:
        """One request; a whole-request refusal raises SwitchError, else returns its result."""
        code, result = await self.request_nowait(op, args)
        if code != Code.OK:
            raise SwitchError(code, op)
        return result

    # ---- payments ----------------------------------------------------------------------

    async def pay(self, transfer_id: int, payer_account_id: int, qr_payload: str, amount_minor: int = 0,
                  device_id: str | None = None, reference: str | None = None) -> PaymentResult:
        """One payment; calls made in the same loop turn share a pay_batch frame."""
        future = asyncio.get_running_loop().create_future()
        item = PayRequest(transfer_id, payer_account_id, qr_payload, amount_minor, device_id, reference)
        self._pay_queue.append((item, future))
        if not self._pay_flush_scheduled:
            self._pay_flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_pays)
        return await future

    async def pay_many(self, items: Iterable[PayRequest]) -> list[PaymentResult]:
        return list(await asyncio.gather(*(self.pay(*item) for item in items)))

    def _flush_pays(self) -> None:
        self._pay_flush_scheduled = False
        queue, self._pay_queue = self._pay_queue, []
        for start in range(0, len(queue), self.batch_items_max):
            chunk = queue[start:start + self.batch_items_max]
            if len(chunk) == 1:
                sent = self.request_nowait(protocol.OP_PAY, chunk[0][0].to_wire())
            else:
                sent = self.request_nowait(protocol.OP_PAY_BATCH, [item.to_wire() for item, _ in chunk])
            sent.add_done_callback(lambda done, chunk=chunk: self._distribute(done, chunk))

    @staticmethod
    def _distribute(done: asyncio.Future, chunk: list[tuple[PayRequest, asyncio.Future]]) -> None:
        if done.exception() is not None:
            for _, future in chunk:
                if not future.done():
                    future.set_exception(done.exception())
            return
        code, result = done.result()
        if len(chunk) == 1:
            answers = [(code, result)]
        elif code != Code.OK:
            answers = [(code, None)] * len(chunk)
        else:
            answers = [(_code(item[0]), item[1]) for item in result]
        for (item, future), (item_code, detail) in zip(chunk, answers):
            if not future.done():
                future.set_result(PaymentResult(item.transfer_id, item_code, *(detail or ())))

    # ---- the rest of the protocol --------------------------------------------------------

    async def create_transfers(self, transfers: list[Transfer]) -> list[Code | int]:
        wire = [_to_wire(t, _TRANSFER_INPUT_FIELDS, _TRANSFER_U128_FIELDS) for t in transfers]
        return [_code(code) for code in await self.request(protocol.OP_TRANSFERS, wire)]

    async def create_accounts(self, accounts: list[Account]) -> list[Code | int]:
        wire = [_to_wire(a, _ACCOUNT_INPUT_FIELDS, _ACCOUNT_U128_FIELDS) for a in accounts]
        return [_code(code) for code in await self.request(protocol.OP_ACCOUNTS, wire)]

    async def post_pending(self, items: list[tuple[int, int, int]]) -> list[Code | int]:
        """items: (transfer_id, pending_id, amount_minor; 0 posts the full pending amount)."""
        return await self._pending(protocol.OP_POST_PENDING, items)

    async def void_pending(self, items: list[tuple[int, int]]) -> list[Code | int]:
        return await self._pending(protocol.OP_VOID_PENDING, [(i, p, 0) for i, p in items])

    async def _pending(self, op: str, items: list[tuple[int, int, int]]) -> list[Code | int]:
        wire = [{"id": protocol.id_to_wire(i), "pending_id": protocol.id_to_wire(p), **({"amount": a} if a else {})}
                for i, p, a in items]
        return [_code(code) for code in await self.request(op, wire)]

    async def lookup_accounts(self, ids: list[int]) -> list[Account | None]:
        result = await self.request(protocol.OP_LOOKUP_ACCOUNTS, list(ids))
        return [Account(**_record_from_wire(record)) if code == Code.OK else None for code, record in result]

    async def lookup_transfers(self, ids: list[int]) -> list[Transfer | None]:
        result = await self.request(protocol.OP_LOOKUP_TRANSFERS, [protocol.id_to_wire(i) for i in ids])
        return [Transfer(**_record_from_wire(record)) if code == Code.OK else None for code, record in result]

    async def account_history(self, account_id: int, limit: int = 100) -> list[list[int]]:
        return await self.request(protocol.OP_ACCOUNT_HISTORY, [account_id, limit])

    async def ping(self) -> None:
        await self.request(protocol.OP_PING, None)

    # ---- operator operations (docs/PROTOCOL.md 4.8-4.10) ---------------------------------

    async def stats(self) -> dict:
        """The switch's statistics: counters, histograms, rule counters, build, durability."""
        return await self.request(protocol.OP_STATS, None)

    async def reload_rules(self, toml_text: str) -> dict:
        """Swap the running rule set; returns {"name", "hash"}. A refused rule set raises
        SwitchError(RULES_INVALID) with the reason, and the running set stays."""
        code, result = await self.request_nowait(protocol.OP_RELOAD_RULES, protocol.split_text(toml_text))
        if code != Code.OK:
            raise SwitchError(code, result if isinstance(result, str) else protocol.OP_RELOAD_RULES)
        return result

    async def list_pending(self, after_cursor: int = 0, limit: int = limits.LIST_PENDING_ITEMS_MAX) -> dict:
        """One page of payments held for review: {"items", "next", "total", "now_ns"}."""
        return await self.request(protocol.OP_LIST_PENDING, {"after": after_cursor, "limit": limit})

    async def all_pending(self, page_items: int = limits.LIST_PENDING_ITEMS_MAX) -> list[dict]:
        """Every held payment, page by page, oldest first."""
        items, cursor = [], 0
        while True:
            page = await self.list_pending(cursor, page_items)
            items += page["items"]
            if page["next"] is None:
                return items
            cursor = page["next"]


_TRANSFER_INPUT_FIELDS = ("id", "debit_account_id", "credit_account_id", "amount", "ledger", "code", "flags",
                          "pending_id", "timeout", "user_data_128", "user_data_64", "user_data_32")
_ACCOUNT_INPUT_FIELDS = ("id", "ledger", "code", "flags", "user_data_128", "user_data_64", "user_data_32")
# u128 fields travel as 16-byte big-endian bin; everything else as msgpack uint.
_TRANSFER_U128_FIELDS = frozenset({"id", "pending_id", "user_data_128"})
_ACCOUNT_U128_FIELDS = frozenset({"user_data_128"})


def _to_wire(record: Any, fields: tuple[str, ...], u128_fields: frozenset) -> dict:
    return {name: protocol.id_to_wire(getattr(record, name)) if name in u128_fields else getattr(record, name)
            for name in fields}


def _record_from_wire(record: dict) -> dict:
    return {name: int.from_bytes(value, "big") if isinstance(value, bytes) else value for name, value in record.items()}


class Client:
    """The synchronous face of AsyncClient, for scripts and a person at a terminal."""

    def __init__(self, *args, **kwargs) -> None:
        from switch.server import new_event_loop

        self._loop = new_event_loop()
        self._client = AsyncClient(*args, **kwargs)
        self._loop.run_until_complete(self._client.connect())

    def __getattr__(self, name: str):
        method = getattr(self._client, name)
        if not asyncio.iscoroutinefunction(method):
            return method
        return lambda *args, **kwargs: self._loop.run_until_complete(method(*args, **kwargs))

    def close(self) -> None:
        self._loop.run_until_complete(self._client.close())
        self._loop.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
