"""Deterministic replay: the input log of every committed batch rebuilds the same state.

A seeded random workload (payments that post, fail for funds, retry, replay a
dynamic QR, generic transfers, lookups) runs through the engine; its input log
replayed into a fresh engine gives the same state hash, and the same workload
run twice from the same start gives identical hashes.
"""
from __future__ import annotations

import os
import pathlib
import random
import subprocess
import sys

import msgpack
import pytest

import core_ext
from core_ext.codes import Code
from core_ext.types import Account, Transfer
from switch import config as config_module, inputlog, protocol
from switch.engine import Engine
from switch.merchants import MerchantDirectory
from switch.operations import open_engine
from switch.storage import Storage
import test_server_helpers as fixtures

ROOT = pathlib.Path(__file__).resolve().parent.parent
BATCHES = 40
START_NS = 1_780_000_000 * 10**9
BATCH_GAP_NS = 3_000_000


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "switch.toml"
    path.write_text(toml_of(fixtures.document()))
    return path


def toml_of(document: dict) -> str:
    lines = []
    for key, value in document.items():
        entries = [value] if isinstance(value, dict) else value
        for entry in entries:
            lines.append(f"[{key}]" if isinstance(value, dict) else f"[[{key}]]")
            lines += [f"{name} = {_toml_value(item)}" for name, item in entry.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


# ---- a seeded workload -----------------------------------------------------------------------

class Workload:
    """Seeded batches of decoded requests, as the server hands them to the engine."""

    def __init__(self, seed: int, config) -> None:
        self.rng = random.Random(seed)
        self.config = config
        self.next_id = 1
        self.request_id = 0
        self.paid: list[tuple[int, list]] = []     # (participant id, pay args) of payments sent
        self.static_qr = fixtures.static_qr()

    def batches(self, count: int):
        for _ in range(count):
            yield [self._request() for _ in range(self.rng.randint(1, 12))]

    def _decoded(self, participant_id: int, op: str, args) -> tuple:
        self.request_id += 1
        body = msgpack.packb([self.request_id, op, args], use_bin_type=True)
        return self.config.participants[participant_id], protocol.decode_request(body)

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id + (self.rng.getrandbits(64) << 64)   # ids past u64 exercise the log's ext type

    def _pay_args(self, transfer_id: int, payer: int, amount_minor: int, qr: str | None = None) -> list:
        return [protocol.id_to_wire(transfer_id), payer, qr or self.static_qr, amount_minor, "device-1", None]

    def _request(self) -> tuple:
        kind = self.rng.choice(("pay", "pay", "pay_batch", "retry", "poor", "dynamic", "transfers", "lookup", "bad"))
        payer, participant = self.rng.choice(((fixtures.PAYER, fixtures.WALLET_ID),
                                              (fixtures.OTHER_PAYER, fixtures.OTHER_ID)))
        if kind == "pay" or (kind == "retry" and not self.paid):
            args = self._pay_args(self._new_id(), payer, self.rng.randint(1, 5_000))
            self.paid.append((participant, args))
            return self._decoded(participant, "pay", args)
        if kind == "retry":                                   # the same payment again: EXISTS
            participant, args = self.rng.choice(self.paid)
            return self._decoded(participant, "pay", args)
        if kind == "pay_batch":
            items = [self._pay_args(self._new_id(), payer, self.rng.randint(1, 900)) for _ in range(self.rng.randint(2, 9))]
            return self._decoded(participant, "pay_batch", items)
        if kind == "poor":
            return self._decoded(participant, "pay", self._pay_args(self._new_id(), payer, 10**12))
        if kind == "dynamic":
            qr = fixtures.dynamic_qr(self.rng.randint(100, 999), f"INV-{self.rng.randint(1, 6)}")
            return self._decoded(participant, "pay", self._pay_args(self._new_id(), payer, 0, qr))
        if kind == "transfers":
            transfer = {"id": protocol.id_to_wire(self._new_id()), "debit_account_id": payer,
                        "credit_account_id": fixtures.MERCHANT_ACCOUNT, "amount": self.rng.randint(1, 50),
                        "ledger": fixtures.THB, "code": 7}
            return self._decoded(participant, "transfers", [transfer])
        if kind == "lookup":
            return self._decoded(participant, "lookup_accounts", [payer, fixtures.MERCHANT_ACCOUNT])
        return self._decoded(participant, "pay", ["not an id", payer])        # INVALID_ARGUMENTS


def run_workload(engine, seed: int, config) -> list:
    """Feed the seeded batches with a clock that advances a fixed step per batch; every answer code."""
    codes = []
    for index, batch in enumerate(Workload(seed, config).batches(BATCHES)):
        engine.clock_ns = lambda now_ns=START_NS + index * BATCH_GAP_NS: now_ns
        codes += [int(outcome[0]) for outcome in engine.process_batch(batch)]
    return codes


def deterministic_engine(config, data_dir) -> Engine:
    """An engine whose bootstrap runs at a fixed clock too, so two runs start identical."""
    ledger = core_ext.core.Ledger(config.accounts_max)
    merchants = MerchantDirectory()
    storage = Storage.open(data_dir, [ledger, merchants], durability="os")
    engine = Engine(config, core_ext.core, ledger, merchants, storage, clock_ns=lambda: START_NS - 1)
    engine.bootstrap()
    return engine


# ---- tests -------------------------------------------------------------------------------------

def test_a_seeded_workload_run_twice_gives_identical_state_hashes(config, tmp_path):
    hashes, answers = [], []
    for run in ("first", "second", "other-seed"):
        engine = deterministic_engine(config, tmp_path / run)
        try:
            answers.append(run_workload(engine, 11 if run != "other-seed" else 12, config))
            hashes.append(inputlog.engine_state_hash(engine))
        finally:
            engine.close()
    assert hashes[0] == hashes[1] and answers[0] == answers[1]
    assert hashes[2] != hashes[0]                       # the hash does see a different workload
    codes = set(answers[0])
    assert {Code.OK, Code.EXISTS, Code.EXCEEDS_CREDITS, Code.INVALID_ARGUMENTS} <= codes


def test_replaying_the_input_log_reproduces_the_state_hash_and_every_answer(config, config_path, tmp_path):
    engine = open_engine(config, str(tmp_path / "served"), durability="os")
    log_path = str(tmp_path / "input.log")
    try:
        input_log = inputlog.attach(engine, log_path, str(config_path))
        codes = run_workload(engine, 21, config)
        served_hash = inputlog.engine_state_hash(engine)
        input_log.close()
    finally:
        engine.close()
    report = inputlog.replay(log_path, str(tmp_path / "replayed"))
    assert (report.batches, report.requests) == (BATCHES, len(codes))
    assert report.code_mismatch_count == 0 and report.tail_bytes_ignored == 0
    assert report.state_hash == served_hash.hex()


def test_switch_replay_prints_the_hash_and_a_cut_tail_is_ignored(config, config_path, tmp_path):
    engine = open_engine(config, str(tmp_path / "served"), durability="os")
    log_path = tmp_path / "input.log"
    try:
        inputlog.attach(engine, str(log_path), str(config_path))
        run_workload(engine, 31, config)
        engine.input_log.close()
    finally:
        engine.close()
    full = inputlog.replay(str(log_path), str(tmp_path / "full"))
    printed = subprocess.run([sys.executable, "-m", "switch", "replay", str(log_path), "--data", str(tmp_path / "cli")],
                             capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith(f"state hash {full.state_hash}: {BATCHES} batches")
    # A switch killed mid-write leaves half a record: replay stops before it and says so.
    with open(log_path, "r+b") as handle:
        handle.truncate(log_path.stat().st_size - 3)
    cut = inputlog.replay(str(log_path), str(tmp_path / "cut"))
    assert cut.batches == BATCHES - 1 and cut.tail_bytes_ignored > 0


def test_replay_refuses_a_used_directory_and_a_file_that_is_not_a_log(config, config_path, tmp_path):
    engine = open_engine(config, str(tmp_path / "served"), durability="os")
    log_path = str(tmp_path / "input.log")
    try:
        inputlog.attach(engine, log_path, str(config_path))
        with pytest.raises(inputlog.InputLogError):
            inputlog.attach(engine, log_path, str(config_path))     # never two runs in one log
        engine.input_log.close()
    finally:
        engine.close()
    with pytest.raises(inputlog.InputLogError, match="empty directory"):
        inputlog.replay(log_path, str(tmp_path / "served"))
    not_a_log = tmp_path / "junk"
    not_a_log.write_bytes(msgpack.packb({"format": "something else"}))
    with pytest.raises(inputlog.InputLogError, match="not an input log"):
        inputlog.Reader(str(not_a_log))
    not_a_log.write_bytes(b"")
    with pytest.raises(inputlog.InputLogError, match="empty"):
        inputlog.Reader(str(not_a_log))


def test_log_values_round_trip_and_only_known_record_types_are_read():
    values = [protocol.PayItem(2**100 + 5, 1001, "QR", 0, None, "ref"), protocol.PendingItem(2**127, 3, 0),
              protocol.HistoryQuery(1001, 10), Transfer(id=2**64, debit_account_id=1, credit_account_id=2,
                                                      amount=2**64 - 1, ledger=764, code=1),
              Account(id=7, ledger=764, code=1), [1, "two", None, b"\x00" * 16]]
    for value in values:
        assert msgpack.unpackb(inputlog.pack(value), raw=False, ext_hook=inputlog._ext_hook) == value
    with pytest.raises(TypeError):
        inputlog.pack(object())
    forged = msgpack.packb(msgpack.ExtType(inputlog.EXT_RECORD, msgpack.packb(["Popen", ["sh"]])))
    with pytest.raises(inputlog.InputLogError, match="unknown record type"):
        msgpack.unpackb(forged, raw=False, ext_hook=inputlog._ext_hook)


def test_switch_serve_with_an_input_log_replays_to_the_served_state(tmp_path):
    """End to end: `switch serve --input-log` under client load, stopped; `switch replay` of its log gives
    the state hash of the served directory reopened."""
    import asyncio

    from bench import soak
    from switch.client import AsyncClient, PayRequest

    log_path = tmp_path / "input.log"
    server = soak.SwitchProcess(soak.write_config(tmp_path), tmp_path / "served", "os",
                                ("--input-log", str(log_path)))
    server.start()

    async def load() -> None:
        qr_payload = soak.static_qr()
        async with AsyncClient("127.0.0.1", server.port, soak.WALLET_ID, soak.WALLET_SECRET) as client:
            for round_index in range(5):
                requests = [PayRequest(round_index * 100 + i + 1, soak.PAYER_FIRST + i, qr_payload, 250 + i)
                            for i in range(30)]
                assert {result.code for result in await client.pay_many(requests)} == {Code.OK}

    try:
        fixtures.run_on("uvloop", load)
    finally:
        assert server.stop() == 0
    config = config_module.load(tmp_path / "soak.toml")
    engine = open_engine(config, str(tmp_path / "served"), durability="os")
    try:
        served_hash = inputlog.engine_state_hash(engine).hex()
    finally:
        engine.close()
    report = inputlog.replay(str(log_path), str(tmp_path / "replayed"))
    assert report.requests >= 5 and report.code_mismatch_count == 0
    assert report.state_hash == served_hash


def test_a_sighup_rules_reload_is_logged_and_replayed_in_its_place(tmp_path):
    from test_ops import RULES_TEXT

    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(RULES_TEXT)
    document = fixtures.document()
    document["switch"]["rules"] = str(rules_file)
    config_path = tmp_path / "switch.toml"
    config_path.write_text(toml_of(document))
    config = config_module.load(config_path)
    engine = open_engine(config, str(tmp_path / "served"), durability="os")
    log_path = str(tmp_path / "input.log")
    codes_after_reload = []
    try:
        inputlog.attach(engine, log_path, str(config_path))
        for index, batch in enumerate(Workload(41, config).batches(BATCHES)):
            if index == BATCHES // 2:            # SIGHUP with a stricter file: payments over 4,000 are held
                rules_file.write_text(RULES_TEXT.replace("limit_minor = 50000", "limit_minor = 4000"))
                assert engine.reload_rules_file()[0] == Code.OK
            engine.clock_ns = lambda now_ns=START_NS + index * BATCH_GAP_NS: now_ns
            outcomes = engine.process_batch(batch)
            if index >= BATCHES // 2:
                codes_after_reload += [int(outcome[0]) for outcome in outcomes]
        served_hash = inputlog.engine_state_hash(engine)
        engine.input_log.close()
    finally:
        engine.close()
    assert Code.RISK_REVIEW in codes_after_reload        # the reload changed decisions
    report = inputlog.replay(log_path, str(tmp_path / "replayed"))
    assert report.batches == BATCHES and report.code_mismatch_count == 0
    assert report.state_hash == served_hash.hex()


@pytest.mark.parametrize("durability, fsyncs_per_record", [("fsync", 1), ("os", 0)])
def test_the_input_log_is_fsynced_per_record_at_durability_fsync_only(config, config_path, tmp_path, monkeypatch,
                                                                     durability, fsyncs_per_record):
    fsynced = []
    monkeypatch.setattr(inputlog.os, "fsync", fsynced.append)
    engine = open_engine(config, str(tmp_path / "served"), durability=durability)
    try:
        inputlog.attach(engine, str(tmp_path / "input.log"), str(config_path))
        run_workload(engine, 51, config)
        engine.input_log.close()
    finally:
        engine.close()
    assert len(fsynced) == fsyncs_per_record * (1 + BATCHES)          # the header, then each batch
