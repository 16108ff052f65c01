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
        assert "QR_REPLAYED" in story and "EXCEEDS_CREDITS" in story and "ACCOUNT_NOT_OWNED" in story
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
