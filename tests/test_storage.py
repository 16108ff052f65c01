"""LMDB storage: exact recovery, one writer per directory, map growth, failed commits, checkpoints, the CLI."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import lmdb
import msgpack
import pytest

from core_ext import limits
from core_ext.types import Account, Transfer
from switch import storage
from switch.commands.ledger import run_check
from switch.storage import Storage, StorageError, StorageLocked

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOW_NS = 1_700_000_000 * 10**9


def _fill(ledger, batches=3, per_batch=20, first_id=1, store=None):
    if ledger.account_count == 0:
        assert ledger.create_accounts([Account(i, 356, 1) for i in range(1, 6)], NOW_NS) == [0] * 5
        if store:
            store.commit()
    for b in range(batches):
        transfers = [Transfer(first_id + b * per_batch + i, 1 + i % 5, 1 + (i + 1) % 5, 10 + i, 356, 1)
                     for i in range(per_batch)]
        assert ledger.create_transfers(transfers, NOW_NS + b) == [0] * per_batch
        if store:
            store.commit()


@pytest.mark.parametrize("durability", storage.DURABILITIES)
def test_reopening_rebuilds_exactly_the_committed_state(impl, tmp_path, durability):
    ledger = impl.Ledger()
    with Storage.open(tmp_path, [ledger], durability=durability) as store:
        _fill(ledger, store=store)
        assert store.sequence == 4
        expected = ledger.state_hash()
        # Applied but never committed: must not survive the reopen.
        ledger.create_transfers([Transfer(999, 1, 2, 5, 356, 1)], NOW_NS + 10)
    reopened = impl.Ledger()
    with Storage.open(tmp_path, [reopened], durability=durability) as store:
        assert reopened.state_hash() == expected
        assert store.sequence == 4
        assert reopened.lookup_transfers([999]) == [None]


def test_a_second_opener_of_the_same_directory_is_refused(impl, tmp_path):
    with Storage.open(tmp_path, [impl.Ledger()]):
        with pytest.raises(StorageLocked):
            Storage.open(tmp_path, [impl.Ledger()])
    Storage.open(tmp_path, [impl.Ledger()]).close()


def test_a_batch_without_effects_writes_nothing(impl, tmp_path):
    ledger = impl.Ledger()
    with Storage.open(tmp_path, [ledger]) as store:
        assert store.commit() is None
        assert ledger.create_transfers([Transfer(1, 1, 2, 5, 356, 1)], NOW_NS) == [126]
        assert store.commit() is None
        assert store.sequence == 0


def test_the_map_grows_instead_of_failing_a_batch(impl, tmp_path):
    ledger = impl.Ledger()
    with Storage.open(tmp_path, [ledger], map_bytes_initial=256 << 10, map_bytes_max=64 << 20) as store:
        _fill(ledger, batches=2, per_batch=limits.BATCH_EVENTS_MAX, store=store)
        assert store.map_bytes > 256 << 10
        expected = ledger.state_hash()
    reopened = impl.Ledger()
    with Storage.open(tmp_path, [reopened]):
        assert reopened.state_hash() == expected


def test_a_failed_commit_leaves_the_disk_unchanged_and_reload_rebuilds_memory(impl, tmp_path):
    ledger = impl.Ledger()
    with Storage.open(tmp_path, [ledger], map_bytes_initial=256 << 10, map_bytes_max=256 << 10) as store:
        _fill(ledger, batches=1, store=store)
        committed = ledger.state_hash()
        _fill(ledger, batches=1, per_batch=limits.BATCH_EVENTS_MAX, first_id=10**6)
        with pytest.raises(StorageError) as failure:
            store.commit()
        assert failure.value.code == 601
        assert store.sequence == 2
        store.reload()
        assert ledger.state_hash() == committed
        assert ledger.create_transfers([Transfer(10**7, 1, 2, 1, 356, 1)], NOW_NS) == [0]
        assert store.commit() == 3


def test_an_unknown_journal_section_refuses_the_open(impl, tmp_path):
    ledger = impl.Ledger()
    with Storage.open(tmp_path, [ledger]) as store:
        _fill(ledger, batches=1, store=store)
        with store.env.begin(write=True) as txn:
            txn.put(storage.encode_sequence(3), storage.encode_record(3, msgpack.packb([["rules", b"x"]])),
                    db=store._journal)
    with pytest.raises(StorageError, match="no such component"):
        Storage.open(tmp_path, [impl.Ledger()])


def test_a_journal_the_ledger_cannot_replay_refuses_the_open(impl, tmp_path):
    ledger = impl.Ledger()
    with Storage.open(tmp_path, [ledger]) as store:
        _fill(ledger, batches=1, store=store)
        with store.env.begin(write=True) as txn:
            txn.put(storage.encode_sequence(3), storage.encode_record(3, msgpack.packb([["ledger", b"\x02truncated"]])),
                    db=store._journal)
    with pytest.raises(StorageError, match="cannot be replayed"):
        Storage.open(tmp_path, [impl.Ledger()])
    assert not run_check(str(tmp_path))["ok"]


def test_checkpoints_are_written_every_interval_and_on_close(impl, tmp_path):
    ledger = impl.Ledger()
    with Storage.open(tmp_path, [ledger], checkpoint_interval_batches=3) as store:
        _fill(ledger, batches=1, store=store)
        assert storage.read_checkpoint(store.env, "ledger")[0] == 1
        _fill(ledger, batches=1, first_id=1000, store=store)
        assert storage.read_checkpoint(store.env, "ledger")[0] == 1
        _fill(ledger, batches=1, first_id=2000, store=store)
        assert storage.read_checkpoint(store.env, "ledger")[0] == 4
        _fill(ledger, batches=1, first_id=3000, store=store)
    env = storage.open_environment(tmp_path, readonly=True)
    assert storage.read_checkpoint(env, "ledger")[0] == 5
    env.close()


def test_storage_limits_at_the_limit_and_one_past(impl, tmp_path):
    Storage.open(tmp_path / "a", [impl.Ledger()], map_bytes_max=limits.MAP_BYTES_MAX,
                 checkpoint_interval_batches=limits.CHECKPOINT_INTERVAL_BATCHES).close()
    with pytest.raises(ValueError):
        Storage.open(tmp_path / "b", [impl.Ledger()], map_bytes_max=limits.MAP_BYTES_MAX + 1)
    with pytest.raises(ValueError):
        Storage.open(tmp_path / "c", [impl.Ledger()],
                     checkpoint_interval_batches=limits.CHECKPOINT_INTERVAL_BATCHES + 1)
    with pytest.raises(ValueError):
        Storage.open(tmp_path / "d", [impl.Ledger()], durability="maybe")


def test_journal_records_at_the_size_limit_are_read_and_one_past_refused():
    overhead = len(msgpack.packb([["ledger", b"x" * (1 << 20)]])) - (1 << 20)
    at_limit = msgpack.packb([["ledger", b"x" * (limits.JOURNAL_RECORD_BYTES_MAX - overhead)]])
    assert len(at_limit) == limits.JOURNAL_RECORD_BYTES_MAX
    assert storage.decode_record(at_limit)[0][0] == "ledger"
    with pytest.raises(StorageError):
        storage.decode_record(at_limit + b"\x00")


class _Named:
    """A component that never changes, to test how storage names sections."""

    def __init__(self, name):
        self.name = name

    def take_journal(self):
        return None

    def apply_journal(self, blob):
        raise AssertionError("nothing was written")

    def reset(self):
        pass


def test_components_and_their_names_at_the_limit_and_one_past(tmp_path):
    many = [_Named(f"c{i}") for i in range(limits.JOURNAL_SECTIONS_MAX)]
    Storage.open(tmp_path / "a", many).close()
    with pytest.raises(ValueError):
        Storage.open(tmp_path / "b", many + [_Named("one-more")])
    Storage.open(tmp_path / "c", [_Named("n" * limits.JOURNAL_SECTION_NAME_BYTES_MAX)]).close()
    with pytest.raises(ValueError):
        Storage.open(tmp_path / "d", [_Named("n" * (limits.JOURNAL_SECTION_NAME_BYTES_MAX + 1))])
    with pytest.raises(ValueError):
        Storage.open(tmp_path / "e", [_Named("twice"), _Named("twice")])


def test_a_journal_record_with_too_many_sections_is_refused():
    sections = [[f"c{i}", b""] for i in range(limits.JOURNAL_SECTIONS_MAX)]
    assert len(storage.decode_record(msgpack.packb(sections))) == limits.JOURNAL_SECTIONS_MAX
    with pytest.raises(StorageError):
        storage.decode_record(msgpack.packb(sections + [["more", b""]]))
    with pytest.raises(StorageError):
        storage.decode_record(b"\xc1 not msgpack")


def test_a_batch_journal_past_the_record_limit_is_refused_before_writing(tmp_path):
    class Huge:
        name = "huge"

        def take_journal(self):
            return b"\x00" * limits.JOURNAL_RECORD_BYTES_MAX

        def apply_journal(self, blob):
            raise AssertionError("never written, never replayed")

        def reset(self):
            pass

    with Storage.open(tmp_path, [Huge()], durability="os") as store:
        with pytest.raises(StorageError):
            store.commit()
        assert store.sequence == 0


def _switch(*args):
    return subprocess.run([sys.executable, "-m", "switch", "ledger", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_ledger_check_passes_on_a_sound_directory_and_backup_works_beside_a_holder(impl, tmp_path):
    ledger = impl.Ledger()
    with Storage.open(tmp_path / "data", [ledger]) as store:
        _fill(ledger, store=store)
        backed_up = _switch("backup", "--data", str(tmp_path / "data"), str(tmp_path / "copy"))
        assert backed_up.returncode == 0, backed_up.stderr
    result = _switch("check", "--data", str(tmp_path / "copy"), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["accounts"] == 5 and report["transfers"] == 60 and report["violations"] == []
    assert report["ledgers"][0]["debits_posted"] == report["ledgers"][0]["credits_posted"] > 0
    listing = _switch("accounts", "--data", str(tmp_path / "data"), "--json")
    assert [row["id"] for row in json.loads(listing.stdout)] == [1, 2, 3, 4, 5]
    listing = _switch("transfers", "--data", str(tmp_path / "data"), "--limit", "2")
    assert listing.returncode == 0 and len(listing.stdout.splitlines()) == 3


def test_ledger_check_reports_a_checkpoint_that_replay_does_not_reproduce(impl, tmp_path):
    ledger = impl.Ledger()
    with Storage.open(tmp_path, [ledger]) as store:
        _fill(ledger, store=store)
    env = lmdb.open(str(tmp_path), max_dbs=storage.DATABASES_MAX)
    checkpoints = env.open_db(b"checkpoint")
    with env.begin(write=True, db=checkpoints) as txn:
        value = bytearray(txn.get(b"ledger"))
        value[-1] ^= 1                       # one account's credits_posted changes by 2^56
        txn.put(b"ledger", bytes(value))
    env.close()
    report = run_check(str(tmp_path))
    assert not report["ok"]
    assert any("differs from the stored checkpoint" in v for v in report["violations"])
    assert _switch("check", "--data", str(tmp_path), "--json").returncode == 1


def test_ledger_check_on_a_missing_directory_fails_cleanly(tmp_path):
    result = _switch("check", "--data", str(tmp_path / "nothing"), "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["ok"] is False
