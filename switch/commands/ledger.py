"""`switch ledger`: check, list, back up and compact the ledger of a data directory.

Every command but `compact` opens the LMDB read-only and without the switch's
lock, so it can run beside a server that holds the same directory; `compact` is
offline: it takes the lock, so it refuses a directory a switch holds.
"""
from __future__ import annotations

import json
import sys

import click

from core_ext.reference.ledger import accounts_from_checkpoint, iter_journal_records
from switch import storage

# Where `make run` (switch.demo --data var) keeps its LMDB.
DEFAULT_DATA_DIR = "var/lmdb"
ROWS_DEFAULT = 50


def _replay(data_dir: str):
    """(ledger rebuilt from the journal, facts and violations found on the way)."""
    from core_ext import core

    env = storage.open_environment(data_dir, readonly=True)
    try:
        return _replay_env(env, core.Ledger())
    finally:
        env.close()


def _restore_snapshot(env, ledger) -> int:
    """Load the ledger's section of the newest snapshot; its sequence (0: no snapshot)."""
    found = storage.read_snapshot(env, wanted=lambda name, kind: name == ledger.name)
    if found is None:
        return 0
    sequence, sections = found
    for _, kind, data in sections:
        storage.restore_section(ledger, sequence, kind, data)
    return sequence


def _replay_env(env, ledger):
    violations: list[str] = []
    checkpoint = storage.read_checkpoint(env, ledger.name)
    last_sequence = snapshot_sequence = 0
    corrupt_batch = None
    try:
        last_sequence = snapshot_sequence = _restore_snapshot(env, ledger)
        if checkpoint and snapshot_sequence and checkpoint[0] == snapshot_sequence:
            violations += _compare_checkpoint(ledger.checkpoint(), checkpoint[1], snapshot_sequence)
        for sequence, sections in storage.iterate_journal(env, after_sequence=snapshot_sequence):
            if sequence != last_sequence + 1:
                violations.append(f"journal jumps from batch {last_sequence} to {sequence}")
            for name, blob in sections:
                if name == ledger.name:
                    ledger.apply_journal(blob)
            last_sequence = sequence
            if checkpoint and sequence == checkpoint[0]:
                violations += _compare_checkpoint(ledger.checkpoint(), checkpoint[1], sequence)
    except (ValueError, KeyError, storage.StorageError) as error:
        violations.append(f"journal cannot be replayed after batch {last_sequence}: {error}")
        corrupt_batch = getattr(error, "sequence", None)
    if checkpoint and checkpoint[0] > last_sequence:
        violations.append(f"checkpoint of batch {checkpoint[0]} is past the journal's end ({last_sequence})")
    violations += ledger.check_invariants()
    if checkpoint and checkpoint[0] < snapshot_sequence:
        violations.append(f"checkpoint of batch {checkpoint[0]} is older than the snapshot ({snapshot_sequence})")
    facts = {"batches": last_sequence, "checkpoint_sequence": checkpoint[0] if checkpoint else None,
             "snapshot_sequence": snapshot_sequence or None, "corrupt_batch": corrupt_batch}
    return ledger, facts, violations


def _compare_checkpoint(replayed: bytes, stored: bytes, sequence: int) -> list[str]:
    """Replaying the journal must reproduce the balances stored at that batch exactly."""
    if replayed == stored:
        return []
    replayed_accounts = {a.id: a for a in accounts_from_checkpoint(replayed)}
    stored_accounts = {a.id: a for a in accounts_from_checkpoint(stored)}
    differing = sorted(i for i in replayed_accounts.keys() | stored_accounts.keys()
                       if replayed_accounts.get(i) != stored_accounts.get(i))
    return [f"account {i}: replay to batch {sequence} differs from the stored checkpoint" for i in differing[:100]]


def _ledger_totals(accounts) -> list[dict]:
    totals: dict[int, dict] = {}
    for a in accounts:
        row = totals.setdefault(a.ledger, {"ledger": a.ledger, "accounts": 0, "debits_pending": 0,
                                           "debits_posted": 0, "credits_pending": 0, "credits_posted": 0})
        row["accounts"] += 1
        for field in ("debits_pending", "debits_posted", "credits_pending", "credits_posted"):
            row[field] += getattr(a, field)
    return [totals[ledger] for ledger in sorted(totals)]


def run_check(data_dir: str) -> dict:
    """The report of `switch ledger check` (also used by tests)."""
    try:
        ledger, facts, violations = _replay(data_dir)
    except (storage.StorageError, OSError) as error:
        return {"ok": False, "accounts": 0, "transfers": 0, "ledgers": [], "violations": [str(error)]}
    accounts = accounts_from_checkpoint(ledger.checkpoint())
    return {"ok": not violations, "accounts": ledger.account_count, "transfers": ledger.transfer_count,
            "ledgers": _ledger_totals(accounts), "violations": violations, **facts}


def _data_option(function):
    return click.option("--data", "data_dir", default=DEFAULT_DATA_DIR, show_default=True,
                        type=click.Path(file_okay=False), help="The switch's data directory.")(function)


def _json_option(function):
    return click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")(function)


@click.group()
def ledger() -> None:
    """Check, list and back up the double-entry ledger (read-only; safe beside a running server)."""


@ledger.command()
@_data_option
@_json_option
def check(data_dir: str, as_json: bool) -> None:
    """Verify debits equal credits per ledger, account flags, and that replay reproduces stored balances."""
    report = run_check(data_dir)
    if as_json:
        click.echo(json.dumps(report))
    else:
        click.echo(f"{'OK' if report['ok'] else 'VIOLATIONS'}: {report['accounts']} accounts, "
                   f"{report['transfers']} transfers, batches {report.get('batches')}, "
                   f"checkpoint at batch {report.get('checkpoint_sequence')}, "
                   f"snapshot at batch {report.get('snapshot_sequence')}")
        for row in report["ledgers"]:
            click.echo(f"  ledger {row['ledger']}: {row['accounts']} accounts, posted {row['debits_posted']} dr "
                       f"/ {row['credits_posted']} cr, pending {row['debits_pending']} dr / {row['credits_pending']} cr")
        for violation in report["violations"]:
            click.echo(f"  violation: {violation}")
    sys.exit(0 if report["ok"] else 1)


ACCOUNT_COLUMNS = ("id", "ledger", "code", "flags", "debits_pending", "debits_posted", "credits_pending",
                   "credits_posted", "timestamp")
TRANSFER_COLUMNS = ("id", "debit_account_id", "credit_account_id", "amount", "ledger", "code", "flags",
                    "pending_id", "timeout", "timestamp")


def _print_rows(rows: list[dict], columns: tuple, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rows))
        return
    widths = {c: max([len(c)] + [len(str(row[c])) for row in rows]) for c in columns}
    click.echo("  ".join(c.rjust(widths[c]) for c in columns))
    for row in rows:
        click.echo("  ".join(str(row[c]).rjust(widths[c]) for c in columns))


@ledger.command()
@_data_option
@_json_option
@click.option("--limit", default=ROWS_DEFAULT, show_default=True, type=click.IntRange(1, 1_000_000),
              help="At most this many accounts (the first created).")
def accounts(data_dir: str, as_json: bool, limit: int) -> None:
    """List accounts with their balances."""
    ledger_state, _, _ = _replay(data_dir)
    rows = [{c: getattr(a, c) for c in ACCOUNT_COLUMNS}
            for a in accounts_from_checkpoint(ledger_state.checkpoint())[:limit]]
    _print_rows(rows, ACCOUNT_COLUMNS, as_json)


@ledger.command()
@_data_option
@_json_option
@click.option("--limit", default=ROWS_DEFAULT, show_default=True, type=click.IntRange(1, 1_000_000),
              help="At most this many transfers (the most recent).")
def transfers(data_dir: str, as_json: bool, limit: int) -> None:
    """List the most recent transfers journaled since the last compaction."""
    env = storage.open_environment(data_dir, readonly=True)
    recent = []
    try:
        for _, sections in storage.iterate_journal(env):
            for name, blob in sections:
                if name == "ledger":
                    recent += [t for kind, t in iter_journal_records(blob) if kind == "transfer"]
                    del recent[:-limit]
    finally:
        env.close()
    _print_rows([{c: getattr(t, c) for c in TRANSFER_COLUMNS} for t in recent], TRANSFER_COLUMNS, as_json)


@ledger.command()
@_data_option
@click.argument("target_dir", type=click.Path(file_okay=False))
def backup(data_dir: str, target_dir: str) -> None:
    """Copy the data directory consistently into TARGET_DIR (empty), while a server may hold it."""
    try:
        storage.backup(data_dir, target_dir)
    except (storage.StorageError, OSError) as error:
        raise click.ClickException(f"backup failed, nothing written: {error}") from None
    click.echo(f"backed up {data_dir} to {target_dir}")


def run_compact(data_dir: str) -> dict:
    """`switch ledger compact`: snapshot the directory as of its last batch and drop the journal up to it.

    The ledger is rebuilt and snapshotted in full; every other component's sections are carried
    into the snapshot as they are (storage.JournalCarrier), so no configuration is needed."""
    from core_ext import core

    ledger = core.Ledger()
    with storage.Storage.open(data_dir, [ledger], durability="fsync", carry_unknown=True) as store:
        before = store.snapshot_sequence
        sequence = store.compact()
        return {"compacted": sequence is not None, "snapshot_sequence": store.snapshot_sequence,
                "previous_snapshot_sequence": before or None, "accounts": ledger.account_count,
                "transfers": ledger.transfer_count}


@ledger.command()
@click.argument("data_dir", type=click.Path(file_okay=False, exists=True))
@_json_option
def compact(data_dir: str, as_json: bool) -> None:
    """Offline: snapshot DATA_DIR as of its last batch and delete the journal up to it (one transaction).

    Refused while a switch holds DATA_DIR.  Recovery then loads the snapshot and replays only later batches."""
    try:
        report = run_compact(data_dir)
    except (storage.StorageError, OSError) as error:
        raise click.ClickException(f"compaction failed, no snapshot written: {error}") from None
    if as_json:
        click.echo(json.dumps(report))
    elif report["compacted"]:
        click.echo(f"compacted {data_dir}: snapshot at batch {report['snapshot_sequence']} "
                   f"({report['accounts']} accounts, {report['transfers']} transfers); journal up to it deleted")
    else:
        click.echo(f"{data_dir}: nothing to compact (the snapshot at batch {report['snapshot_sequence']} is current)")
