"""`switch serve` as an operator runs it: a real process with JSON logs and a metrics port,
SIGHUP re-reading the rules file (a good one and a bad one), SIGTERM."""
from __future__ import annotations

import json
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from core_ext.codes import Code
from core_ext.rules_types import load_ruleset
from switch.client import Client
from test_ops import OTHER_RULES_TEXT, RULES_TEXT
import test_server_helpers as fixtures

ROOT = pathlib.Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_config(directory: pathlib.Path) -> pathlib.Path:
    document = fixtures.document()
    lines = ['[switch]', 'name = "ops-serve"', 'accounts_max = 10000', 'rules = "rules.toml"', '']
    for table in ("participants", "ledgers", "accounts", "merchants"):
        for entry in document[table]:
            lines.append(f"[[{table}]]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in entry.items()]
            lines.append("")
    (directory / "rules.toml").write_text(RULES_TEXT)
    path = directory / "switch.toml"
    path.write_text("\n".join(lines))
    return path


class JsonLog:
    """Reads the switch's stderr, one JSON object a line, until a wanted message shows."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.records: list[dict] = []

    def wait_for(self, text: str, timeout_seconds: float = 30) -> dict:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            record = json.loads(line)          # every line is one JSON object
            self.records.append(record)
            if text in record["message"]:
                return record
        raise AssertionError(f"no {text!r} in the log: {self.records}")


def test_serve_with_json_logs_metrics_and_sighup_rule_reloads(tmp_path):
    config_path = write_config(tmp_path)
    port, metrics_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "switch", "serve", "--config", str(config_path), "--data", str(tmp_path / "data"),
         "--port", str(port), "--durability", "os", "--metrics-port", str(metrics_port),
         "--log-format", "json", "--log-level", "info"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = JsonLog(process)
    try:
        log.wait_for("serving on")
        with Client("127.0.0.1", port, fixtures.WALLET_ID, fixtures.WALLET_SECRET) as wallet:
            assert wallet.pay(1, fixtures.PAYER, fixtures.static_qr(), 60_000).code == Code.RISK_REVIEW
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        assert 'switch_payments_total{code="RISK_REVIEW"} 1.0' in text
        assert "switch_reviews_pending 1.0" in text and 'switch_rule_hits_total{rule="hold-large"} 1.0' in text

        (tmp_path / "rules.toml").write_text(OTHER_RULES_TEXT)
        process.send_signal(signal.SIGHUP)
        fields = log.wait_for("rule set 'ops-test-2' loaded")
        assert fields["event"] == "rules_loaded" and fields["rule_count"] == 2
        loaded = log.wait_for("SIGHUP: rule set")
        assert loaded["level"] == "info" and load_ruleset(OTHER_RULES_TEXT).hash in loaded["message"]
        (tmp_path / "rules.toml").write_text("[[rules]]\nkind = 'nonsense'\n")
        process.send_signal(signal.SIGHUP)
        refused = log.wait_for("rules not reloaded")
        assert refused["level"] == "error" and "RULES_INVALID" in refused["message"]
        with Client("127.0.0.1", port, fixtures.OPERATOR_ID, fixtures.OPERATOR_SECRET) as operator:
            assert operator.stats()["ruleset_name"] == "ops-test-2"

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_refuses_a_metrics_port_it_cannot_bind(tmp_path):
    config_path = write_config(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy_port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "switch", "serve", "--config", str(config_path), "--data", str(tmp_path / "data"),
             "--port", "0", "--durability", "os", "--metrics-port", str(busy_port)],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and f"metrics port 127.0.0.1:{busy_port}" in result.stderr
