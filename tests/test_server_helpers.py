"""Shared helpers for the TCP tests: a raw wire client, loops, a test config."""
from __future__ import annotations

import asyncio
import contextlib

import msgpack

from switch import config as config_module, protocol
from switch.server import Server, ServerLimits, new_event_loop

LOOP_KINDS = ("asyncio", "uvloop")
WALLET_SECRET = "wallet-one-secret-0123456789"
OTHER_SECRET = "wallet-two-secret-0123456789"
OPERATOR_SECRET = "operator-secret-0123456789ab"
WALLET_ID, OTHER_ID, OPERATOR_ID = 1, 2, 9


def base_document() -> dict:
    return {
        "switch": {"name": "test-switch", "accounts_max": 10_000},
        "participants": [
            {"id": WALLET_ID, "name": "wallet-one", "role": "wallet", "secret": WALLET_SECRET, "accounts": [[1000, 1999]]},
            {"id": OTHER_ID, "name": "wallet-two", "role": "wallet", "secret": OTHER_SECRET, "accounts": [[2000, 2999]]},
            {"id": OPERATOR_ID, "name": "ops", "role": "operator", "secret": OPERATOR_SECRET, "accounts": []},
        ],
    }


def run_on(loop_kind: str, coroutine_function, *args, timeout_seconds: float = 30.0):
    loop = new_event_loop(use_uvloop=loop_kind == "uvloop")
    try:
        return loop.run_until_complete(asyncio.wait_for(coroutine_function(*args), timeout_seconds))
    finally:
        loop.close()


@contextlib.asynccontextmanager
async def running(engine, config, **limit_overrides):
    server = Server(engine, config, ServerLimits(**limit_overrides))
    host, port = await server.start("127.0.0.1", 0)
    try:
        yield server, port
    finally:
        await server.shutdown(timeout_seconds=5)


class Raw:
    """A wire-level client that can send anything, including garbage."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.challenge = None

    @classmethod
    async def open(cls, port: int, read_challenge: bool = True) -> "Raw":
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
        raw = cls(reader, writer)
        if read_challenge:
            raw.challenge = await raw.frame()
        return raw

    @classmethod
    async def authenticated(cls, port: int, participant_id: int = WALLET_ID, secret: str = WALLET_SECRET) -> "Raw":
        raw = await cls.open(port)
        raw.send(protocol.auth_message(participant_id, secret.encode(), raw.challenge[3]))
        welcome = await raw.frame()
        assert welcome[:2] == [0, 0], welcome
        return raw

    def send(self, obj) -> None:
        self.writer.write(protocol.pack_frame(obj))

    def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)

    async def frame(self):
        header = await self.reader.readexactly(4)
        body = await self.reader.readexactly(int.from_bytes(header, "big"))
        return msgpack.unpackb(body, raw=False)

    async def is_closed_by_server(self) -> bool:
        """True when the server closed the connection (EOF or reset) with nothing more to read."""
        try:
            return await asyncio.wait_for(self.reader.read(1), 5) == b""
        except ConnectionResetError:
            return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


# ---- a small real switch for the end-to-end tests -------------------------------------------

THB = 764
PAYER, OTHER_PAYER = 1001, 2001
MERCHANT_ACCOUNT, FEE_ACCOUNT, SETTLEMENT_ACCOUNT = 5001, 9764, 8764
MERCHANT_NAME = "Somsak Tuk-Tuk"
MERCHANT_PROMPTPAY_ID = "0066812345678"
PAYER_OPENING_MINOR = 1_000_000
# The opening-balance transfers bootstrap posts (one per funded account).
BOOTSTRAP_TRANSFERS = 2


def document() -> dict:
    doc = base_document()
    doc["ledgers"] = [{"ledger": THB, "fee_account_id": FEE_ACCOUNT, "settlement_account_id": SETTLEMENT_ACCOUNT,
                       "fee_bps": 50}]
    wallet_flags = ["debits_must_not_exceed_credits", "history"]
    doc["accounts"] = [
        {"id": SETTLEMENT_ACCOUNT, "ledger": THB, "code": 4},
        {"id": FEE_ACCOUNT, "ledger": THB, "code": 3},
        {"id": MERCHANT_ACCOUNT, "ledger": THB, "code": 2, "flags": ["debits_must_not_exceed_credits"]},
        {"id": PAYER, "ledger": THB, "code": 1, "owner": WALLET_ID, "flags": wallet_flags,
         "opening_balance_minor": PAYER_OPENING_MINOR},
        {"id": OTHER_PAYER, "ledger": THB, "code": 1, "owner": OTHER_ID, "flags": wallet_flags,
         "opening_balance_minor": PAYER_OPENING_MINOR},
    ]
    doc["merchants"] = [{"scheme": "promptpay", "merchant_id": MERCHANT_PROMPTPAY_ID, "account_id": MERCHANT_ACCOUNT,
                         "name": MERCHANT_NAME, "mcc": "4121", "country": "TH", "currency": THB}]
    return doc


def _spec(**overrides):
    from switch import qrmake

    fields = dict(profile="promptpay", merchant_id=MERCHANT_PROMPTPAY_ID, name=MERCHANT_NAME, city="Bangkok",
                  mcc="4121", currency=THB, country="TH")
    fields.update(overrides)
    return qrmake.QrSpec(**fields)


def static_qr() -> str:
    from switch import qrmake
    return qrmake.make_payload(_spec())


def dynamic_qr(amount_minor: int, reference: str) -> str:
    from switch import qrmake
    return qrmake.make_payload(_spec(amount_minor=amount_minor, dynamic=True, reference=reference))


def unregistered_qr() -> str:
    from switch import qrmake
    return qrmake.make_payload(_spec(merchant_id="0066899999999", name="Nobody"))
