"""The review workflow: payments the rules hold, listed by an operator, approved or rejected;
the journaled review queue; `switch review` against a running switch."""
from __future__ import annotations

import asyncio
import contextlib
import threading

import msgpack
import pytest
from click.testing import CliRunner

import core_ext
from core_ext import limits
from core_ext.codes import Code
from core_ext.pipeline_types import AuditLog
from core_ext.rules_types import load_ruleset
from core_ext.types import Transfer, TransferFlags
from switch import config as config_module, review_queue
from switch.cli import main as cli_main
from switch.client import AsyncClient, SwitchError
from switch.commands.review import resolution_id
from switch.engine import OP_RAW_PAY, Engine, fee_id_for
from switch.merchants import MerchantDirectory
from switch.operations import open_engine
from switch.protocol import OP_VOID_PENDING, PayItem, PendingItem, Request, id_to_wire
from switch.server import Server, new_event_loop
from test_ops import RULES_TEXT
from test_pipeline_rules import MemoryStorage, audit_records
from test_server_helpers import OPERATOR_ID, OPERATOR_SECRET, run_on
import test_server_helpers as fixtures

HELD_MINOR = 60_000        # above the review cap of RULES_TEXT (50,000)
NS = 1_000_000_000


class TestReviewQueue:
    def test_pages_follow_cursors_oldest_first_and_survive_resolutions_while_paging(self):
        queue = review_queue.ReviewQueue()
        for transfer_id in range(1, 8):
            queue.hold(transfer_id, held_ns=transfer_id * NS, participant_id=1, rule_ids=("cap",))
        first, cursor = queue.page(0, 3)
        assert [entry.transfer_id for entry in first] == [1, 2, 3] and cursor == 3
        queue.resolve(4)
        queue.resolve(2)
        second, cursor = queue.page(cursor, 3)
        assert [entry.transfer_id for entry in second] == [5, 6, 7] and cursor is None
        assert len(queue) == 5 and queue.get(2) is None and queue.get(5).rule_ids == ("cap",)

    def test_a_page_ending_exactly_at_the_last_held_payment_has_no_next(self):
        queue = review_queue.ReviewQueue()
        queue.hold(9, 1, 1)
        queue.hold(10, 2, 1)
        assert queue.page(0, 2)[1] is None
        assert queue.page(0, 1)[1] == 1
        assert queue.page(0, 1)[0][0].transfer_id == 9

    def test_holding_twice_and_resolving_the_unknown_change_nothing(self):
        queue = review_queue.ReviewQueue()
        queue.hold(5, 1, 1)
        queue.take_journal()
        queue.hold(5, 2, 1)
        queue.resolve(6)
        assert queue.take_journal() is None and len(queue) == 1

    def test_the_journal_replays_to_the_same_state(self):
        queue = review_queue.ReviewQueue()
        blobs = []
        for transfer_id in (2**127 + 5, 3, 4):
            queue.hold(transfer_id, 10, 7, ("a", "b"))
        blobs.append(queue.take_journal())
        queue.resolve(3)
        blobs.append(queue.take_journal())
        replayed = review_queue.ReviewQueue()
        for blob in blobs:
            replayed.apply_journal(blob)
        assert replayed.state_hash() == queue.state_hash()
        assert [entry.transfer_id for entry in replayed.page(0, 10)[0]] == [2**127 + 5, 4]
        replayed.hold(99, 1, 1)
        assert replayed.page(0, 10)[0][-1].cursor == 4      # cursors keep increasing after a replay

    @pytest.mark.parametrize("blob", [b"", b"\x02\x90", b"\x01\xc1", b"\x01\x91\x92\x01\xc4\x01x",
                                      b"\x01\x91\x92\x03" + b"\xc4\x10" + bytes(16),
                                      b"\x01\x91\x92\x02" + b"\xc4\x10" + bytes(16),
                                      # a hold whose cursor is a str, and one whose rules are not strs
                                      b"\x01\x91\x96\x01\xc4\x10" + bytes(15) + b"\x01\xa1x\x01\x01\x90",
                                      b"\x01\x91\x96\x01\xc4\x10" + bytes(15) + b"\x01\x01\x01\x01\x91\x07"])
    def test_a_malformed_journal_is_refused_with_value_error(self, blob):
        with pytest.raises(ValueError):
            review_queue.ReviewQueue().apply_journal(blob)

    def test_many_resolutions_compact_the_cursor_list(self):
        queue = review_queue.ReviewQueue()
        for transfer_id in range(1, 3001):
            queue.hold(transfer_id, 1, 1)
        for transfer_id in range(1, 3000):
            queue.resolve(transfer_id)
        assert len(queue._cursors) < 2000
        assert [entry.transfer_id for entry in queue.page(0, 10)[0]] == [3000]


@contextlib.asynccontextmanager
async def switch_with_rules(config, data_dir):
    engine = open_engine(config, str(data_dir), durability="os",
                         rules=core_ext.core.RuleEngine(load_ruleset(RULES_TEXT)))
    try:
        async with fixtures.running(engine, config) as (server, port):
            yield engine, port
    finally:
        engine.close()


def clients(port):
    return (AsyncClient("127.0.0.1", port, fixtures.WALLET_ID, fixtures.WALLET_SECRET),
            AsyncClient("127.0.0.1", port, OPERATOR_ID, OPERATOR_SECRET))


class TestReviewFlow:
    def test_a_held_payment_is_listed_with_its_rules_then_approved_with_its_fee(self, loop_kind, config, tmp_path):
        async def body():
            async with switch_with_rules(config, tmp_path) as (_, port):
                wallet_client, operator = clients(port)
                async with wallet_client as wallet, operator as ops:
                    held = await wallet.pay(11, fixtures.PAYER, fixtures.static_qr(), amount_minor=HELD_MINOR)
                    assert held.code == Code.RISK_REVIEW and held.fee_minor == 300
                    page = await ops.list_pending()
                    assert page["total"] == 1 and page["next"] is None
                    item, = page["items"]
                    assert int.from_bytes(item["transfer_id"], "big") == 11
                    assert (item["payer_account_id"], item["merchant_account_id"], item["amount_minor"],
                            item["ledger"], item["participant_id"]) == (
                        fixtures.PAYER, fixtures.MERCHANT_ACCOUNT, HELD_MINOR, fixtures.THB, fixtures.WALLET_ID)
                    assert item["rules"] == ["hold-large", "watch-medium"]
                    assert item["timeout_seconds"] == config.review_timeout_seconds
                    assert item["expires_ns"] == item["held_ns"] + item["timeout_seconds"] * NS
                    assert 0 <= item["age_ns"] < 60 * NS
                    approve_id = resolution_id(11, b"approve")
                    assert await ops.post_pending([(approve_id, 11, 0)]) == [Code.OK]
                    assert await ops.post_pending([(approve_id, 11, 0)]) == [Code.EXISTS]
                    assert (await ops.list_pending())["total"] == 0
                    payer, = await wallet.lookup_accounts([fixtures.PAYER])
                    assert (payer.debits_pending, payer.debits_posted) == (0, HELD_MINOR)
                    fee, = await ops.lookup_transfers([fee_id_for(11)])
                    assert fee is not None and fee.amount == 300
                    assert (await ops.stats())["reviews_pending"] == 0
        run_on(loop_kind, body)

    def test_a_rejected_payment_returns_the_funds_and_leaves_the_list(self, loop_kind, config, tmp_path):
        async def body():
            async with switch_with_rules(config, tmp_path) as (_, port):
                wallet_client, operator = clients(port)
                async with wallet_client as wallet, operator as ops:
                    assert (await wallet.pay(12, fixtures.PAYER, fixtures.static_qr(), HELD_MINOR)).code \
                        == Code.RISK_REVIEW
                    assert (await wallet.pay(13, fixtures.PAYER, fixtures.static_qr(), 5_000)).code == Code.OK
                    assert await ops.void_pending([(resolution_id(12, b"reject"), 12)]) == [Code.OK]
                    assert (await ops.list_pending())["items"] == []
                    payer, = await wallet.lookup_accounts([fixtures.PAYER])
                    assert (payer.debits_pending, payer.debits_posted) == (0, 5_000)
        run_on(loop_kind, body)

    def test_held_payments_page_by_cursor_and_survive_a_restart(self, loop_kind, config, tmp_path):
        async def hold_five():
            async with switch_with_rules(config, tmp_path) as (_, port):
                wallet_client, operator = clients(port)
                async with wallet_client as wallet:
                    results = await wallet.pay_many([(100 + n, fixtures.PAYER, fixtures.static_qr(), HELD_MINOR)
                                                     for n in range(5)])
                    assert {result.code for result in results} == {Code.RISK_REVIEW}

        async def page_through():
            async with switch_with_rules(config, tmp_path) as (_, port):
                _, operator = clients(port)
                async with operator as ops:
                    first = await ops.list_pending(0, 2)
                    assert first["total"] == 5 and first["next"] is not None
                    assert await ops.void_pending([(resolution_id(102, b"reject"), 102)]) == [Code.OK]
                    second = await ops.list_pending(first["next"], 2)
                    pages = [first["items"], second["items"]]
                    assert [[int.from_bytes(item["transfer_id"], "big") for item in page] for page in pages] \
                        == [[100, 101], [103, 104]]
                    assert first["next"] == first["items"][-1]["cursor"] and second["next"] is None
                    everything = await ops.all_pending(page_items=3)
                    assert [int.from_bytes(item["transfer_id"], "big") for item in everything] == [100, 101, 103, 104]
        run_on(loop_kind, hold_five)
        run_on(loop_kind, page_through)

    def test_the_review_timeout_voids_a_held_payment_and_it_leaves_the_list(self, loop_kind, tmp_path):
        document = fixtures.document()
        document["switch"]["review_timeout_seconds"] = 1
        config = config_module.parse(document)

        async def body():
            async with switch_with_rules(config, tmp_path) as (_, port):
                wallet_client, operator = clients(port)
                async with wallet_client as wallet, operator as ops:
                    assert (await wallet.pay(21, fixtures.PAYER, fixtures.static_qr(), HELD_MINOR)).code \
                        == Code.RISK_REVIEW
                    assert (await ops.list_pending())["total"] == 1
                    await asyncio.sleep(1.2)
                    assert (await ops.list_pending())["total"] == 0
                    assert await ops.post_pending([(resolution_id(21, b"approve"), 21, 0)]) \
                        == [Code.PENDING_TRANSFER_EXPIRED]
        run_on(loop_kind, body)

    def test_a_wallet_cannot_list_pending_payments(self, loop_kind, config, tmp_path):
        async def body():
            async with switch_with_rules(config, tmp_path) as (_, port):
                wallet_client, _ = clients(port)
                async with wallet_client as wallet:
                    with pytest.raises(SwitchError) as refused:
                        await wallet.list_pending()
                    assert refused.value.code == Code.OPERATOR_ROLE_REQUIRED
        run_on(loop_kind, body)

    def test_a_raw_transfers_post_of_a_held_payment_also_takes_it_off_the_list(self, loop_kind, config, tmp_path):
        async def body():
            async with switch_with_rules(config, tmp_path) as (_, port):
                wallet_client, operator = clients(port)
                async with wallet_client as wallet, operator as ops:
                    assert (await wallet.pay(31, fixtures.PAYER, fixtures.static_qr(), HELD_MINOR)).code \
                        == Code.RISK_REVIEW
                    post = Transfer(id=777, debit_account_id=fixtures.PAYER, credit_account_id=fixtures.MERCHANT_ACCOUNT,
                                    amount=HELD_MINOR, ledger=fixtures.THB, code=1, pending_id=31,
                                    flags=int(TransferFlags.POST_PENDING_TRANSFER))
                    assert await ops.create_transfers([post]) == [Code.OK]
                    assert (await ops.list_pending())["total"] == 0
        run_on(loop_kind, body)


# ---- the CLI against a switch served from a background thread ------------------------------

@contextlib.contextmanager
def switch_in_thread(config, data_dir):
    """A real switch on its own loop in a thread, so the (synchronous) CLI can talk to it."""
    engine = open_engine(config, str(data_dir), durability="os",
                         rules=core_ext.core.RuleEngine(load_ruleset(RULES_TEXT)))
    loop = new_event_loop()
    server = Server(engine, config)
    ready = threading.Event()
    address = {}

    def serve():
        asyncio.set_event_loop(loop)
        address["port"] = loop.run_until_complete(server.start("127.0.0.1", 0))[1]
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield address["port"]
    finally:
        asyncio.run_coroutine_threadsafe(server.shutdown(timeout_seconds=5), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        engine.close()


def test_switch_review_list_approve_reject_and_rules_stats_from_the_command_line(config, tmp_path):
    runner = CliRunner()
    with switch_in_thread(config, tmp_path) as port:
        from switch.client import Client
        with Client("127.0.0.1", port, fixtures.WALLET_ID, fixtures.WALLET_SECRET) as wallet:
            for transfer_id in (41, 42):
                assert wallet.pay(transfer_id, fixtures.PAYER, fixtures.static_qr(), HELD_MINOR).code == Code.RISK_REVIEW
        operator = ["--port", str(port), "--participant", str(OPERATOR_ID), "--secret", OPERATOR_SECRET]
        listed = runner.invoke(cli_main, ["review", "list", *operator])
        assert listed.exit_code == 0, listed.output
        assert "2 held for review" in listed.output and f"{41:032x}" in listed.output
        assert "hold-large,watch-medium" in listed.output and "60,000" in listed.output
        assert " 24h " in listed.output      # the test config's review timeout, 86,400 s
        approved = runner.invoke(cli_main, ["review", "approve", *operator, f"{41:032x}"])
        assert approved.exit_code == 0 and "OK" in approved.output
        again = runner.invoke(cli_main, ["review", "approve", *operator, f"{41:032x}"])
        assert again.exit_code == 0 and "EXISTS" in again.output
        rejected = runner.invoke(cli_main, ["review", "reject", *operator, f"{42:032x}", f"{43:032x}"])
        assert rejected.exit_code == 1 and "PENDING_TRANSFER_NOT_FOUND" in rejected.output
        assert "0 held for review" in runner.invoke(cli_main, ["review", "list", *operator]).output
        bad = runner.invoke(cli_main, ["review", "approve", *operator, "not-hex"])
        assert bad.exit_code == 2
        stats = runner.invoke(cli_main, ["stats", *operator])
        assert stats.exit_code == 0 and "RISK_REVIEW" in stats.output and "hold-large" in stats.output
        assert "time in the switch, per batch" in stats.output and "commit time" in stats.output
        live = runner.invoke(cli_main, ["rules", "stats", *operator])
        assert live.exit_code == 0 and "ops-test" in live.output
        assert runner.invoke(cli_main, ["rules", "stats"]).exit_code == 2              # neither --rules nor --port
        assert runner.invoke(cli_main, ["rules", "stats", "--port", str(port)], env={}).exit_code == 2
        assert "hold-large" in live.output
        wallet_try = runner.invoke(cli_main, ["review", "list", "--port", str(port), "--participant",
                                              str(fixtures.WALLET_ID), "--secret", fixtures.WALLET_SECRET])
        assert wallet_try.exit_code == 1 and "OPERATOR_ROLE_REQUIRED" in wallet_try.output
        assert runner.invoke(cli_main, ["review", "list", *operator, "--limit",
                                        str(limits.LIST_PENDING_ITEMS_MAX + 1)]).exit_code == 2


# ---- the review queue's limit, on both cores ------------------------------------------------

def engine_with_review_queue(impl, items_max: int, clock: list[int], review_timeout_seconds: int = 86_400):
    """An engine of `impl` (no server, storage kept in memory) whose review queue takes at most
    `items_max` held payments; `clock[0]` is the batch clock in ns."""
    document = fixtures.document()
    document["switch"].update(review_queue_items_max=items_max, review_timeout_seconds=review_timeout_seconds)
    config = config_module.parse(document)
    ledger, merchants, audit = impl.Ledger(config.accounts_max), MerchantDirectory(), AuditLog()
    rules, reviews = impl.RuleEngine(load_ruleset(RULES_TEXT)), review_queue.ReviewQueue()
    storage = MemoryStorage([ledger, merchants, rules, audit, reviews])
    engine = Engine(config, impl, ledger, merchants, storage, rules=rules, clock_ns=lambda: clock[0], audit=audit)
    engine.attach_operations(reviews=reviews)
    engine.bootstrap()
    return engine


def pay_codes(engine, *payments) -> list[int]:
    """(transfer_id, amount_minor[, qr_payload]) each, in one pay_batch; the answer codes."""
    items = [PayItem(entry[0], fixtures.PAYER, entry[2] if len(entry) > 2 else fixtures.static_qr(), entry[1],
                     None, None) for entry in payments]
    participant = engine.config.participants[fixtures.WALLET_ID]
    outcome, = engine.process_batch([(participant, Request(1, "pay_batch", items, None, 2 * len(items)))])
    return [entry[0] for entry in outcome.result]


def raw_pay_code(engine, transfer_id: int, amount_minor: int) -> int:
    """One payment through the server's fast path (the pipeline decodes the raw frame body)."""
    raw = msgpack.packb([5, "pay", [id_to_wire(transfer_id), fixtures.PAYER, fixtures.static_qr(), amount_minor,
                                    None, None]], use_bin_type=True)
    participant = engine.config.participants[fixtures.WALLET_ID]
    outcome, = engine.process_batch([(participant, Request(0, OP_RAW_PAY, raw, None, 2))])
    return msgpack.unpackb(outcome.frame[4:])[1]


def reject(engine, transfer_id: int) -> int:
    """An operator's `void_pending` of a held payment; its answer code."""
    item = PendingItem(resolution_id(transfer_id, b"reject"), transfer_id, 0)
    outcome, = engine.process_batch([(engine.config.participants[OPERATOR_ID], Request(2, OP_VOID_PENDING, [item]))])
    return outcome.result[0]


def pending_minor(engine) -> int:
    return engine.ledger.lookup_accounts([fixtures.PAYER])[0].debits_pending


class TestReviewQueueLimit:
    def test_the_queue_takes_items_max_holds_and_declines_one_more_without_reserving(self, impl):
        engine = engine_with_review_queue(impl, 3, [1_800_000_000 * NS])
        codes = pay_codes(engine, *[(500 + n, HELD_MINOR) for n in range(4)])
        assert codes == [Code.RISK_REVIEW] * 3 + [Code.REVIEW_QUEUE_FULL]
        assert len(engine.reviews) == 3 and pending_minor(engine) == 3 * HELD_MINOR
        assert engine.ledger.lookup_transfers([503]) == [None]
        # Payments the rules approve still flow while the queue is full.
        assert pay_codes(engine, (510, 5_000)) == [Code.OK]

    def test_the_fast_path_declines_a_hold_past_the_limit_too(self, impl):
        engine = engine_with_review_queue(impl, 1, [1_800_000_000 * NS])
        assert raw_pay_code(engine, 520, HELD_MINOR) == Code.RISK_REVIEW
        assert raw_pay_code(engine, 521, HELD_MINOR) == Code.REVIEW_QUEUE_FULL
        assert pending_minor(engine) == HELD_MINOR and len(engine.reviews) == 1

    def test_a_decided_payment_frees_its_slot_and_a_retry_of_the_declined_one_is_held(self, impl):
        engine = engine_with_review_queue(impl, 2, [1_800_000_000 * NS])
        assert pay_codes(engine, (530, HELD_MINOR), (531, HELD_MINOR), (532, HELD_MINOR)) \
            == [Code.RISK_REVIEW, Code.RISK_REVIEW, Code.REVIEW_QUEUE_FULL]
        assert reject(engine, 530) == Code.OK and len(engine.reviews) == 1
        assert pay_codes(engine, (532, HELD_MINOR)) == [Code.RISK_REVIEW]
        assert pending_minor(engine) == 2 * HELD_MINOR

    def test_held_payments_the_ledger_expired_give_their_slots_back(self, impl):
        clock = [1_800_000_000 * NS]
        engine = engine_with_review_queue(impl, 2, clock, review_timeout_seconds=60)
        assert pay_codes(engine, (540, HELD_MINOR), (541, HELD_MINOR), (542, HELD_MINOR)) \
            == [Code.RISK_REVIEW, Code.RISK_REVIEW, Code.REVIEW_QUEUE_FULL]
        clock[0] += 61 * NS
        assert pay_codes(engine, (542, HELD_MINOR)) == [Code.RISK_REVIEW]
        assert [held.transfer_id for held in engine.reviews.oldest(10)] == [542]
        assert pending_minor(engine) == HELD_MINOR

    def test_a_dynamic_qr_declined_for_a_full_queue_stays_unused(self, impl):
        engine = engine_with_review_queue(impl, 1, [1_800_000_000 * NS])
        qr = fixtures.dynamic_qr(HELD_MINOR, "INV-77")
        assert pay_codes(engine, (550, HELD_MINOR), (551, 0, qr)) == [Code.RISK_REVIEW, Code.REVIEW_QUEUE_FULL]
        assert reject(engine, 550) == Code.OK
        assert pay_codes(engine, (552, 0, qr)) == [Code.RISK_REVIEW]

    def test_the_audit_log_records_the_hold_the_full_queue_refused(self, impl):
        engine = engine_with_review_queue(impl, 1, [1_800_000_000 * NS])
        pay_codes(engine, (560, HELD_MINOR), (561, HELD_MINOR))
        refused, = [record for record in audit_records(engine) if record.payment_id == 561]
        assert (refused.action, refused.code) == (1, Code.REVIEW_QUEUE_FULL)


@pytest.mark.parametrize("items_max, accepted", [(1, True), (limits.REVIEW_QUEUE_ITEMS_MAX, True),
                                                 (0, False), (limits.REVIEW_QUEUE_ITEMS_MAX + 1, False)])
def test_the_config_takes_a_review_queue_limit_within_1_to_the_limit(items_max, accepted):
    document = fixtures.document()
    document["switch"]["review_queue_items_max"] = items_max
    if accepted:
        assert config_module.parse(document).review_queue_items_max == items_max
    else:
        with pytest.raises(config_module.ConfigError, match="review_queue_items_max"):
            config_module.parse(document)


def test_the_default_limit_holds_review_queue_items_max_payments_and_declines_one_more(impl):
    """At the real limit: the engine's free slots come from the queue's length."""
    engine = engine_with_review_queue(impl, limits.REVIEW_QUEUE_ITEMS_MAX, [1_800_000_000 * NS])
    assert engine.config.review_queue_items_max == limits.REVIEW_QUEUE_ITEMS_MAX
    queue = engine.reviews
    for transfer_id in range(1, limits.REVIEW_QUEUE_ITEMS_MAX):
        queue.hold(10**6 + transfer_id, 0, fixtures.WALLET_ID)
    assert engine.review_slots_free(1_800_000_000 * NS) == 1
    assert pay_codes(engine, (570, HELD_MINOR), (571, HELD_MINOR)) == [Code.RISK_REVIEW, Code.REVIEW_QUEUE_FULL]
    assert len(queue) == limits.REVIEW_QUEUE_ITEMS_MAX
