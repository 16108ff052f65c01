"""`switch rules audit`: an operator reads why the rules decided, from the journal of a real data dir."""
from __future__ import annotations

import dataclasses
import json

from click.testing import CliRunner

from core_ext.codes import Code
from switch import config as config_module
from switch.commands.rules import rules as rules_group
from switch.engine import Engine
from switch.protocol import PayItem, Request
import test_server_helpers as fixtures
from test_pipeline_rules import BLOCK_MERCHANT, FLAG_ALL


def served_data_dir(impl, tmp_path) -> str:
    """A data dir whose journal holds one flagged approval (payment 1) and one decline (payment 2)."""
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text('[ruleset]\nname = "t"\n' + FLAG_ALL)
    document = fixtures.document()
    document["switch"]["rules"] = "rules.toml"
    config = dataclasses.replace(config_module.parse(document), rules_path=str(rules_file))
    data_dir = str(tmp_path / "data")
    engine = Engine.open(config, data_dir, durability="os", core=impl)
    try:
        participant = config.participants[fixtures.WALLET_ID]
        item = PayItem(1, fixtures.PAYER, fixtures.static_qr(), 10, None, None)
        (code, _), = engine.process_batch([(participant, Request(1, "pay", item, None, 2))])
        assert code == Code.OK
        code, result = engine.reload_rules_text('[ruleset]\nname = "t2"\n' + BLOCK_MERCHANT)
        assert code == Code.OK, result
        item = PayItem(2, fixtures.PAYER, fixtures.static_qr(), 10, None, None)
        (code, _), = engine.process_batch([(participant, Request(2, "pay", item, None, 2))])
        assert code == Code.RISK_DECLINED
    finally:
        engine.close()
    return data_dir


def audit(*args) -> list[dict]:
    result = CliRunner().invoke(rules_group, ["audit", "--json", *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def test_audit_lists_every_decision_a_rule_touched_with_the_rules_that_fired(impl, tmp_path):
    data_dir = served_data_dir(impl, tmp_path)
    flagged, declined = audit("--data", data_dir)
    assert (flagged["decision"], flagged["code"], flagged["fired"][0]["rule_id"]) == ("approve", "OK", "flag-all")
    assert (declined["decision"], declined["code"]) == ("decline", "RISK_DECLINED")
    assert declined["fired"] == [{"rule_id": "block-merchant", "reason": "R_block-merchant", "mode": "enforce"}]
    assert declined["payer_account_id"] == fixtures.PAYER and declined["amount_minor"] == 10
    assert flagged["ruleset_hash"] != declined["ruleset_hash"]       # each stamped with the set in force


def test_audit_filters_by_decision_rule_payment_and_payer(impl, tmp_path):
    data_dir = served_data_dir(impl, tmp_path)
    assert [row["payment_id"] for row in audit("--data", data_dir, "--decision", "decline")] == [f"{2:032x}"]
    assert [row["payment_id"] for row in audit("--data", data_dir, "--rule", "flag-all")] == [f"{1:032x}"]
    assert len(audit("--data", data_dir, "--payment", f"{1:032x}")) == 1
    assert audit("--data", data_dir, "--payer", fixtures.PAYER + 1) == []
    assert [row["payment_id"] for row in audit("--data", data_dir, "--limit", "1")] == [f"{2:032x}"]


def test_audit_of_a_directory_without_a_switch_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(rules_group, ["audit", "--data", str(tmp_path)])
    assert result.exit_code != 0 and "cannot read the audit log" in result.output
    bad = CliRunner().invoke(rules_group, ["audit", "--data", str(tmp_path), "--payment", "xyz"])
    assert bad.exit_code != 0 and "not hexadecimal" in bad.output
    for limit in ("0", "100001"):                                    # the bounds are 1..100,000
        refused = CliRunner().invoke(rules_group, ["audit", "--data", str(tmp_path), "--limit", limit])
        assert refused.exit_code == 2 and "--limit" in refused.output
