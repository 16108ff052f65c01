"""End to end over real TCP on 127.0.0.1: the real engine, the real LMDB storage in a tmp dir,
the Python client.  Every test runs on uvloop and on the stock asyncio loop."""
from __future__ import annotations

import asyncio
import contextlib

import pytest

import core_ext
from core_ext.codes import Code
from core_ext.types import Transfer, TransferFlags
from switch.client import AsyncClient, Client, SwitchError
from switch.engine import Engine
from switch.server import Server, ServerLimits
from test_server_helpers import (
    OPERATOR_ID, OPERATOR_SECRET, OTHER_ID, OTHER_SECRET, WALLET_ID, WALLET_SECRET, Raw, run_on)
import test_server_helpers as fixtures


@contextlib.asynccontextmanager
async def switch_running(config, data_dir, **limit_overrides):
    engine = Engine.open(config, str(data_dir), durability="os")
    server = Server(engine, config, ServerLimits(**limit_overrides))
    _, port = await server.start("127.0.0.1", 0)
    try:
        yield server, port
    finally:
        await server.shutdown(timeout_seconds=10)
        engine.close()


def reopen(config, data_dir) -> Engine:
    return Engine.open(config, str(data_dir), durability="os")


def wallet(port, participant_id=WALLET_ID, secret=WALLET_SECRET, **kwargs) -> AsyncClient:
    return AsyncClient("127.0.0.1", port, participant_id, secret, **kwargs)


class TestPayments:
    def test_pay_a_static_qr_moves_money_and_takes_the_fee_from_the_merchant(self, loop_kind, config, tmp_path):
        async def body():
            async with switch_running(config, tmp_path) as (_, port), wallet(port) as client:
                result = await client.pay(1, fixtures.PAYER, fixtures.static_qr(), amount_minor=10_000)
                assert result.code == Code.OK and result.ok
                assert (result.amount_minor, result.fee_minor, result.ledger) == (10_000, 50, fixtures.THB)
                assert result.merchant_name == fixtures.MERCHANT_NAME
                payer, merchant, fee = await client.lookup_accounts([fixtures.PAYER, fixtures.MERCHANT_ACCOUNT, fixtures.FEE_ACCOUNT])
                assert payer.debits_posted == 10_000
                assert (merchant, fee) == (None, None)   # not the wallet's accounts: it sees nothing
            engine = reopen(config, tmp_path)
            try:
                merchant, fee = engine.ledger.lookup_accounts([fixtures.MERCHANT_ACCOUNT, fixtures.FEE_ACCOUNT])
                assert merchant.credits_posted - merchant.debits_posted == 9_950
                assert fee.credits_posted == 50
                assert engine.ledger.check_invariants() == []
            finally:
                engine.close()
        run_on(loop_kind, body)

    def test_retry_with_the_same_transfer_id_answers_exists_and_pays_once(self, loop_kind, config, tmp_path):
        async def body():
            async with switch_running(config, tmp_path) as (_, port), wallet(port) as client:
                first = await client.pay(7, fixtures.PAYER, fixtures.static_qr(), amount_minor=500)
                again = await client.pay(7, fixtures.PAYER, fixtures.static_qr(), amount_minor=500)
                assert (first.code, again.code) == (Code.OK, Code.EXISTS) and again.ok
                payer, = await client.lookup_accounts([fixtures.PAYER])
                assert payer.debits_posted == 500
        run_on(loop_kind, body)

    def test_dynamic_qr_pays_once_and_its_replay_is_refused(self, loop_kind, config, tmp_path):
        async def body():
            async with switch_running(config, tmp_path) as (_, port), wallet(port) as client:
                payload = fixtures.dynamic_qr(amount_minor=2_500, reference="INV-1")
                first = await client.pay(10, fixtures.PAYER, payload)
                assert (first.code, first.amount_minor) == (Code.OK, 2_500)
                assert (await client.pay(10, fixtures.PAYER, payload)).code == Code.EXISTS   # retry: same id
                assert (await client.pay(11, fixtures.PAYER, payload)).code == Code.QR_REPLAYED  # replay: new id
                assert (await client.pay(12, fixtures.PAYER, fixtures.dynamic_qr(2_500, "INV-2"), 2_400)).code \
                    == Code.AMOUNT_MISMATCH
        run_on(loop_kind, body)

    def test_payment_refusals_carry_their_codes(self, loop_kind, config, tmp_path):
        async def body():
            async with switch_running(config, tmp_path) as (_, port), wallet(port) as client:
                results = await client.pay_many([
                    (20, fixtures.PAYER, fixtures.static_qr(), 0),                    # static QR, no amount
                    (21, fixtures.PAYER, fixtures.static_qr()[:-1] + "0", 100),       # broken CRC
                    (22, fixtures.PAYER, fixtures.unregistered_qr(), 100),            # unknown merchant
                    (23, fixtures.PAYER, fixtures.static_qr(), 10**9),                # insufficient funds
                    (24, fixtures.OTHER_PAYER, fixtures.static_qr(), 100),            # not this wallet's account
                    (25, fixtures.PAYER, fixtures.static_qr(), 100),                  # fine
                ])
                codes = [result.code for result in results]
                assert codes[0] == Code.PAYMENT_AMOUNT_INVALID
                assert 300 <= codes[1] < 400
                assert codes[2] == Code.MERCHANT_NOT_REGISTERED
                assert codes[3] == Code.EXCEEDS_CREDITS
                assert codes[4] == Code.ACCOUNT_NOT_OWNED
                assert codes[5] == Code.OK
        run_on(loop_kind, body)

    def test_concurrent_pays_travel_in_batch_frames(self, loop_kind, config, tmp_path):
        async def body():
            async with switch_running(config, tmp_path) as (server, port), wallet(port) as client:
                results = await asyncio.gather(*(client.pay(100 + i, fixtures.PAYER, fixtures.static_qr(), 10)
                                                 for i in range(300)))
                assert all(result.code == Code.OK for result in results)
                assert server.batches_committed < 10
                payer, = await client.lookup_accounts([fixtures.PAYER])
                assert payer.debits_posted == 3_000
        run_on(loop_kind, body)


class TestAuthorization:
    def test_a_wallet_cannot_spend_or_see_another_wallets_money(self, loop_kind, config, tmp_path):
        async def body():
            async with switch_running(config, tmp_path) as (_, port), wallet(port) as client:
                stolen = Transfer(id=900, debit_account_id=fixtures.OTHER_PAYER, credit_account_id=fixtures.PAYER,
                                  amount=1, ledger=fixtures.THB, code=1)
                assert await client.create_transfers([stolen]) == [Code.ACCOUNT_NOT_OWNED]
                assert await client.lookup_accounts([fixtures.OTHER_PAYER]) == [None]
                with pytest.raises(SwitchError) as error:
                    await client.account_history(fixtures.OTHER_PAYER, 10)
                assert error.value.code == Code.ACCOUNT_NOT_FOUND
                async with wallet(port, OTHER_ID, OTHER_SECRET) as other:
                    other_account, = await other.lookup_accounts([fixtures.OTHER_PAYER])
                    assert other_account.debits_posted == 0
        run_on(loop_kind, body)

    def test_only_the_operator_creates_accounts(self, loop_kind, config, tmp_path):
        from core_ext.types import Account

        async def body():
            async with switch_running(config, tmp_path) as (_, port):
                new = Account(id=1777, ledger=fixtures.THB, code=1, user_data_64=WALLET_ID)
                async with wallet(port) as client:
                    assert await client.create_accounts([new]) == [Code.OPERATOR_ROLE_REQUIRED]
                async with wallet(port, OPERATOR_ID, OPERATOR_SECRET) as operator:
                    assert await operator.create_accounts([new]) == [Code.OK]
        run_on(loop_kind, body)

    def test_held_payment_is_posted_by_the_operator(self, loop_kind, config, tmp_path):
        async def body():
            async with switch_running(config, tmp_path) as (_, port), wallet(port) as client:
                pending = Transfer(id=950, debit_account_id=fixtures.PAYER, credit_account_id=fixtures.OTHER_PAYER,
                                   amount=300, ledger=fixtures.THB, code=1, flags=TransferFlags.PENDING)
                assert await client.create_transfers([pending]) == [Code.OK]
                async with wallet(port, OTHER_ID, OTHER_SECRET) as other:
                    assert await other.post_pending([(951, 950, 0)]) == [Code.PENDING_TRANSFER_NOT_FOUND]
                async with wallet(port, OPERATOR_ID, OPERATOR_SECRET) as operator:
                    assert await operator.post_pending([(951, 950, 0)]) == [Code.OK]
                payer, = await client.lookup_accounts([fixtures.PAYER])
                assert (payer.debits_pending, payer.debits_posted) == (0, 300)
        run_on(loop_kind, body)


class TestResilience:
    def test_client_reconnects_and_retries_with_the_same_ids(self, loop_kind, config, tmp_path):
        async def body():
            async with switch_running(config, tmp_path) as (server, port), wallet(port) as client:
                first = asyncio.gather(*(client.pay(300 + i, fixtures.PAYER, fixtures.static_qr(), 10)
                                         for i in range(50)))
                await asyncio.sleep(0)   # the frame is written; now drop every connection
                for connection in list(server.connections):
                    connection.transport.abort()
                results = await first
                assert all(result.ok for result in results)
                payer, = await client.lookup_accounts([fixtures.PAYER])
                assert payer.debits_posted == 500   # each paid exactly once
        run_on(loop_kind, body)

    def test_shutdown_answers_what_it_received_and_every_answer_is_durable(self, loop_kind, config, tmp_path):
        async def body():
            engine = Engine.open(config, str(tmp_path), durability="fsync")
            server = Server(engine, config)
            _, port = await server.start("127.0.0.1", 0)
            clients = [await wallet(port, reconnect_attempts=0).connect() for _ in range(4)]
            acknowledged: list[int] = []

            async def keep_paying(client, base):
                for index in range(10_000):
                    try:
                        result = await client.pay(base + index, fixtures.PAYER, fixtures.static_qr(), 1)
                    except SwitchError:
                        return
                    if result.ok:
                        acknowledged.append(base + index)

            # Eight payments in flight per connection when the signal comes.
            tasks = [asyncio.create_task(keep_paying(client, 10**6 * (8 * n + lane)))
                     for n, client in enumerate(clients) for lane in range(8)]
            await asyncio.sleep(0.3)
            await server.shutdown(timeout_seconds=10)
            await asyncio.gather(*tasks)
            engine.close()
            assert acknowledged
            reopened = reopen(config, tmp_path)
            try:
                stored = reopened.ledger.lookup_transfers(acknowledged)
                assert all(transfer is not None for transfer in stored)
                payer, = reopened.ledger.lookup_accounts([fixtures.PAYER])
                # Each payment moves one minor unit and (the fee rounding to 0) posts one transfer:
                # the debits equal the payments in the ledger, so none was applied twice, and
                # every acknowledged one is among them.
                payments_stored = reopened.ledger.transfer_count - fixtures.BOOTSTRAP_TRANSFERS
                assert payer.debits_posted == payments_stored >= len(acknowledged)
                assert reopened.ledger.check_invariants() == []
            finally:
                reopened.close()
            for client in clients:
                await client.close()
        run_on(loop_kind, body)

    def test_sync_client_pays_from_a_script(self, loop_kind, config, tmp_path):
        import threading

        from switch.server import new_event_loop

        started, holder = threading.Event(), {}

        def serve():
            loop = new_event_loop(use_uvloop=loop_kind == "uvloop")
            holder["loop"] = loop

            async def body():
                holder["stop"] = asyncio.Event()
                async with switch_running(config, tmp_path) as (_, port):
                    holder["port"] = port
                    started.set()
                    await holder["stop"].wait()
            loop.run_until_complete(body())
            loop.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        assert started.wait(20)
        try:
            with Client("127.0.0.1", holder["port"], WALLET_ID, WALLET_SECRET) as client:
                assert client.pay(555, fixtures.PAYER, fixtures.static_qr(), 42).code == Code.OK
                assert client.lookup_accounts([fixtures.PAYER])[0].debits_posted == 42
        finally:
            holder["loop"].call_soon_threadsafe(holder["stop"].set)
            thread.join(20)
