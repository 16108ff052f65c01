"""Metrics and logs: the histograms and counters of OpsStats, the Prometheus exposition
served over HTTP by a running switch (both loops), and the JSON log format."""
from __future__ import annotations

import asyncio
import io
import json
import logging
import urllib.request

import pytest

from core_ext.codes import Code
from switch import config as config_module, logging_setup, metrics, protocol
from switch.client import AsyncClient
from switch.operations import open_engine
from test_server_helpers import OPERATOR_ID, OPERATOR_SECRET, run_on
import test_server_helpers as fixtures


class FakeRequest:
    def __init__(self, op, args=None, events=1):
        self.op, self.args, self.events = op, args, events


class TestHistogram:
    def test_a_value_equal_to_a_bound_counts_in_that_bucket_and_one_past_in_the_next(self):
        histogram = metrics.Histogram((10, 100))
        for value in (0, 10, 11, 100, 101):
            histogram.observe(value)
        assert histogram.snapshot() == {"bounds": [10, 100], "counts": [2, 2, 1], "sum": 222, "count": 5}

    def test_bounds_must_increase(self):
        with pytest.raises(AssertionError):
            metrics.Histogram((10, 10))


class TestOpsStats:
    def test_requests_are_counted_by_operation_and_whole_request_code_with_sizes_and_times(self):
        stats = metrics.OpsStats()
        batch = [(None, FakeRequest("pay", events=2)), (None, FakeRequest("pay_batch", [1, 2, 3], events=6)),
                 (None, FakeRequest("raw_pay", b"...", events=0)), (None, FakeRequest("ping", events=0))]
        # A pipeline-encoded answer (code, frame) is read like an Outcome (code, result).
        outcomes = [(Code.RISK_REVIEW, [1, 0, 764, "x"]), (Code.OK, [[Code.OK, None]] * 3),
                    (Code.BUSY, b"\x00\x00\x00\x03..."), (Code.OK, None)]
        stats.observe_batch(batch, outcomes, batch_ns=1_500_000, wait_ns=2_000_000)
        snapshot = stats.snapshot()
        assert snapshot["wait_us"]["sum"] == 2000 and snapshot["wait_us"]["count"] == 1
        assert sorted(map(tuple, snapshot["requests"])) == [
            ("pay", Code.RISK_REVIEW, 1), ("pay_batch", Code.OK, 1), ("ping", Code.OK, 1), ("raw_pay", Code.BUSY, 1)]
        assert snapshot["batch_events"]["sum"] == 8 and snapshot["batch_requests"]["sum"] == 4
        assert snapshot["batch_us"]["sum"] == 1500 and snapshot["batches"] == 1

    def test_operation_names_a_client_made_up_are_counted_as_other(self):
        stats = metrics.OpsStats()
        batch = [(None, FakeRequest(f"no-such-op-{n}", events=0)) for n in range(100)]
        stats.observe_batch(batch, [(Code.UNKNOWN_OPERATION, None)] * 100, batch_ns=1000)
        assert stats.snapshot()["requests"] == [["other", Code.UNKNOWN_OPERATION, 100]]

    def test_a_commit_is_timed_even_when_it_fails(self):
        stats = metrics.OpsStats()

        def failing_commit():
            raise OSError("disk full")
        with pytest.raises(OSError):
            stats.timed_commit(failing_commit)()
        assert stats.timed_commit(lambda: 7)() == 7
        assert stats.commit_us.count == 2

    def test_exposition_names_every_family_with_codes_by_name(self):
        stats = metrics.OpsStats()
        stats.observe_batch([(None, FakeRequest("pay"))], [(Code.RISK_DECLINED, None)], batch_ns=2_000)
        stats.commit_us.observe(120)
        engine_stats = {"payments": [[int(Code.RISK_DECLINED), 1]],
                        "build": {"implementation": "compiled", "mode": "release"}, "durability": "fsync",
                        "ruleset_hash": "ab" * 32, "rules": [["cap", 5, 2, 1, 1, 2_500]], "reviews_pending": 3,
                        "pipeline": [["payments", 9], ["qr_ns", 1200]]}
        text = metrics.MetricsExporter(stats, lambda: engine_stats).render().decode()
        assert 'switch_payments_total{code="RISK_DECLINED"} 1.0' in text
        assert 'switch_requests_total{code="RISK_DECLINED",op="pay"} 1.0' in text
        assert 'switch_commit_seconds_bucket{le="0.00025"} 1.0' in text
        assert 'switch_commit_seconds_bucket{le="0.0001"} 0.0' in text
        assert 'switch_rule_hits_total{rule="cap"} 2.0' in text
        assert 'switch_rule_shadow_hits_total{rule="cap"} 1.0' in text
        assert 'switch_rule_time_samples_total{rule="cap"} 1.0' in text
        assert 'switch_rule_time_sampled_seconds_total{rule="cap"} 2.5e-06' in text
        assert "switch_reviews_pending 3.0" in text
        assert 'switch_pipeline_total{counter="qr_ns"} 1200.0' in text
        assert 'durability="fsync"' in text and "switch_connections_max" in text

    def test_a_failing_engine_view_still_leaves_the_server_metrics_in_the_scrape(self):
        def broken():
            raise RuntimeError("engine gone")
        text = metrics.MetricsExporter(metrics.OpsStats(), broken).render().decode()
        assert "switch_batches_total 0.0" in text and "switch_rule_hits" not in text


def test_a_running_switch_serves_its_metrics_over_http(loop_kind, tmp_path):
    config = config_module.parse(fixtures.document())
    engine = open_engine(config, str(tmp_path), durability="os")

    async def body():
        async with fixtures.running(engine, config) as (server, port):
            exporter = metrics.MetricsExporter(server.ops, engine.stats_snapshot)
            host, metrics_port = exporter.start("127.0.0.1", 0)
            try:
                async with AsyncClient("127.0.0.1", port, fixtures.WALLET_ID, fixtures.WALLET_SECRET) as wallet, \
                        AsyncClient("127.0.0.1", port, OPERATOR_ID, OPERATOR_SECRET) as operator:
                    assert (await wallet.pay(1, fixtures.PAYER, fixtures.static_qr(), amount_minor=700)).ok
                    await operator.ping()
                    url = f"http://{host}:{metrics_port}/metrics"
                    text = (await asyncio.get_running_loop().run_in_executor(
                        None, lambda: urllib.request.urlopen(url, timeout=10).read())).decode()
                assert 'switch_payments_total{code="OK"} 1.0' in text
                assert "switch_connections 2.0" in text
                assert 'switch_commit_seconds_count' in text and 'mode="' in text
                # Every answered batch reports its oldest request's time in the switch.
                assert f"switch_request_wait_seconds_count {float(server.ops.batches)}" in text
            finally:
                exporter.stop()
    try:
        run_on(loop_kind, body)
    finally:
        engine.close()


def test_a_failure_to_count_a_batch_never_stops_the_switch(loop_kind, tmp_path):
    config = config_module.parse(fixtures.document())
    engine = open_engine(config, str(tmp_path), durability="os")

    def broken(*args):
        raise RuntimeError("a bug in the statistics")

    async def body():
        async with fixtures.running(engine, config) as (server, port):
            server.ops.observe_batch = broken
            async with AsyncClient("127.0.0.1", port, fixtures.WALLET_ID, fixtures.WALLET_SECRET) as wallet:
                for transfer_id in (1, 2, 3):
                    assert (await wallet.pay(transfer_id, fixtures.PAYER, fixtures.static_qr(), 100)).ok
    try:
        run_on(loop_kind, body)
    finally:
        engine.close()


class TestLogs:
    def test_a_json_line_carries_time_level_logger_message_fields_and_traceback(self):
        stream = io.StringIO()
        handler = logging_setup.configure("info", "json", stream)
        try:
            logger = logging.getLogger("switch.test")
            logger.debug("not at info")
            logger.info("batch %d committed", 7, extra={"fields": {"batch": 7, "level": "overwrite?", "id": b"\x01"}})
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("failed")
        finally:
            logging.getLogger().removeHandler(handler)
        first, second = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert first["message"] == "batch 7 committed" and first["level"] == "info" and first["batch"] == 7
        assert first["logger"] == "switch.test" and first["ts"].endswith("Z") and first["id"] == "b'\\x01'"
        assert second["level"] == "error" and "ValueError: boom" in second["exception"]

    def test_text_format_and_unknown_settings(self):
        stream = io.StringIO()
        handler = logging_setup.configure("warning", "text", stream)
        try:
            logging.getLogger("switch.test").warning("careful")
            logging.getLogger("switch.test").info("quiet")
        finally:
            logging.getLogger().removeHandler(handler)
        assert stream.getvalue().count("\n") == 1 and "WARNING switch.test: careful" in stream.getvalue()
        with pytest.raises(ValueError):
            logging_setup.configure("verbose", "text")
        with pytest.raises(ValueError):
            logging_setup.configure("info", "xml")


def test_stats_ops_are_in_the_protocol_operation_list():
    assert {protocol.OP_STATS, protocol.OP_RELOAD_RULES, protocol.OP_LIST_PENDING} <= set(protocol.OPERATIONS)
