"""Storage faults while serving: a full LMDB map, a full disk, a second switch on the same directory.

Each fault fails the batch it hits with STORAGE_FAILED (nothing of it applied, the
in-memory state rebuilt from disk), leaves a ledger that `switch ledger check`
passes, and the switch keeps answering: once the fault is gone the same ids post.
The full disk is real: a small tmpfs mounted for the test (root only).
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
import sys

import pytest

import core_ext
from core_ext.codes import Code
from switch.client import AsyncClient, PayRequest
from switch.commands.ledger import run_check
from switch.engine import Engine
from switch.merchants import MerchantDirectory
from switch.server import Server
from switch.storage import Storage, StorageLocked
import test_server_helpers as fixtures

ROOT = pathlib.Path(__file__).resolve().parent.parent
BATCH_PAYMENTS = 4095            # one pay_batch frame: ~0.4 MiB of journal, new pages in any map
TMPFS_BYTES = 8 << 20
SMALL_MAP_BYTES = 256 << 10      # room for the bootstrap and small batches, not for a full pay_batch


def open_engine(config, data_dir, **storage_options) -> Engine:
    """Engine.open, with the storage options (map sizes) that Engine.open keeps at their defaults."""
    ledger = core_ext.core.Ledger(config.accounts_max)
    merchants = MerchantDirectory()
    storage = Storage.open(data_dir, [ledger, merchants], durability="os", **storage_options)
    engine = Engine(config, core_ext.core, ledger, merchants, storage)
    engine.bootstrap()
    return engine


@contextlib.asynccontextmanager
async def serving(engine, config):
    server = Server(engine, config)
    _, port = await server.start("127.0.0.1", 0)
    try:
        async with AsyncClient("127.0.0.1", port, fixtures.WALLET_ID, fixtures.WALLET_SECRET) as client:
            yield client
    finally:
        await server.shutdown(timeout_seconds=10)


def payments(first_id: int, count: int) -> list[PayRequest]:
    qr_payload = fixtures.static_qr()
    return [PayRequest(first_id + index, fixtures.PAYER, qr_payload, 10) for index in range(count)]


async def pay_codes(client, requests) -> set:
    return {result.code for result in await client.pay_many(requests)}


def assert_ledger_holds_exactly(config, data_dir, paid_count: int) -> None:
    """The directory passes `ledger check` and holds the bootstrap plus exactly the payments acknowledged."""
    report = run_check(str(data_dir))
    assert report["ok"], report["violations"]
    engine = Engine.open(config, str(data_dir), durability="os")
    try:
        payer, = engine.ledger.lookup_accounts([fixtures.PAYER])
        assert payer.debits_posted == 10 * paid_count
        assert engine.ledger.check_invariants() == []
    finally:
        engine.close()


def test_a_full_map_at_its_maximum_fails_the_batch_and_the_switch_keeps_serving(config, tmp_path):
    engine = open_engine(config, tmp_path, map_bytes_initial=SMALL_MAP_BYTES, map_bytes_max=SMALL_MAP_BYTES)

    async def body(client):
        assert await pay_codes(client, payments(1, 5)) == {Code.OK}
        assert await pay_codes(client, payments(1000, BATCH_PAYMENTS)) == {Code.STORAGE_FAILED}
        assert await pay_codes(client, payments(1000, 5)) == {Code.OK}     # nothing of the failed batch stuck
        assert (await client.lookup_transfers([1005])) == [None]

    try:
        fixtures.run_on("uvloop", lambda: _with_client(engine, config, body))
    finally:
        engine.close()
    assert_ledger_holds_exactly(config, tmp_path, paid_count=10)


def test_a_full_map_below_its_maximum_grows_and_the_batch_posts(config, tmp_path):
    engine = open_engine(config, tmp_path, map_bytes_initial=SMALL_MAP_BYTES, map_bytes_max=64 << 20)

    async def body(client):
        assert await pay_codes(client, payments(1, BATCH_PAYMENTS)) == {Code.OK}

    try:
        fixtures.run_on("uvloop", lambda: _with_client(engine, config, body))
        assert engine.storage.map_bytes > SMALL_MAP_BYTES
    finally:
        engine.close()
    assert_ledger_holds_exactly(config, tmp_path, paid_count=BATCH_PAYMENTS)


async def _with_client(engine, config, body):
    async with serving(engine, config) as client:
        await body(client)


@contextlib.contextmanager
def small_filesystem(directory: pathlib.Path):
    """A TMPFS_BYTES tmpfs mounted on `directory`, unmounted afterwards; skips when mounting is impossible."""
    directory.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for a real disk-full needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(directory)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(directory: pathlib.Path) -> pathlib.Path:
    """Write a file until the filesystem is full (ENOSPC)."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 4096)
    return filler


def test_a_full_disk_fails_the_batch_leaves_the_ledger_consistent_and_serving_resumes(config, tmp_path):
    with small_filesystem(tmp_path / "small") as mount:
        data_dir = mount / "data"
        engine = Engine.open(config, str(data_dir), durability="os")
        filler_holder: list[pathlib.Path] = []

        async def body(client):
            assert await pay_codes(client, payments(1, 5)) == {Code.OK}
            filler_holder.append(fill(mount))
            assert await pay_codes(client, payments(1000, BATCH_PAYMENTS)) == {Code.STORAGE_FAILED}
            # Reads still work, and nothing of the failed batch is visible.
            assert await client.lookup_transfers([1000, 5]) == [None, await _transfer(client, 5)]
            assert ledger_check_in_another_process(data_dir) == 0   # beside the holder, on the full disk
            filler_holder[0].unlink()                     # space is back
            assert await pay_codes(client, payments(1000, BATCH_PAYMENTS)) == {Code.OK}

        try:
            fixtures.run_on("uvloop", lambda: _with_client(engine, config, body))
        finally:
            engine.close()
        assert_ledger_holds_exactly(config, data_dir, paid_count=5 + BATCH_PAYMENTS)


def ledger_check_in_another_process(data_dir: pathlib.Path) -> int:
    """`switch ledger check` as an operator runs it (LMDB allows one open of an environment per process)."""
    checked = subprocess.run([sys.executable, "-m", "switch", "ledger", "check", "--data", str(data_dir)],
                             capture_output=True, text=True, cwd=ROOT, timeout=60,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert checked.stdout.startswith("OK:"), checked.stdout + checked.stderr
    return checked.returncode


async def _transfer(client, transfer_id: int):
    found, = await client.lookup_transfers([transfer_id])
    assert found is not None and found.id == transfer_id
    return found


def test_a_second_switch_on_the_same_data_directory_is_refused(config, tmp_path):
    data_dir = tmp_path / "data"
    engine = Engine.open(config, str(data_dir), durability="os")
    try:
        # Another process: flock is per open file description, so this is what an operator would hit.
        config_path = tmp_path / "switch.toml"
        config_path.write_text(_toml_of(fixtures.document()))
        second = subprocess.run(
            [sys.executable, "-m", "switch", "serve", "--config", str(config_path), "--data", str(data_dir),
             "--port", "0"], capture_output=True, text=True, cwd=ROOT, timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert second.returncode != 0
        assert "another process holds this data directory" in second.stderr
        # In this process too (a second Storage on the same directory).
        with pytest.raises(StorageLocked):
            Storage.open(data_dir, [core_ext.core.Ledger()], durability="os")
        assert engine.ledger.check_invariants() == []
    finally:
        engine.close()
    assert run_check(str(data_dir))["ok"]


def _toml_of(document: dict) -> str:
    """The test config as TOML (flat tables, arrays of tables, scalars and lists only)."""
    lines = []
    for key, value in document.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{name} = {_toml_value(item)}" for name, item in value.items()]
        else:
            for entry in value:
                lines.append(f"[[{key}]]")
                lines += [f"{name} = {_toml_value(item)}" for name, item in entry.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return str(value)

