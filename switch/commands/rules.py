"""`switch rules`: check a rule set, list the rule kinds, replay a payment log
through a candidate rule set, and show per-rule statistics.

The payment log (`--log PAYMENTS`) is JSON lines, one payment per line:

    {"payment": {<every PaymentContext field>}, "decided": {"action": "approve", "code": 0}}

`payment` holds the fields of core_ext.rules_types.PaymentContext by name
(integers, booleans; money in minor units, times in ns since the epoch).
`decided` is optional: what the switch decided at the time (`action` one of
approve, review, decline; `code` its result code).  When present, the replay
applies the payment to the counters as it really happened (approved or held:
applied; declined: not), so the candidate is judged on the state the switch
really had; without it, the candidate's own decision is applied.
Nothing is posted anywhere: the replay runs in memory.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
import sys

import click

from core_ext import limits
from core_ext.codes import name_of
from core_ext.rules_types import (
    KINDS, Action, Decision, PaymentContext, RuleSetError, context_problem, load_ruleset,
)

ACTION_NAMES = {int(action): action.name.lower() for action in Action}
ACTIONS_BY_NAME = {name: value for value, name in ACTION_NAMES.items()}
CONTEXT_FIELDS = {field.name for field in dataclasses.fields(PaymentContext)}
BAD_LINES_SHOWN_MAX = 10


@click.group("rules")
def rules() -> None:
    """Risk and AML rules: check, replay and inspect rule sets."""


def _load(path: str):
    try:
        return load_ruleset(pathlib.Path(path).read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise click.ClickException(f"{path}: {error}") from None
    except RuleSetError as error:
        raise click.ClickException(f"{path}: {error}") from None


def _engine(ruleset, implementation: str):
    import core_ext
    return core_ext.implementation(implementation).RuleEngine(ruleset)


@rules.command("check")
@click.argument("rules_file", type=click.Path(exists=True, dir_okay=False))
def check(rules_file: str) -> None:
    """Validate RULES_FILE and print its hash and rules."""
    ruleset = _load(rules_file)
    click.echo(f"rule set {ruleset.name!r}: {len(ruleset.rules)} rules, hash {ruleset.hash}")
    for rule in ruleset.rules:
        click.echo(f"  {rule.id:<28} v{rule.version:<3} {_kind_name(rule.kind):<24} "
                   f"{('off', 'shadow', 'enforce')[rule.mode]:<8} {('flag', 'review', 'decline')[rule.action]:<8} "
                   f"{rule.reason}")


def _kind_name(kind: int) -> str:
    return next(name for name, (value, _spec) in KINDS.items() if value == kind)


@rules.command("kinds")
def kinds() -> None:
    """List every rule kind, what it checks and its parameters."""
    for name, (_kind, spec) in KINDS.items():
        click.echo(f"{name}: {spec.doc} -> {name_of(spec.code)}")
        for param_name, param in spec.params.items():
            click.echo(f"    {param_name} ({param.type}): {param.doc}")


class LogError(ValueError):
    pass


def parse_line(line: bytes) -> tuple[PaymentContext, Decision | None]:
    """One log line -> (payment, recorded decision or None); LogError says what is wrong."""
    line = line.rstrip(b"\r\n")
    if len(line) > limits.RULES_LOG_LINE_BYTES_MAX:
        raise LogError(f"line longer than {limits.RULES_LOG_LINE_BYTES_MAX} bytes")
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError) as error:
        raise LogError(f"not JSON: {error}") from None
    if not isinstance(record, dict) or not isinstance(record.get("payment"), dict):
        raise LogError('expected an object with a "payment" object')
    fields = record["payment"]
    unknown = set(fields) - CONTEXT_FIELDS
    if unknown:
        raise LogError(f"unknown payment field(s) {sorted(unknown)}")
    try:
        context = PaymentContext(**fields)
    except TypeError as error:
        raise LogError(f"payment: {error}") from None
    problem = context_problem(context)
    if problem is not None:
        raise LogError(f"payment: {problem}")
    return context, _recorded(record.get("decided"))


def _recorded(decided) -> Decision | None:
    if decided is None:
        return None
    if not isinstance(decided, dict) or decided.get("action") not in ACTIONS_BY_NAME:
        raise LogError(f'"decided" needs "action" one of {sorted(ACTIONS_BY_NAME)}')
    code = decided.get("code", 0)
    if not isinstance(code, int):
        raise LogError('"decided.code" must be an integer')
    return Decision(ACTIONS_BY_NAME[decided["action"]], code, (), "")


@dataclasses.dataclass
class Replay:
    payments: int = 0
    bad_lines: list = dataclasses.field(default_factory=list)
    bad_line_count: int = 0
    # (recorded action name or "unrecorded", candidate action name) -> count
    outcomes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    # rule id -> payments whose decision changed while this rule fired
    changed_by_rule: collections.Counter = dataclasses.field(default_factory=collections.Counter)


def replay(engine, lines) -> Replay:
    """Run every payment of a log through `engine`, applying what really happened."""
    result = Replay()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            context, recorded = parse_line(line)
        except LogError as error:
            result.bad_line_count += 1
            if len(result.bad_lines) < BAD_LINES_SHOWN_MAX:
                result.bad_lines.append((number, str(error)))
            continue
        decision = engine.evaluate(context)
        result.payments += 1
        recorded_name = ACTION_NAMES[recorded.action] if recorded else "unrecorded"
        result.outcomes[(recorded_name, ACTION_NAMES[decision.action])] += 1
        if recorded is not None and recorded.action != decision.action:
            for rule_id, _reason, _mode in decision.fired:
                result.changed_by_rule[rule_id] += 1
        engine.observe(context, recorded if recorded is not None else decision)
    return result


def _open_log(path: str):
    try:
        return open(path, "rb")
    except OSError as error:
        raise click.ClickException(f"{path}: {error}") from None


def _report(ruleset, engine, result: Replay, as_json: bool) -> None:
    stats = engine.stats()
    if as_json:
        click.echo(json.dumps({
            "ruleset": {"name": ruleset.name, "hash": ruleset.hash},
            "payments": result.payments, "bad_lines": result.bad_line_count,
            "outcomes": [{"recorded": recorded, "candidate": candidate, "count": count}
                         for (recorded, candidate), count in sorted(result.outcomes.items())],
            "rules": {rule_id: {**counters, "changed": result.changed_by_rule.get(rule_id, 0)}
                      for rule_id, counters in stats.items()},
            "tables": engine.tables(),
        }, indent=2))
        return
    click.echo(f"rule set {ruleset.name!r} ({ruleset.hash[:16]}): {result.payments} payments replayed")
    click.echo("\nrecorded -> candidate")
    for (recorded, candidate), count in sorted(result.outcomes.items()):
        marker = "" if recorded in (candidate, "unrecorded") else "   (changed)"
        click.echo(f"  {recorded:>10} -> {candidate:<8} {count:>10}{marker}")
    _print_stats(stats, result.changed_by_rule)
    for number, message in result.bad_lines:
        click.echo(f"line {number}: {message}", err=True)
    if result.bad_line_count:
        click.echo(f"{result.bad_line_count} line(s) skipped", err=True)


def _print_stats(stats: dict, changed: collections.Counter) -> None:
    click.echo(f"\n  {'rule':<28} {'evaluations':>12} {'hits':>10} {'shadow hits':>12} {'changed':>10} "
               f"{'ns/eval':>8} {'est. ms':>10}")
    for rule_id, counters in stats.items():
        mean_ns = counters["time_ns_sampled"] // counters["samples"] if counters["samples"] else 0
        click.echo(f"  {rule_id:<28} {counters['evaluations']:>12} {counters['hits']:>10} "
                   f"{counters['shadow_hits']:>12} {changed.get(rule_id, 0):>10} {mean_ns:>8} "
                   f"{counters['time_ns'] // 1_000_000:>10}")


_IMPLEMENTATION = click.option("--implementation", type=click.Choice(["compiled", "reference"]),
                               default="compiled", show_default=True, help="Which core runs the rules.")


@rules.command("test")
@click.option("--rules", "rules_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The candidate rule set (TOML).")
@click.option("--log", "log_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="PAYMENTS: JSON lines {\"payment\": {...}, \"decided\": {\"action\": ..., \"code\": ...}}.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_IMPLEMENTATION
def test(rules_file: str, log_file: str, as_json: bool, implementation: str) -> None:
    """Replay a recorded payment log through a candidate rule set, posting nothing,
    and report what it would have decided against what was decided, rule by rule.

    PAYMENTS is JSON lines, one payment each: {"payment": {<PaymentContext
    fields>}, "decided": {"action": "approve|review|decline", "code": N}}.
    "decided" is optional. Exit status 1 if any line was unreadable."""
    ruleset = _load(rules_file)
    engine = _engine(ruleset, implementation)
    with _open_log(log_file) as lines:
        result = replay(engine, lines)
    _report(ruleset, engine, result, as_json)
    if result.bad_line_count:
        sys.exit(1)


@rules.command("stats")
@click.option("--rules", "rules_file", type=click.Path(exists=True, dir_okay=False),
              help="The rule set (TOML) to replay a log through.")
@click.option("--log", "log_file", type=click.Path(exists=True, dir_okay=False),
              help="Replay this payment log first (same format as `rules test`).")
@_IMPLEMENTATION
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Instead: ask the switch running on this port for its live counters.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--participant", "participant_id", type=click.IntRange(1, 2**64 - 1), envvar="SWITCH_PARTICIPANT",
              help="With --port: an operator participant id (or env SWITCH_PARTICIPANT).")
@click.option("--secret", envvar="SWITCH_SECRET", help="With --port: its secret (or env SWITCH_SECRET).")
def stats(rules_file: str | None, log_file: str | None, implementation: str, port: int | None, host: str,
          participant_id: int | None, secret: str | None) -> None:
    """Per-rule counters (evaluations, hits, shadow hits, time: the mean of one evaluation in 64
    timed, and that mean times every evaluation): of a running switch (--port), or of a rule
    set after replaying a payment log (--rules, --log)."""
    if port is not None:
        _live_stats(host, port, participant_id, secret)
        return
    if rules_file is None:
        raise click.UsageError("give --rules (replay a log) or --port (a running switch)")
    ruleset = _load(rules_file)
    engine = _engine(ruleset, implementation)
    result = Replay()
    if log_file:
        with _open_log(log_file) as lines:
            result = replay(engine, lines)
    click.echo(f"rule set {ruleset.name!r} ({ruleset.hash[:16]}), {result.payments} payments")
    _print_stats(engine.stats(), result.changed_by_rule)
    for table, counters in engine.tables().items():
        click.echo(f"  table {table:<12} {counters['size']:>8} / {counters['capacity']:<8} "
                   f"evictions {counters['evictions']}")


def _live_stats(host: str, port: int, participant_id: int | None, secret: str | None) -> None:
    """The running switch's per-rule counters since it started, over the protocol."""
    from switch.commands.stats import operator_call, rule_header, rule_line

    if participant_id is None or not secret:
        raise click.UsageError("--port needs --participant and --secret of an operator")
    snapshot = operator_call(host, port, participant_id, secret, "stats")
    if snapshot["ruleset_hash"] is None:
        click.echo("the switch runs without rules")
        return
    click.echo(f"rule set {snapshot['ruleset_name']!r} ({snapshot['ruleset_hash'][:16]}) on {host}:{port}, "
               f"up {snapshot['uptime_ns'] / 1e9:,.0f} s")
    click.echo(rule_header())
    for rule in snapshot["rules"]:
        click.echo(rule_line(*rule))


# ---- the audit log ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AuditFilter:
    """Which audit records an operator asked for; a field left None matches everything."""
    payer_account_id: int | None = None
    merchant_account_id: int | None = None
    payment_id: int | None = None
    action: int | None = None
    rule_id: str | None = None

    def matches(self, record) -> bool:
        return ((self.payer_account_id is None or record.payer_account_id == self.payer_account_id)
                and (self.merchant_account_id is None or record.merchant_account_id == self.merchant_account_id)
                and (self.payment_id is None or record.payment_id == self.payment_id)
                and (self.action is None or record.action == self.action)
                and (self.rule_id is None or any(fired.rule_id == self.rule_id for fired in record.fired)))


def read_audit(data_dir: str, wanted: AuditFilter, limit: int) -> list:
    """The newest `limit` audit records that match, oldest first, read from the journal (read-only,
    safe beside a running switch): each is a payment the rules declined, held, or flagged."""
    from core_ext.pipeline_types import iter_audit_records
    from switch import storage

    env = storage.open_environment(data_dir, readonly=True)
    recent: collections.deque = collections.deque(maxlen=limit)
    try:
        for _, sections in storage.iterate_stored_sections(env):     # kept by compaction, then journaled
            for name, blob in sections:
                if name == "audit":
                    recent.extend(record for record in iter_audit_records(blob) if wanted.matches(record))
    finally:
        env.close()
    return list(recent)


def audit_row(record) -> dict:
    return {
        "payment_id": f"{record.payment_id:032x}", "timestamp_ns": record.timestamp_ns,
        "payer_account_id": record.payer_account_id, "merchant_account_id": record.merchant_account_id,
        "amount_minor": record.amount_minor, "ledger": record.ledger,
        "decision": ACTION_NAMES[record.action], "code": name_of(record.code),
        "fired": [{"rule_id": f.rule_id, "reason": f.reason, "mode": f.mode} for f in record.fired],
        "ruleset_hash": record.ruleset_hash,
    }


@rules.command("audit")
@click.option("--data", "data_dir", default="var/lmdb", show_default=True, type=click.Path(file_okay=False),
              help="The switch's data directory (read-only; works beside a running switch).")
@click.option("--payer", "payer_account_id", type=click.IntRange(1, 2**64 - 1), help="Only this payer account.")
@click.option("--merchant", "merchant_account_id", type=click.IntRange(1, 2**64 - 1),
              help="Only this merchant account.")
@click.option("--payment", "payment_hex", help="Only this payment id (32 hex digits, as `switch pay` prints).")
@click.option("--decision", type=click.Choice(sorted(ACTIONS_BY_NAME)), help="Only this decision.")
@click.option("--rule", "rule_id", help="Only payments on which this rule fired.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000),
              help="The newest this many matching records.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def audit(data_dir: str, payer_account_id, merchant_account_id, payment_hex, decision, rule_id, limit: int,
          as_json: bool) -> None:
    """Why the rules decided what they did: every decline, every hold for review, and every approval
    on which a rule fired (flags, shadow rules), with the rules that fired and their internal reasons.
    A wallet only ever saw the external code; this is the operator's view."""
    from switch import storage

    try:
        payment_id = int(payment_hex, 16) if payment_hex else None
    except ValueError:
        raise click.BadParameter(f"{payment_hex!r} is not hexadecimal", param_hint="--payment") from None
    wanted = AuditFilter(payer_account_id, merchant_account_id, payment_id,
                         ACTIONS_BY_NAME[decision] if decision else None, rule_id)
    try:
        rows = [audit_row(record) for record in read_audit(data_dir, wanted, limit)]
    except (storage.StorageError, ValueError, OSError) as error:
        raise click.ClickException(f"cannot read the audit log: {error}") from None
    for row in rows:
        if as_json:
            click.echo(json.dumps(row, sort_keys=True))
            continue
        fired = ", ".join(f"{f['rule_id']}:{f['reason']}" + ("" if f["mode"] == "enforce" else f" ({f['mode']})")
                          for f in row["fired"])
        click.echo(f"{row['payment_id']}  payer {row['payer_account_id']}  merchant {row['merchant_account_id']}  "
                   f"{row['amount_minor']} ({row['ledger']})  {row['decision']:7} {row['code']:22} {fired}")
    if not as_json:
        click.echo(f"{len(rows)} record(s)")
