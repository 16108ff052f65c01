"""A short load run against a real `switch serve` subprocess on 127.0.0.1, as an operator runs it."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from core_ext.codes import Code
from switch.commands.bench import bench
from switch.loadgen import RunSettings, e2e, fixture, model

TINY = fixture.FixtureSpec(seed=11, payer_count=200, merchant_count=40, wallet_count=2)
DOCUMENTED_CODE_NAMES = {code.name for code in Code}


@pytest.mark.parametrize("batch_items", [1, 25])
def test_a_short_run_against_a_real_switch_reports_documented_codes(tmp_path, batch_items):
    settings = RunSettings(connections=2, depth=4, batch_items=batch_items, warmup_s=0.3, duration_s=1.2)
    report = e2e.run_e2e(tmp_path, TINY, settings, durability="os", stream_items=3_000)
    assert report["durability"] == "os" and report["build_mode"].startswith(("compiled/", "reference/"))
    assert report["count"] > 0 and report["throughput_per_s"] > 0
    assert set(report["latency_us"]) == {"p50", "p90", "p99", "p999", "max"}
    assert set(report["by_code"]) <= DOCUMENTED_CODE_NAMES
    assert report["by_code"].get("OK", 0) > 0
    assert sum(report["by_code"].values()) == report["count"]
    assert report["errors"] == []
    # Said by the switch itself (`stats`), over the run: at least the measured payments.
    assert report["switch"]["durability"] == "os"
    assert report["switch"]["batches"] > 0 and report["switch"]["payments_answered"] >= report["count"]


def test_the_e2e_command_writes_the_json_with_the_required_keys(tmp_path):
    out = tmp_path / "run.json"
    result = CliRunner().invoke(bench, [
        "e2e", "--dir", str(tmp_path / "fixture"), "--durability", "os", "--payers", "100", "--merchants", "20",
        "--wallets", "1", "--connections", "2", "--depth", "2", "--warmup", "0.2", "--duration", "0.8",
        "--stream-items", "1000", "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    for key in ("throughput_per_s", "latency_us", "count", "by_code", "durability"):
        assert key in report
    assert report["durability"] == "os"


def test_a_switch_funded_at_the_largest_scale_starts_and_posts_payments(tmp_path):
    # Each currency's settlement account is debited the whole issued total, up to bigint's limit:
    # the switch must fund its wallets without overflow and then post payments from them.
    scale_max = model.funding_scale_max(1, 100)
    out = tmp_path / "run.json"
    result = CliRunner().invoke(bench, [
        "e2e", "--dir", str(tmp_path / "fixture"), "--durability", "os", "--payers", "100", "--merchants", "20",
        "--wallets", "1", "--funding-scale", str(scale_max), "--connections", "2", "--depth", "2",
        "--warmup", "0.2", "--duration", "0.8", "--stream-items", "1000", "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["workload"]["funding_scale"] == scale_max
    assert report["by_code"].get("OK", 0) > 0


def test_an_open_loop_fsync_run_reports_the_bare_fsync_of_its_data_disk(tmp_path):
    # The compiled sender against the real switch, and the probes before and after the load.
    settings = RunSettings(mode="open", rate_per_s=400, connections=2, warmup_s=0.2, duration_s=0.8)
    report = e2e.run_e2e(tmp_path, TINY, settings, durability="fsync", stream_items=None,
                         fsync_probe_bytes=8_192, fsync_probe_samples=5)
    assert report["durability"] == "fsync" and report["settings"]["sender"] == "c"
    assert report["count"] == pytest.approx(320, abs=4) and report["errors"] == []
    bare = report["bare_fsync_us"]
    assert bare["bytes"] == 8_192 and bare["samples"] == 10
    assert 0 <= bare["p50"] <= bare["p99"]
    assert bare["switch_p99_minus_bare_p99_us"] == report["latency_us"]["p99"] - bare["p99"]
    assert bare["commit_bytes"] is None or bare["commit_bytes"] > 0


def test_an_os_run_has_no_bare_fsync_probe(tmp_path):
    settings = RunSettings(mode="open", rate_per_s=200, connections=2, warmup_s=0.1, duration_s=0.4)
    report = e2e.run_e2e(tmp_path, TINY, settings, durability="os", stream_items=None)
    assert "bare_fsync_us" not in report and report["count"] == pytest.approx(80, abs=4)
