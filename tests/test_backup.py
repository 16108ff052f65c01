"""Online backup and restore: `switch ledger backup` while the switch serves load, then restore from it.

A backup is a consistent point-in-time copy: it passes `switch ledger check`, holds
every payment acknowledged before the backup began, and a switch started on it
serves; wallets re-sending their payments with the same ids get EXISTS for those
in the backup and OK (posted once) for the ones after it.
"""
from __future__ import annotations

import asyncio
import os
import pathlib
import random
import shutil
import subprocess
import sys

from bench import soak
from core_ext.codes import Code
from switch import storage
from switch.client import AsyncClient
from switch.commands.ledger import run_check
from test_server_helpers import run_on

ROOT = pathlib.Path(__file__).resolve().parent.parent
BACKUPS = 2
PAUSE_SECONDS = 0.01      # between a worker's chunks: steady load, a ledger small enough to re-send quickly


def switch_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "switch", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


async def pay_while(port: int, payments: soak.Payments, qr_payload: str, stop: asyncio.Event) -> None:
    async with AsyncClient("127.0.0.1", port, soak.WALLET_ID, soak.WALLET_SECRET) as client:
        while not stop.is_set():
            ids = payments.new_chunk()
            for result in await soak.pay_until_not_busy(client, soak._requests(payments, ids, qr_payload)):
                assert result.code == Code.OK, result
                payments.acknowledged.add(result.transfer_id)
            await asyncio.sleep(PAUSE_SECONDS)


async def backups_under_load(port: int, payments: soak.Payments, data_dir: pathlib.Path,
                             targets: list[pathlib.Path]) -> list[set[int]]:
    """Take each backup while payments flow; the payments acknowledged before each one began."""
    stop = asyncio.Event()
    qr_payload = soak.static_qr()
    load = asyncio.ensure_future(asyncio.gather(*(pay_while(port, payments, qr_payload, stop) for _ in range(4))))
    acknowledged_before = []
    try:
        for index, target in enumerate(targets):
            await asyncio.sleep(0.3)
            acknowledged_before.append(set(payments.acknowledged))
            if index == 0:       # as an operator runs it
                backup = await asyncio.to_thread(switch_cli, "ledger", "backup", "--data", str(data_dir), str(target))
                assert backup.returncode == 0, backup.stderr
            else:                # what that command calls, without another interpreter start
                await asyncio.to_thread(storage.backup, data_dir, target)
    finally:
        stop.set()
        await load
    return acknowledged_before


def journaled_ids(data_dir: pathlib.Path) -> set[int]:
    from core_ext.reference.ledger import iter_journal_records

    env = storage.open_environment(data_dir, readonly=True)
    try:
        return {record.id for _, sections in storage.iterate_journal(env) for name, blob in sections
                if name == "ledger" for kind, record in iter_journal_records(blob) if kind == "transfer"}
    finally:
        env.close()


async def resend_all(port: int, payments: soak.Payments) -> dict[int, int]:
    async with AsyncClient("127.0.0.1", port, soak.WALLET_ID, soak.WALLET_SECRET) as client:
        results = await soak.pay_until_not_busy(client, soak._requests(payments, sorted(payments.sent),
                                                                       soak.static_qr()))
    return {result.transfer_id: result.code for result in results}


def test_backup_while_serving_is_consistent_and_a_switch_restored_from_it_recovers_by_retries(tmp_path):
    config_path = soak.write_config(tmp_path)
    data_dir = tmp_path / "data"
    payments = soak.Payments(random.Random(5))
    targets = [tmp_path / f"backup-{index}" for index in range(BACKUPS)]
    server = soak.SwitchProcess(config_path, data_dir, "fsync")
    server.start()
    try:
        acknowledged_before = run_on("uvloop", backups_under_load, server.port, payments, data_dir, targets)
    finally:
        assert server.stop() == 0
    for target, acknowledged in zip(targets, acknowledged_before):
        checked = run_check(str(target))                      # `switch ledger check --data TARGET`
        assert checked["ok"], checked["violations"]
        in_backup = journaled_ids(target)
        assert acknowledged and acknowledged <= in_backup       # nothing acknowledged before it is missing
    assert journaled_ids(targets[-1]) < journaled_ids(data_dir)   # point in time: later payments are not in it

    # Restore: a switch on a copy of the last backup; the wallets re-send everything with the same ids.
    restored = tmp_path / "restored"
    shutil.copytree(targets[-1], restored)
    in_backup = journaled_ids(restored)
    server = soak.SwitchProcess(config_path, restored, "fsync")
    server.start()
    try:
        codes = run_on("uvloop", resend_all, server.port, payments)
    finally:
        assert server.stop() == 0
    assert {codes[i] for i in payments.sent if i in in_backup} == {Code.EXISTS}
    assert {codes[i] for i in payments.sent if i not in in_backup} == {Code.OK}
    report = soak.SoakReport()
    soak.check_data_dir(restored, payments, report)   # ledger check, each payment once, balances = payments
    assert report.failures == []


def test_backup_into_a_directory_that_is_not_empty_is_refused(tmp_path):
    import core_ext
    from switch.storage import Storage

    target = tmp_path / "target"
    target.mkdir()
    (target / "something").write_text("keep me")
    source = tmp_path / "data"
    Storage.open(source, [core_ext.core.Ledger()], durability="os").close()
    refused = switch_cli("ledger", "backup", "--data", str(source), str(target))
    assert refused.returncode != 0 and "must be empty" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (target / "something").read_text() == "keep me"
