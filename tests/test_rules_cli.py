"""`switch rules`: check, kinds, test (replay a payment log), stats."""
from __future__ import annotations

import dataclasses
import json
import pathlib

from click.testing import CliRunner

from core_ext import limits
from core_ext.rules_types import NS_PER_SECOND, PaymentContext
from switch.commands.rules import rules

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEMO = str(ROOT / "switch" / "demo" / "rules.toml")
T0 = 1_700_000_000 * NS_PER_SECOND


def payment(**fields) -> dict:
    base = PaymentContext(
        payer_account_id=1, payer_kyc_tier=1, payer_created_ns=T0 - 400 * 86_400 * NS_PER_SECOND,
        payer_balance_minor=10**8, merchant_account_id=2, merchant_mcc=5411, merchant_is_personal=False,
        merchant_country=356, payer_country=356, device_id=7, qr_digest=9, qr_dynamic=False, amount_minor=10_000,
        currency=356, amount_usd_minor=120, originator_info_present=True, beneficiary_info_present=True,
        now_ns=T0, qr_merchant_account_id=2)
    chosen = dataclasses.replace(base, **fields)
    return {field.name: getattr(chosen, field.name) for field in dataclasses.fields(chosen)}


def write_log(path: pathlib.Path, lines: list) -> str:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return str(path)


def test_check_prints_the_hash_and_refuses_a_bad_rule_set(tmp_path):
    runner = CliRunner()
    result = runner.invoke(rules, ["check", DEMO])
    assert result.exit_code == 0 and "hash" in result.output and "new-user-24h" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rules]]\nid = "x"\nkind = "burst"\nmode = "enforce"\naction = "review"\nreason = "B"\n')
    result = runner.invoke(rules, ["check", str(bad)])
    assert result.exit_code != 0 and "'x'" in result.output and "interval_seconds" in result.output


def test_kinds_lists_the_catalogue():
    result = CliRunner().invoke(rules, ["kinds"])
    assert result.exit_code == 0 and "structuring" in result.output and "threshold_usd_minor" in result.output


def test_replay_reports_changed_decisions_rule_by_rule(tmp_path):
    log = write_log(tmp_path / "payments.jsonl", [
        {"payment": payment(), "decided": {"action": "approve", "code": 0}},
        {"payment": payment(merchant_mcc=7995), "decided": {"action": "approve", "code": 0}},   # now denied
        {"payment": payment(amount_minor=20_000_001), "decided": {"action": "decline", "code": 452}},
        {"payment": payment(payer_account_id=3)},
    ])
    result = CliRunner().invoke(rules, ["test", "--rules", DEMO, "--log", log, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["payments"] == 4 and report["bad_lines"] == 0
    outcomes = {(row["recorded"], row["candidate"]): row["count"] for row in report["outcomes"]}
    assert outcomes == {("approve", "approve"): 1, ("approve", "decline"): 1, ("decline", "decline"): 1,
                        ("unrecorded", "approve"): 1}
    assert report["rules"]["deny-gambling"]["changed"] == 1
    assert report["rules"]["cap-per-payment"]["hits"] == 1


def test_replay_skips_bad_lines_names_them_and_fails(tmp_path):
    too_long = json.dumps({"payment": payment(), "pad": "x" * limits.RULES_LOG_LINE_BYTES_MAX})
    log = write_log(tmp_path / "payments.jsonl", [
        {"payment": payment()}, "not json", {"payment": {**payment(), "amount_minor": 0}},
        {"payment": {**payment(), "colour": "red"}}, too_long,
        {"payment": payment(), "decided": {"action": "maybe"}},
    ])
    result = CliRunner().invoke(rules, ["test", "--rules", DEMO, "--log", log])
    assert result.exit_code == 1
    assert "1 payments replayed" in result.output
    for number in (2, 3, 4, 5, 6):
        assert f"line {number}:" in result.output
    assert "5 line(s) skipped" in result.output


def test_a_line_at_the_length_limit_is_read(tmp_path):
    record = {"payment": payment(), "pad": ""}
    record["pad"] = "x" * (limits.RULES_LOG_LINE_BYTES_MAX - len(json.dumps(record)))
    log = write_log(tmp_path / "payments.jsonl", [record])
    result = CliRunner().invoke(rules, ["test", "--rules", DEMO, "--log", log, "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["payments"] == 1


def test_stats_after_a_replay_on_either_implementation(tmp_path):
    log = write_log(tmp_path / "payments.jsonl", [{"payment": payment()}] * 3)
    for implementation in ("compiled", "reference"):
        result = CliRunner().invoke(rules, ["stats", "--rules", DEMO, "--log", log,
                                            "--implementation", implementation])
        assert result.exit_code == 0, result.output
        assert "3 payments" in result.output and "table accounts" in result.output
        assert "payer-daily-count                       3" in result.output
        assert "ns/eval" in result.output and "est. ms" in result.output
