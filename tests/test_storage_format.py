"""The journal's format 2: a checksum per record, what a damaged record does, and format-1 directories.

A flipped byte, a truncated value or a record stored under another sequence must
refuse the open with JOURNAL_CORRUPT naming the batch, and `switch ledger check`
must report the same batch.  A format-1 directory (records without checksums)
is read as it is and upgraded in place on the first writable open.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import lmdb
import msgpack
import pytest

from core_ext.codes import Code
from core_ext.types import Account, Transfer
from switch import storage
from switch.commands.ledger import run_check
from switch.storage import FormatUnsupported, JournalCorrupt, Storage

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOW_NS = 1_700_000_000 * 10**9
BATCHES = 4                                   # one of accounts, three of transfers


def _batches(ledger):
    """Apply the test's batches one by one, yielding after each (the caller commits or journals it)."""
    assert ledger.create_accounts([Account(i, 356, 1) for i in range(1, 6)], NOW_NS) == [0] * 5
    yield
    for b in range(BATCHES - 1):
        transfers = [Transfer(100 * b + i + 1, 1 + i % 5, 1 + (i + 1) % 5, 10 + i, 356, 1) for i in range(20)]
        assert ledger.create_transfers(transfers, NOW_NS + b) == [0] * 20
        yield


def _filled(impl, path) -> bytes:
    """A format-2 directory holding the test's batches; the ledger's state hash."""
    ledger = impl.Ledger()
    with Storage.open(path, [ledger], durability="os") as store:
        for _ in _batches(ledger):
            store.commit()
    return ledger.state_hash()


def _raw_env(path) -> lmdb.Environment:
    return lmdb.open(str(path), max_dbs=storage.DATABASES_MAX)


def _rewrite_record(path, sequence: int, change) -> None:
    """Replace the stored journal value of `sequence` by change(value), as bit rot or a bad restore would."""
    env = _raw_env(path)
    journal = env.open_db(b"journal")
    with env.begin(write=True, db=journal) as txn:
        txn.put(storage.encode_sequence(sequence), change(bytes(txn.get(storage.encode_sequence(sequence)))))
    env.close()


def _flip_middle_byte(value: bytes) -> bytes:
    damaged = bytearray(value)
    damaged[len(value) // 2] ^= 0x10
    return bytes(damaged)


def _switch_check(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "switch", "ledger", "check", "--data", str(path), "--json"],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_records_carry_a_checksum_over_key_and_payload(impl, tmp_path):
    _filled(impl, tmp_path)
    env = storage.open_environment(tmp_path, readonly=True)
    with env.begin(db=env.open_db(b"journal", create=False)) as txn:
        first = bytes(txn.get(storage.encode_sequence(1)))
    assert [name for name, _ in storage.decode_record(storage.verify_record(1, first))] == ["ledger"]
    with pytest.raises(JournalCorrupt):
        storage.verify_record(2, first)       # the same bytes under another key
    env.close()


@pytest.mark.parametrize("damage, detail", [
    (_flip_middle_byte, "checksum"),
    (lambda value: value[:len(value) // 2], "checksum"),     # torn: the tail of the value is gone
    (lambda value: value[:3], "too short"),                  # not even a whole checksum left
    (lambda value: value[:4] + msgpack.packb([["ledger", b""]]), "checksum"),
])
def test_a_damaged_record_refuses_the_open_and_ledger_check_names_its_batch(impl, tmp_path, damage, detail):
    _filled(impl, tmp_path)
    _rewrite_record(tmp_path, 3, damage)
    with pytest.raises(JournalCorrupt, match=detail) as refused:
        Storage.open(tmp_path, [impl.Ledger()])
    assert refused.value.sequence == 3 and refused.value.code == Code.JOURNAL_CORRUPT == 606
    assert "batch 3" in str(refused.value)
    report = run_check(str(tmp_path))
    assert not report["ok"] and report["corrupt_batch"] == 3 and report["batches"] == 2
    assert any("JOURNAL_CORRUPT" in violation for violation in report["violations"])
    result = _switch_check(tmp_path)
    assert result.returncode == 1 and json.loads(result.stdout)["corrupt_batch"] == 3


def test_a_record_copied_under_the_next_sequence_is_detected(impl, tmp_path):
    _filled(impl, tmp_path)
    env = _raw_env(tmp_path)
    journal = env.open_db(b"journal")
    with env.begin(write=True, db=journal) as txn:
        txn.put(storage.encode_sequence(BATCHES + 1), bytes(txn.get(storage.encode_sequence(BATCHES))))
    env.close()
    with pytest.raises(JournalCorrupt) as refused:
        Storage.open(tmp_path, [impl.Ledger()])
    assert refused.value.sequence == BATCHES + 1


def _format_1_directory(impl, path) -> bytes:
    """A directory as a format-1 switch wrote it: plain msgpack records, meta format b"1"."""
    ledger = impl.Ledger()
    env = _raw_env(path)
    journal, meta = env.open_db(b"journal"), env.open_db(b"meta")
    env.open_db(b"checkpoint")
    with env.begin(write=True) as txn:
        txn.put(b"format", storage.FORMAT_UNCHECKSUMMED, db=meta)
        for sequence, _ in enumerate(_batches(ledger), start=1):
            payload = msgpack.packb([["ledger", ledger.take_journal()]], use_bin_type=True)
            txn.put(storage.encode_sequence(sequence), payload, db=journal)
    env.close()
    return ledger.state_hash()


def _meta(path) -> dict:
    env = storage.open_environment(path, readonly=True)
    with env.begin(db=env.open_db(b"meta", create=False)) as txn:
        found = {bytes(key): bytes(value) for key, value in txn.cursor()}
    env.close()
    return found


def test_a_format_1_directory_is_read_and_upgraded_in_place(impl, tmp_path):
    expected = _format_1_directory(impl, tmp_path)
    assert run_check(str(tmp_path))["ok"]                  # read-only: read as it is, left format 1
    assert _meta(tmp_path) == {b"format": b"1"}
    ledger = impl.Ledger()
    with Storage.open(tmp_path, [ledger]) as store:
        assert ledger.state_hash() == expected and store.sequence == BATCHES
        assert ledger.create_transfers([Transfer(10**6, 1, 2, 7, 356, 1)], NOW_NS + 99) == [0]
        assert store.commit() == BATCHES + 1
        expected = ledger.state_hash()
    assert _meta(tmp_path) == {b"format": b"2", b"checksummed_from": storage.encode_sequence(BATCHES + 1)}
    reopened = impl.Ledger()
    with Storage.open(tmp_path, [reopened]):
        assert reopened.state_hash() == expected
    assert run_check(str(tmp_path))["ok"]
    _rewrite_record(tmp_path, BATCHES + 1, _flip_middle_byte)   # records after the upgrade are checked
    with pytest.raises(JournalCorrupt):
        Storage.open(tmp_path, [impl.Ledger()])


def _set_meta(path, **entries) -> None:
    env = _raw_env(path)
    meta = env.open_db(b"meta")
    with env.begin(write=True, db=meta) as txn:
        for key, value in entries.items():
            if value is None:
                txn.delete(key.encode())
            else:
                txn.put(key.encode(), value)
    env.close()


def test_an_unknown_format_is_refused_with_its_code_and_left_unchanged(impl, tmp_path):
    _filled(impl, tmp_path)
    _set_meta(tmp_path, format=b"3")
    with pytest.raises(FormatUnsupported, match="STORAGE_FORMAT_UNSUPPORTED") as refused:
        Storage.open(tmp_path, [impl.Ledger()])
    assert refused.value.code == Code.STORAGE_FORMAT_UNSUPPORTED == 607
    assert _meta(tmp_path)[b"format"] == b"3"
    assert not run_check(str(tmp_path))["ok"]


def test_format_2_without_its_checksummed_from_entry_is_refused(impl, tmp_path):
    _filled(impl, tmp_path)
    _set_meta(tmp_path, checksummed_from=None)
    with pytest.raises(FormatUnsupported):
        Storage.open(tmp_path, [impl.Ledger()])
