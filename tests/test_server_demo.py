"""`make run`'s demo as a newcomer meets it: a real process, its story, a payment, SIGTERM."""
from __future__ import annotations

import pathlib
import re
import signal
import subprocess
import sys
import time

from core_ext.codes import Code
from switch.client import Client

ROOT = pathlib.Path(__file__).resolve().parent.parent


def read_until(process: subprocess.Popen, marker: str, timeout_seconds: float = 60) -> str:
    seen = []
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"no {marker!r} in demo output:\n{''.join(seen)}")


def test_demo_serves_tells_its_story_takes_a_payment_and_stops_on_sigterm(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "switch.demo", "--data", str(tmp_path / "var"), "--port", "0", "--durability", "os"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output = read_until(process, "switch listening on")
        port = int(re.search(r"switch listening on 127\.0\.0\.1:(\d+)", output).group(1))
        secret = re.search(r"id 1 .* secret (\S+)", output).group(1)
        story = read_until(process, "keeps serving")
        assert "OK -- THB 60.00 to Somsak Tuk-Tuk" in story
        # The demo rule set is on: its dynamic-QR rule refuses the replay before the directory's guard.
        assert "RISK_QR_REJECTED" in story and "EXCEEDS_CREDITS" in story and "ACCOUNT_NOT_OWNED" in story
        # The rule set's limits are INR: the IDR groceries pass, the new minimum-KYC wallet's large purchase does not.
        assert "OK -- IDR 45,000.00 to Warung Bu Sri" in story and "RISK_LIMIT_EXCEEDED" in story
        payload = (tmp_path / "var" / "qr" / "tuktuk-bangkok.txt").read_text().strip()
        with Client("127.0.0.1", port, 1, secret) as client:
            result = client.pay(0xABC, 1001, payload, 2_000)
        assert (result.code, result.merchant_name) == (Code.OK, "Somsak Tuk-Tuk")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_switch_serve_and_switch_pay_from_the_command_line(tmp_path):
    """`switch serve` until SIGINT, and a person at a terminal paying with `switch pay`."""
    from switch import demo

    demo_data = tmp_path / "var"
    config_path = demo.prepare_config(demo_data)
    payloads = demo.make_payloads(demo_data)
    server = subprocess.Popen(
        [sys.executable, "-m", "switch", "serve", "--config", str(config_path), "--data", str(tmp_path / "lmdb"),
         "--port", "0", "--durability", "os", "--loop", "asyncio"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        port = re.search(r"listening on 127\.0\.0\.1:(\d+)", read_until(server, "listening on")).group(1)
        base = [sys.executable, "-m", "switch", "pay", "--port", port, "--participant", "3",
                "--secret", "demo-bharatwallet-secret-03", "--qr", "@" + str(demo_data / "qr" / "temple-varanasi.txt")]
        paid = subprocess.run(base + ["--payer", "3001", "--amount", "10100", "--transfer-id", "ab" * 16],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert paid.returncode == 0, paid.stdout + paid.stderr
        assert "OK: paid 10100 minor units (currency 356) to Shri Kashi Temple Trust" in paid.stdout
        retried = subprocess.run(base + ["--payer", "3001", "--amount", "10100", "--transfer-id", "ab" * 16],
                                 cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert retried.returncode == 0 and "EXISTS" in retried.stdout
        refused = subprocess.run(base + ["--payer", "1001", "--amount", "100"], cwd=ROOT, capture_output=True,
                                 text=True, timeout=60)
        assert refused.returncode == 1 and "ACCOUNT_NOT_OWNED (503)" in refused.stdout
        assert payloads["temple-varanasi"].startswith("upi://pay?")
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_switch_serve_refuses_a_bad_config_with_a_clear_message(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[participants]]\nid = 1\nrole = "king"\nsecret = "0123456789abcdef0123"\n')
    result = subprocess.run([sys.executable, "-m", "switch", "serve", "--config", str(bad), "--data", str(tmp_path / "d")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "participants[0].role" in result.stderr
