"""The operator operations over real TCP: stats, reload_rules (and SIGHUP's file reload),
list_pending's arguments.  Every test runs on uvloop and on the stock asyncio loop."""
from __future__ import annotations

import asyncio
import contextlib

import pytest

import core_ext
from core_ext import limits
from core_ext.codes import Code
from core_ext.rules_types import load_ruleset
from switch import config as config_module, protocol
from switch.client import AsyncClient, SwitchError
from switch.operations import open_engine
from test_server_helpers import OPERATOR_ID, OPERATOR_SECRET, Raw, run_on
import test_server_helpers as fixtures

# A payment above THB 500.00 is held for review; one above THB 10.00 is counted by a shadow rule.
RULES_TEXT = """
[ruleset]
name = "ops-test"

[[rules]]
id = "hold-large"
kind = "payment_cap_tier"
version = 1
mode = "enforce"
action = "review"
reason = "LIM_REVIEW"
limit_minor = 50000

[[rules]]
id = "watch-medium"
kind = "payment_cap_tier"
version = 1
mode = "shadow"
action = "decline"
reason = "LIM_WATCH"
limit_minor = 1000
"""
OTHER_RULES_TEXT = RULES_TEXT.replace('name = "ops-test"', 'name = "ops-test-2"')


@contextlib.asynccontextmanager
async def switch_running(config, data_dir, rules_text: str | None = RULES_TEXT):
    rules = core_ext.core.RuleEngine(load_ruleset(rules_text)) if rules_text is not None else None
    engine = open_engine(config, str(data_dir), durability="os", rules=rules)
    try:
        async with fixtures.running(engine, config) as (server, port):
            yield server, port
    finally:
        engine.close()


def operator(port) -> AsyncClient:
    return AsyncClient("127.0.0.1", port, OPERATOR_ID, OPERATOR_SECRET)


def wallet(port) -> AsyncClient:
    return AsyncClient("127.0.0.1", port, fixtures.WALLET_ID, fixtures.WALLET_SECRET)


class TestStats:
    def test_stats_report_build_durability_rules_and_counted_payments(self, loop_kind, config, tmp_path):
        async def body():
            async with switch_running(config, tmp_path) as (_, port), wallet(port) as payer, operator(port) as ops:
                paid = await payer.pay(1, fixtures.PAYER, fixtures.static_qr(), amount_minor=5_000)
                refused = await payer.pay(2, fixtures.PAYER, fixtures.unregistered_qr(), amount_minor=5_000)
                assert (paid.code, refused.code) == (Code.OK, Code.MERCHANT_NOT_REGISTERED)
                stats = await ops.stats()
                assert stats["build"] == dict(core_ext.core.build_info())
                assert stats["durability"] == "os"
                assert stats["ruleset_name"] == "ops-test"
                assert stats["ruleset_hash"] == load_ruleset(RULES_TEXT).hash
                assert dict((code, count) for code, count in stats["payments"]) == {
                    Code.OK: 1, Code.MERCHANT_NOT_REGISTERED: 1}
                rules = {rule[0]: rule[1:5] for rule in stats["rules"]}
                # [evaluations, hits, shadow_hits, samples]: THB 50.00 passes the review cap and trips the
                # shadow rule; a rule's first evaluation is timed (time_ns_sampled, rule[5], is measured).
                assert rules == {"hold-large": [1, 0, 0, 1], "watch-medium": [1, 0, 1, 1]}
                assert all(rule[5] >= 0 for rule in stats["rules"])
                assert stats["connections"] == 2 and stats["connections_max"] == limits.CONNECTIONS_MAX
                assert stats["commit_us"]["count"] >= 2 and stats["batch_requests"]["count"] >= 2
                assert sum(stats["batch_requests"]["counts"]) == stats["batch_requests"]["count"]
                assert stats["uptime_ns"] > 0
        run_on(loop_kind, body)

    def test_a_wallet_asking_for_stats_gets_operator_role_required(self, loop_kind, config, tmp_path):
        async def body():
            async with switch_running(config, tmp_path) as (_, port), wallet(port) as client:
                with pytest.raises(SwitchError) as refused:
                    await client.stats()
                assert refused.value.code == Code.OPERATOR_ROLE_REQUIRED
                code, _ = await client.request_nowait(protocol.OP_STATS, [])
                assert code == Code.INVALID_ARGUMENTS
        run_on(loop_kind, body)


class TestReloadRules:
    def test_a_valid_rule_set_is_swapped_and_its_hash_answered(self, loop_kind, config, tmp_path):
        async def body():
            async with switch_running(config, tmp_path) as (_, port), operator(port) as ops:
                answer = await ops.reload_rules(OTHER_RULES_TEXT)
                assert answer == {"name": "ops-test-2", "hash": load_ruleset(OTHER_RULES_TEXT).hash}
                assert (await ops.stats())["ruleset_hash"] == answer["hash"]
        run_on(loop_kind, body)

    def test_payments_after_a_reload_are_decided_by_the_new_set_and_before_it_by_the_old(
            self, loop_kind, config, tmp_path):
        stricter = RULES_TEXT.replace("limit_minor = 50000", "limit_minor = 4000")

        async def body():
            async with switch_running(config, tmp_path) as (_, port), wallet(port) as payer, operator(port) as ops:
                before = await payer.pay(1, fixtures.PAYER, fixtures.static_qr(), amount_minor=5_000)
                await ops.reload_rules(stricter)
                after = await payer.pay(2, fixtures.PAYER, fixtures.static_qr(), amount_minor=5_000)
                assert (before.code, after.code) == (Code.OK, Code.RISK_REVIEW)
                stats = await ops.stats()
                # A rule whose id and version did not change keeps its counters across the reload.
                assert {rule[0]: rule[1:5] for rule in stats["rules"]}["hold-large"] == [2, 1, 0, 1]
                assert dict(stats["pipeline"]) and all(isinstance(name, str) for name, _ in stats["pipeline"])
        run_on(loop_kind, body)

    def test_the_demo_rule_set_larger_than_one_string_travels_in_chunks(self, loop_kind, config, tmp_path):
        demo_text = (config_module.pathlib.Path(fixtures.__file__).parents[1] / "switch/demo/rules.toml").read_text()
        assert len(demo_text.encode()) > limits.STRING_BYTES_MAX

        async def body():
            async with switch_running(config, tmp_path) as (_, port), operator(port) as ops:
                answer = await ops.reload_rules(demo_text)
                assert answer["hash"] == load_ruleset(demo_text).hash
        run_on(loop_kind, body)

    def test_an_invalid_rule_set_is_refused_with_the_reason_and_the_old_one_stays(self, loop_kind, config, tmp_path):
        async def body():
            async with switch_running(config, tmp_path) as (_, port), operator(port) as ops:
                broken = RULES_TEXT.replace('kind = "payment_cap_tier"', 'kind = "no_such_kind"', 1)
                with pytest.raises(SwitchError) as refused:
                    await ops.reload_rules(broken)
                assert refused.value.code == Code.RULES_INVALID
                assert "hold-large" in str(refused.value)
                assert (await ops.stats())["ruleset_hash"] == load_ruleset(RULES_TEXT).hash
        run_on(loop_kind, body)

    def test_rule_sets_that_trip_the_validator_are_refused_without_failing_the_batch(self, loop_kind, config, tmp_path):
        async def body():
            async with switch_running(config, tmp_path) as (_, port), wallet(port) as payer, operator(port) as ops:
                for text in ('ruleset = 5\n', '[[rules]]\nid = "r"\nkind = [1]\n'):
                    paid = asyncio.ensure_future(payer.pay(len(text), fixtures.PAYER, fixtures.static_qr(), 100))
                    await asyncio.sleep(0)                          # the payment leaves first
                    with pytest.raises(SwitchError) as refused:
                        await ops.reload_rules(text)
                    assert refused.value.code == Code.RULES_INVALID
                    assert (await paid).code == Code.OK        # a payment beside it is unharmed
        run_on(loop_kind, body)

    def test_a_refusal_reason_longer_than_one_string_is_cut_to_fit_the_protocol(self, loop_kind, config, tmp_path):
        long_key = "ก" * 600                    # 1,800 bytes of UTF-8, named in the validator's message

        async def body():
            async with switch_running(config, tmp_path) as (_, port), operator(port) as ops:
                with pytest.raises(SwitchError) as refused:
                    await ops.reload_rules(f'"{long_key}" = 1\n')
                assert refused.value.code == Code.RULES_INVALID
                reason = str(refused.value)
                assert "ก" in reason and len(reason.encode()) <= limits.STRING_BYTES_MAX + 100
                await ops.ping()                     # the connection is fine
        run_on(loop_kind, body)

    def test_a_switch_without_rules_answers_rules_not_configured(self, loop_kind, config, tmp_path):
        async def body():
            async with switch_running(config, tmp_path, rules_text=None) as (_, port), operator(port) as ops:
                with pytest.raises(SwitchError) as refused:
                    await ops.reload_rules(RULES_TEXT)
                assert refused.value.code == Code.RULES_NOT_CONFIGURED
                assert (await ops.stats())["ruleset_hash"] is None
        run_on(loop_kind, body)

    def test_a_wallet_cannot_reload_rules(self, loop_kind, config, tmp_path):
        async def body():
            async with switch_running(config, tmp_path) as (_, port), wallet(port) as client:
                with pytest.raises(SwitchError) as refused:
                    await client.reload_rules(OTHER_RULES_TEXT)
                assert refused.value.code == Code.OPERATOR_ROLE_REQUIRED
        run_on(loop_kind, body)

    def test_sighup_reload_reads_the_configured_file_and_keeps_the_old_set_on_a_bad_one(
            self, loop_kind, config, tmp_path):
        rules_file = tmp_path / "rules.toml"

        async def body():
            async with switch_running(config, tmp_path / "data") as (server, port), operator(port) as ops:
                server.engine.attach_operations(rules_path=str(rules_file))
                rules_file.write_text(OTHER_RULES_TEXT)
                code, answer = await server.reload_rules_file()
                assert (code, answer["name"]) == (Code.OK, "ops-test-2")
                rules_file.write_text("[[rules]]\nid = 1\n")
                code, reason = await server.reload_rules_file()
                assert code == Code.RULES_INVALID and reason
                rules_file.unlink()
                assert (await server.reload_rules_file())[0] == Code.RULES_INVALID
                assert (await ops.stats())["ruleset_hash"] == load_ruleset(OTHER_RULES_TEXT).hash
        run_on(loop_kind, body)


def test_a_reload_rules_is_a_batch_of_its_own():
    from switch.server import Server

    server = Server(object(), config_module.parse(fixtures.document()))
    try:
        def request(op, events):
            return (None, protocol.Request(1, op, None, None, events))
        server._queue = [request("pay", 2), request("ping", 0), request(protocol.OP_RELOAD_RULES, 0),
                         request("pay", 2), request(protocol.OP_RELOAD_RULES, 0), request(protocol.OP_RELOAD_RULES, 0)]
        batches = []
        while server._queue:
            batches.append([item[1].op for item in server._take_batch()[0]])
        assert batches == [["pay", "ping"], [protocol.OP_RELOAD_RULES], ["pay"], [protocol.OP_RELOAD_RULES],
                           [protocol.OP_RELOAD_RULES]]
    finally:
        server._executor.shutdown()


class TestArguments:
    """Decoding: the limits of the new operations, at the limit and one past it."""

    def test_reload_rules_chunks_at_the_limit_decode_and_one_more_is_invalid(self):
        at_limit = protocol.decode_request(protocol.pack_frame(
            [1, protocol.OP_RELOAD_RULES, ["#"] * limits.RELOAD_RULES_CHUNKS_MAX])[4:])
        past = protocol.decode_request(protocol.pack_frame(
            [1, protocol.OP_RELOAD_RULES, ["#"] * (limits.RELOAD_RULES_CHUNKS_MAX + 1)])[4:])
        assert at_limit.error is None and at_limit.args == "#" * limits.RELOAD_RULES_CHUNKS_MAX
        assert past.error == Code.INVALID_ARGUMENTS
        for bad in ([], None, ["ok", 7], "text"):
            assert protocol.decode_request(protocol.pack_frame([1, protocol.OP_RELOAD_RULES, bad])[4:]).error \
                == Code.INVALID_ARGUMENTS

    def test_list_pending_limit_at_the_maximum_decodes_and_one_more_is_invalid(self):
        def decode(args):
            return protocol.decode_request(protocol.pack_frame([1, protocol.OP_LIST_PENDING, args])[4:])
        assert decode({"limit": limits.LIST_PENDING_ITEMS_MAX}).args == (0, limits.LIST_PENDING_ITEMS_MAX)
        assert decode({}).args == (0, limits.LIST_PENDING_ITEMS_MAX)
        assert decode({"after": 7, "limit": 1}).args == (7, 1)
        for bad in ({"limit": limits.LIST_PENDING_ITEMS_MAX + 1}, {"limit": 0}, {"page": 1}, None, [0, 1]):
            assert decode(bad).error == Code.INVALID_ARGUMENTS, bad

    def test_split_text_keeps_characters_whole_and_chunks_within_the_string_limit(self):
        text = "ก" * 1000 + "x" * 5 + "€"            # 3-byte characters straddle the chunk boundaries
        chunks = protocol.split_text(text)
        assert "".join(chunks) == text
        assert all(len(chunk.encode()) <= limits.STRING_BYTES_MAX for chunk in chunks)
        assert protocol.split_text("") == [""]

    def test_an_operator_request_with_bad_arguments_over_tcp_keeps_the_connection(self, loop_kind, config, tmp_path):
        async def body():
            async with switch_running(config, tmp_path) as (_, port):
                raw = await Raw.authenticated(port, OPERATOR_ID, OPERATOR_SECRET)
                raw.send([5, protocol.OP_LIST_PENDING, {"limit": limits.LIST_PENDING_ITEMS_MAX + 1}])
                raw.send([6, protocol.OP_LIST_PENDING, {"limit": limits.LIST_PENDING_ITEMS_MAX}])
                assert (await raw.frame())[:2] == [5, Code.INVALID_ARGUMENTS]
                answer = await raw.frame()
                assert answer[:2] == [6, Code.OK] and answer[2]["items"] == [] and answer[2]["next"] is None
                await raw.close()
        run_on(loop_kind, body)
