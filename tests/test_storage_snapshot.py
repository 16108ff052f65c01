"""Snapshots and compaction: the ledger's full-state snapshot, `switch ledger compact`, and what opens after it.

The ledger's snapshot() must be the same bytes in both cores and restore() an equal
ledger (one that then behaves exactly like the replayed one).  Compaction writes a
snapshot in chunks, deletes the journal up to it and older snapshots in one LMDB
transaction: the directory opens to the same state hash, `ledger check` and
`ledger backup` understand it, a damaged snapshot is named (SNAPSHOT_CORRUPT), and
SIGKILL at seeded moments during compaction never changes the state.
"""
from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import signal
import struct
import subprocess
import sys
import time

import lmdb
import pytest

from core_ext import limits
from core_ext.codes import Code
from core_ext.types import Account, AccountFlags, Transfer, TransferFlags
from switch import config as config_module, storage
from switch.commands.ledger import run_check, run_compact
from switch.engine import Engine
from switch.inputlog import engine_state_hash
from switch.storage import SnapshotCorrupt, Storage, StorageError, StorageLocked
import crash_child
import test_replay
import test_server_helpers as fixtures

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOW_NS = 1_700_000_000 * 10**9
ACCOUNTS = crash_child.ACCOUNT_COUNT


def _busy_ledger(ledger, batches=12, seed=1, store=None):
    """History accounts, guarded accounts, pending transfers posted, voided and expired, failed ids
    (crash_child's seeded transfer mix)."""
    rng = random.Random(seed)
    flags = [AccountFlags.HISTORY if i % 3 == 0 else AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS if i % 2 else 0
             for i in range(1, ACCOUNTS + 1)]
    assert ledger.create_accounts([Account(i, 356, 1, flags[i - 1]) for i in range(1, ACCOUNTS + 1)], NOW_NS) == [0] * ACCOUNTS
    pending, next_id = [], 1
    for b in range(batches):
        batch = []
        for _ in range(40):
            batch.append(crash_child._next_transfer(rng, next_id, pending))
            next_id += 1
        ledger.create_transfers(batch, NOW_NS + b * 10**9)
        ledger.expire_pending(NOW_NS + b * 10**9)
        if store is not None:
            store.commit()
    return ledger


# ---- the ledger's snapshot ----------------------------------------------------------------------

def test_both_cores_give_the_same_snapshot_bytes_and_restore_each_others(compiled, reference):
    built = {impl: _busy_ledger(impl.Ledger()) for impl in (compiled, reference)}
    blob = built[compiled].snapshot()
    assert blob == built[reference].snapshot()
    accounts, transfers, failed, _ = struct.unpack_from("<QQQQ", blob)
    assert (accounts, failed) == (ACCOUNTS, failed) and failed > 0 and transfers > 0   # failed ids are in it
    for impl in (compiled, reference):
        restored = impl.Ledger()
        restored.restore(blob)
        assert restored.state_hash() == built[impl].state_hash() and restored.snapshot() == blob
        for account_id in (3, 6, 9):
            assert restored.account_history(account_id, 1000) == built[impl].account_history(account_id, 1000)


def test_a_restored_ledger_behaves_exactly_like_the_replayed_one(impl):
    original = _busy_ledger(impl.Ledger())
    original.take_journal()
    restored = impl.Ledger()
    restored.restore(original.snapshot())
    later = NOW_NS + 10**12                  # every pending transfer with a timeout is past it
    assert restored.expire_pending(later) == original.expire_pending(later) > 0
    rng_a, rng_b = random.Random(7), random.Random(7)
    pending = [t for t in range(1, 481) if original.lookup_transfers([t])[0] is not None]
    batch_a = [crash_child._next_transfer(rng_a, 10_000 + i, list(pending)) for i in range(40)]
    batch_b = [crash_child._next_transfer(rng_b, 10_000 + i, list(pending)) for i in range(40)]
    assert restored.create_transfers(batch_a, later + 1) == original.create_transfers(batch_b, later + 1)
    assert restored.take_journal() == original.take_journal()
    assert restored.state_hash() == original.state_hash()


@pytest.mark.parametrize("damage", [
    lambda blob: blob[:-1],                              # cut
    lambda blob: blob + b"\x00",                         # a byte after its end
    lambda blob: b"\xff" * 8 + blob[8:],                 # an account count past its end
    lambda blob: blob[:32],                              # the header only
])
def test_a_malformed_snapshot_is_refused_and_leaves_an_empty_ledger(impl, damage):
    blob = _busy_ledger(impl.Ledger(), batches=2).snapshot()
    ledger = impl.Ledger()
    with pytest.raises(ValueError, match="ledger snapshot"):
        ledger.restore(damage(blob))
    assert ledger.account_count == 0 and ledger.transfer_count == 0


# ---- compaction in storage ----------------------------------------------------------------------

def _journal_keys(env) -> list[int]:
    with env.begin(db=env.open_db(b"journal", create=False)) as txn:
        return [storage.decode_sequence(key) for key in txn.cursor().iternext(values=False)]


def _keys(path, name: bytes) -> list[bytes]:
    env = storage.open_environment(path, readonly=True)
    try:
        with env.begin(db=env.open_db(name, create=False)) as txn:
            return [bytes(key) for key in txn.cursor().iternext(values=False)]
    finally:
        env.close()


def test_compaction_keeps_the_state_drops_the_journal_and_older_snapshots(impl, tmp_path):
    ledger = impl.Ledger()
    with Storage.open(tmp_path, [ledger], durability="os") as store:
        _busy_ledger(ledger, batches=6, store=store)
        assert store.compact() == 6 and store.compact() is None
        assert _journal_keys(store.env) == []
        _busy_ledger_more(ledger, store, first_id=5000)
        expected = ledger.state_hash()
        assert store.compact() == 8
        assert _journal_keys(store.env) == []
    assert [storage.decode_sequence(key) for key in _keys(tmp_path, b"snapshot")] == [8]
    assert all(key[:8] == storage.encode_sequence(8) for key in _keys(tmp_path, b"snapshot_chunk"))
    reopened = impl.Ledger()
    with Storage.open(tmp_path, [reopened]) as store:
        assert reopened.state_hash() == expected and store.sequence == store.snapshot_sequence == 8
        _busy_ledger_more(reopened, store, first_id=6000)
        expected = reopened.state_hash()
    again = impl.Ledger()
    with Storage.open(tmp_path, [again]) as store:       # snapshot, then the journal after it
        assert again.state_hash() == expected and store.sequence == 10
    report = run_check(str(tmp_path))
    assert report["ok"], report["violations"]
    assert report["snapshot_sequence"] == 8 and report["batches"] == 10


def _busy_ledger_more(ledger, store, first_id):
    for b in range(2):
        transfers = [Transfer(first_id + 100 * b + i, 1 + i % 5, 2 + i % 5, 3, 356, 1) for i in range(30)]
        ledger.create_transfers(transfers, NOW_NS + 10**13 + b)
        store.commit()


def test_snapshot_chunks_at_the_chunk_limit_and_one_past(monkeypatch, tmp_path):
    class Fixed:
        """A component whose snapshot is exactly `size` bytes."""

        def __init__(self, name, size):
            self.name, self.size, self.restored = name, size, None

        def take_journal(self):
            return b"x"

        def apply_journal(self, blob):
            pass

        def reset(self):
            self.restored = None

        def snapshot(self):
            return bytes(range(256)) * (self.size // 256) + bytes(self.size % 256)

        def restore(self, blob):
            self.restored = blob

    monkeypatch.setattr(limits, "SNAPSHOT_CHUNK_BYTES_MAX", 1024)
    at_limit, past = Fixed("at", 1024), Fixed("past", 1025)
    with Storage.open(tmp_path, [at_limit, past], durability="os") as store:
        store.commit()
        store.compact()
    assert len(_keys(tmp_path, b"snapshot_chunk")) == 3      # one chunk for "at", two for "past"
    with Storage.open(tmp_path, [at_limit, past]):
        assert at_limit.restored == at_limit.snapshot() and past.restored == past.snapshot()
    monkeypatch.setattr(limits, "SNAPSHOT_CHUNK_BYTES_MAX", 1023)   # a stored chunk past the limit
    with pytest.raises(SnapshotCorrupt, match="past snapshot_chunk_bytes_max"):
        Storage.open(tmp_path, [at_limit, past])


def test_a_component_without_a_snapshot_cannot_be_compacted_online(tmp_path):
    class NoSnapshot:
        name = "plain"

        def take_journal(self):
            return b"x"

        def apply_journal(self, blob):
            pass

        def reset(self):
            pass

    with Storage.open(tmp_path, [NoSnapshot()], durability="os") as store:
        store.commit()
        with pytest.raises(StorageError, match="compact offline"):
            store.compact()


def _compacted(impl, path) -> bytes:
    ledger = impl.Ledger()
    with Storage.open(path, [ledger], durability="os") as store:
        _busy_ledger(ledger, batches=4, store=store)
        store.compact()
    return ledger.state_hash()


def _damage_chunk(path, change) -> None:
    env = lmdb.open(str(path), max_dbs=storage.DATABASES_MAX)
    chunks = env.open_db(b"snapshot_chunk")
    with env.begin(write=True, db=chunks) as txn:
        key = next(txn.cursor().iternext(values=False))
        value = txn.get(key)
        if change is None:
            txn.delete(key)
        else:
            txn.put(key, change(bytes(value)))
    env.close()


@pytest.mark.parametrize("change, detail", [
    (lambda value: value[:20] + bytes([value[20] ^ 1]) + value[21:], "checksum"),
    (lambda value: value[:len(value) // 2], "checksum"),
    (None, "chunk 0 is missing"),
])
def test_a_damaged_snapshot_refuses_the_open_and_ledger_check_reports_it(impl, tmp_path, change, detail):
    _compacted(impl, tmp_path)
    _damage_chunk(tmp_path, change)
    with pytest.raises(SnapshotCorrupt, match=detail) as refused:
        Storage.open(tmp_path, [impl.Ledger()])
    assert refused.value.code == Code.SNAPSHOT_CORRUPT == 608 and refused.value.sequence == 4
    report = run_check(str(tmp_path))
    assert not report["ok"] and any("SNAPSHOT_CORRUPT" in violation for violation in report["violations"])


def test_a_damaged_manifest_is_named_too(impl, tmp_path):
    _compacted(impl, tmp_path)
    env = lmdb.open(str(tmp_path), max_dbs=storage.DATABASES_MAX)
    manifests = env.open_db(b"snapshot")
    with env.begin(write=True, db=manifests) as txn:
        value = bytearray(txn.get(storage.encode_sequence(4)))
        value[-1] ^= 0x40
        txn.put(storage.encode_sequence(4), bytes(value))
    env.close()
    with pytest.raises(SnapshotCorrupt, match="manifest"):
        Storage.open(tmp_path, [impl.Ledger()])


# ---- the operator command, on a switch's own directory ------------------------------------------

def _switch(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "switch", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_switch_ledger_compact_on_a_served_directory_keeps_every_component(tmp_path):
    config = config_module.parse(fixtures.document())
    data = tmp_path / "data"
    engine = Engine.open(config, str(data), durability="os")
    try:
        test_replay.run_workload(engine, 5, config)
        expected = engine_state_hash(engine)
        with pytest.raises(StorageLocked):
            run_compact(str(data))                          # offline only: the switch holds it
    finally:
        engine.close()
    carried_before = _carried_sections(data, storage.iterate_journal)
    assert {name for name, _ in carried_before} >= {"merchants"}
    result = _switch("ledger", "compact", str(data), "--json")
    assert result.returncode == 0, result.stderr
    assert _carried_sections(data, storage.iterate_stored_sections) == carried_before
    report = json.loads(result.stdout)
    assert report["compacted"] and report["snapshot_sequence"] > 1
    assert {bytes(key) for key in _keys(data, b"journal")} == set()
    reopened = Engine.open(config, str(data), durability="os")
    try:
        assert engine_state_hash(reopened) == expected
    finally:
        reopened.close()
    check = _switch("ledger", "check", "--data", str(data), "--json")
    assert check.returncode == 0 and json.loads(check.stdout)["snapshot_sequence"] == report["snapshot_sequence"]
    assert _switch("ledger", "backup", "--data", str(data), str(tmp_path / "copy")).returncode == 0
    restored = Engine.open(config, str(tmp_path / "copy"), durability="os")
    try:
        assert engine_state_hash(restored) == expected
    finally:
        restored.close()
    again = _switch("ledger", "compact", str(data))
    assert again.returncode == 0 and "nothing to compact" in again.stdout


def _carried_sections(data, iterate) -> list[tuple[str, bytes]]:
    """Every stored section of the components without a snapshot of their own, in order."""
    env = storage.open_environment(data, readonly=True)
    try:
        return [(name, bytes(blob)) for _, sections in iterate(env) for name, blob in sections if name != "ledger"]
    finally:
        env.close()


# ---- SIGKILL during compaction ------------------------------------------------------------------

KILL_ROUNDS = 6


def test_kill_9_at_seeded_moments_of_a_compaction_never_changes_the_state(tmp_path):
    from core_ext import core

    ledger = core.Ledger()
    pristine = tmp_path / "pristine"
    with Storage.open(pristine, [ledger], durability="os") as store:
        _busy_ledger(ledger, batches=150, store=store)
        expected = ledger.state_hash()
    rng = random.Random("compaction-kills")
    whole_seconds = _compact_in_child(tmp_path / "timed", pristine, kill_after=None)
    outcomes = []
    for round_index in range(KILL_ROUNDS):
        # Seeded points spread over the child's open, replay and compaction (one fsynced transaction).
        _compact_in_child(tmp_path / f"round-{round_index}", pristine, kill_after=rng.uniform(0, whole_seconds))
        data = tmp_path / f"round-{round_index}"
        reopened = core.Ledger()
        with Storage.open(data, [reopened], durability="os") as store:
            assert reopened.state_hash() == expected
            outcomes.append(store.snapshot_sequence)
        assert run_check(str(data))["ok"]
    assert set(outcomes) <= {0, 150}, outcomes


def _compact_in_child(data, pristine, kill_after: float | None) -> float:
    """Compact a copy of `pristine` in a child; SIGKILL it `kill_after` seconds after it starts
    opening (None: let it finish).  The seconds from its start to its kill or to the end of compaction."""
    data.mkdir()
    shutil.copyfile(pristine / "data.mdb", data / "data.mdb")
    child = subprocess.Popen([sys.executable, "-c", _COMPACT_CHILD, str(data)], cwd=ROOT,
                             stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.stdout.readline() == b"opening\n"
    started = time.monotonic()
    if kill_after is not None:
        time.sleep(kill_after)
        child.send_signal(signal.SIGKILL)
    else:
        assert child.stdout.readline() == b"compacted\n"
    finished = time.monotonic()
    child.communicate(timeout=60)
    assert child.returncode in ((-signal.SIGKILL, 0) if kill_after is not None else (0,)), child.returncode
    return finished - started


_COMPACT_CHILD = """
import sys
from core_ext import core
from switch.commands.ledger import run_compact
print("opening", flush=True)
run_compact(sys.argv[1])
print("compacted", flush=True)
"""
