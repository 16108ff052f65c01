"""The risk and AML rules engine, pure-Python reference twin of core_ext/_rules.pyx.

Written to be read: each rule is one small function over the payment and the
state the engine holds.  `evaluate` decides and changes no state; `observe`
applies a posted payment to the counters and journals what it applied.

State lives in three bounded tables (accounts, devices, live dynamic QR codes);
when a table is full, `observe` evicts its least recently used entry and counts
the eviction (`tables()`), so a full table never fails a payment silently.  The
one exception is the dynamic-QR table: evicting a live code would let it be
paid twice, so while its oldest entry is unexpired a new dynamic code is
declined with RISK_STATE_FULL instead.
"""
from __future__ import annotations

import collections
import time

from core_ext.codes import Code
from core_ext.rules_types import (
    BLOCKLIST_FIELDS, BURST_TIMES, DAY, DAYS_30, EMA_EMPTY_DAYS_MAX, EMA_SHIFT, HISTORY_SHIFT, HOUR,
    JOURNAL_FLAG_QR_DYNAMIC, JOURNAL_FLAG_STRUCTURING_BAND, JOURNAL_RECORD,
    MERCHANT_DAY_NS, MODE_NAMES, PAYEE_FILTER_WORDS, SKETCH_BUCKET_NS, SKETCH_BUCKETS, SKETCH_WORDS,
    U64_MAX, Action, Decision, Kind, Mode, RuleAction, RuleSet, TableStats, check_compiled,
    check_reload_between_batches, context_problem, journal_blob, journal_records, mix64, reference_minor,
    replay_plan, rule_stats, state_digest, table_capacities,
)
from core_ext import limits

BUCKETS = limits.RULES_WINDOW_BUCKETS
U32_MAX = 2**32 - 1
TIME_SAMPLE_INTERVAL = limits.RULES_TIME_SAMPLE_INTERVAL_EVALUATIONS


def sat_add(a: int, b: int) -> int:
    """Counters saturate at u64 max, as in C: a sum never wraps to a small number."""
    return min(a + b, U64_MAX)


class Ring:
    """A sliding window: BUCKETS buckets plus the current one, each slot stamped with its bucket index."""
    __slots__ = ("index", "amount", "count")

    def __init__(self) -> None:
        self.index = [0] * (BUCKETS + 1)
        self.amount = [0] * (BUCKETS + 1)
        self.count = [0] * (BUCKETS + 1)

    def totals(self, bucket_ns: int, now_ns: int) -> tuple[int, int]:
        current = now_ns // bucket_ns
        amount = count = 0
        for slot in range(BUCKETS + 1):
            if self.index[slot] >= current - BUCKETS:
                amount = sat_add(amount, self.amount[slot])
                count = min(count + self.count[slot], U32_MAX)
        return amount, count

    def add(self, bucket_ns: int, now_ns: int, amount: int) -> None:
        current = now_ns // bucket_ns
        slot = current % (BUCKETS + 1)
        if self.index[slot] != current:
            self.index[slot], self.amount[slot], self.count[slot] = current, 0, 0
        self.amount[slot] = sat_add(self.amount[slot], amount)
        self.count[slot] = min(self.count[slot] + 1, U32_MAX)

    def canonical(self) -> tuple:
        return tuple(self.index) + tuple(self.amount) + tuple(self.count)


class Sketch:
    """Distinct payers over two half-day buckets plus the current one (linear counting bitmaps)."""
    __slots__ = ("index", "words")

    def __init__(self) -> None:
        self.index = [0] * (SKETCH_BUCKETS + 1)
        self.words = [[0] * SKETCH_WORDS for _ in range(SKETCH_BUCKETS + 1)]

    def bits_with(self, now_ns: int, member: int) -> int:
        current = now_ns // SKETCH_BUCKET_NS
        union = [0] * SKETCH_WORDS
        for slot in range(SKETCH_BUCKETS + 1):
            if self.index[slot] >= current - SKETCH_BUCKETS:
                union = [u | w for u, w in zip(union, self.words[slot])]
        bit = sketch_bit(member)
        union[bit >> 6] |= 1 << (bit & 63)
        return sum(bin(word).count("1") for word in union)

    def add(self, now_ns: int, member: int) -> None:
        current = now_ns // SKETCH_BUCKET_NS
        slot = current % (SKETCH_BUCKETS + 1)
        if self.index[slot] != current:
            self.index[slot], self.words[slot] = current, [0] * SKETCH_WORDS
        bit = sketch_bit(member)
        self.words[slot][bit >> 6] |= 1 << (bit & 63)

    def canonical(self) -> tuple:
        return tuple(self.index) + tuple(word for words in self.words for word in words)


def sketch_bit(member: int) -> int:
    return (mix64(member) >> 16) % limits.RULES_SKETCH_BITS


def payee_bits(payee: int) -> tuple[int, int]:
    spread = mix64(payee)
    return spread & 127, (spread >> 7) & 127


class AccountState:
    """Everything the rules remember about one account, as payer and as payee."""
    __slots__ = ("times", "times_count", "times_head", "out_hour", "out_day", "out_30d", "structuring_30d",
                 "in_day", "payers", "payee_filter", "history_count", "history_mean_minor",
                 "history_max_minor", "volume_day", "volume_today_minor", "volume_average_minor")

    def __init__(self) -> None:
        self.times = [0] * BURST_TIMES        # recent payment times (as payer), a ring
        self.times_count = 0
        self.times_head = 0                   # slot of the newest time
        self.out_hour, self.out_day, self.out_30d = Ring(), Ring(), Ring()
        self.structuring_30d = Ring()         # payments in the structuring band
        self.in_day = Ring()                  # inflow as payee (pass-through)
        self.payers = Sketch()                # distinct payers into it (fan-in)
        self.payee_filter = [0] * PAYEE_FILTER_WORDS
        self.history_count = 0
        self.history_mean_minor = 0
        self.history_max_minor = 0
        self.volume_day = 0                   # UTC day of volume_today_minor (merchant spike)
        self.volume_today_minor = 0
        self.volume_average_minor = 0

    def last_payment_ns(self) -> int | None:
        return self.times[self.times_head] if self.times_count else None

    def has_paid(self, payee: int) -> bool:
        return all(self.payee_filter[bit >> 6] >> (bit & 63) & 1 for bit in payee_bits(payee))

    def volume_view(self, now_ns: int) -> tuple[int, int]:
        """(average, today's volume) as of now_ns, without changing anything."""
        day = now_ns // MERCHANT_DAY_NS
        if day <= self.volume_day:
            return self.volume_average_minor, self.volume_today_minor
        average = (self.volume_average_minor * ((1 << EMA_SHIFT) - 1) + self.volume_today_minor) >> EMA_SHIFT
        empty_days = min(day - self.volume_day - 1, EMA_EMPTY_DAYS_MAX)
        for _ in range(empty_days):
            average = (average * ((1 << EMA_SHIFT) - 1)) >> EMA_SHIFT
        return average, 0

    def canonical(self, key: int) -> tuple:
        return ((key, self.times_count, self.times_head, *self.times)
                + self.out_hour.canonical() + self.out_day.canonical() + self.out_30d.canonical()
                + self.structuring_30d.canonical() + self.in_day.canonical() + self.payers.canonical()
                + (*self.payee_filter, self.history_count, self.history_mean_minor, self.history_max_minor,
                   self.volume_day, self.volume_today_minor, self.volume_average_minor))


class DeviceState:
    __slots__ = ("hour", "payers")

    def __init__(self) -> None:
        self.hour = Ring()
        self.payers = Sketch()

    def canonical(self, key: int) -> tuple:
        return (key,) + self.hour.canonical() + self.payers.canonical()


class LruTable:
    """A bounded map; `touch` makes an entry the most recent, evicting the least recent when full."""

    def __init__(self, capacity: int, factory) -> None:
        self.entries: collections.OrderedDict = collections.OrderedDict()
        self.capacity = capacity
        self.factory = factory
        self.evictions = 0

    def get(self, key: int):
        return self.entries.get(key)

    def touch(self, key: int):
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            return entry
        if len(self.entries) >= self.capacity:
            self.entries.popitem(last=False)
            self.evictions += 1
        entry = self.entries[key] = self.factory()
        return entry

    def oldest(self):
        return next(iter(self.entries.items()), None)

    def stats(self) -> TableStats:
        return TableStats(len(self.entries), self.capacity, self.evictions)


class RuleEngine:
    """The rules as a journaled component named "rules" (docs/INTERNALS.md)."""

    name = "rules"

    def __init__(self, ruleset: RuleSet, capacity: dict | None = None) -> None:
        sizes = table_capacities(capacity)
        self.accounts = LruTable(sizes["accounts"], AccountState)
        self.devices = LruTable(sizes["devices"], DeviceState)
        self.dynamic_qr = LruTable(sizes["dynamic_qr"], lambda: [0])   # [expires_ns]
        self._journal: list[bytes] = []
        self._stats: dict[str, list[int]] = {}
        self.amount_reference_minor = 0
        self.ruleset = ruleset
        # The running set's counter meaning, and the one the counters were counted under
        # (they differ only while a journal of another meaning replays).
        self._meaning = self._counted_meaning = ruleset.counter_meaning()
        self.reload(ruleset)

    # ---- rule set ----------------------------------------------------------------

    def reload(self, ruleset: RuleSet) -> None:
        """Swap the whole set; the caller does it between batches. Counters are
        kept (their layout does not depend on the rules) unless the set changes
        their meaning (rules_types.CounterMeaning): then they are forgotten.
        Per-rule statistics are kept for rules whose id and version did not change."""
        check_compiled(ruleset)
        meaning = ruleset.counter_meaning()
        check_reload_between_batches(bool(self._journal), self._meaning, meaning)
        if meaning != self._meaning:
            self._forget_counters()
        self._meaning = self._counted_meaning = meaning
        old = {(rule.id, rule.version) for rule in self.ruleset.rules}
        # [hits, shadow hits, evaluations, samples, sampled time in ns]
        self._stats = {rule.id: (self._stats.get(rule.id, [0, 0, 0, 0, 0]) if (rule.id, rule.version) in old
                                 else [0, 0, 0, 0, 0]) for rule in ruleset.rules}
        self.ruleset = ruleset
        self._band = ruleset.structuring_band()

    def stats(self) -> dict:
        return {rule_id: rule_stats(*counters) for rule_id, counters in self._stats.items()}

    def tables(self) -> dict:
        return {"accounts": self.accounts.stats()._asdict(), "devices": self.devices.stats()._asdict(),
                "dynamic_qr": self.dynamic_qr.stats()._asdict()}

    # ---- deciding ----------------------------------------------------------------

    def evaluate(self, ctx) -> Decision:
        if context_problem(ctx) is not None:
            return Decision(int(Action.DECLINE), int(Code.RISK_CONTEXT_INVALID), (), self.ruleset.hash)
        payer = self.accounts.get(ctx.payer_account_id)
        payee = self.accounts.get(ctx.merchant_account_id)
        device = self.devices.get(ctx.device_id) if ctx.device_id else None
        # Converted once per payment; the checks read it from here (the payment in the set's currency).
        self.amount_reference_minor = reference_minor(ctx.amount_minor, ctx.reference_rate_numerator,
                                                      ctx.reference_rate_denominator)
        action, code, fired = int(Action.APPROVE), int(Code.OK), []
        for rule in self.ruleset.rules:
            if rule.mode == Mode.OFF:
                continue
            counters = self._stats[rule.id]
            counters[2] += 1
            if counters[2] % TIME_SAMPLE_INTERVAL == 1:       # the 1st, 65th, ... evaluation is timed
                start_ns = time.perf_counter_ns()
                rule_code = CHECKS[rule.kind](self, rule, ctx, payer, payee, device)
                counters[4] += time.perf_counter_ns() - start_ns
                counters[3] += 1
            else:
                rule_code = CHECKS[rule.kind](self, rule, ctx, payer, payee, device)
            if not rule_code:
                continue
            fired.append((rule.id, rule.reason, MODE_NAMES[rule.mode]))
            if rule.mode == Mode.SHADOW:
                counters[1] += 1
                continue
            counters[0] += 1
            if rule.action == RuleAction.DECLINE and action < Action.DECLINE:
                action, code = int(Action.DECLINE), rule_code
            elif rule.action == RuleAction.REVIEW and action < Action.REVIEW:
                action, code = int(Action.REVIEW), int(Code.RISK_REVIEW)
        return Decision(action, code, tuple(fired), self.ruleset.hash)

    def evaluate_repeat(self, ctx, count: int) -> Decision:
        """`evaluate` `count` times (benchmarks: per-payment cost without per-call overhead)."""
        if count < 1:
            raise ValueError(f"evaluate_repeat: count must be at least 1, not {count}")
        decision = None
        for _ in range(count):
            decision = self.evaluate(ctx)
        return decision

    # ---- applying ----------------------------------------------------------------

    def observe(self, ctx, decision: Decision) -> None:
        """Apply a posted payment (approved, or held for review with its funds reserved)."""
        problem = context_problem(ctx)
        if problem is not None:
            raise ValueError(f"observe: {problem}")
        if decision.action == Action.DECLINE:
            return
        flags = JOURNAL_FLAG_QR_DYNAMIC if ctx.qr_dynamic else 0
        # Counters accumulate (and the journal records) the amount in the rule set's currency.
        amount_minor = reference_minor(ctx.amount_minor, ctx.reference_rate_numerator, ctx.reference_rate_denominator)
        if self._band is not None and self._band[0] <= amount_minor < self._band[1]:
            flags |= JOURNAL_FLAG_STRUCTURING_BAND
        record = (ctx.now_ns, ctx.payer_account_id, ctx.merchant_account_id, ctx.device_id, ctx.qr_digest,
                  ctx.qr_expires_ns, amount_minor, flags)
        self._apply(*record)
        self._journal.append(JOURNAL_RECORD.pack(*record))

    def _apply(self, now_ns, payer_id, payee_id, device_id, qr_digest, qr_expires_ns, amount_minor, flags):
        payer = self.accounts.touch(payer_id)
        apply_payer(payer, now_ns, payee_id, amount_minor, flags)
        payee = self.accounts.touch(payee_id)
        apply_payee(payee, now_ns, payer_id, amount_minor)
        if device_id:
            device = self.devices.touch(device_id)
            device.hour.add(HOUR.bucket_ns, now_ns, amount_minor)
            device.payers.add(now_ns, payer_id)
        if flags & JOURNAL_FLAG_QR_DYNAMIC:
            self.dynamic_qr.touch(qr_digest)[0] = qr_expires_ns

    # ---- journaled component ---------------------------------------------------------

    def reset(self) -> None:
        """Forget all counters and any unjournaled effects (storage reload replays from empty).
        Per-rule statistics stay: they describe the process, not the state."""
        self._forget_counters()
        self.dynamic_qr = LruTable(self.dynamic_qr.capacity, lambda: [0])
        self._counted_meaning = self._meaning
        self._journal.clear()

    def _forget_counters(self) -> None:
        """The per-account and per-device counters; the dynamic QR replay table stays."""
        self.accounts = LruTable(self.accounts.capacity, AccountState)
        self.devices = LruTable(self.devices.capacity, DeviceState)

    def take_journal(self) -> bytes | None:
        if not self._journal:
            return None
        blob = journal_blob(self._meaning, b"".join(self._journal))
        self._journal.clear()
        return blob

    def apply_journal(self, blob: bytes) -> None:
        records = journal_records(blob)       # all or nothing: a malformed blob changes nothing
        forget, count, self._counted_meaning = replay_plan(self._counted_meaning, self._meaning, blob)
        if forget:
            self._forget_counters()
        for record in records:
            if count:
                self._apply(*record)
            elif record[7] & JOURNAL_FLAG_QR_DYNAMIC:
                self.dynamic_qr.touch(record[4])[0] = record[5]

    def state_hash(self) -> bytes:
        return state_digest((
            ("accounts", (entry.canonical(key) for key, entry in self.accounts.entries.items())),
            ("devices", (entry.canonical(key) for key, entry in self.devices.entries.items())),
            ("dynamic_qr", ((key, entry[0]) for key, entry in self.dynamic_qr.entries.items())),
        ))


def apply_payer(state: AccountState, now_ns: int, payee_id: int, amount_minor: int, flags: int) -> None:
    state.times_head = (state.times_head + 1) % BURST_TIMES if state.times_count else 0
    state.times[state.times_head] = now_ns
    state.times_count = min(state.times_count + 1, BURST_TIMES)
    state.out_hour.add(HOUR.bucket_ns, now_ns, amount_minor)
    state.out_day.add(DAY.bucket_ns, now_ns, amount_minor)
    state.out_30d.add(DAYS_30.bucket_ns, now_ns, amount_minor)
    if flags & JOURNAL_FLAG_STRUCTURING_BAND:
        state.structuring_30d.add(DAYS_30.bucket_ns, now_ns, amount_minor)
    for bit in payee_bits(payee_id):
        state.payee_filter[bit >> 6] |= 1 << (bit & 63)
    if state.history_count == 0:
        state.history_mean_minor = amount_minor
    else:
        state.history_mean_minor = (state.history_mean_minor * ((1 << HISTORY_SHIFT) - 1) + amount_minor) >> HISTORY_SHIFT
    state.history_max_minor = max(state.history_max_minor, amount_minor)
    state.history_count = min(state.history_count + 1, U32_MAX)


def apply_payee(state: AccountState, now_ns: int, payer_id: int, amount_minor: int) -> None:
    state.in_day.add(DAY.bucket_ns, now_ns, amount_minor)
    state.payers.add(now_ns, payer_id)
    average, today = state.volume_view(now_ns)
    state.volume_day = max(state.volume_day, now_ns // MERCHANT_DAY_NS)
    state.volume_average_minor = average
    state.volume_today_minor = sat_add(today, amount_minor)


# ---- the checks: one per kind; each returns the external code when it matches, else 0 ----

def _totals(state, ring_name: str, window, now_ns: int) -> tuple[int, int]:
    return getattr(state, ring_name).totals(window.bucket_ns, now_ns) if state is not None else (0, 0)


def check_blocklist(engine, rule, ctx, payer, payee, device) -> int:
    field = rule.p[0]
    value = (ctx.payer_account_id if field == BLOCKLIST_FIELDS["payer"]
             else ctx.merchant_account_id if field == BLOCKLIST_FIELDS["merchant"]
             else ctx.device_id if field == BLOCKLIST_FIELDS["device"] else ctx.qr_digest)
    return rule.code if value in rule.members else 0


def check_payment_cap_tier(engine, rule, ctx, payer, payee, device) -> int:
    return rule.code if engine.amount_reference_minor > rule.tier[ctx.payer_kyc_tier] else 0


def check_payment_cap_mcc(engine, rule, ctx, payer, payee, device) -> int:
    for mcc, cap_minor in rule.caps:
        if mcc == ctx.merchant_mcc:
            return rule.code if engine.amount_reference_minor > cap_minor else 0
    return 0


def check_payer_day_count(engine, rule, ctx, payer, payee, device) -> int:
    _amount, count = _totals(payer, "out_day", DAY, ctx.now_ns)
    return rule.code if count + 1 > rule.tier[ctx.payer_kyc_tier] else 0


def check_payer_day_amount(engine, rule, ctx, payer, payee, device) -> int:
    amount, _count = _totals(payer, "out_day", DAY, ctx.now_ns)
    return rule.code if sat_add(amount, engine.amount_reference_minor) > rule.tier[ctx.payer_kyc_tier] else 0


def check_payer_hour_amount(engine, rule, ctx, payer, payee, device) -> int:
    amount, _count = _totals(payer, "out_hour", HOUR, ctx.now_ns)
    return rule.code if sat_add(amount, engine.amount_reference_minor) > rule.tier[ctx.payer_kyc_tier] else 0


def check_new_account_cooling(engine, rule, ctx, payer, payee, device) -> int:
    if ctx.now_ns - ctx.payer_created_ns >= rule.p[0]:
        return 0
    amount, _count = _totals(payer, "out_day", DAY, ctx.now_ns)
    return rule.code if sat_add(amount, engine.amount_reference_minor) > rule.p[1] else 0


def check_balance_cap(engine, rule, ctx, payer, payee, device) -> int:
    if not ctx.merchant_is_personal:
        return 0
    # The payee's balance is in the payment's ledger: convert the sum once, as the compiled engine does.
    after_minor = reference_minor(sat_add(ctx.merchant_balance_minor, ctx.amount_minor),
                                  ctx.reference_rate_numerator, ctx.reference_rate_denominator)
    return rule.code if after_minor > rule.tier[ctx.merchant_kyc_tier] else 0


def check_device_velocity(engine, rule, ctx, payer, payee, device) -> int:
    if not ctx.device_id:
        return 0
    _amount, count = _totals(device, "hour", HOUR, ctx.now_ns)
    return rule.code if count + 1 > rule.p[0] else 0


def check_device_distinct_payers(engine, rule, ctx, payer, payee, device) -> int:
    if not ctx.device_id:
        return 0
    sketch = device.payers if device is not None else Sketch()
    return rule.code if sketch.bits_with(ctx.now_ns, ctx.payer_account_id) > rule.p[1] else 0


def check_structuring(engine, rule, ctx, payer, payee, device) -> int:
    low_minor, high_minor = max(rule.p[0] - rule.p[1], 0), rule.p[0]
    if not low_minor <= engine.amount_reference_minor < high_minor:
        return 0
    _amount, count = _totals(payer, "structuring_30d", DAYS_30, ctx.now_ns)
    return rule.code if count + 1 >= rule.p[2] else 0


def check_monthly_aggregate(engine, rule, ctx, payer, payee, device) -> int:
    amount, _count = _totals(payer, "out_30d", DAYS_30, ctx.now_ns)
    return rule.code if sat_add(amount, engine.amount_reference_minor) >= rule.p[0] else 0


def check_pass_through(engine, rule, ctx, payer, payee, device) -> int:
    inflow_minor, _count = _totals(payer, "in_day", DAY, ctx.now_ns)
    if inflow_minor == 0 or inflow_minor < rule.p[1]:
        return 0
    outflow_minor, _count = _totals(payer, "out_day", DAY, ctx.now_ns)
    outflow_minor = sat_add(outflow_minor, engine.amount_reference_minor)
    return rule.code if outflow_minor * 100 >= inflow_minor * rule.p[0] else 0


def check_dormant_reactivation(engine, rule, ctx, payer, payee, device) -> int:
    last_ns = payer.last_payment_ns() if payer is not None else None
    if last_ns is None:
        last_ns = ctx.payer_created_ns
    return rule.code if ctx.now_ns - last_ns >= rule.p[0] and engine.amount_reference_minor >= rule.p[1] else 0


def check_burst(engine, rule, ctx, payer, payee, device) -> int:
    chain, later_ns = 1, ctx.now_ns
    if payer is not None:
        for back in range(min(payer.times_count, rule.p[1] - 1)):
            earlier_ns = payer.times[(payer.times_head - back) % BURST_TIMES]
            if later_ns - earlier_ns >= rule.p[0]:
                break
            chain, later_ns = chain + 1, earlier_ns
    return rule.code if chain >= rule.p[1] else 0


def check_first_payee(engine, rule, ctx, payer, payee, device) -> int:
    if engine.amount_reference_minor < rule.p[0]:
        return 0
    paid_before = payer is not None and payer.has_paid(ctx.merchant_account_id)
    return 0 if paid_before else rule.code


def check_fan_in(engine, rule, ctx, payer, payee, device) -> int:
    if not ctx.merchant_is_personal:
        return 0
    sketch = payee.payers if payee is not None else Sketch()
    return rule.code if sketch.bits_with(ctx.now_ns, ctx.payer_account_id) > rule.p[1] else 0


def check_history_outlier(engine, rule, ctx, payer, payee, device) -> int:
    if payer is None or payer.history_count < rule.p[2]:
        return 0
    scaled_minor = engine.amount_reference_minor * 100
    if scaled_minor > payer.history_mean_minor * rule.p[0] and scaled_minor > payer.history_max_minor * rule.p[1]:
        return rule.code
    return 0


def check_mcc_deny(engine, rule, ctx, payer, payee, device) -> int:
    return rule.code if ctx.merchant_mcc in rule.members else 0


def check_static_qr_merchant(engine, rule, ctx, payer, payee, device) -> int:
    if ctx.qr_dynamic:
        return 0
    return rule.code if ctx.qr_merchant_account_id != ctx.merchant_account_id else 0


def check_dynamic_qr(engine, rule, ctx, payer, payee, device) -> int:
    if not ctx.qr_dynamic:
        return 0
    if ctx.qr_expires_ns == 0 or ctx.now_ns >= ctx.qr_expires_ns:
        return rule.code
    if ctx.qr_amount_minor and ctx.amount_minor != ctx.qr_amount_minor:
        return rule.code
    table = engine.dynamic_qr
    if table.get(ctx.qr_digest) is not None:
        return rule.code
    oldest = table.oldest()
    if len(table.entries) >= table.capacity and oldest[1][0] > ctx.now_ns:
        return int(Code.RISK_STATE_FULL)
    return 0


def check_merchant_spike(engine, rule, ctx, payer, payee, device) -> int:
    if payee is None:
        return 0
    average_minor, today_minor = payee.volume_view(ctx.now_ns)
    if average_minor == 0 or average_minor < rule.p[1]:
        return 0
    return rule.code if sat_add(today_minor, engine.amount_reference_minor) * 100 > average_minor * rule.p[0] else 0


def check_travel_rule(engine, rule, ctx, payer, payee, device) -> int:
    if ctx.payer_country == ctx.merchant_country or ctx.amount_usd_minor < rule.p[0]:
        return 0
    complete = ctx.originator_info_present and ctx.beneficiary_info_present
    return 0 if complete else rule.code


CHECKS = {
    Kind.BLOCKLIST: check_blocklist,
    Kind.PAYMENT_CAP_TIER: check_payment_cap_tier,
    Kind.PAYMENT_CAP_MCC: check_payment_cap_mcc,
    Kind.PAYER_DAY_COUNT: check_payer_day_count,
    Kind.PAYER_DAY_AMOUNT: check_payer_day_amount,
    Kind.PAYER_HOUR_AMOUNT: check_payer_hour_amount,
    Kind.NEW_ACCOUNT_COOLING: check_new_account_cooling,
    Kind.BALANCE_CAP: check_balance_cap,
    Kind.DEVICE_VELOCITY: check_device_velocity,
    Kind.DEVICE_DISTINCT_PAYERS: check_device_distinct_payers,
    Kind.STRUCTURING: check_structuring,
    Kind.MONTHLY_AGGREGATE: check_monthly_aggregate,
    Kind.PASS_THROUGH: check_pass_through,
    Kind.DORMANT_REACTIVATION: check_dormant_reactivation,
    Kind.BURST: check_burst,
    Kind.FIRST_PAYEE: check_first_payee,
    Kind.FAN_IN: check_fan_in,
    Kind.HISTORY_OUTLIER: check_history_outlier,
    Kind.MCC_DENY: check_mcc_deny,
    Kind.STATIC_QR_MERCHANT: check_static_qr_merchant,
    Kind.DYNAMIC_QR: check_dynamic_qr,
    Kind.MERCHANT_SPIKE: check_merchant_spike,
    Kind.TRAVEL_RULE: check_travel_rule,
}
assert set(CHECKS) == set(Kind), "every kind of the catalogue has a check"
