"""The engine: executes one batch of decoded requests and commits it once.

The server hands `process_batch` every request gathered from every connection
since the last batch; the engine runs them in order against the in-memory
components (ledger, merchant directory), then commits all their effects in ONE
storage write transaction.  Only then does the server send the answers.

A payment goes through explicit steps, each of which may stop it with a code:

    validate fields -> rate limit -> authorize (payer owned) -> parse QR
    -> resolve merchant -> amount -> rules decision (approve / decline / review)
    -> dynamic QR single use -> post the linked legs (payer->merchant, merchant->fee)

Consecutive payments are posted with one `create_transfers` call; any other
operation first flushes them, so every request sees the effects of the ones
before it, exactly as if they ran one by one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from typing import Any, Callable, NamedTuple, Protocol as TypingProtocol

from core_ext import limits
from core_ext.codes import Code
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


# ---- the rules slot ---------------------------------------------------------

APPROVE, DECLINE, REVIEW = "approve", "decline", "review"


class Decision(NamedTuple):
    outcome: str          # APPROVE, DECLINE or REVIEW
    code: int             # the code the wallet sees (OK for approve)


class PaymentContext(NamedTuple):
    participant: Participant
    item: PayItem
    qr: Any               # core QrResult
    merchant: Any         # switch.merchants.Merchant
    amount_minor: int
    fee_minor: int
    ledger: int
    now_ns: int


class RuleEngine(TypingProtocol):
    def decide(self, context: PaymentContext) -> Decision: ...


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


@dataclasses.dataclass
class _PendingPayment:
    """A payment that passed every check and waits for its legs to be posted."""
    slot: list            # the result list this payment's answer goes into
    index: int
    first_leg: int        # index of its first transfer in the group
    leg_count: int
    decision: Decision
    detail: list


class Engine(OperatorOps):
    """One batch at a time, from one thread; not safe for concurrent calls."""

    def __init__(self, config: Config, core: Any, ledger: Any, merchants: Any, storage: Any,
                 rules: RuleEngine | None = None, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.config = config
        self.core = core
        self.ledger = ledger
        self.merchants = merchants
        self.storage = storage
        self.rules = rules
        self.clock_ns = clock_ns
        self._buckets: dict[int, TokenBucket] = {}
        self._group: list[Transfer] = []
        self._group_payments: list[_PendingPayment] = []
        self._group_ids: set[int] = set()

    # ---- opening ----------------------------------------------------------------

    @classmethod
    def open(cls, config: Config, data_dir: str, durability: str = "fsync", core: Any = None,
             rules: RuleEngine | None = None, extra_components: tuple = ()) -> "Engine":
        """The real engine: a core ledger and merchant directory (and any other journaled
        component, e.g. the rules' state), replayed from storage."""
        import pathlib

        import core_ext
        from switch.merchants import MerchantDirectory
        from switch.storage import Storage

        core = core if core is not None else core_ext.core
        pathlib.Path(data_dir).mkdir(parents=True, exist_ok=True)
        ledger = core.Ledger(config.accounts_max)
        merchants = MerchantDirectory()
        storage = Storage.open(data_dir, [ledger, merchants, *extra_components], durability=durability)
        engine = cls(config, core, ledger, merchants, storage, rules=rules)
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
            self._flush_payments(now_ns)
        except Exception:
            # A bug: nothing of this batch may stay in memory, since none of it will be committed.
            log.exception("batch of %d requests failed; rebuilding state from storage", len(batch))
            self._reset_group()
            self.storage.reload()
            return [Outcome(Code.INTERNAL_ERROR, None)] * len(batch)
        try:
            self.storage.commit()
        except Exception:
            log.exception("commit of a batch of %d requests failed", len(batch))
            self.storage.reload()
            return [Outcome(Code.STORAGE_FAILED, None)] * len(batch)
        return [outcome() if callable(outcome) else outcome for outcome in outcomes]

    def _execute(self, participant: Participant, request: Request, now_ns: int) -> Any:
        if request.error is not None:
            return Outcome(request.error, None)
        if request.op in (protocol.OP_PAY, protocol.OP_PAY_BATCH):
            return self._pay_request(participant, request, now_ns)
        self._flush_payments(now_ns)
        handler = self._HANDLERS[request.op]
        return handler(self, participant, request.args, now_ns)

    # ---- payments -----------------------------------------------------------------

    def _pay_request(self, participant: Participant, request: Request, now_ns: int) -> Callable[[], Outcome]:
        """Queue the payments; the answer is read after the group is posted (a thunk)."""
        items = [request.args] if request.op == protocol.OP_PAY else request.args
        slot: list = [None] * len(items)
        for index, item in enumerate(items):
            slot[index] = self._prepare_payment(participant, item, slot, index, now_ns)
        if request.op == protocol.OP_PAY:
            return lambda: Outcome(*slot[0])
        return lambda: Outcome(Code.OK, [list(entry) for entry in slot])

    def _prepare_payment(self, participant: Participant, item: PayItem, slot: list, index: int, now_ns: int):
        """Every check of a payment; returns its final (code, detail) or None while it waits to post."""
        code = self._check_payer(participant, item, now_ns)
        if code:
            return (code, None)
        qr = self.core.parse_qr(item.qr_payload, now_ns // NS_PER_SECOND)
        if not qr.valid:
            return (qr.code, None)
        merchant = self.merchants.resolve(qr)
        if merchant is None:
            return (Code.MERCHANT_NOT_REGISTERED, None)
        if qr.currency and merchant.currency and qr.currency != merchant.currency:
            return (Code.CURRENCY_MISMATCH, None)
        code, amount_minor = self._amount_of(qr, item)
        if code:
            return (code, None)
        ledger = int(merchant.currency)
        fee_minor = self._fee_of(ledger, amount_minor)
        context = PaymentContext(participant, item, qr, merchant, amount_minor, fee_minor, ledger, now_ns)
        decision = self.rules.decide(context) if self.rules is not None else Decision(APPROVE, Code.OK)
        if decision.outcome == DECLINE:
            return (decision.code, None)
        code = self._consume_qr(qr, item, amount_minor, now_ns)
        if code:
            return (code, None)
        self._queue_legs(context, decision, slot, index)
        return None

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

    def _consume_qr(self, qr: Any, item: PayItem, amount_minor: int, now_ns: int) -> int:
        """The directory's guard (amount binding; a dynamic code's expiry and single use).

        Skipped for a retry of a dynamic payment already posted: the retry must reach the
        ledger to be answered EXISTS.  A dynamic code is consumed here, before posting, so
        a payment the ledger then refuses (e.g. insufficient funds) has used its code up:
        the merchant's terminal issues a new one, as for any failed dynamic payment."""
        if qr.dynamic and (item.transfer_id in self._group_ids
                           or self.ledger.lookup_transfers([item.transfer_id])[0] is not None):
            return Code.OK
        return self.merchants.check_and_consume(qr, item.qr_payload, amount_minor, now_ns // NS_PER_SECOND)

    def _queue_legs(self, context: PaymentContext, decision: Decision, slot: list, index: int) -> None:
        """Approved: payer->merchant linked to merchant->fee, all or nothing.  Held for review:
        only the payer->merchant leg, pending (a reservation); the fee leg is posted with it
        when an operator posts it (see _pending), since a merchant cannot pay a fee out of
        credits that are still pending."""
        item, merchant = context.item, context.merchant
        held = decision.outcome == REVIEW
        legs = [Transfer(
            id=item.transfer_id, debit_account_id=item.payer_account_id, credit_account_id=merchant.account_id,
            amount=context.amount_minor, ledger=context.ledger, code=TRANSFER_CODE_PAYMENT,
            flags=int(TransferFlags.PENDING) if held else 0,
            user_data_64=context.participant.id, user_data_32=_mcc_number(merchant.mcc))]
        if context.fee_minor and not held:
            legs[0].flags |= int(TransferFlags.LINKED)
            legs.append(self._fee_leg(item.transfer_id, merchant.account_id, context.ledger, context.fee_minor,
                                      context.participant.id))
        detail = [context.amount_minor, context.fee_minor, context.ledger, merchant.name]
        self._group_payments.append(_PendingPayment(slot, index, len(self._group), len(legs), decision, detail))
        self._group.extend(legs)
        self._group_ids.add(item.transfer_id)

    def _fee_leg(self, payment_id: int, merchant_account_id: int, ledger: int, fee_minor: int,
                 participant_id: int) -> Transfer:
        return Transfer(
            id=fee_id_for(payment_id), debit_account_id=merchant_account_id,
            credit_account_id=self.config.ledgers[ledger].fee_account_id, amount=fee_minor, ledger=ledger,
            code=TRANSFER_CODE_MERCHANT_FEE, user_data_64=participant_id)

    def _flush_payments(self, now_ns: int) -> None:
        if not self._group:
            return
        results = self.ledger.create_transfers(self._group, now_ns)
        for payment in self._group_payments:
            codes = results[payment.first_leg:payment.first_leg + payment.leg_count]
            payment.slot[payment.index] = self._payment_answer(codes, payment)
        self._reset_group()

    @staticmethod
    def _payment_answer(codes: list[int], payment: _PendingPayment) -> tuple[int, Any]:
        # The ledger stops a linked chain at its first non-OK event, EXISTS included: a retry
        # of a payment whose legs were committed (atomically, as one chain) reads EXISTS on
        # the first leg and LINKED_EVENT_FAILED on the rest.
        if codes[0] == Code.EXISTS and all(code in (Code.EXISTS, Code.LINKED_EVENT_FAILED) for code in codes[1:]):
            return (Code.EXISTS, payment.detail)
        causes = [code for code in codes if code not in (Code.OK, Code.LINKED_EVENT_FAILED)]
        if causes:
            # The leg that failed names the reason; its partners only say LINKED_EVENT_FAILED.
            return (causes[0], None)
        if any(code == Code.LINKED_EVENT_FAILED for code in codes):
            return (Code.LINKED_EVENT_FAILED, None)
        return (payment.decision.code, payment.detail)

    def _reset_group(self) -> None:
        self._group, self._group_payments, self._group_ids = [], [], set()

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
