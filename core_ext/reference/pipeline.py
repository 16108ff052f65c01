"""The payment pipeline, pure-Python reference twin of core_ext/_pipeline.pyx.

The readable statement of the pay flow.  One payment, in order, stopping at the
first step that refuses it:

    ids (not 0, not 2^128-1) -> rate limit -> payer owned by the participant
    -> QR valid -> merchant registered -> currencies agree -> amount
    -> payer and merchant accounts exist
    -> retry? (the id is in the ledger: post the same legs again; the ledger answers)
    -> rules evaluate -> decline: its code, nothing posted
    -> review with the review queue full (review_slots_free 0): REVIEW_QUEUE_FULL, nothing posted
    -> dynamic QR guard (single use, expiry, bound amount)
    -> post: approved = payer->merchant linked to merchant->fee; review = payer->merchant pending
    -> rules observe (the ledger accepted) -> audit record (not a plain approval)

Each payment is posted before the next one is decided, so the rules of payment
N+1 see what payment N did.  `run` takes a raw `pay` / `pay_batch` frame body,
decodes it exactly as switch/protocol.py does, and answers the response frame's
bytes; `pay` takes decoded items.  Stage clocks are read once per stage per call.
"""
from __future__ import annotations

import bisect
import collections
import time
from typing import Any

from core_ext import limits
from core_ext.codes import Code
from core_ext.pipeline_types import (
    ACCOUNT_CODE_PERSONAL_RECEIVING, BASIS_POINTS, COUNTRY_NUMERIC, LEDGER_COUNTRY, NS_PER_SECOND,
    TRANSFER_CODE_MERCHANT_FEE, TRANSFER_CODE_PAYMENT, U128_MAX, AuditLog, AuditRecord, FiredRule, PipelineSettings,
    TokenBucket, available_minor, device_digest, fee_id_for, qr_digest, usd_minor,
)
from core_ext.reference.qr import parse_qr
from core_ext.rules_types import Action, Decision, PaymentContext
from core_ext.types import Transfer, TransferFlags

APPROVE, REVIEW, DECLINE = int(Action.APPROVE), int(Action.REVIEW), int(Action.DECLINE)
NO_RULES = Decision(APPROVE, int(Code.OK), (), "")
# Stats stages; rules and post are the two parts of one per-payment pass (pay_one).
STAGES = ("decode", "qr", "rules", "post", "respond")
# Fast-path header: [request_id, "pay" | "pay_batch", args] (msgpack fixarray of 3).
_PAY_OPS = {b"pay": 1, b"pay_batch": 2}


class Pipeline:
    """Executes payments against a ledger, a merchant directory, the rules and the audit log."""

    def __init__(self, settings: PipelineSettings, ledger: Any, merchants: Any, rules: Any = None,
                 audit: AuditLog | None = None) -> None:
        self.ledger = ledger
        self.merchants = merchants
        self.rules = rules                 # a RuleEngine of the same core, or None; may be swapped between batches
        self.audit = audit if audit is not None else AuditLog()
        self.review_timeout_seconds = settings.review_timeout_seconds
        self._participants = {p.id: p for p in settings.participants}
        # (items per second, burst) per participant: its own, or the switch-wide one.
        self._rates = {p.id: (p.rate_items_per_second or settings.rate_items_per_second,
                              p.rate_burst_items or settings.rate_burst_items) for p in settings.participants}
        self._ledgers = {entry.ledger: entry for entry in settings.ledgers}
        self._buckets: dict[int, TokenBucket] = {}
        self._holds: list[tuple] = []
        # Payments the review queue can still take; the engine sets it before each call from the
        # queue's length, each hold takes one, and at 0 a payment to hold is declined REVIEW_QUEUE_FULL.
        self.review_slots_free = limits.REVIEW_QUEUE_ITEMS_MAX
        self._stage_ns = dict.fromkeys(STAGES, 0)
        self._counts = {"payments": 0, "calls": 0}
        self._code_counts: collections.Counter = collections.Counter()
        self.last_code = int(Code.OK)       # the request-level code of the last run (OK for a run batch)

    # ---- participants, merchants, rate ----------------------------------------------

    def sync_merchants(self) -> int:
        """The compiled core mirrors the directory into C; the twin asks the directory itself."""
        return len(self.merchants) if self.merchants is not None else 0

    def owns(self, participant_id: int, account_id: int) -> bool:
        participant = self._participants.get(participant_id)
        if participant is None:
            return False
        if participant.is_operator:
            return True
        index = bisect.bisect_right(participant.range_starts, account_id) - 1
        return index >= 0 and account_id <= participant.range_ends[index]

    def take_tokens(self, participant_id: int, count: int, now_ns: int) -> bool:
        if participant_id not in self._participants:
            return False
        bucket = self._buckets.get(participant_id)
        if bucket is None:
            bucket = self._buckets[participant_id] = TokenBucket(*self._rates[participant_id], now_ns)
        return bucket.take(count, now_ns)

    def fee_of(self, ledger: int, amount_minor: int) -> int:
        entry = self._ledgers.get(ledger)
        # Floor: the merchant never pays more than the stated rate.
        return amount_minor * entry.fee_bps // BASIS_POINTS if entry is not None else 0

    def fee_leg(self, payment_id: int, merchant_account_id: int, ledger: int, fee_minor: int,
                participant_id: int) -> Transfer:
        return Transfer(
            id=fee_id_for(payment_id), debit_account_id=merchant_account_id,
            credit_account_id=self._ledgers[ledger].fee_account_id, amount=fee_minor, ledger=ledger,
            code=TRANSFER_CODE_MERCHANT_FEE, user_data_64=participant_id)

    # ---- raw frames -------------------------------------------------------------------

    @staticmethod
    def peek(body: bytes) -> tuple[int, int]:
        """(ledger events, request id) of a body the fast path takes ([uint, "pay"|"pay_batch", ...]),
        or (-1, 0).  Reads only the header: a malformed rest is `run`'s to answer, exactly as the slow
        path would; the request id lets the server answer a shed request (BUSY) in its place."""
        if len(body) < 2 or body[0] != 0x93:
            return (-1, 0)
        request_id, position = _read_request_id(body, 1)
        if position < 0 or position >= len(body) or not 0xA0 <= body[position] <= 0xBF:
            return (-1, 0)
        length = body[position] - 0xA0
        if position + 1 + length > len(body):
            return (-1, 0)                       # the op str runs past the end (fuzz finding F4)
        op = _PAY_OPS.get(bytes(body[position + 1:position + 1 + length]))
        if op is None:
            return (-1, 0)
        if op == 1:
            return (2, request_id)
        count = _array_length(body, position + 1 + length)
        return (2 * count if 0 < count <= limits.BATCH_FRAME_ITEMS_MAX else 1, request_id)

    @staticmethod
    def refuse_frames(frames: bytes, code: int) -> bytes:
        """The answer [request id, code, nil] to every frame of `frames` (length-prefixed bodies
        back to back, as `cut` took them), each under its own request id (0 where `peek` reads
        none): what a shed or failed FrameRun is answered."""
        from switch import protocol

        return protocol.refusal_frames(frames, code, lambda body: Pipeline.peek(body)[1])

    def run(self, participant_id: int, body: bytes, now_ns: int) -> bytes:
        """One raw request body in, its whole response frame out."""
        from switch import protocol

        started_ns = time.monotonic_ns()
        request = protocol.decode_request(body)
        decoded_ns = time.monotonic_ns()
        self._stage_ns["decode"] += decoded_ns - started_ns
        if request.error is not None:
            result = (request.error, None)
        elif request.op not in (protocol.OP_PAY, protocol.OP_PAY_BATCH):
            result = (Code.UNKNOWN_OPERATION, None)
        elif request.op == protocol.OP_PAY:
            result = self.pay(participant_id, [request.args], now_ns)[0]
        else:
            result = (Code.OK, [list(answer) for answer in self.pay(participant_id, request.args, now_ns)])
        self.last_code = int(result[0])
        encode_ns = time.monotonic_ns()
        frame = protocol.pack_frame(protocol.response(request.request_id, *result))
        self._stage_ns["respond"] += time.monotonic_ns() - encode_ns
        return frame

    @staticmethod
    def cut(data: Any, start: int, end: int, frames_max: int, body_bytes_budget: int, events_max: int,
            frame_bytes_max: int) -> tuple[int, int, int, int]:
        """The run of complete frames at data[start:end] (4-byte length prefix + body each) that
        `run_frames` takes as one unit: (frames, end offset, ledger events, body bytes).  It stops
        before a frame `peek` does not take, an incomplete one, one whose length is refused (0 or
        past frame_bytes_max: the caller's own cutting answers those), and once frames_max frames
        or body_bytes_budget bytes are taken or events_max would be passed (one frame at least)."""
        if end > len(data) or start < 0:
            raise ValueError("cut: start/end outside the buffer")
        frames = events = body_bytes = 0
        while frames < frames_max and body_bytes < body_bytes_budget and end - start >= 4:
            length = int.from_bytes(data[start:start + 4], "big")
            if length == 0 or length > frame_bytes_max or end - start - 4 < length:
                break
            taken, _ = Pipeline.peek(bytes(data[start + 4:start + 4 + length]))
            if taken < 0 or (frames and events + taken > events_max):
                break
            frames, events, body_bytes, start = frames + 1, events + taken, body_bytes + length, start + 4 + length
        return (frames, start, events, body_bytes)

    def run_frames(self, participant_id: int, frames: bytes, now_ns: int) -> tuple[bytes, dict[int, int]]:
        """Every frame of `frames` (length-prefixed bodies back to back, as `cut` took them) run in
        order, as `run` would one by one: (their response frames back to back, {request-level code:
        frames})."""
        answers = []
        codes: dict[int, int] = {}
        position = 0
        while position < len(frames):
            length = int.from_bytes(frames[position:position + 4], "big")
            if position + 4 + length > len(frames) or position + 4 > len(frames):
                raise ValueError("run_frames: a frame runs past the end")
            answers.append(self.run(participant_id, frames[position + 4:position + 4 + length], now_ns))
            codes[self.last_code] = codes.get(self.last_code, 0) + 1
            position += 4 + length
        return b"".join(answers), codes

    # ---- payments ----------------------------------------------------------------------

    def pay(self, participant_id: int, items: list, now_ns: int) -> list[tuple[int, Any]]:
        """Every payment of `items` (protocol.PayItem) in order; one (code, detail) each."""
        started_ns = time.monotonic_ns()
        verdicts = [parse_qr(item.qr_payload, now_ns // NS_PER_SECOND) for item in items]
        checked_ns = time.monotonic_ns()
        rules_before_ns = self._stage_ns["rules"]
        answers = [self.pay_one(participant_id, item, qr, now_ns) for item, qr in zip(items, verdicts)]
        self._stage_ns["qr"] += checked_ns - started_ns
        # pay_one times the rules' steps; every other step of the pass is the post stage.
        self._stage_ns["post"] += time.monotonic_ns() - checked_ns - (self._stage_ns["rules"] - rules_before_ns)
        self._counts["payments"] += len(items)
        self._counts["calls"] += 1
        self._code_counts.update(int(code) for code, _ in answers)
        return answers

    def pay_one(self, participant_id: int, item: Any, qr: Any, now_ns: int) -> tuple[int, Any]:
        code = self._check_payer(participant_id, item, now_ns)
        if code:
            return (code, None)
        code, payment = self._resolve(participant_id, item, qr)
        if code:
            return (code, None)
        payer, merchant_account = self.ledger.lookup_accounts([item.payer_account_id, payment.merchant.account_id])
        if payer is None or merchant_account is None:
            return (Code.DEBIT_ACCOUNT_NOT_FOUND if payer is None else Code.CREDIT_ACCOUNT_NOT_FOUND, None)
        stored = self.ledger.lookup_transfers([item.transfer_id])[0]
        if stored is not None:
            # A retry is answered by the ledger (EXISTS or EXISTS_WITH_DIFFERENT_*), never decided
            # again: the rules' counters already hold the first attempt.
            return self._post(payment, bool(stored.flags & TransferFlags.PENDING), now_ns)
        rules_from_ns = time.monotonic_ns()
        context = self._rules_context(payment, payer, merchant_account, now_ns)
        decision = self.rules.evaluate(context) if self.rules is not None else NO_RULES
        self._add_rules_ns(rules_from_ns)
        answer = self._act_on(payment, decision, now_ns)
        rules_from_ns = time.monotonic_ns()
        self._after_rules(payment, item, context, decision, answer, participant_id, now_ns)
        self._add_rules_ns(rules_from_ns)
        return answer

    def _add_rules_ns(self, from_ns: int) -> None:
        """Time since from_ns to the rules stage (none without rules, as in the compiled core)."""
        if self.rules is not None:
            self._stage_ns["rules"] += time.monotonic_ns() - from_ns

    def _after_rules(self, payment, item, context, decision, answer, participant_id: int, now_ns: int) -> None:
        """Observe a posted payment, report a held one to the review queue, audit a fired rule."""
        if self.rules is not None and answer[0] in (Code.OK, Code.RISK_REVIEW):
            self.rules.observe(context, decision)
        if answer[0] == Code.RISK_REVIEW:
            self.review_slots_free -= 1
            self._holds.append((item.transfer_id, now_ns, participant_id, tuple(rule_id for rule_id, _, _ in decision.fired)))
        if decision.fired or decision.action != APPROVE:
            self._audit(payment, decision, answer[0], now_ns)

    def _check_payer(self, participant_id: int, item: Any, now_ns: int) -> int:
        if item.transfer_id == 0 or item.transfer_id == U128_MAX:
            return Code.ID_MUST_NOT_BE_ZERO if item.transfer_id == 0 else Code.ID_MUST_NOT_BE_INT_MAX
        if participant_id not in self._participants:
            return Code.ACCOUNT_NOT_OWNED            # no participant of this switch owns anything
        if not self.take_tokens(participant_id, 1, now_ns):
            return Code.RATE_LIMITED
        if not self.owns(participant_id, item.payer_account_id):
            return Code.ACCOUNT_NOT_OWNED
        return Code.OK

    def _resolve(self, participant_id: int, item: Any, qr: Any) -> tuple[int, "_Payment | None"]:
        """QR -> merchant -> currency -> amount -> fee."""
        if not qr.valid:
            return qr.code, None
        merchant = self.merchants.resolve(qr)
        if merchant is None:
            return Code.MERCHANT_NOT_REGISTERED, None
        if qr.currency and merchant.currency and qr.currency != merchant.currency:
            return Code.CURRENCY_MISMATCH, None
        code, amount_minor = _amount_of(qr, item)
        if code:
            return code, None
        ledger = int(merchant.currency)
        return Code.OK, _Payment(participant_id, item, qr, merchant, amount_minor, self.fee_of(ledger, amount_minor),
                                 ledger)

    def _rules_context(self, payment: "_Payment", payer: Any, merchant_account: Any, now_ns: int) -> PaymentContext:
        """What the rules see (docs/INTERNALS.md, "The pay flow and the rules")."""
        qr, merchant = payment.qr, payment.merchant
        personal = merchant_account.code == ACCOUNT_CODE_PERSONAL_RECEIVING
        entry = self._ledgers.get(payment.ledger)
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
            amount_usd_minor=usd_minor(payment.amount_minor, entry.usd_minor_per_million_minor if entry else 0),
            # The wallet holds a full-KYC payer's name and address; the switch holds the registered merchant's.
            originator_info_present=payer.user_data_32 >= 1, beneficiary_info_present=True,
            now_ns=now_ns, qr_merchant_account_id=merchant.account_id, qr_expires_ns=expires_ns,
            qr_amount_minor=qr.amount_minor or 0,
            merchant_kyc_tier=merchant_account.user_data_32 if personal else 0,
            merchant_balance_minor=available_minor(merchant_account) if personal else 0,
            **self._reference_rate(payment.ledger))

    def _reference_rate(self, ledger: int) -> dict:
        """The rule set's currency per payment currency as the exact fraction of the two USD rates
        (core_ext/rules_types.py). A missing rate gives 0, which the rules refuse as
        RISK_CONTEXT_INVALID, so no amount rule ever compares unconverted money."""
        reference = self.rules.ruleset.currency if self.rules is not None else 0
        if reference == 0 or reference == ledger:
            return {"reference_rate_numerator": 1, "reference_rate_denominator": 1}
        entry, reference_entry = self._ledgers.get(ledger), self._ledgers.get(reference)
        return {"reference_rate_numerator": entry.usd_minor_per_million_minor if entry else 0,
                "reference_rate_denominator": reference_entry.usd_minor_per_million_minor if reference_entry else 0}

    def _act_on(self, payment: "_Payment", decision: Decision, now_ns: int) -> tuple[int, Any]:
        if decision.action == DECLINE:
            return (decision.code, None)
        if decision.action == REVIEW and self.review_slots_free <= 0:
            return (Code.REVIEW_QUEUE_FULL, None)     # before the QR guard: a dynamic code stays unused
        code = self.merchants.check_and_consume(payment.qr, payment.item.qr_payload, payment.amount_minor,
                                                now_ns // NS_PER_SECOND)
        if code:
            return (code, None)
        code, detail = self._post(payment, decision.action == REVIEW, now_ns)
        return (decision.code, detail) if code == Code.OK else (code, detail)

    def _legs(self, payment: "_Payment", held: bool) -> list[Transfer]:
        """Approved: payer->merchant linked to merchant->fee, all or nothing.  Held for review:
        only payer->merchant, pending (a reservation the ledger voids after the review timeout);
        its fee leg is posted when an operator posts it, since a merchant cannot pay a fee out
        of credits that are still pending."""
        item, merchant = payment.item, payment.merchant
        legs = [Transfer(
            id=item.transfer_id, debit_account_id=item.payer_account_id, credit_account_id=merchant.account_id,
            amount=payment.amount_minor, ledger=payment.ledger, code=TRANSFER_CODE_PAYMENT,
            flags=int(TransferFlags.PENDING) if held else 0,
            timeout=self.review_timeout_seconds if held else 0,
            user_data_64=payment.participant_id, user_data_32=_mcc_number(merchant.mcc))]
        if payment.fee_minor and not held:
            legs[0].flags |= int(TransferFlags.LINKED)
            legs.append(self.fee_leg(item.transfer_id, merchant.account_id, payment.ledger, payment.fee_minor,
                                     payment.participant_id))
        return legs

    def _post(self, payment: "_Payment", held: bool, now_ns: int) -> tuple[int, Any]:
        return payment_answer(self.ledger.create_transfers(self._legs(payment, held), now_ns), payment.detail())

    def _audit(self, payment: "_Payment", decision: Decision, code: int, now_ns: int) -> None:
        item = payment.item
        self.audit.append(AuditRecord(
            item.transfer_id, item.payer_account_id, payment.merchant.account_id, payment.amount_minor,
            payment.ledger, now_ns, int(decision.action), int(code), decision.ruleset_hash,
            tuple(FiredRule(*fired) for fired in decision.fired)))

    def take_holds(self) -> list[tuple]:
        """(transfer_id, held_ns, participant_id, fired rule ids) of each payment held since the last call."""
        holds, self._holds = self._holds, []
        return holds

    # ---- measurements -----------------------------------------------------------------

    def stats(self) -> dict:
        """Nanoseconds spent per stage and payments run, since start (commit is the engine's)."""
        return {**{f"{stage}_ns": value for stage, value in self._stage_ns.items()}, **self._counts,
                "codes": dict(self._code_counts)}


class _Payment:
    """A payment that passed the field, QR, merchant and amount checks."""

    __slots__ = ("participant_id", "item", "qr", "merchant", "amount_minor", "fee_minor", "ledger")

    def __init__(self, participant_id, item, qr, merchant, amount_minor, fee_minor, ledger) -> None:
        self.participant_id, self.item, self.qr, self.merchant = participant_id, item, qr, merchant
        self.amount_minor, self.fee_minor, self.ledger = amount_minor, fee_minor, ledger

    def detail(self) -> list:
        return [self.amount_minor, self.fee_minor, self.ledger, self.merchant.name]


def _amount_of(qr: Any, item: Any) -> tuple[int, int]:
    """The QR's amount wins when it has one; a differing amount from the wallet is refused."""
    if qr.amount_minor:
        if item.amount_minor and item.amount_minor != qr.amount_minor:
            return Code.AMOUNT_MISMATCH, 0
        return Code.OK, qr.amount_minor
    if not item.amount_minor:
        return Code.PAYMENT_AMOUNT_INVALID, 0
    return Code.OK, item.amount_minor


def payment_answer(codes: list[int], detail: list) -> tuple[int, Any]:
    """The wallet's answer from the codes of a payment's legs."""
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


def _mcc_number(mcc: Any) -> int:
    """The merchant category code as a number (kept on the payment leg's user_data_32, for reports)."""
    text = str(mcc or "")
    return int(text) if text.isdigit() else 0


def _read_request_id(body: bytes, position: int) -> tuple[int, int]:
    """(request id, position after it) of a msgpack uint in 1..2^32-1, or (0, -1)."""
    lead = body[position]
    if 0x01 <= lead <= 0x7F:
        return lead, position + 1
    widths = {0xCC: 1, 0xCD: 2, 0xCE: 4}
    width = widths.get(lead)
    if width is None or position + 1 + width > len(body):
        return 0, -1
    value = int.from_bytes(body[position + 1:position + 1 + width], "big")
    return (value, position + 1 + width) if value >= 1 else (0, -1)


def _array_length(body: bytes, position: int) -> int:
    """The length of a msgpack array header at `position`, or -1."""
    if position >= len(body):
        return -1
    lead = body[position]
    if 0x90 <= lead <= 0x9F:
        return lead - 0x90
    if lead == 0xDC and position + 3 <= len(body):
        return int.from_bytes(body[position + 1:position + 3], "big")
    if lead == 0xDD and position + 5 <= len(body):
        return int.from_bytes(body[position + 1:position + 5], "big")
    return -1
