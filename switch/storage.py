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
* ``meta``: ``format`` = the layout version (``2``), and ``checksummed_from`` = big-endian
  u64, the first batch whose record carries a checksum (1 for a directory created as
  format 2; the batch after the last format-1 record for an upgraded one).

A format-2 journal value is a 4-byte big-endian CRC-32 of (key + payload), then the
msgpack payload.  Covering the key too means a record restored under the wrong
sequence fails its check like a flipped or torn one.  Replay verifies every checksum
and refuses to open on a mismatch (JournalCorrupt, code JOURNAL_CORRUPT, naming the
batch): replaying a damaged record would silently fork the balances.  A format-1
directory (no checksums) is read as it is and upgraded in place when a switch opens
it for writing: its old records stay unchecked, every later one is checked.

* ``snapshot``: key = big-endian u64 sequence S, value = checksum + msgpack manifest
  ``[S, [[component name, kind, bytes, chunks], ...]]``; ``snapshot_chunk``: key = S +
  big-endian u32 chunk index, value = checksum + at most ``snapshot_chunk_bytes_max``
  bytes.  Each section has chunks of its own, numbered on from the previous section's.
  Kind ``state`` is a component's ``snapshot()`` (restored with ``restore(bytes)``);
  kind ``journal`` is a msgpack list of every journal blob of a component that has no
  snapshot of its own (re-applied with ``apply_journal``, as replay would).
  ``compact()`` writes a snapshot as of the last batch, deletes the journal up to it and
  every older snapshot, and checkpoints, all in ONE write transaction: a crash leaves
  either the old directory or the compacted one, never a mix.

Balances live in memory in the components; opening loads the newest snapshot (if
any) and replays the journal after it through ``apply_journal``, which makes
recovery exact: a batch is either in one committed LMDB transaction or absent.

A component is any object with ``name``, ``take_journal() -> bytes | None``,
``apply_journal(blob)``, ``state_hash() -> bytes`` and ``reset()`` (clear to
empty, for ``reload``); ``checkpoint() -> bytes`` is optional, and so are
``snapshot() -> bytes`` with ``restore(bytes)`` (a component without them can only be
compacted offline, where a JournalCarrier stands in for it).
"""
from __future__ import annotations

import fcntl
import os
import pathlib
import struct
import zlib
from typing import NamedTuple

import lmdb
import msgpack

from core_ext import limits
from core_ext.codes import Code

FORMAT_VERSION = b"2"
FORMAT_UNCHECKSUMMED = b"1"                 # read and upgraded in place; see the module docstring
READABLE_FORMATS = (FORMAT_UNCHECKSUMMED, FORMAT_VERSION)
LOCK_FILE_NAME = "switch.lock"
DATABASES_MAX = 6
DURABILITIES = ("fsync", "os")
_SEQUENCE = struct.Struct(">Q")
_CHECKSUM = struct.Struct(">I")
_CHUNK_INDEX = struct.Struct(">I")
SNAPSHOT_STATE = "state"
SNAPSHOT_JOURNAL = "journal"


class StorageError(Exception):
    """A commit or open failed; a failed commit left the LMDB unchanged (answer STORAGE_FAILED)."""

    code = Code.STORAGE_FAILED


class StorageLocked(StorageError):
    """Another process holds this data directory."""


class DataCorrupt(StorageError):
    """Stored data fails its check: the directory is refused, naming the batch and what to do."""

    part = "stored data of batch {sequence}"

    def __init__(self, sequence: int, detail: str) -> None:
        super().__init__(f"{self.code.name} ({int(self.code)}): {self.part.format(sequence=sequence)} is corrupt: "
                         f"{detail}; restore the directory from a backup (docs/OPERATIONS.md)")
        self.sequence = sequence


class JournalCorrupt(DataCorrupt):
    """A journal record fails its checksum (or is too short to hold one)."""

    code = Code.JOURNAL_CORRUPT
    part = "journal record of batch {sequence}"


class SnapshotCorrupt(DataCorrupt):
    """The newest snapshot fails a checksum, misses a chunk, or does not restore."""

    code = Code.SNAPSHOT_CORRUPT
    part = "the snapshot of batch {sequence}"


class FormatUnsupported(StorageError):
    """The data directory's layout version is not one this switch reads."""

    code = Code.STORAGE_FORMAT_UNSUPPORTED


def encode_sequence(sequence: int) -> bytes:
    return _SEQUENCE.pack(sequence)


def decode_sequence(key: bytes) -> int:
    return _SEQUENCE.unpack(key)[0]


def _checksum(key: bytes, payload) -> int:
    return zlib.crc32(payload, zlib.crc32(key))


def checksummed(key: bytes, payload: bytes) -> bytes:
    return _CHECKSUM.pack(_checksum(key, payload)) + payload


def encode_record(sequence: int, payload: bytes) -> bytes:
    """The stored journal value of a batch: its checksum, then its msgpack payload."""
    return checksummed(encode_sequence(sequence), payload)


def _verified(key: bytes, value: bytes) -> tuple[memoryview | None, str]:
    """(payload, "") when the value's checksum matches, else (None, what is wrong)."""
    if len(value) < _CHECKSUM.size:
        return None, f"{len(value)} bytes, too short to hold a checksum (truncated)"
    payload = memoryview(value)[_CHECKSUM.size:]
    stored, = _CHECKSUM.unpack_from(value)
    computed = _checksum(key, payload)
    if stored != computed:
        return None, f"stored checksum {stored:08x}, computed {computed:08x} over {len(payload)} bytes"
    return payload, ""


def verify_record(sequence: int, value: bytes) -> memoryview:
    """The payload of a stored journal value; JournalCorrupt when its checksum does not match."""
    payload, problem = _verified(encode_sequence(sequence), value)
    if payload is None:
        raise JournalCorrupt(sequence, problem)
    return payload


def decode_record(value) -> list[tuple[str, bytes]]:
    """A journal payload as [(component name, blob)], refusing anything past the limits."""
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


def read_format(txn: lmdb.Transaction, meta) -> tuple[bytes | None, int]:
    """(layout version or None for a new directory, first checksummed batch) as stored in ``meta``."""
    stored = txn.get(b"format", db=meta)
    if stored is not None and stored not in READABLE_FORMATS:
        raise FormatUnsupported(f"STORAGE_FORMAT_UNSUPPORTED ({int(Code.STORAGE_FORMAT_UNSUPPORTED)}): data format "
                                f"{stored!r}, this switch reads {b', '.join(READABLE_FORMATS)!r}")
    checksummed_from = txn.get(b"checksummed_from", db=meta)
    if stored == FORMAT_VERSION and checksummed_from is None:
        raise FormatUnsupported(f"data format {stored!r} without its checksummed_from entry")
    if stored == FORMAT_VERSION:
        return stored, decode_sequence(checksummed_from)
    return stored, 2**64 - 1                     # format 1 (or nothing yet): no record is checksummed


def _begin_read(env: lmdb.Environment, db=None) -> lmdb.Transaction:
    try:
        return env.begin(db=db, buffers=False)
    except lmdb.MapResizedError:
        env.set_mapsize(0)                      # the writer grew the map: adopt its size
        return env.begin(db=db, buffers=False)


def iterate_journal(env: lmdb.Environment, after_sequence: int = 0, upto_sequence: int | None = None):
    """(sequence, [(name, blob)]) for each stored batch, in order, every checksum verified."""
    journal = env.open_db(b"journal", create=False)
    meta = env.open_db(b"meta", create=False)
    with _begin_read(env, journal) as txn:
        _, checksummed_from = read_format(txn, meta)
        cursor = txn.cursor()
        if not cursor.set_range(encode_sequence(after_sequence + 1)):
            return
        for key, value in cursor:
            sequence = decode_sequence(key)
            if upto_sequence is not None and sequence > upto_sequence:
                return
            payload = verify_record(sequence, value) if sequence >= checksummed_from else value
            yield sequence, decode_record(payload)


def iterate_stored_sections(env: lmdb.Environment):
    """What iterate_journal yields, preceded by the newest snapshot's carried journal blobs as one
    batch at its sequence: every journal section a compaction kept, for readers of component
    journals (e.g. the audit log) whose component has no snapshot of its own."""
    found = read_snapshot(env, wanted=lambda name, kind: kind == SNAPSHOT_JOURNAL)
    after_sequence = 0
    if found is not None:
        after_sequence, sections = found
        yield after_sequence, [(name, blob) for name, _, data in sections for blob in carried_blobs(data)]
    yield from iterate_journal(env, after_sequence=after_sequence)


# ---- snapshots -----------------------------------------------------------------------------

def _snapshot_key(sequence: int) -> bytes:
    return encode_sequence(sequence)


def _chunk_key(sequence: int, index: int) -> bytes:
    return encode_sequence(sequence) + _CHUNK_INDEX.pack(index)


def _snapshot_databases(env: lmdb.Environment):
    """(manifests, chunks), or None in a directory that has never had them (format 1, read-only)."""
    try:
        return env.open_db(b"snapshot", create=False), env.open_db(b"snapshot_chunk", create=False)
    except lmdb.NotFoundError:
        return None


def read_snapshot(env: lmdb.Environment, wanted=None) -> tuple[int, list[tuple[str, str, bytes]]] | None:
    """The newest snapshot as (sequence, [(component name, kind, bytes)]), the chunks of every section
    read verified; None when the directory has none.  `wanted(name, kind)` picks the sections to read
    (default: all), so a reader of one small section never loads the ledger's.  SnapshotCorrupt when
    any part read fails its check."""
    databases = _snapshot_databases(env)
    if databases is None:
        return None
    manifests, chunks = databases
    with _begin_read(env) as txn:
        with txn.cursor(db=manifests) as cursor:
            if not cursor.last():
                return None
            key, value = cursor.item()
        sequence = decode_sequence(key)
        found, first_chunk = [], 0
        for name, kind, length, chunk_count in _decode_manifest(sequence, value):
            if wanted is None or wanted(name, kind):
                data = b"".join(_read_chunk(txn, chunks, sequence, index)
                                for index in range(first_chunk, first_chunk + chunk_count))
                if len(data) != length:
                    raise SnapshotCorrupt(sequence, f"its '{name}' section holds {len(data)} bytes, "
                                                    f"the manifest counts {length}")
                found.append((name, kind, data))
            first_chunk += chunk_count
    return sequence, found


def _decode_manifest(sequence: int, value: bytes) -> list[tuple[str, str, int, int]]:
    """[(name, kind, bytes, chunks)] of a snapshot's manifest, checked."""
    payload, problem = _verified(_snapshot_key(sequence), value)
    if payload is None:
        raise SnapshotCorrupt(sequence, f"its manifest: {problem}")
    try:
        stored_sequence, sections = msgpack.unpackb(
            payload, raw=False, max_str_len=limits.JOURNAL_SECTION_NAME_BYTES_MAX,
            max_array_len=limits.JOURNAL_SECTIONS_MAX, max_map_len=0, max_bin_len=0, max_ext_len=0)
        sections = [(name, kind, length, chunk_count) for name, kind, length, chunk_count in sections]
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise SnapshotCorrupt(sequence, f"its manifest cannot be decoded: {error}") from None
    if stored_sequence != sequence or not all(
            isinstance(name, str) and kind in (SNAPSHOT_STATE, SNAPSHOT_JOURNAL)
            and isinstance(length, int) and isinstance(chunk_count, int) and 0 <= length and 0 <= chunk_count
            for name, kind, length, chunk_count in sections):
        raise SnapshotCorrupt(sequence, "its manifest is not [sequence, [[name, kind, bytes, chunks], ...]]")
    return sections


def _read_chunk(txn: lmdb.Transaction, chunks, sequence: int, index: int) -> memoryview:
    value = txn.get(_chunk_key(sequence, index), db=chunks)
    if value is None:
        raise SnapshotCorrupt(sequence, f"chunk {index} is missing")
    if len(value) > limits.SNAPSHOT_CHUNK_BYTES_MAX + _CHECKSUM.size:
        raise SnapshotCorrupt(sequence, f"chunk {index} of {len(value)} bytes is past snapshot_chunk_bytes_max")
    payload, problem = _verified(_chunk_key(sequence, index), value)
    if payload is None:
        raise SnapshotCorrupt(sequence, f"chunk {index}: {problem}")
    return payload


def _put_snapshot(txn: lmdb.Transaction, manifests, chunks, sequence: int,
                  sections: list[tuple[str, str, bytes]]) -> None:
    """Each section cut into its own chunks of at most snapshot_chunk_bytes_max, then the manifest
    naming every section with its size and chunk count (so one section can be read alone)."""
    index, entries = 0, []
    for name, kind, data in sections:
        view = memoryview(data)
        starts = range(0, len(view), limits.SNAPSHOT_CHUNK_BYTES_MAX)
        for start in starts:
            part = bytes(view[start:start + limits.SNAPSHOT_CHUNK_BYTES_MAX])
            txn.put(_chunk_key(sequence, index), checksummed(_chunk_key(sequence, index), part), db=chunks)
            index += 1
        entries.append([name, kind, len(data), len(starts)])
    manifest = msgpack.packb([sequence, entries])
    txn.put(_snapshot_key(sequence), checksummed(_snapshot_key(sequence), manifest), db=manifests)


def _delete_below(txn: lmdb.Transaction, db, bound: bytes) -> int:
    """Delete every key of `db` that sorts before `bound`; how many were deleted."""
    deleted = 0
    with txn.cursor(db=db) as cursor:
        cursor.first()
        while cursor.key() and cursor.key() < bound:
            cursor.delete()
            deleted += 1
    return deleted


def carried_blobs(data: bytes) -> list[bytes]:
    """The journal blobs of a snapshot section of kind "journal"."""
    blobs = msgpack.unpackb(data, raw=False, max_bin_len=limits.JOURNAL_RECORD_BYTES_MAX,
                            max_array_len=len(data), max_str_len=0, max_map_len=0, max_ext_len=0)
    if not isinstance(blobs, list) or not all(isinstance(blob, bytes) for blob in blobs):
        raise ValueError("a carried journal section is not a list of blobs")
    return blobs


def restore_section(component, sequence: int, kind: str, data: bytes) -> None:
    """Load one snapshot section into a (reset) component; SnapshotCorrupt when it does not restore."""
    try:
        if kind == SNAPSHOT_JOURNAL:
            for blob in carried_blobs(data):
                component.apply_journal(blob)
        elif hasattr(component, "restore"):
            component.restore(data)
        else:
            raise ValueError("the component cannot restore a snapshot")
    except (ValueError, msgpack.UnpackException) as error:
        raise SnapshotCorrupt(sequence, f"its '{component.name}' section does not restore: {error}") from error


class JournalCarrier:
    """Stands in for a component that has no snapshot() (offline compaction): it keeps the
    component's journal blobs as they are, and its snapshot section re-applies them in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._blobs: list[bytes] = []

    def take_journal(self) -> None:
        return None

    def apply_journal(self, blob: bytes) -> None:
        self._blobs.append(bytes(blob))

    def reset(self) -> None:
        self._blobs = []

    def journal_blobs(self) -> list[bytes]:
        return list(self._blobs)


def _snapshot_section(component) -> tuple[str, str, bytes]:
    if hasattr(component, "snapshot"):
        return component.name, SNAPSHOT_STATE, component.snapshot()
    if hasattr(component, "journal_blobs"):
        return component.name, SNAPSHOT_JOURNAL, msgpack.packb(component.journal_blobs(), use_bin_type=True)
    raise StorageError(f"component '{component.name}' has no snapshot(): compact offline (switch ledger compact)")


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
                 checkpoint_interval_batches: int, lock_file, env: lmdb.Environment, carry_unknown: bool = False):
        self.path = path
        self.components = list(components)
        self.carry_unknown = carry_unknown      # sections of no given component get a JournalCarrier
        self.durability = durability
        self.map_bytes_max = map_bytes_max
        self.checkpoint_interval_batches = checkpoint_interval_batches
        self._lock_file = lock_file
        self.env = env
        self._journal = env.open_db(b"journal")
        self._checkpoints = env.open_db(b"checkpoint")
        self._meta = env.open_db(b"meta")
        self._snapshots = env.open_db(b"snapshot")
        self._snapshot_chunks = env.open_db(b"snapshot_chunk")
        self.sequence = 0                       # the last committed batch
        self.snapshot_sequence = 0              # the batch the newest snapshot reflects (0: none)
        self.checkpoint_sequence = 0            # the batch the stored checkpoints reflect
        # The same two as of the last prepare(): ahead of them while prepared records wait to be written.
        self.prepared_sequence = 0
        self.prepared_checkpoint_sequence = 0

    @classmethod
    def open(cls, path: str | os.PathLike, components: list, durability: str = "fsync", *,
             map_bytes_initial: int = limits.MAP_BYTES_INITIAL, map_bytes_max: int = limits.MAP_BYTES_MAX,
             checkpoint_interval_batches: int = limits.CHECKPOINT_INTERVAL_BATCHES,
             carry_unknown: bool = False) -> "Storage":
        """Open (creating if needed) a data directory: load its newest snapshot into `components`
        and replay the journal after it.

        Raises StorageLocked when another process holds the directory.  With carry_unknown, a
        stored section of no given component is kept by a JournalCarrier (offline compaction)."""
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
        storage = cls(directory, components, durability, map_bytes_max, checkpoint_interval_batches, lock_file, env,
                      carry_unknown)
        try:
            storage._check_format()
            storage.reload()
        except Exception:
            storage.close(checkpoint=False)
            raise
        return storage

    def _check_format(self) -> None:
        """Stamp a new directory as format 2; upgrade a format-1 one in place (its records stay unchecked)."""
        with self.env.begin(write=True) as txn:
            stored, _ = read_format(txn, self._meta)
            if stored == FORMAT_VERSION:
                return
            with txn.cursor(db=self._journal) as cursor:
                last_sequence = decode_sequence(cursor.key()) if cursor.last() else 0
            txn.put(b"format", FORMAT_VERSION, db=self._meta)
            txn.put(b"checksummed_from", encode_sequence(last_sequence + 1), db=self._meta)

    def reload(self) -> None:
        """Rebuild every component from disk: after a failed commit, memory matches the disk again."""
        for component in self.components:
            component.reset()
        self.sequence = self.snapshot_sequence = self._restore_snapshot()
        for sequence, sections in iterate_journal(self.env, after_sequence=self.sequence):
            if sequence != self.sequence + 1:
                raise StorageError(f"{self.path}: journal jumps from batch {self.sequence} to {sequence}")
            for name, blob in sections:
                component = self._component(name, f"batch {sequence}")
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

    def _component(self, name: str, where: str):
        """The component a stored section belongs to (a new JournalCarrier when carrying unknown ones)."""
        for component in self.components:
            if component.name == name:
                return component
        if not self.carry_unknown:
            raise StorageError(f"{self.path}: {where} has a '{name}' section and no such component")
        self.components.append(JournalCarrier(name))
        return self.components[-1]

    def _restore_snapshot(self) -> int:
        """Load the newest snapshot into the (reset) components; its sequence, or 0 without one."""
        found = read_snapshot(self.env)
        if found is None:
            return 0
        sequence, sections = found
        for name, kind, data in sections:
            restore_section(self._component(name, f"the snapshot of batch {sequence}"), sequence, kind, data)
        return sequence

    def compact(self) -> int | None:
        """Snapshot every component as of the last batch, then delete the journal up to it and every
        older snapshot, and checkpoint -- in ONE write transaction, so a crash at any moment leaves
        either the directory as it was or the compacted one.  The snapshot's sequence, or None when
        there is nothing to compact (no batch since the last snapshot)."""
        if self.prepared_sequence != self.sequence:
            raise StorageError("compaction with a prepared batch not yet written")
        if self.sequence == self.snapshot_sequence:
            return None
        sequence = self.sequence
        sections = [_snapshot_section(component) for component in self.components]
        checkpoints = self._checkpoints_now()

        def write(txn: lmdb.Transaction) -> None:
            _delete_below(txn, self._snapshot_chunks, _chunk_key(sequence, 0))
            _delete_below(txn, self._snapshots, _snapshot_key(sequence))
            _put_snapshot(txn, self._snapshots, self._snapshot_chunks, sequence, sections)
            _delete_below(txn, self._journal, encode_sequence(sequence + 1))
            for name, blob in checkpoints:
                txn.put(name, encode_sequence(sequence) + blob, db=self._checkpoints)

        self._transaction(f"compaction at batch {sequence}", write)
        self.snapshot_sequence = self.checkpoint_sequence = self.prepared_checkpoint_sequence = sequence
        return sequence

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
        payload = msgpack.packb(sections, use_bin_type=True)
        if len(payload) > limits.JOURNAL_RECORD_BYTES_MAX:
            raise StorageError(f"batch journal of {len(payload)} bytes is past journal_record_bytes_max")
        sequence = self.prepared_sequence + 1
        value = encode_record(sequence, payload)
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
        def write(txn: lmdb.Transaction) -> None:
            if value is not None and not txn.put(encode_sequence(sequence), value, db=self._journal,
                                                 append=True, overwrite=False):
                raise StorageError(f"batch {sequence} is already in the journal")
            for name, blob in checkpoints:
                txn.put(name, encode_sequence(sequence) + blob, db=self._checkpoints)

        self._transaction(f"commit of batch {sequence}", write)

    def _transaction(self, what: str, write) -> None:
        """write(txn) in one write transaction; on a full map, grow it and write the same content again."""
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    write(txn)
                return
            except lmdb.MapFullError:
                self._grow_map()
            except lmdb.MapResizedError:
                self.env.set_mapsize(0)         # another process grew the map: adopt its size
            except lmdb.Error as error:
                raise StorageError(f"{self.path}: {what} failed: {error}") from error

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
