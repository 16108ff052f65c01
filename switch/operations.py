"""The operator operations of the engine: `stats`, `reload_rules`, `list_pending`
(docs/PROTOCOL.md 4.8-4.10), and the review queue's bookkeeping.

`OperatorOps` is mixed into switch.engine.Engine so that these rare operations
live apart from the pay flow.  They run in request order like every other
operation; the server gives a `reload_rules` a batch of its own, so a rule set
swap falls between two batches and takes effect for every payment executed after
it and none before.  Every one of them needs the operator role.
"""
from __future__ import annotations

import logging
from typing import Any

from core_ext import limits
from core_ext.codes import Code
from core_ext.rules_types import RuleSetError, load_ruleset
from core_ext.types import TransferFlags
from switch import review_queue as review_module
from switch.metrics import OpsStats
from switch.protocol import PendingPage

log = logging.getLogger("switch.operations")

NS_PER_SECOND = 1_000_000_000
_RESOLVING_FLAGS = int(TransferFlags.POST_PENDING_TRANSFER | TransferFlags.VOID_PENDING_TRANSFER)
_NO_LONGER_PENDING = frozenset({Code.OK, Code.PENDING_TRANSFER_ALREADY_POSTED, Code.PENDING_TRANSFER_ALREADY_VOIDED,
                                Code.PENDING_TRANSFER_EXPIRED})
# Held payments looked up at once when forgetting expired ones.
_EXPIRY_CHUNK_ITEMS = 256


class OperatorOps:
    """Mixin: needs self.config, self.ledger, self.rules, self.storage, self.core, self.clock_ns."""

    # Replaced per engine by attach_operations(); class defaults keep a bare Engine usable.
    ops: OpsStats | None = None
    reviews: review_module.ReviewQueue | None = None
    rules_path: str | None = None
    _storage_commit: Any = None       # the storage's own write, before it was wrapped to be timed

    def attach_operations(self, ops: OpsStats | None = None, reviews: Any = None,
                          rules_path: str | None = None) -> None:
        """Give the engine what its operator operations report and change: the statistics the
        server keeps (its storage commits are timed into them), the journaled review queue
        (which must be one of the storage's components) and the rules file a SIGHUP re-reads.
        Each argument left None keeps what was attached before."""
        if ops is not None and ops is not self.ops:
            self.ops = ops
            # Timed from outside: the engine calls commit once per batch and stays free of metrics code.
            # Its write: commit() calls it, and the server calls it alone (Engine.write_batch).
            if self._storage_commit is None:
                self._storage_commit = self.storage.write
            self.storage.write = ops.timed_commit(self._storage_commit)
        if reviews is not None:
            self.reviews = reviews
        if rules_path is not None:
            self.rules_path = rules_path

    # ---- stats ----------------------------------------------------------------------

    def _op_stats(self, participant, args: None, now_ns: int):
        if not participant.is_operator:
            return _outcome(Code.OPERATOR_ROLE_REQUIRED, None)
        return _outcome(Code.OK, self.stats_snapshot())

    def stats_snapshot(self) -> dict:
        """Everything the stats operation answers (docs/PROTOCOL.md 4.8); also read by a scrape."""
        ops = self.ops.snapshot() if self.ops is not None else {}
        pipeline = getattr(self, "pipeline", None)
        pipeline_stats = dict(pipeline.stats()) if pipeline is not None and hasattr(pipeline, "stats") else {}
        codes = pipeline_stats.pop("codes", None) or {}
        return {
            **ops,
            # Arrays of pairs, not maps: the protocol's maps have str keys and at most 32 entries.
            "payments": [[int(code), count] for code, count in sorted(codes.items())],
            "build": dict(self.core.build_info()),
            "durability": getattr(self.storage, "durability", ""),
            "batch_sequence": getattr(self.storage, "sequence", 0),
            "ruleset_name": self.rules.ruleset.name if self.rules is not None else None,
            "ruleset_hash": self.rules.ruleset.hash if self.rules is not None else None,
            "rules": self.rule_counters(),
            "reviews_pending": len(self.reviews) if self.reviews is not None else 0,
            "pipeline": _pairs(pipeline_stats),
        }

    def rule_counters(self) -> list[list]:
        """[[rule_id, evaluations, hits, shadow_hits, samples, time_ns_sampled], ...] in rule order
        (arrays: a rule set may hold more rules than a protocol map may hold entries)."""
        if self.rules is None:
            return []
        return [[rule_id, counters["evaluations"], counters["hits"], counters["shadow_hits"], counters["samples"],
                 counters["time_ns_sampled"]]
                for rule_id, counters in self.rules.stats().items()]

    # ---- reload_rules -------------------------------------------------------------------

    def _op_reload_rules(self, participant, toml_text: str, now_ns: int):
        if not participant.is_operator:
            return _outcome(Code.OPERATOR_ROLE_REQUIRED, None)
        code, result = self.reload_rules_text(toml_text)
        return _outcome(code, result)

    def reload_rules_text(self, toml_text: str) -> tuple[int, Any]:
        """Validate, then swap: (OK, {"name", "hash"}) or (RULES_INVALID, "why") with the running
        set unchanged.  Runs in the commit thread between batches (the server gives a
        reload_rules a batch of its own; SIGHUP runs between two batches)."""
        if self.rules is None:
            return Code.RULES_NOT_CONFIGURED, None
        try:
            ruleset = _parse_ruleset(toml_text)
            meaning_before = self.rules.ruleset.counter_meaning()
            self.rules.reload(ruleset)
        except RuleSetError as error:
            log.warning("rule set refused: %s", error, extra={"fields": {"event": "rules_refused"}})
            return Code.RULES_INVALID, _reason(error)
        if ruleset.counter_meaning() != meaning_before:
            log.warning("rule set %r changes the counters' meaning (%s -> %s): counters forgotten", ruleset.name,
                        meaning_before.describe(), ruleset.counter_meaning().describe(),
                        extra={"fields": {"event": "rules_counters_forgotten"}})
        log.info("rule set %r loaded, hash %s", ruleset.name, ruleset.hash, extra={"fields": {
            "event": "rules_loaded", "ruleset_name": ruleset.name, "ruleset_hash": ruleset.hash,
            "rule_count": len(ruleset.rules)}})
        return Code.OK, {"name": ruleset.name, "hash": ruleset.hash}

    def reload_rules_file(self) -> tuple[int, Any]:
        """SIGHUP: re-read the configured rules file."""
        if self.rules is None or not self.rules_path:
            return Code.RULES_NOT_CONFIGURED, None
        try:
            with open(self.rules_path, encoding="utf-8") as file:
                text = file.read()
        except (OSError, UnicodeDecodeError) as error:
            log.warning("rules file %s unreadable: %s", self.rules_path, error)
            return Code.RULES_INVALID, _reason(error)
        code, result = self.reload_rules_text(text)
        if code == Code.OK and getattr(self, "input_log", None) is not None:
            self.input_log.record_rules(text)   # not a request: `switch replay` must see it in its place
        return code, result

    # ---- list_pending ----------------------------------------------------------------

    def _op_list_pending(self, participant, page: PendingPage, now_ns: int):
        if not participant.is_operator:
            return _outcome(Code.OPERATOR_ROLE_REQUIRED, None)
        if self.reviews is None:
            return _outcome(Code.OK, {"items": [], "next": None, "total": 0, "now_ns": now_ns})
        self._forget_expired(now_ns)
        held, next_cursor = self.reviews.page(page.after_cursor, page.limit)
        transfers = self.ledger.lookup_transfers([entry.transfer_id for entry in held]) if held else []
        items = [review_module.held_to_wire(entry, transfer, now_ns) for entry, transfer in zip(held, transfers)]
        return _outcome(Code.OK, {"items": items, "next": next_cursor, "total": len(self.reviews), "now_ns": now_ns})

    def _forget_expired(self, now_ns: int) -> None:
        """The ledger voided these when their review timeout passed (expire_pending at the batch's
        start); the queue forgets them, journaled like any other resolution.  Held payments share
        the configured timeout, so they expire oldest first: look from the oldest, in chunks, until
        one is still pending -- each held payment is looked at here once as expired, never twice."""
        while len(self.reviews):
            held = self.reviews.oldest(_EXPIRY_CHUNK_ITEMS)
            expired = [entry.transfer_id for entry, transfer in
                       zip(held, self.ledger.lookup_transfers([entry.transfer_id for entry in held]))
                       if transfer is None or _expired(transfer, now_ns)]
            for transfer_id in expired:
                self.reviews.resolve(transfer_id)
            if len(expired) < len(held):
                return

    # ---- the review queue's bookkeeping ---------------------------------------------

    def review_slots_free(self, now_ns: int) -> int:
        """Payments the review queue can still take (config review_queue_items_max); the pipeline
        declines one more REVIEW_QUEUE_FULL.  Only a full queue is first rid of the held payments
        the ledger already expired: they no longer reserve funds, so they hold no slot."""
        items_max = self.config.review_queue_items_max
        if self.reviews is None:
            return items_max
        if len(self.reviews) >= items_max:
            self._forget_expired(now_ns)
        return max(0, items_max - len(self.reviews))

    def note_held(self, transfer_id: int, held_ns: int, participant_id: int, fired: tuple) -> None:
        """A held payment's pending leg was posted: the operator has it to decide."""
        if self.reviews is not None:
            self.reviews.hold(transfer_id, held_ns, participant_id, tuple(entry[0] for entry in fired))

    def note_resolutions(self, pending_ids: list[int], codes: list[int]) -> None:
        """Posts and voids that succeeded take their pending transfer off the queue, and so does
        an answer saying it is no longer pending (resolved by another path, or expired)."""
        if self.reviews is None or not len(self.reviews):
            return
        for pending_id, code in zip(pending_ids, codes):
            if code in _NO_LONGER_PENDING:
                self.reviews.resolve(pending_id)

    def note_transfers(self, transfers: list, codes: list[int]) -> None:
        """The generic `transfers` operation may post or void a held payment too."""
        if self.reviews is None or not len(self.reviews):
            return
        self.note_resolutions([t.pending_id if t.flags & _RESOLVING_FLAGS else 0 for t in transfers], codes)


def _reason(error: Exception) -> str:
    """The error's text within one protocol string (string_bytes_max bytes of UTF-8, cut between
    characters): a longer one would fail the client's own unpacking limits."""
    return str(error).encode()[:limits.STRING_BYTES_MAX].decode(errors="ignore")


def _outcome(code: int, result: Any):
    from switch.engine import Outcome   # the engine imports this module: resolve at call time
    return Outcome(code, result)


def _pairs(values: Any) -> list:
    """A stats mapping as [[name, value], ...]; nested mappings flattened with dotted names."""
    if not isinstance(values, dict):
        return []
    pairs = []
    for name, value in values.items():
        if isinstance(value, dict):
            pairs += [[f"{name}.{inner}", inner_value] for inner, inner_value in _pairs(value)]
        else:
            pairs.append([str(name), value])
    return pairs


def open_engine(config: Any, data_dir: str, durability: str = "fsync", rules: Any = None) -> Any:
    """Engine.open, which attaches the operator side itself (the journaled review queue and the
    rules file SIGHUP re-reads); kept as the name `switch serve`, replay and the tests use."""
    from switch.engine import Engine

    return Engine.open(config, data_dir, durability=durability, rules=rules)


def _expired(transfer: Any, now_ns: int) -> bool:
    return bool(transfer.timeout) and transfer.timestamp + transfer.timeout * NS_PER_SECOND <= now_ns


def _parse_ruleset(toml_text: str):
    """load_ruleset, with any failure on operator input reported as RuleSetError: a typo in a
    rule set must be answered RULES_INVALID, never fail the batch it rides in (load_ruleset
    still lets a TypeError or AttributeError through for some shapes, fuzz finding F3)."""
    try:
        return load_ruleset(toml_text)
    except RuleSetError:
        raise
    except Exception as error:
        log.exception("rule set validation failed unexpectedly")
        raise RuleSetError(f"rule set is not valid: {type(error).__name__}: {error}") from error
