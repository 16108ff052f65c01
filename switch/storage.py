"""Durable storage of the switch's state: an append-only LMDB journal of journaled components.

Layout (one LMDB environment per data directory):

* ``journal``: key = big-endian u64 batch sequence (1, 2, ...), value = msgpack
  array of ``[component name, effects blob]`` for every component that changed
  in that batch.  Keys only ever grow, so each commit appends to the right edge
  of the B-tree and copies a handful of pages (PERF_NOTES: ~250k payments/s at
  8,000 per durable commit, against ~31k/s for balances kept as LMDB records).
* ``checkpoint``: key = component name, value = big-endian u64 sequence + the
  component's ``checkpoint()`` bytes (for the ledger: every account with its
  balances) as of that sequence.  Written in the same transaction as a batch,
  every ``checkpoint_interval_batches`` batches and on close, so ``switch ledger
  check`` can replay the journal up to it and compare.
* ``meta``: ``format`` = the layout version.

Balances live in memory in the components; opening replays the whole journal
through ``apply_journal``, which makes recovery exact: a batch is either in one
committed LMDB transaction or absent.

A component is any object with ``name``, ``take_journal() -> bytes | None``,
``apply_journal(blob)``, ``state_hash() -> bytes`` and ``reset()`` (clear to
empty, for ``reload``); ``checkpoint() -> bytes`` is optional.
"""
from __future__ import annotations

import fcntl
import os
import pathlib
import struct
from typing import NamedTuple

import lmdb
import msgpack

from core_ext import limits
from core_ext.codes import Code

FORMAT_VERSION = b"1"
LOCK_FILE_NAME = "switch.lock"
DATABASES_MAX = 4
DURABILITIES = ("fsync", "os")
_SEQUENCE = struct.Struct(">Q")


class StorageError(Exception):
    """A commit or open failed; a failed commit left the LMDB unchanged (answer STORAGE_FAILED)."""

    code = Code.STORAGE_FAILED


class StorageLocked(StorageError):
    """Another process holds this data directory."""


def encode_sequence(sequence: int) -> bytes:
    return _SEQUENCE.pack(sequence)


def decode_sequence(key: bytes) -> int:
    return _SEQUENCE.unpack(key)[0]


def decode_record(value: bytes) -> list[tuple[str, bytes]]:
    """A journal value as [(component name, blob)], refusing anything past the limits."""
    if len(value) > limits.JOURNAL_RECORD_BYTES_MAX:
        raise StorageError(f"journal record of {len(value)} bytes is past journal_record_bytes_max")
    try:
        sections = msgpack.unpackb(
            value, raw=False, max_bin_len=limits.JOURNAL_RECORD_BYTES_MAX,
            max_str_len=limits.JOURNAL_SECTION_NAME_BYTES_MAX, max_array_len=limits.JOURNAL_SECTIONS_MAX,
            max_map_len=0, max_ext_len=0)
    except (ValueError, msgpack.UnpackException) as error:
        raise StorageError(f"journal record cannot be decoded: {error}") from error
    if not isinstance(sections, list) or not all(
            isinstance(s, list) and len(s) == 2 and isinstance(s[0], str) and isinstance(s[1], bytes)
            for s in sections):
        raise StorageError("journal record is not a list of [name, bytes] sections")
    return [(name, blob) for name, blob in sections]


def open_environment(path: str | os.PathLike, *, readonly: bool, durability: str = "fsync",
                     map_bytes: int = limits.MAP_BYTES_INITIAL) -> lmdb.Environment:
    if durability not in DURABILITIES:
        raise ValueError(f"durability must be one of {DURABILITIES}, not {durability!r}")
    if readonly and not (pathlib.Path(path) / "data.mdb").exists():
        raise StorageError(f"{path}: no switch data here (data.mdb missing)")
    return lmdb.open(
        str(path), map_size=map_bytes, max_dbs=DATABASES_MAX, readonly=readonly, create=not readonly,
        subdir=True, lock=True, readahead=False, meminit=False,
        # fsync: acknowledged means on disk.  os: in the page cache -- survives a process
        # crash, not a power cut (LMDB then skips both of its flushes).
        sync=durability == "fsync", metasync=durability == "fsync")


def iterate_journal(env: lmdb.Environment, after_sequence: int = 0, upto_sequence: int | None = None):
    """(sequence, [(name, blob)]) for each stored batch, in order."""
    journal = env.open_db(b"journal", create=False)
    try:
        txn = env.begin(db=journal, buffers=False)
    except lmdb.MapResizedError:
        env.set_mapsize(0)                      # the writer grew the map: adopt its size
        txn = env.begin(db=journal, buffers=False)
    with txn:
        cursor = txn.cursor()
        if not cursor.set_range(encode_sequence(after_sequence + 1)):
            return
        for key, value in cursor:
            sequence = decode_sequence(key)
            if upto_sequence is not None and sequence > upto_sequence:
                return
            yield sequence, decode_record(value)


def read_checkpoint(env: lmdb.Environment, name: str) -> tuple[int, bytes] | None:
    """(sequence, checkpoint bytes) stored for a component, or None."""
    checkpoints = env.open_db(b"checkpoint", create=False)
    with env.begin(db=checkpoints) as txn:
        value = txn.get(name.encode())
    if value is None:
        return None
    return decode_sequence(value[:8]), bytes(value[8:])


def backup(data_dir: str | os.PathLike, target_dir: str | os.PathLike) -> None:
    """A consistent copy of a data directory, safe while a server holds it (LMDB's own copy)."""
    target = pathlib.Path(target_dir)
    target.mkdir(parents=True, exist_ok=True)
    if any(target.iterdir()):
        raise StorageError(f"{target}: backup target must be empty")
    env = open_environment(data_dir, readonly=True)
    try:
        env.copy(str(target), compact=True)
    finally:
        env.close()


class PreparedCommit(NamedTuple):
    """A batch's journal record and its checkpoints, ready for Storage.write."""
    sequence: int
    value: bytes
    checkpoints: list
    checkpoint_due: bool


class Storage:
    """The LMDB environment of one data directory and the components journaled into it."""

    def __init__(self, path: pathlib.Path, components: list, durability: str, map_bytes_max: int,
                 checkpoint_interval_batches: int, lock_file, env: lmdb.Environment):
        self.path = path
        self.components = list(components)
        self.durability = durability
        self.map_bytes_max = map_bytes_max
        self.checkpoint_interval_batches = checkpoint_interval_batches
        self._lock_file = lock_file
        self.env = env
        self._journal = env.open_db(b"journal")
        self._checkpoints = env.open_db(b"checkpoint")
        self._meta = env.open_db(b"meta")
        self.sequence = 0                       # the last committed batch
        self.checkpoint_sequence = 0            # the batch the stored checkpoints reflect
        # The same two as of the last prepare(): ahead of them while prepared records wait to be written.
        self.prepared_sequence = 0
        self.prepared_checkpoint_sequence = 0

    @classmethod
    def open(cls, path: str | os.PathLike, components: list, durability: str = "fsync", *,
             map_bytes_initial: int = limits.MAP_BYTES_INITIAL, map_bytes_max: int = limits.MAP_BYTES_MAX,
             checkpoint_interval_batches: int = limits.CHECKPOINT_INTERVAL_BATCHES) -> "Storage":
        """Open (creating if needed) a data directory and replay its journal into `components`.

        Raises StorageLocked when another process holds the directory."""
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {DURABILITIES}, not {durability!r}")
        if not 0 < map_bytes_initial <= map_bytes_max <= limits.MAP_BYTES_MAX:
            raise ValueError(f"need 0 < map_bytes_initial <= map_bytes_max <= {limits.MAP_BYTES_MAX}")
        if not 0 < checkpoint_interval_batches <= limits.CHECKPOINT_INTERVAL_BATCHES:
            raise ValueError(f"checkpoint_interval_batches must be 1..{limits.CHECKPOINT_INTERVAL_BATCHES}")
        names = [component.name for component in components]
        if len(set(names)) != len(names) or len(names) > limits.JOURNAL_SECTIONS_MAX:
            raise ValueError(f"need at most {limits.JOURNAL_SECTIONS_MAX} components, uniquely named: {names}")
        if any(len(name.encode()) > limits.JOURNAL_SECTION_NAME_BYTES_MAX for name in names):
            raise ValueError(f"component names are at most {limits.JOURNAL_SECTION_NAME_BYTES_MAX} bytes")
        directory = pathlib.Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        lock_file = _lock(directory)
        try:
            env = open_environment(directory, readonly=False, durability=durability, map_bytes=map_bytes_initial)
        except Exception:
            lock_file.close()
            raise
        storage = cls(directory, components, durability, map_bytes_max, checkpoint_interval_batches, lock_file, env)
        try:
            storage._check_format()
            storage.reload()
        except Exception:
            storage.close(checkpoint=False)
            raise
        return storage

    def _check_format(self) -> None:
        with self.env.begin(write=True, db=self._meta) as txn:
            stored = txn.get(b"format")
            if stored is None:
                txn.put(b"format", FORMAT_VERSION)
            elif stored != FORMAT_VERSION:
                raise StorageError(f"{self.path}: data format {stored!r}, this switch reads {FORMAT_VERSION!r}")

    def reload(self) -> None:
        """Rebuild every component from disk: after a failed commit, memory matches the disk again."""
        by_name = {component.name: component for component in self.components}
        for component in self.components:
            component.reset()
        self.sequence = 0
        for sequence, sections in iterate_journal(self.env):
            if sequence != self.sequence + 1:
                raise StorageError(f"{self.path}: journal jumps from batch {self.sequence} to {sequence}")
            for name, blob in sections:
                component = by_name.get(name)
                if component is None:
                    raise StorageError(f"{self.path}: batch {sequence} has a '{name}' section and no such component")
                try:
                    component.apply_journal(blob)
                except ValueError as error:
                    raise StorageError(f"{self.path}: batch {sequence} cannot be replayed: {error}") from error
            self.sequence = sequence
        for component in self.components:
            component.take_journal()            # replay is not news: nothing to write back
        stored = [read_checkpoint(self.env, component.name) for component in self.components
                  if hasattr(component, "checkpoint")]
        self.checkpoint_sequence = min((found[0] if found else 0) for found in stored) if stored else self.sequence
        self.prepared_sequence, self.prepared_checkpoint_sequence = self.sequence, self.checkpoint_sequence

    def commit(self) -> int | None:
        """Write the effects of the batch just processed in ONE write transaction.

        Returns the batch's sequence, or None when no component changed.  Raises
        StorageError when the write failed: the LMDB is unchanged, and the
        components are ahead of it until the caller calls reload()."""
        return self.write(self.prepare())

    def prepare(self) -> PreparedCommit | None:
        """commit()'s first half, in memory only: the journal record of the batch just processed
        (and the checkpoints due with it), taken from the components; None when nothing changed.
        Records are written in the order they were prepared, so the next batch may run (and
        prepare) while this one is written; a write that fails leaves reload() to the caller."""
        sections = []
        for component in self.components:
            blob = component.take_journal()
            if blob:
                sections.append((component.name, blob))
        if not sections:
            return None
        value = msgpack.packb(sections, use_bin_type=True)
        if len(value) > limits.JOURNAL_RECORD_BYTES_MAX:
            raise StorageError(f"batch journal of {len(value)} bytes is past journal_record_bytes_max")
        sequence = self.prepared_sequence + 1
        # The first batch is checkpointed too, so `ledger check` has balances to compare from the start.
        checkpoint_due = (self.prepared_checkpoint_sequence == 0
                          or sequence - self.prepared_checkpoint_sequence >= self.checkpoint_interval_batches)
        checkpoints = self._checkpoints_now() if checkpoint_due else []
        self.prepared_sequence = sequence
        if checkpoint_due:
            self.prepared_checkpoint_sequence = sequence
        return PreparedCommit(sequence, value, checkpoints, checkpoint_due)

    def write(self, prepared: PreparedCommit | None) -> int | None:
        """commit()'s second half: one write transaction (no component is touched, so it may run
        in another thread than the one processing the next batch).  Returns the sequence or None."""
        if prepared is None:
            return None
        self._write(prepared.sequence, prepared.value, prepared.checkpoints)
        self.sequence = prepared.sequence
        if prepared.checkpoint_due:
            self.checkpoint_sequence = prepared.sequence
        return prepared.sequence

    def _checkpoints_now(self) -> list[tuple[bytes, bytes]]:
        return [(component.name.encode(), component.checkpoint())
                for component in self.components if hasattr(component, "checkpoint")]

    def _write(self, sequence: int, value: bytes | None, checkpoints: list[tuple[bytes, bytes]]) -> None:
        """One write transaction; on a full map, grow it and write the same content again."""
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    if value is not None and not txn.put(encode_sequence(sequence), value, db=self._journal,
                                                         append=True, overwrite=False):
                        raise StorageError(f"batch {sequence} is already in the journal")
                    for name, blob in checkpoints:
                        txn.put(name, encode_sequence(sequence) + blob, db=self._checkpoints)
                return
            except lmdb.MapFullError:
                self._grow_map()
            except lmdb.MapResizedError:
                self.env.set_mapsize(0)         # another process grew the map: adopt its size
            except lmdb.Error as error:
                raise StorageError(f"{self.path}: commit of batch {sequence} failed: {error}") from error

    def _grow_map(self) -> None:
        size = self.env.info()["map_size"]
        if size >= self.map_bytes_max:
            raise StorageError(f"{self.path}: the map is full at map_bytes_max ({self.map_bytes_max} bytes)")
        self.env.set_mapsize(min(size * 2, self.map_bytes_max))

    @property
    def map_bytes(self) -> int:
        return self.env.info()["map_size"]

    def checkpoint(self) -> None:
        """Store every component's checkpoint as of the last committed batch."""
        checkpoints = self._checkpoints_now()
        if checkpoints and self.sequence:
            self._write(self.sequence, None, checkpoints)
        self.checkpoint_sequence = self.prepared_checkpoint_sequence = self.sequence

    def backup(self, target_dir: str | os.PathLike) -> None:
        backup(self.path, target_dir)

    def close(self, checkpoint: bool = True) -> None:
        """Checkpoint (unless told not to), flush and release the directory."""
        if self.env is None:
            return
        try:
            if checkpoint and self.checkpoint_sequence != self.sequence:
                self.checkpoint()
            self.env.sync(True)
        finally:
            self.env.close()
            self.env = None
            self._lock_file.close()

    def __enter__(self) -> "Storage":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _lock(directory: pathlib.Path):
    """An exclusive flock on the data directory: two switches on one ledger would fork it."""
    lock_file = open(directory / LOCK_FILE_NAME, "a+b")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        raise StorageLocked(f"{directory}: another process holds this data directory") from None
    return lock_file
