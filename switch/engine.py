"""The engine: executes one batch of decoded requests and commits it once.

The server hands `process_batch` every request gathered from every connection
since the last batch; the engine runs them in order against the in-memory
components (ledger, merchant directory, rules, audit log), then commits all
their effects in ONE storage write transaction.  Only then does the server send
the answers.

Payments are the core's `Pipeline` (core_ext/reference/pipeline.py states the
pay flow step by step; core_ext/_pipeline.pyx runs it in C): decoded `pay`
items go through `Pipeline.pay`, and raw `pay` / `pay_batch` frame bodies the
server hands over unparsed (op OP_RAW_PAY) through `Pipeline.run`, which answers
the encoded response frame.  The rare operations stay here, in Python.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, NamedTuple

from core_ext import limits
from core_ext.codes import Code, describe
from core_ext.pipeline_types import (  # noqa: F401 (re-exported: tests and commands import them from here)
    TRANSFER_CODE_MERCHANT_FEE, TRANSFER_CODE_OPENING_BALANCE, TRANSFER_CODE_PAYMENT, AuditLog, LedgerSettings,
    ParticipantSettings, PipelineSettings, TokenBucket, derive_id, fee_id_for,
)
from core_ext.rules_types import RuleSet, RuleSetError, load_ruleset
from core_ext.types import Account, Transfer, TransferFlags
from switch import protocol
from switch.config import Config, ConfigError, Participant
from switch.operations import OperatorOps
from switch.protocol import HistoryQuery, PendingItem, Request

log = logging.getLogger("switch.engine")

BASIS_POINTS = 10_000
NS_PER_SECOND = 1_000_000_000
_SUCCESS = (Code.OK, Code.EXISTS)
# A request the server did not decode: `args` is the raw body of a pay / pay_batch frame and
# its answer is the encoded response frame (server.Connection hands these to the pipeline).
OP_RAW_PAY = "raw_pay"
# Several such frames of one connection, back to back with their length prefixes, as one request
# (a `FrameRun`): the pipeline runs them in one call and answers their response frames in one bytes.
OP_RAW_RUN = "raw_run"


def load_rules_file(path: str) -> RuleSet:
    """The rule set of `path`; one that cannot be read or does not load stops the switch before it
    serves (ConfigError naming the file and, for a bad rule, the rule and field)."""
    try:
        with open(path, encoding="utf-8") as file:
            return load_ruleset(file.read())
    except (OSError, UnicodeDecodeError, RuleSetError) as error:
        raise ConfigError(f"rules {path}: {error}") from error


def pipeline_settings(config: Config) -> PipelineSettings:
    return PipelineSettings(
        participants=tuple(ParticipantSettings(p.id, p.is_operator, p.range_starts, p.range_ends,
                                               p.rate_items_per_second, p.rate_burst_items)
                           for p in config.participants.values()),
        ledgers=tuple(LedgerSettings(entry.ledger, entry.fee_bps, entry.fee_account_id,
                                     entry.usd_minor_per_million_minor) for entry in config.ledgers.values()),
        review_timeout_seconds=config.review_timeout_seconds,
        rate_items_per_second=config.rate_items_per_second, rate_burst_items=config.rate_burst_items)


# ---- results ----------------------------------------------------------------

class Outcome(NamedTuple):
    code: int
    result: Any


class Encoded(NamedTuple):
    """An answer the pipeline already encoded: the request-level code, and the whole response frame."""
    code: int
    frame: bytes


class EncodedRun(NamedTuple):
    """The answers of a FrameRun: `code` is its first request-level code that is not OK (else OK),
    `frame` every response frame back to back, `codes` how many frames got each request-level code."""
    code: int
    frame: bytes
    codes: dict


class ExecutedBatch(NamedTuple):
    """A batch run in memory (Engine.execute_batch), waiting for Engine.write_batch."""
    now_ns: int
    batch: list
    outcomes: list
    record: Any             # Storage.prepare()'s record (None: nothing changed), or the error preparing it
    generation: int         # Engine.generation when it executed


class Engine(OperatorOps):
    """One batch at a time, from one thread; not safe for concurrent calls -- except that
    write_batch may run in another thread while the next batch executes (see the server)."""

    input_log: Any = None             # a switch.inputlog.InputLog: every committed batch is recorded
    generation = 0                    # recover() calls so far: a batch executed before one is dropped

    def __init__(self, config: Config, core: Any, ledger: Any, merchants: Any, storage: Any,
                 rules: Any = None, clock_ns: Callable[[], int] = time.time_ns, audit: AuditLog | None = None) -> None:
        self.config = config
        self.core = core
        self.ledger = ledger
        self.merchants = merchants
        self.storage = storage
        self.audit = audit if audit is not None else AuditLog()
        self.clock_ns = clock_ns
        self.pipeline = core.Pipeline(pipeline_settings(config), ledger, merchants, rules, self.audit)

    @property
    def rules(self) -> Any:
        """The core RuleEngine (journaled component "rules") the pipeline decides with, or None."""
        return self.pipeline.rules

    @rules.setter
    def rules(self, rules: Any) -> None:
        self.pipeline.rules = rules

    # ---- opening ----------------------------------------------------------------

    @classmethod
    def open(cls, config: Config, data_dir: str, durability: str = "fsync", core: Any = None,
             rules: Any = None, extra_components: tuple = ()) -> "Engine":
        """The real engine: a core ledger, merchant directory, the rules of config.rules_path
        (unless `rules` is given), the audit log and the review queue, all replayed from storage."""
        import pathlib

        import core_ext
        from switch.merchants import MerchantDirectory
        from switch.review_queue import ReviewQueue
        from switch.storage import Storage

        core = core if core is not None else core_ext.core
        pathlib.Path(data_dir).mkdir(parents=True, exist_ok=True)
        ledger = core.Ledger(config.accounts_max)
        merchants = MerchantDirectory()
        if rules is None and config.rules_path is not None:
            rules = core.RuleEngine(load_rules_file(config.rules_path))
        audit = AuditLog()
        reviews = ReviewQueue()           # payments held for review, for list_pending
        components = [ledger, merchants, *([rules] if rules is not None else []), audit, reviews,
                      *extra_components]
        storage = Storage.open(data_dir, components, durability=durability)
        engine = cls(config, core, ledger, merchants, storage, rules=rules, audit=audit)
        engine.attach_operations(reviews=reviews, rules_path=config.rules_path)
        engine.bootstrap()
        return engine

    def close(self) -> None:
        self.storage.close()

    def bootstrap(self) -> None:
        """Create the configured accounts, opening balances and merchants; idempotent on restart.

        Each ledger call stays within batch_events_max, each commit within one batch's worth."""
        now_ns = self.clock_ns()
        accounts = [self._account_of(entry) for entry in self.config.accounts]
        for chunk in _chunks(accounts, limits.BATCH_EVENTS_MAX):
            found = self.ledger.lookup_accounts([account.id for account in chunk])
            missing = [account for account, existing in zip(chunk, found) if existing is None]
            if missing:
                self._expect_ok(self.ledger.create_accounts(missing, now_ns), "create configured accounts")
                self.storage.commit()
        for chunk in _chunks(self._opening_transfers(), limits.BATCH_EVENTS_MAX):
            found = self.ledger.lookup_transfers([transfer.id for transfer in chunk])
            missing_transfers = [transfer for transfer, existing in zip(chunk, found) if existing is None]
            if missing_transfers:
                self._expect_ok(self.ledger.create_transfers(missing_transfers, now_ns), "fund opening balances")
                self.storage.commit()
        for index, entry in enumerate(self.config.merchants):
            self._register_merchant(index, entry)
        self.storage.commit()
        self.pipeline.sync_merchants()

    def _register_merchant(self, index: int, entry: dict) -> None:
        """A [[merchants]] entry the directory refuses stops the switch, naming the entry and why."""
        try:
            code = self.merchants.register(**entry)
        except TypeError as error:          # a key missing or unknown
            raise ConfigError(f"merchants[{index}]: {error}") from error
        if code != Code.OK:
            raise ConfigError(f"merchants[{index}] ({entry.get('scheme')} {entry.get('merchant_id')}): "
                              f"{Code(code).name}: {describe(code)}")

    @staticmethod
    def _account_of(entry) -> Account:
        return Account(id=entry.id, ledger=entry.ledger, code=entry.code, flags=entry.flags,
                       user_data_64=entry.owner, user_data_32=entry.kyc_tier)

    def _opening_transfers(self) -> list[Transfer]:
        transfers = []
        for entry in self.config.accounts:
            if entry.opening_balance_minor:
                ledger = self.config.ledgers[entry.ledger]
                transfers.append(Transfer(
                    id=derive_id(b"opening-balance", entry.id), debit_account_id=ledger.settlement_account_id,
                    credit_account_id=entry.id, amount=entry.opening_balance_minor, ledger=entry.ledger,
                    code=TRANSFER_CODE_OPENING_BALANCE))
        return transfers

    @staticmethod
    def _expect_ok(results: list[int], what: str) -> None:
        failed = [Code(code).name for code in results if code not in _SUCCESS]
        if failed:
            raise RuntimeError(f"{what}: {failed}")

    # ---- one batch --------------------------------------------------------------

    def process_batch(self, batch: list[tuple[Participant, Request]]) -> list[Outcome]:
        """Execute every request in order, commit once, and return one Outcome per request."""
        try:
            executed = self.execute_batch(batch)
        except Exception:
            # A bug: nothing of this batch may stay in memory, since none of it will be committed.
            log.exception("batch of %d requests failed; rebuilding state from storage", len(batch))
            self.recover()
            return [Outcome(Code.INTERNAL_ERROR, None)] * len(batch)
        outcomes = self.write_batch(executed)
        if outcomes is None:
            self.recover()
            return [Outcome(Code.STORAGE_FAILED, None)] * len(batch)
        return outcomes

    # process_batch in two halves, so that the server writes one batch while the next executes.

    def execute_batch(self, batch: list[tuple[Participant, Request]]) -> ExecutedBatch:
        """Run every request in order in memory and take the batch's journal record, unwritten.
        Raises on a bug: memory then holds part of the batch, and recover() must run once every
        earlier batch's write has finished (and before the next batch executes)."""
        now_ns = self.clock_ns()
        self.ledger.expire_pending(now_ns)
        outcomes: list[Any] = [self._execute(participant, request, now_ns) for participant, request in batch]
        try:
            record = self.storage.prepare()
        except Exception as error:          # e.g. a record past journal_record_bytes_max: its write fails
            record = error
        return ExecutedBatch(now_ns, batch, outcomes, record, self.generation)

    def write_batch(self, executed: ExecutedBatch) -> list[Outcome] | None:
        """Write an executed batch's record (batches in the order they executed; any thread, one at
        a time) and return its outcomes.  None when the write failed: recover() must run before the
        next batch executes.  STORAGE_FAILED for each request when a recover() since it executed
        has already dropped it from memory (it ran on the effects of a batch that failed to write)."""
        if executed.generation != self.generation:
            return [Outcome(Code.STORAGE_FAILED, None)] * len(executed.batch)
        try:
            if isinstance(executed.record, Exception):
                raise executed.record
            self.storage.write(executed.record)
        except Exception:
            log.exception("commit of a batch of %d requests failed", len(executed.batch))
            return None
        if self.input_log is not None:
            self.input_log.record(executed.now_ns, executed.batch, executed.outcomes)
        return executed.outcomes

    def recover(self) -> None:
        """Memory rebuilt from what storage holds, after a batch failed or failed to write: every
        batch executed but not yet written is dropped with it (write_batch fails them)."""
        self.storage.reload()
        self.generation += 1

    def _execute(self, participant: Participant, request: Request, now_ns: int) -> Any:
        if request.error is not None:
            return Outcome(request.error, None)
        if request.op == OP_RAW_RUN:
            frames, codes = self._after_pay(self.pipeline.run_frames(participant.id, request.args, now_ns))
            return EncodedRun(next((code for code in codes if code != Code.OK), Code.OK), frames, codes)
        if request.op == OP_RAW_PAY:
            self.pipeline.review_slots_free = self.review_slots_free(now_ns)
            frame = self._after_pay(self.pipeline.run(participant.id, request.args, now_ns))
            return Encoded(self.pipeline.last_code, frame)
        if request.op in (protocol.OP_PAY, protocol.OP_PAY_BATCH):
            return self._pay_request(participant, request, now_ns)
        handler = self._HANDLERS[request.op]
        return handler(self, participant, request.args, now_ns)

    # ---- payments -----------------------------------------------------------------

    def _pay_request(self, participant: Participant, request: Request, now_ns: int) -> Outcome:
        items = [request.args] if request.op == protocol.OP_PAY else request.args
        self.pipeline.review_slots_free = self.review_slots_free(now_ns)
        answers = self._after_pay(self.pipeline.pay(participant.id, items, now_ns))
        if request.op == protocol.OP_PAY:
            return Outcome(*answers[0])
        return Outcome(Code.OK, [list(answer) for answer in answers])

    def _after_pay(self, answer: Any) -> Any:
        """Tell the review queue (when one is attached) about the payments the pipeline just held."""
        holds = self.pipeline.take_holds()
        reviews = getattr(self, "reviews", None)
        if reviews is not None:
            for transfer_id, held_ns, participant_id, rule_ids in holds:
                reviews.hold(transfer_id, held_ns, participant_id, rule_ids)
        return answer

    def _take_tokens(self, participant: Participant, count: int, now_ns: int) -> bool:
        return self.pipeline.take_tokens(participant.id, count, now_ns)

    def _fee_of(self, ledger: int, amount_minor: int) -> int:
        return self.pipeline.fee_of(ledger, amount_minor)

    def _fee_leg(self, payment_id: int, merchant_account_id: int, ledger: int, fee_minor: int,
                 participant_id: int) -> Transfer:
        return self.pipeline.fee_leg(payment_id, merchant_account_id, ledger, fee_minor, participant_id)

    # ---- the rare operations --------------------------------------------------------

    def _transfers(self, participant: Participant, transfers: list[Transfer], now_ns: int) -> Outcome:
        if not self._take_tokens(participant, len(transfers), now_ns):
            return Outcome(Code.OK, [int(Code.RATE_LIMITED)] * len(transfers))
        denied = [not (participant.is_operator or participant.owns(t.debit_account_id)) for t in transfers]
        codes = self._create_authorized(transfers, denied, now_ns)
        self.note_transfers(transfers, codes)
        return Outcome(Code.OK, codes)

    def _create_authorized(self, transfers: list[Transfer], denied: list[bool], now_ns: int) -> list[int]:
        """Post what is authorized; a denied item fails its whole linked chain, as the ledger would."""
        codes: list[int] = [Code.OK] * len(transfers)
        chain: list[int] = []
        allowed: list[int] = []
        for index, transfer in enumerate(transfers):
            chain.append(index)
            if transfer.flags & TransferFlags.LINKED and index + 1 < len(transfers):
                continue
            if any(denied[i] for i in chain):
                for i in chain:
                    codes[i] = Code.ACCOUNT_NOT_OWNED if denied[i] else Code.LINKED_EVENT_FAILED
            else:
                allowed.extend(chain)
            chain = []
        if allowed:
            results = self.ledger.create_transfers([transfers[i] for i in allowed], now_ns)
            for i, code in zip(allowed, results):
                codes[i] = code
        return [int(code) for code in codes]

    def _accounts(self, participant: Participant, accounts: list[Account], now_ns: int) -> Outcome:
        if not participant.is_operator:
            return Outcome(Code.OK, [int(Code.OPERATOR_ROLE_REQUIRED)] * len(accounts))
        return Outcome(Code.OK, [int(code) for code in self.ledger.create_accounts(accounts, now_ns)])

    def _pending(self, participant: Participant, items: list[PendingItem], now_ns: int, flag: int) -> Outcome:
        """post_pending / void_pending: the legs are copied from the pending transfer itself.
        Posting a payment held for review posts its merchant fee leg with it, linked."""
        found = self.ledger.lookup_transfers([item.pending_id for item in items])
        codes = [int(Code.PENDING_TRANSFER_NOT_FOUND)] * len(items)
        chains: list[tuple[int, list[Transfer]]] = []
        for index, (item, pending) in enumerate(zip(items, found)):
            # Not yours looks exactly like not there: no one learns another wallet's ids.
            if pending is not None and (participant.is_operator or participant.owns(pending.debit_account_id)):
                chains.append((index, self._resolution_legs(item, pending, flag)))
        if chains:
            results = self.ledger.create_transfers([leg for _, legs in chains for leg in legs], now_ns)
            position = 0
            for index, legs in chains:
                chain_codes = results[position:position + len(legs)]
                position += len(legs)
                causes = [code for code in chain_codes if code not in (Code.OK, Code.LINKED_EVENT_FAILED)]
                codes[index] = int(causes[0] if causes else chain_codes[0])
        self.note_resolutions([item.pending_id for item in items], codes)
        return Outcome(Code.OK, codes)

    def _resolution_legs(self, item: PendingItem, pending: Transfer, flag: int) -> list[Transfer]:
        posting = flag == TransferFlags.POST_PENDING_TRANSFER
        amount = item.amount_minor if posting and item.amount_minor else pending.amount
        legs = [Transfer(
            id=item.transfer_id, debit_account_id=pending.debit_account_id,
            credit_account_id=pending.credit_account_id, amount=amount, ledger=pending.ledger,
            code=pending.code, flags=int(flag), pending_id=item.pending_id)]
        fee_minor = self._fee_of(pending.ledger, amount) if pending.code == TRANSFER_CODE_PAYMENT else 0
        if posting and fee_minor:
            legs[0].flags |= int(TransferFlags.LINKED)
            legs.append(self._fee_leg(pending.id, pending.credit_account_id, pending.ledger, fee_minor,
                                      pending.user_data_64))
        return legs

    def _post_pending(self, participant: Participant, items: list[PendingItem], now_ns: int) -> Outcome:
        return self._pending(participant, items, now_ns, TransferFlags.POST_PENDING_TRANSFER)

    def _void_pending(self, participant: Participant, items: list[PendingItem], now_ns: int) -> Outcome:
        return self._pending(participant, items, now_ns, TransferFlags.VOID_PENDING_TRANSFER)

    def _lookup_accounts(self, participant: Participant, ids: list[int], now_ns: int) -> Outcome:
        results = []
        for account in self.ledger.lookup_accounts(ids):
            if account is None or not (participant.is_operator or participant.owns(account.id)):
                results.append([int(Code.ACCOUNT_NOT_FOUND), None])
            else:
                results.append([int(Code.OK), protocol.account_to_wire(account)])
        return Outcome(Code.OK, results)

    def _lookup_transfers(self, participant: Participant, ids: list[int], now_ns: int) -> Outcome:
        results = []
        for transfer in self.ledger.lookup_transfers(ids):
            if transfer is None or not self._may_see(participant, transfer):
                results.append([int(Code.TRANSFER_NOT_FOUND), None])
            else:
                results.append([int(Code.OK), protocol.transfer_to_wire(transfer)])
        return Outcome(Code.OK, results)

    @staticmethod
    def _may_see(participant: Participant, transfer: Transfer) -> bool:
        return (participant.is_operator or participant.owns(transfer.debit_account_id)
                or participant.owns(transfer.credit_account_id))

    def _account_history(self, participant: Participant, query: HistoryQuery, now_ns: int) -> Outcome:
        if not (participant.is_operator or participant.owns(query.account_id)):
            return Outcome(Code.ACCOUNT_NOT_FOUND, None)
        if self.ledger.lookup_accounts([query.account_id])[0] is None:
            return Outcome(Code.ACCOUNT_NOT_FOUND, None)
        entries = self.ledger.account_history(query.account_id, query.limit)
        return Outcome(Code.OK, [_history_entry_to_wire(entry) for entry in entries])

    def _ping(self, participant: Participant, args: None, now_ns: int) -> Outcome:
        return Outcome(Code.OK, None)

    _HANDLERS = {
        protocol.OP_TRANSFERS: _transfers, protocol.OP_ACCOUNTS: _accounts,
        protocol.OP_POST_PENDING: _post_pending, protocol.OP_VOID_PENDING: _void_pending,
        protocol.OP_LOOKUP_ACCOUNTS: _lookup_accounts, protocol.OP_LOOKUP_TRANSFERS: _lookup_transfers,
        protocol.OP_ACCOUNT_HISTORY: _account_history, protocol.OP_PING: _ping,
        protocol.OP_STATS: OperatorOps._op_stats, protocol.OP_RELOAD_RULES: OperatorOps._op_reload_rules,
        protocol.OP_LIST_PENDING: OperatorOps._op_list_pending,
    }


def _history_entry_to_wire(entry: tuple) -> list[int]:
    """[timestamp_ns, debits_pending, debits_posted, credits_pending, credits_posted]."""
    return [int(value) for value in entry]


def _chunks(items: list, size: int) -> list[list]:
    return [items[start:start + size] for start in range(0, len(items), size)]
