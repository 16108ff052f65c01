"""The engine: executes one batch of decoded requests and commits it once.

The server hands `process_batch` every request gathered from every connection
since the last batch; the engine runs them in order against the in-memory
components (ledger, merchant directory), then commits all their effects in ONE
storage write transaction.  Only then does the server send the answers.

A payment goes through explicit steps, each of which may stop it with a code:

    validate fields -> rate limit -> authorize (payer owned) -> parse QR
    -> resolve merchant -> amount -> accounts exist -> retry? (answer from the ledger)
    -> rules decision (approve / decline / review) -> dynamic QR single use
    -> post the legs (approved: payer->merchant linked to merchant->fee;
       review: payer->merchant pending) -> rules observe -> audit record

Each payment is posted before the next one is decided, so the rules of payment
N+1 see the counters payment N left behind, exactly as if they ran one by one
(a payer cannot slip 25 payments past a 20-a-day limit by batching them).
The rules' state and the audit log are journaled components, committed in the
batch's one LMDB transaction with the postings they describe.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from typing import Any, Callable, NamedTuple

from core_ext import limits
from core_ext.codes import Code
from core_ext.pipeline_types import (
    COUNTRY_NUMERIC, LEDGER_COUNTRY, AuditLog, AuditRecord, FiredRule, available_minor, device_digest, qr_digest,
    usd_minor,
)
from core_ext.rules_types import Action, Decision, PaymentContext, RuleSet, load_ruleset
from core_ext.types import Account, Transfer, TransferFlags
from switch import protocol
from switch.config import Config, Participant
from switch.operations import OperatorOps
from switch.protocol import HistoryQuery, PayItem, PendingItem, Request

log = logging.getLogger("switch.engine")

# Transfer codes (the ledger's `code` field) the switch itself posts.
TRANSFER_CODE_PAYMENT = 1
TRANSFER_CODE_MERCHANT_FEE = 2
TRANSFER_CODE_OPENING_BALANCE = 3
# Account codes (docs/INTERNALS.md): a person's receiving account is what the fan-in and balance cap rules watch.
ACCOUNT_CODE_PERSONAL_RECEIVING = 5
BASIS_POINTS = 10_000
NS_PER_SECOND = 1_000_000_000
_SUCCESS = (Code.OK, Code.EXISTS)


def derive_id(purpose: bytes, source_id: int) -> int:
    """A u128 id derived from another id: the same payment id always yields the same fee
    leg id, so an idempotent retry posts the same legs and gets EXISTS, never a double."""
    digest = hashlib.blake2b(purpose + source_id.to_bytes(16, "big"), digest_size=16).digest()
    derived = int.from_bytes(digest, "big")
    return derived if 0 < derived < protocol.U128_MAX else 1


def fee_id_for(payment_id: int) -> int:
    return derive_id(b"merchant-fee", payment_id)


def load_rules_file(path: str) -> RuleSet:
    """The rule set of `path`; a RuleSetError (or OSError) stops the switch before it serves."""
    with open(path, encoding="utf-8") as file:
        return load_ruleset(file.read())


# ---- the rules slot ---------------------------------------------------------

APPROVE, REVIEW, DECLINE = int(Action.APPROVE), int(Action.REVIEW), int(Action.DECLINE)
# No rule set configured: every payment is approved, nothing is audited.
NO_RULES = Decision(APPROVE, int(Code.OK), (), "")


# ---- rate limiting ------------------------------------------------------------

class TokenBucket:
    """Items per second per participant, with a burst; refilled from the batch clock."""

    __slots__ = ("rate_per_second", "burst", "tokens", "updated_ns")

    def __init__(self, rate_per_second: int, burst: int, now_ns: int) -> None:
        self.rate_per_second = rate_per_second
        self.burst = burst
        self.tokens = burst
        self.updated_ns = now_ns

    def take(self, count: int, now_ns: int) -> bool:
        elapsed_ns = max(0, now_ns - self.updated_ns)
        refill = elapsed_ns * self.rate_per_second // NS_PER_SECOND
        if refill:
            self.tokens = min(self.burst, self.tokens + refill)
            # Advance only by the time the whole tokens account for, so fractions are not lost.
            self.updated_ns += refill * NS_PER_SECOND // self.rate_per_second
        if self.tokens < count:
            return False
        self.tokens -= count
        return True


# ---- results ----------------------------------------------------------------

class Outcome(NamedTuple):
    code: int
    result: Any


@dataclasses.dataclass(slots=True)
class _Payment:
    """A payment that passed the field, QR, merchant and amount checks."""
    participant: Participant
    item: PayItem
    qr: Any               # core QrResult
    merchant: Any         # switch.merchants.Merchant
    amount_minor: int
    fee_minor: int
    ledger: int

    def detail(self) -> list:
        return [self.amount_minor, self.fee_minor, self.ledger, self.merchant.name]


class Engine(OperatorOps):
    """One batch at a time, from one thread; not safe for concurrent calls."""

    input_log: Any = None             # a switch.inputlog.InputLog: every committed batch is recorded

    def __init__(self, config: Config, core: Any, ledger: Any, merchants: Any, storage: Any,
                 rules: Any = None, clock_ns: Callable[[], int] = time.time_ns, audit: AuditLog | None = None) -> None:
        self.config = config
        self.core = core
        self.ledger = ledger
        self.merchants = merchants
        self.storage = storage
        self.rules = rules            # a core RuleEngine (journaled component "rules"), or None
        self.audit = audit if audit is not None else AuditLog()
        self.clock_ns = clock_ns
        self._buckets: dict[int, TokenBucket] = {}

    # ---- opening ----------------------------------------------------------------

    @classmethod
    def open(cls, config: Config, data_dir: str, durability: str = "fsync", core: Any = None,
             rules: Any = None, extra_components: tuple = ()) -> "Engine":
        """The real engine: a core ledger, merchant directory, the rules of config.rules_path
        (unless `rules` is given) and the audit log, all replayed from storage."""
        import pathlib

        import core_ext
        from switch.merchants import MerchantDirectory
        from switch.storage import Storage

        core = core if core is not None else core_ext.core
        pathlib.Path(data_dir).mkdir(parents=True, exist_ok=True)
        ledger = core.Ledger(config.accounts_max)
        merchants = MerchantDirectory()
        if rules is None and config.rules_path is not None:
            rules = core.RuleEngine(load_rules_file(config.rules_path))
        audit = AuditLog()
        components = [ledger, merchants, *([rules] if rules is not None else []), audit, *extra_components]
        storage = Storage.open(data_dir, components, durability=durability)
        engine = cls(config, core, ledger, merchants, storage, rules=rules, audit=audit)
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
        for merchant in self.config.merchants:
            code = self.merchants.register(**merchant)
            if code != Code.OK:
                raise RuntimeError(f"merchant {merchant}: {Code(code).name}")
        self.storage.commit()

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
        now_ns = self.clock_ns()
        try:
            self.ledger.expire_pending(now_ns)
            outcomes: list[Any] = [self._execute(participant, request, now_ns) for participant, request in batch]
        except Exception:
            # A bug: nothing of this batch may stay in memory, since none of it will be committed.
            log.exception("batch of %d requests failed; rebuilding state from storage", len(batch))
            self.storage.reload()
            return [Outcome(Code.INTERNAL_ERROR, None)] * len(batch)
        try:
            self.storage.commit()
        except Exception:
            log.exception("commit of a batch of %d requests failed", len(batch))
            self.storage.reload()
            return [Outcome(Code.STORAGE_FAILED, None)] * len(batch)
        if self.input_log is not None:
            self.input_log.record(now_ns, batch, outcomes)
        return outcomes

    def _execute(self, participant: Participant, request: Request, now_ns: int) -> Any:
        if request.error is not None:
            return Outcome(request.error, None)
        if request.op in (protocol.OP_PAY, protocol.OP_PAY_BATCH):
            return self._pay_request(participant, request, now_ns)
        handler = self._HANDLERS[request.op]
        return handler(self, participant, request.args, now_ns)

    # ---- payments -----------------------------------------------------------------

    def _pay_request(self, participant: Participant, request: Request, now_ns: int) -> Outcome:
        if request.op == protocol.OP_PAY:
            return Outcome(*self._pay_one(participant, request.args, now_ns))
        return Outcome(Code.OK, [list(self._pay_one(participant, item, now_ns)) for item in request.args])

    def _pay_one(self, participant: Participant, item: PayItem, now_ns: int) -> tuple[int, Any]:
        """One payment, every step in order; returns (code, detail) as the wallet sees it."""
        code = self._check_payer(participant, item, now_ns)
        if code:
            return (code, None)
        code, payment = self._resolve(participant, item, now_ns)
        if code:
            return (code, None)
        payer, merchant_account = self.ledger.lookup_accounts([item.payer_account_id, payment.merchant.account_id])
        if payer is None or merchant_account is None:
            return (Code.DEBIT_ACCOUNT_NOT_FOUND if payer is None else Code.CREDIT_ACCOUNT_NOT_FOUND, None)
        stored = self.ledger.lookup_transfers([item.transfer_id])[0]
        if stored is not None:
            # A retry: the ledger answers it (EXISTS, or EXISTS_WITH_DIFFERENT_*); it is not decided
            # again, since the rules' counters already hold the first attempt.
            return self._post(payment, bool(stored.flags & TransferFlags.PENDING), now_ns)
        context = self._rules_context(payment, payer, merchant_account, now_ns)
        decision = self.rules.evaluate(context) if self.rules is not None else NO_RULES
        answer = self._act_on(payment, decision, now_ns)
        if answer[0] == Code.RISK_REVIEW:
            self.note_held(item.transfer_id, now_ns, participant.id, decision.fired)   # the operator's review queue
        if self.rules is not None and answer[0] in (Code.OK, Code.RISK_REVIEW):
            self.rules.observe(context, decision)
        if decision.fired or decision.action != APPROVE:
            self._audit(payment, decision, answer[0], now_ns)
        return answer

    def _resolve(self, participant: Participant, item: PayItem, now_ns: int) -> tuple[int, _Payment | None]:
        """QR -> merchant -> amount -> fee."""
        qr = self.core.parse_qr(item.qr_payload, now_ns // NS_PER_SECOND)
        if not qr.valid:
            return qr.code, None
        merchant = self.merchants.resolve(qr)
        if merchant is None:
            return Code.MERCHANT_NOT_REGISTERED, None
        if qr.currency and merchant.currency and qr.currency != merchant.currency:
            return Code.CURRENCY_MISMATCH, None
        code, amount_minor = self._amount_of(qr, item)
        if code:
            return code, None
        ledger = int(merchant.currency)
        return Code.OK, _Payment(participant, item, qr, merchant, amount_minor, self._fee_of(ledger, amount_minor), ledger)

    def _act_on(self, payment: _Payment, decision: Decision, now_ns: int) -> tuple[int, Any]:
        if decision.action == DECLINE:
            return (decision.code, None)
        code = self.merchants.check_and_consume(payment.qr, payment.item.qr_payload, payment.amount_minor,
                                                now_ns // NS_PER_SECOND)
        if code:
            return (code, None)
        code, detail = self._post(payment, decision.action == REVIEW, now_ns)
        return (decision.code, detail) if code == Code.OK else (code, detail)

    def _check_payer(self, participant: Participant, item: PayItem, now_ns: int) -> int:
        if item.transfer_id == 0 or item.transfer_id == protocol.U128_MAX:
            return Code.ID_MUST_NOT_BE_ZERO if item.transfer_id == 0 else Code.ID_MUST_NOT_BE_INT_MAX
        if not self._take_tokens(participant, 1, now_ns):
            return Code.RATE_LIMITED
        if not (participant.is_operator or participant.owns(item.payer_account_id)):
            return Code.ACCOUNT_NOT_OWNED
        return Code.OK

    @staticmethod
    def _amount_of(qr: Any, item: PayItem) -> tuple[int, int]:
        """The QR's amount wins when it has one; a differing amount from the wallet is refused."""
        if qr.amount_minor:
            if item.amount_minor and item.amount_minor != qr.amount_minor:
                return Code.AMOUNT_MISMATCH, 0
            return Code.OK, qr.amount_minor
        if not item.amount_minor:
            return Code.PAYMENT_AMOUNT_INVALID, 0
        return Code.OK, item.amount_minor

    def _fee_of(self, ledger: int, amount_minor: int) -> int:
        ledger_config = self.config.ledgers.get(ledger)
        if ledger_config is None:
            return 0
        # Floor: the merchant never pays more than the stated rate.
        return amount_minor * ledger_config.fee_bps // BASIS_POINTS

    def _rules_context(self, payment: _Payment, payer: Account, merchant_account: Account, now_ns: int) -> PaymentContext:
        """What the rules see (docs/INTERNALS.md, "The pay flow and the rules")."""
        qr, merchant = payment.qr, payment.merchant
        personal = merchant_account.code == ACCOUNT_CODE_PERSONAL_RECEIVING
        ledger_config = self.config.ledgers.get(payment.ledger)
        rate = ledger_config.usd_minor_per_million_minor if ledger_config is not None else 0
        expires_ns = qr.expiry_s * NS_PER_SECOND if qr.expiry_s else 0
        if qr.dynamic and not expires_ns:
            expires_ns = now_ns + limits.QR_UNDATED_DYNAMIC_LIFETIME_SECONDS * NS_PER_SECOND
        return PaymentContext(
            payer_account_id=payer.id, payer_kyc_tier=payer.user_data_32, payer_created_ns=payer.timestamp,
            payer_balance_minor=available_minor(payer), merchant_account_id=merchant.account_id,
            merchant_mcc=_mcc_number(merchant.mcc), merchant_is_personal=personal,
            merchant_country=COUNTRY_NUMERIC.get(merchant.country, 0),
            payer_country=LEDGER_COUNTRY.get(payer.ledger, 0),
            device_id=device_digest(payment.item.device_id), qr_digest=qr_digest(payment.item.qr_payload),
            qr_dynamic=bool(qr.dynamic), amount_minor=payment.amount_minor, currency=payment.ledger,
            amount_usd_minor=usd_minor(payment.amount_minor, rate),
            # The wallet holds a full-KYC payer's name and address; the switch holds the registered merchant's.
            originator_info_present=payer.user_data_32 >= 1, beneficiary_info_present=True,
            now_ns=now_ns, qr_merchant_account_id=merchant.account_id, qr_expires_ns=expires_ns,
            qr_amount_minor=qr.amount_minor or 0,
            merchant_kyc_tier=merchant_account.user_data_32 if personal else 0,
            merchant_balance_minor=available_minor(merchant_account) if personal else 0)

    def _legs(self, payment: _Payment, held: bool) -> list[Transfer]:
        """Approved: payer->merchant linked to merchant->fee, all or nothing.  Held for review:
        only the payer->merchant leg, pending (a reservation that the ledger voids after the
        review timeout); the fee leg is posted with it when an operator posts it (see _pending),
        since a merchant cannot pay a fee out of credits that are still pending."""
        item, merchant = payment.item, payment.merchant
        legs = [Transfer(
            id=item.transfer_id, debit_account_id=item.payer_account_id, credit_account_id=merchant.account_id,
            amount=payment.amount_minor, ledger=payment.ledger, code=TRANSFER_CODE_PAYMENT,
            flags=int(TransferFlags.PENDING) if held else 0,
            timeout=self.config.review_timeout_seconds if held else 0,
            user_data_64=payment.participant.id, user_data_32=_mcc_number(merchant.mcc))]
        if payment.fee_minor and not held:
            legs[0].flags |= int(TransferFlags.LINKED)
            legs.append(self._fee_leg(item.transfer_id, merchant.account_id, payment.ledger, payment.fee_minor,
                                      payment.participant.id))
        return legs

    def _fee_leg(self, payment_id: int, merchant_account_id: int, ledger: int, fee_minor: int,
                 participant_id: int) -> Transfer:
        return Transfer(
            id=fee_id_for(payment_id), debit_account_id=merchant_account_id,
            credit_account_id=self.config.ledgers[ledger].fee_account_id, amount=fee_minor, ledger=ledger,
            code=TRANSFER_CODE_MERCHANT_FEE, user_data_64=participant_id)

    def _post(self, payment: _Payment, held: bool, now_ns: int) -> tuple[int, Any]:
        codes = self.ledger.create_transfers(self._legs(payment, held), now_ns)
        return self._payment_answer(codes, payment.detail())

    @staticmethod
    def _payment_answer(codes: list[int], detail: list) -> tuple[int, Any]:
        # The ledger stops a linked chain at its first non-OK event, EXISTS included: a retry
        # of a payment whose legs were committed (atomically, as one chain) reads EXISTS on
        # the first leg and LINKED_EVENT_FAILED on the rest.
        if codes[0] == Code.EXISTS and all(code in (Code.EXISTS, Code.LINKED_EVENT_FAILED) for code in codes[1:]):
            return (Code.EXISTS, detail)
        causes = [code for code in codes if code not in (Code.OK, Code.LINKED_EVENT_FAILED)]
        if causes:
            # The leg that failed names the reason; its partners only say LINKED_EVENT_FAILED.
            return (causes[0], None)
        if any(code == Code.LINKED_EVENT_FAILED for code in codes):
            return (Code.LINKED_EVENT_FAILED, None)
        return (Code.OK, detail)

    def _audit(self, payment: _Payment, decision: Decision, code: int, now_ns: int) -> None:
        item = payment.item
        self.audit.append(AuditRecord(
            item.transfer_id, item.payer_account_id, payment.merchant.account_id, payment.amount_minor,
            payment.ledger, now_ns, int(decision.action), int(code), decision.ruleset_hash,
            tuple(FiredRule(*fired) for fired in decision.fired)))

    def _take_tokens(self, participant: Participant, count: int, now_ns: int) -> bool:
        bucket = self._buckets.get(participant.id)
        if bucket is None:
            bucket = TokenBucket(self.config.rate_items_per_second, self.config.rate_burst_items, now_ns)
            self._buckets[participant.id] = bucket
        return bucket.take(count, now_ns)

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


def _mcc_number(mcc: Any) -> int:
    """The merchant category code kept on the payment leg (user_data_32), for reports."""
    text = str(mcc or "")
    return int(text) if text.isdigit() else 0


def _chunks(items: list, size: int) -> list[list]:
    return [items[start:start + size] for start in range(0, len(items), size)]
