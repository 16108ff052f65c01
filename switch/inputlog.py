"""The input log: every committed batch's decoded requests and clock, for deterministic replay.

`switch serve --input-log FILE` appends one record per committed batch; `switch
replay FILE --data DIR` runs them through a fresh engine and prints the state
hash, which equals the serving switch's when replay is deterministic.  The log
is for reproducing and auditing; the LMDB journal is what makes payments durable.
The log follows the switch's durability: at ``fsync`` each record is fsynced after
its batch committed (so a power cut loses at most the record being written), at
``os`` it is flushed to the page cache; either way a kill may cut its last record.

File: a stream of msgpack objects.

* The header, a map: ``format`` ("switch-input-log"), ``version`` (2; 1 is read too),
  ``config_toml`` (the configuration the switch served with, verbatim),
  ``rules_toml`` (its rule set's file, verbatim, or nil) and
  ``base_state_hash`` (the engine's state hash when logging began).

Beside FILE, the directory FILE.base holds a compact LMDB copy of the data
directory as it was when logging began (after the bootstrap): replay starts
from it, so a log taken on a switch that already held data replays too, and
the timestamps the bootstrap assigned are the logged switch's own.
* One array per committed batch: ``[now_ns, requests, codes]`` where each
  request is ``[participant_id, request_id, op, args, error, events]`` and
  ``codes`` holds the code answered to each request, to check replay against.
* ``["rules", toml_text]`` (version 2) where a SIGHUP reloaded the rule set from its
  file between two batches: replay swaps in the same rule set at the same place.  (A
  ``reload_rules`` request is a request of its batch, logged like any other.)

``args`` are the decoded arguments, written with two msgpack ext types: 1 an
integer past u64 (16 bytes big-endian, e.g. transfer ids), 2 a record of a
known class (``[class name, field values]``).  Only the classes in RECORD_TYPES
can be read back: a log never makes the reader build arbitrary objects.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pathlib
from typing import Any, BinaryIO, Iterator

import msgpack

from core_ext import limits
from core_ext.codes import Code
from core_ext.types import Account, Transfer
from switch import protocol

log = logging.getLogger("switch.inputlog")

FORMAT_NAME = "switch-input-log"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)                  # 1: before rules reload records
RULES_RECORD = "rules"
EXT_BIG_UINT = 1
EXT_RECORD = 2
U64_MAX = 2**64 - 1
U128_BYTES = 16
# What a decoded request's arguments are made of; a new argument type is added here.
RECORD_TYPES: dict[str, type] = {cls.__name__: cls for cls in (
    protocol.PayItem, protocol.PendingItem, protocol.HistoryQuery, protocol.PendingPage, Transfer, Account)}


class InputLogError(ValueError):
    """The file is not an input log this switch can read, or a record cannot be decoded."""


# ---- values ----------------------------------------------------------------------------

def _fields_of(value: Any) -> list:
    if dataclasses.is_dataclass(value):
        return [getattr(value, field.name) for field in dataclasses.fields(value)]
    return list(value)                                       # a NamedTuple


def _default(value: Any) -> Any:
    """strict_types: a NamedTuple or an int enum reaches here instead of passing as its base type."""
    name = type(value).__name__
    if RECORD_TYPES.get(name) is type(value):
        return msgpack.ExtType(EXT_RECORD, pack([name, _fields_of(value)]))
    if isinstance(value, int) and U64_MAX < value < 2**128:
        return msgpack.ExtType(EXT_BIG_UINT, value.to_bytes(U128_BYTES, "big"))
    if isinstance(value, int) and -2**63 <= value <= U64_MAX:
        return int(value)                                    # a code or flag enum
    if type(value) is tuple:
        return list(value)
    raise TypeError(f"the input log cannot hold a {type(value).__qualname__}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EXT_BIG_UINT and len(data) == U128_BYTES:
        return int.from_bytes(data, "big")
    if code == EXT_RECORD:
        name, fields = _unpack_one(data)
        cls = RECORD_TYPES.get(name)
        if cls is None or not isinstance(fields, list):
            raise InputLogError(f"unknown record type {name!r}")
        try:
            return cls(*fields)
        except TypeError as error:
            raise InputLogError(f"a {name} record with the wrong fields: {error}") from None
    raise InputLogError(f"unknown msgpack ext type {code}")


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True, default=_default, strict_types=True)


def _unpack_one(data: bytes) -> Any:
    # Bounded already: it is a part of a record the outer unpacker read within its limit.
    return msgpack.unpackb(data, raw=False, ext_hook=_ext_hook, strict_map_key=True)


# ---- writing -----------------------------------------------------------------------------

def engine_state_hash(engine: Any) -> bytes:
    """One digest of every journaled component's state (ledger, merchants, ...), in storage order."""
    digest = hashlib.sha256()
    for component in engine.storage.components:
        digest.update(component.name.encode() + b"\0" + component.state_hash())
    return digest.digest()


class InputLog:
    """Appends one record per committed batch (Engine.process_batch calls `record`)."""

    def __init__(self, handle: BinaryIO, durability: str = "fsync") -> None:
        self._handle = handle
        self._fsync = durability == "fsync"
        self.batches_written = 0
        self.failed = False

    @classmethod
    def start(cls, path: str, config_toml: str, base_state_hash: bytes, rules_toml: str | None = None,
              durability: str = "fsync") -> "InputLog":
        """A new log (an existing file is refused: two runs in one log could not be replayed)."""
        handle = open(path, "xb")
        header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "config_toml": config_toml,
                  "rules_toml": rules_toml, "base_state_hash": base_state_hash}
        input_log = cls(handle, durability)
        input_log._append(pack(header))
        return input_log

    def _append(self, record: bytes) -> None:
        self._handle.write(record)
        self._handle.flush()
        if self._fsync:
            os.fsync(self._handle.fileno())

    def record(self, now_ns: int, batch: list, outcomes: list) -> None:
        """Append a committed batch; a failure to write stops the log, never the switch."""
        if self.failed:
            return
        try:
            requests = [[participant.id, request.request_id, request.op, request.args,
                         None if request.error is None else int(request.error), request.events]
                        for participant, request in batch]
            self._append(pack([now_ns, requests, [int(outcome[0]) for outcome in outcomes]]))
            self.batches_written += 1
        except (OSError, TypeError, ValueError, OverflowError):
            # The batch is committed and will be answered; only its record is missing.
            log.exception("input log stopped after %d batches: writing batch failed", self.batches_written)
            self.failed = True

    def record_rules(self, toml_text: str) -> None:
        """Append a rule set swapped in between batches (SIGHUP); a failure stops the log, never the switch."""
        if self.failed:
            return
        try:
            self._append(pack([RULES_RECORD, toml_text]))
        except OSError:
            log.exception("input log stopped after %d batches: writing a rules reload failed", self.batches_written)
            self.failed = True

    def close(self) -> None:
        self._handle.close()


# ---- reading -----------------------------------------------------------------------------

@dataclasses.dataclass
class Header:
    config_toml: str
    rules_toml: str | None
    base_state_hash: bytes


@dataclasses.dataclass
class BatchRecord:
    now_ns: int
    requests: list          # [participant_id, request_id, op, args, error, events]
    codes: list[int]


@dataclasses.dataclass
class RulesRecord:
    toml_text: str          # the rule set a SIGHUP swapped in at this place


class Reader:
    """An input log's header, then its batch records in order (iterate once)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._handle = open(path, "rb")
        self._unpacker = msgpack.Unpacker(self._handle, raw=False, ext_hook=_ext_hook, strict_map_key=True,
                                          max_buffer_size=limits.JOURNAL_RECORD_BYTES_MAX)
        self.tail_bytes_ignored = 0
        try:
            self.header = self._read_header()
        except BaseException:
            self._handle.close()
            raise

    def _read_header(self) -> Header:
        try:
            header = next(self._unpacker)
        except StopIteration:
            raise InputLogError(f"{self.path}: empty, not an input log") from None
        except (ValueError, msgpack.UnpackException) as error:
            raise InputLogError(f"{self.path}: not an input log ({error})") from None
        if not (isinstance(header, dict) and header.get("format") == FORMAT_NAME):
            raise InputLogError(f"{self.path}: not an input log")
        if header.get("version") not in READABLE_VERSIONS:
            raise InputLogError(f"{self.path}: input log version {header.get('version')!r}, "
                                f"this switch reads {READABLE_VERSIONS}")
        try:
            return Header(header["config_toml"], header["rules_toml"], header["base_state_hash"])
        except KeyError as error:
            raise InputLogError(f"{self.path}: the header lacks {error}") from None

    def __iter__(self) -> Iterator[BatchRecord | RulesRecord]:
        with self._handle:
            complete_bytes = self._unpacker.tell()
            try:
                for record in self._unpacker:
                    decoded = self._record(record)
                    complete_bytes = self._unpacker.tell()
                    yield decoded
            except (ValueError, msgpack.UnpackException) as error:
                raise InputLogError(f"{self.path}: a batch record cannot be decoded: {error}") from None
            # A switch killed mid-write leaves an incomplete last record: replay stops before it.
            self.tail_bytes_ignored = os.fstat(self._handle.fileno()).st_size - complete_bytes

    def _record(self, record: Any) -> BatchRecord | RulesRecord:
        if (isinstance(record, list) and len(record) == 2 and record[0] == RULES_RECORD
                and isinstance(record[1], str)):
            return RulesRecord(record[1])
        if not (isinstance(record, list) and len(record) == 3 and isinstance(record[1], list)
                and isinstance(record[2], list) and len(record[1]) == len(record[2])):
            raise InputLogError(f"{self.path}: a record is not [now_ns, requests, codes] nor [\"rules\", toml]")
        return BatchRecord(*record)


# ---- serving with a log, replaying one --------------------------------------------------

BASE_SUFFIX = ".base"


def attach(engine: Any, path: str, config_path: str) -> InputLog:
    """Start logging every batch `engine` commits from now on (switch serve --input-log FILE):
    copy the data directory to FILE.base, then write the header."""
    base_dir = pathlib.Path(path + BASE_SUFFIX)
    if pathlib.Path(path).exists() or base_dir.exists():
        raise InputLogError(f"{path}: an input log (or its {BASE_SUFFIX} copy) is already there")
    with open(config_path, encoding="utf-8") as file:
        config_toml = file.read()
    rules_toml = None
    if engine.config.rules_path is not None:
        with open(engine.config.rules_path, encoding="utf-8") as file:
            rules_toml = file.read()
    base_dir.mkdir(parents=True)
    # The engine's own environment: LMDB allows one open of an environment per process.
    engine.storage.env.copy(str(base_dir), compact=True)
    input_log = InputLog.start(path, config_toml, engine_state_hash(engine), rules_toml,
                               durability=engine.storage.durability)
    engine.input_log = input_log
    return input_log


@dataclasses.dataclass
class ReplayReport:
    batches: int
    requests: int
    state_hash: str                 # hex
    code_mismatch_count: int        # requests whose replayed code differs from the one logged
    code_mismatches: list[str]      # the first MISMATCHES_SHOWN_MAX of them
    tail_bytes_ignored: int         # an incomplete last record (the switch was killed mid-write)


def replay(path: str, data_dir: str, durability: str = "os") -> ReplayReport:
    """Run every batch of the log through a fresh engine on `data_dir` (empty; it starts as a
    copy of the log's .base directory) and return the resulting state hash."""
    import shutil
    import tomllib

    from switch import config as config_module
    from switch.operations import open_engine

    reader = Reader(path)
    base_dir = pathlib.Path(path + BASE_SUFFIX)
    target = pathlib.Path(data_dir)
    if target.exists() and any(target.iterdir()):
        raise InputLogError(f"{data_dir}: replay needs an empty directory")
    if not (base_dir / "data.mdb").exists():
        raise InputLogError(f"{base_dir}: the state the log began from is missing")
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(base_dir / "data.mdb", target / "data.mdb")
    config = config_module.parse(tomllib.loads(reader.header.config_toml))
    engine = open_engine(config, data_dir, durability=durability, rules=_rules_of(reader.header.rules_toml))
    try:
        if engine_state_hash(engine) != reader.header.base_state_hash:
            raise InputLogError(f"{base_dir} does not reproduce the state the log began from")
        batches = requests = mismatch_count = 0
        mismatches: list[str] = []
        for record in reader:
            if isinstance(record, RulesRecord):
                _reload_rules(engine, record.toml_text)
                continue
            batch = [(_participant(config, entry[0]), _request(entry)) for entry in record.requests]
            engine.clock_ns = lambda now_ns=record.now_ns: now_ns
            outcomes = engine.process_batch(batch)
            for (_, request), outcome, logged in zip(batch, outcomes, record.codes):
                if int(outcome[0]) == logged:
                    continue
                mismatch_count += 1
                if len(mismatches) < MISMATCHES_SHOWN_MAX:
                    mismatches.append(f"batch {batches + 1} request {request.request_id} ({request.op}): "
                                      f"logged {logged}, replayed {int(outcome[0])}")
            batches += 1
            requests += len(batch)
        return ReplayReport(batches, requests, engine_state_hash(engine).hex(), mismatch_count, mismatches,
                            reader.tail_bytes_ignored)
    finally:
        engine.close()


MISMATCHES_SHOWN_MAX = 20


def _reload_rules(engine: Any, toml_text: str) -> None:
    """The logged SIGHUP reload, at its place; the logging switch accepted this rule set, so must replay."""
    code, result = engine.reload_rules_text(toml_text)
    if code != Code.OK:
        raise InputLogError(f"the logged rule set reload is refused on replay: {Code(code).name} {result}")


def _rules_of(rules_toml: str | None) -> Any:
    if rules_toml is None:
        return None
    import core_ext
    from core_ext.rules_types import load_ruleset

    return core_ext.core.RuleEngine(load_ruleset(rules_toml))


def _participant(config: Any, participant_id: int) -> Any:
    participant = config.participants.get(participant_id)
    if participant is None:
        raise InputLogError(f"participant {participant_id} is not in the logged configuration")
    return participant


def _request(entry: list) -> protocol.Request:
    if not (isinstance(entry, list) and len(entry) == 6):
        raise InputLogError("a logged request is not [participant_id, request_id, op, args, error, events]")
    _, request_id, op, args, error, events = entry
    return protocol.Request(request_id, op, args, None if error is None else Code(error), events)
