"""The risk and AML rules: shared definitions that are neither hot nor different
between the compiled engine (core_ext/_rules.pyx) and its twin
(core_ext/reference/rules.py).

* PaymentContext: what the payment engine tells the rules about one payment.
* Decision: what the rules answer (the wallet sees only `code`).
* The rule catalogue (KINDS) and `load_ruleset(toml_text) -> RuleSet`, which
  validates a declarative TOML rule set and compiles it into plain parameter
  tables (no eval) that both engines take.
* Amounts: a rule set states its reference currency (`[ruleset] currency = 356`, ISO 4217
  numeric) and every `*_minor` amount in it is in that currency's minor units. The caller
  gives each payment's rate to it as an exact fraction (PaymentContext.reference_rate_*),
  and both engines compare and accumulate `reference_minor(...)`: rounded down, saturating.
  `travel_rule` alone keeps its threshold in US cents (amount_usd_minor).
* The engine's fixed state layout: window bucket widths, the hash used by the
  sketches and the per-payer payee filter, and the journal record format.

The state layout does not depend on the rule set: every payment updates the
same counters whatever rules are loaded, so a hot reload keeps all state and a
journal replays without knowing which rule set was in force.
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import struct
import sys
from fractions import Fraction
from typing import Any, NamedTuple

from core_ext import limits
from core_ext.codes import Code

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the venv is 3.11; tomli is the declared fallback
    import tomli as tomllib

U64_MAX = 2**64 - 1
I64_MAX = 2**63 - 1
NS_PER_SECOND = 1_000_000_000
TIERS = limits.RULES_KYC_TIERS


class Action(enum.IntEnum):
    """A decision, ordered by severity so the strongest enforced rule wins."""
    APPROVE = 0
    REVIEW = 1
    DECLINE = 2


class RuleAction(enum.IntEnum):
    """What a rule asks for when it matches. A flag only records the match."""
    FLAG = 0
    REVIEW = 1
    DECLINE = 2


class Mode(enum.IntEnum):
    OFF = 0        # not evaluated at all
    SHADOW = 1     # evaluated and counted, never changes the decision
    ENFORCE = 2


MODE_NAMES = {Mode.OFF: "off", Mode.SHADOW: "shadow", Mode.ENFORCE: "enforce"}


# ---- the payment context ------------------------------------------------------

@dataclasses.dataclass(slots=True)
class PaymentContext:
    """One payment as the rules see it. Money is integer minor units; times are
    nanoseconds since the Unix epoch; ids are u64 (0 means "none/unknown")."""
    payer_account_id: int             # u64 wallet account paying
    payer_kyc_tier: int               # 0 minimum KYC, 1 full, 2 enhanced
    payer_created_ns: int             # when the payer's account was opened (new-account cooling, dormancy)
    payer_balance_minor: int          # payer's available balance before this payment (carried for audit; no rule needs it yet)
    merchant_account_id: int          # u64 account credited (a merchant, or a person's receiving account)
    merchant_mcc: int                 # ISO 18245 merchant category code, 0..9999
    merchant_is_personal: bool        # the payee is a person's account (fan-in, balance cap apply)
    merchant_country: int             # ISO 3166-1 numeric of the payee
    payer_country: int                # ISO 3166-1 numeric of the payer's wallet
    device_id: int                    # u64 digest of the payer's device fingerprint (0: unknown, device rules skip)
    qr_digest: int                    # u64 digest of the QR payload
    qr_dynamic: bool                  # a dynamic (single-use) code rather than a static one
    amount_minor: int                 # 1 .. 2^64-1, in `currency`
    currency: int                     # ISO 4217 numeric
    amount_usd_minor: int             # the amount in US cents, converted by the caller (FATF R.16)
    originator_info_present: bool     # payer name/account/address travel with the payment (R.16)
    beneficiary_info_present: bool    # payee name/account travel with the payment (R.16)
    now_ns: int                       # the batch's clock reading; nothing in core_ext reads the clock
    qr_merchant_account_id: int = 0   # the merchant the directory registered this static QR to (0: none)
    qr_expires_ns: int = 0            # a dynamic QR's expiry (0: no expiry given, which the QR rule rejects)
    qr_amount_minor: int = 0          # the amount a dynamic QR is bound to (0: the payer enters it)
    merchant_kyc_tier: int = 0        # tier of a personal receiving account (balance cap)
    merchant_balance_minor: int = 0   # its balance before this payment (balance cap)
    # The rule set's amounts are minor units of its reference currency ([ruleset] currency).
    # Every amount-based rule compares and accumulates reference_minor(amount_minor, numerator,
    # denominator) = floor(amount_minor * numerator / denominator), an exact fraction the caller
    # takes from the ledger rates (the pipeline: this ledger's usd_minor_per_million_minor over the
    # reference ledger's; 1/1 when the payment is in the reference currency or the set names none).
    reference_rate_numerator: int = 1
    reference_rate_denominator: int = 1


# (field, low, high): the range each integer field must lie in. Booleans take any truthiness.
CONTEXT_RANGES: tuple[tuple[str, int, int], ...] = (
    ("payer_account_id", 0, U64_MAX),
    ("payer_kyc_tier", 0, TIERS - 1),
    ("payer_created_ns", 0, I64_MAX),
    ("payer_balance_minor", 0, U64_MAX),
    ("merchant_account_id", 0, U64_MAX),
    ("merchant_mcc", 0, 9999),
    ("merchant_country", 0, 999),
    ("payer_country", 0, 999),
    ("device_id", 0, U64_MAX),
    ("qr_digest", 0, U64_MAX),
    ("amount_minor", 1, U64_MAX),
    ("currency", 0, 999),
    ("amount_usd_minor", 0, U64_MAX),
    ("now_ns", 0, I64_MAX),
    ("qr_merchant_account_id", 0, U64_MAX),
    ("qr_expires_ns", 0, I64_MAX),
    ("qr_amount_minor", 0, U64_MAX),
    ("merchant_kyc_tier", 0, TIERS - 1),
    ("merchant_balance_minor", 0, U64_MAX),
    ("reference_rate_numerator", 1, U64_MAX),
    ("reference_rate_denominator", 1, U64_MAX),
)
CONTEXT_FLAGS = ("merchant_is_personal", "qr_dynamic", "originator_info_present", "beneficiary_info_present")


def context_problem(ctx: Any) -> str | None:
    """Why `ctx` cannot be evaluated, or None. Shared so both engines reject alike."""
    for name, low, high in CONTEXT_RANGES:
        value = getattr(ctx, name, None)
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{name} must be an integer, not {type(value).__name__}"
        if not low <= value <= high:
            return f"{name}={value} is outside {low}..{high}"
    for name in CONTEXT_FLAGS:
        value = getattr(ctx, name, None)
        if not isinstance(value, int):          # bool, or 0/1 from a decoder; never None or a string
            return f"{name} must be a boolean, not {type(value).__name__}"
    return None


def reference_minor(amount_minor: int, numerator: int, denominator: int) -> int:
    """An amount in the rule set's reference currency: rounded down (a threshold is passed only
    by money actually there), saturating at 2^64-1 like every counter. The compiled engine
    computes the same in 128 bits."""
    return min(amount_minor * numerator // denominator, U64_MAX)


class Decision(NamedTuple):
    """A rule decision. A named tuple rather than a frozen dataclass: it is built
    once per payment, and a tuple costs a fifth of the time to build."""
    action: int          # Action
    code: int            # external result code (Code.OK when approved)
    fired: tuple         # ((rule_id, reason, mode_name), ...) every rule that matched, in rule order
    ruleset_hash: str


# ---- the fixed state layout -----------------------------------------------------

class Window(NamedTuple):
    """A sliding window of RULES_WINDOW_BUCKETS buckets plus the current one."""
    length_ns: int
    bucket_ns: int


def _window(length_seconds: int) -> Window:
    assert length_seconds * NS_PER_SECOND % limits.RULES_WINDOW_BUCKETS == 0
    return Window(length_seconds * NS_PER_SECOND, length_seconds * NS_PER_SECOND // limits.RULES_WINDOW_BUCKETS)


HOUR = _window(3_600)
DAY = _window(86_400)
DAYS_30 = _window(30 * 86_400)
# Sketches (distinct payers) use two half-day buckets plus the current one.
SKETCH_BUCKET_NS = 43_200 * NS_PER_SECOND
SKETCH_BUCKETS = 2
SKETCH_WORDS = limits.RULES_SKETCH_BITS // 64
# A merchant's moving average of daily inflow: an exponential average over UTC
# days with weight 1/8 for the newest day; days without payments count as zero.
MERCHANT_DAY_NS = 86_400 * NS_PER_SECOND
EMA_SHIFT = 3
EMA_EMPTY_DAYS_MAX = 64          # past 64 empty days the average is zero anyway
# The payer's own history: exponential average (weight 1/8) and maximum.
HISTORY_SHIFT = 3
# Burst: the last RULES_BURST_COUNT_MAX payment times of each payer.
BURST_TIMES = limits.RULES_BURST_COUNT_MAX
# First payment to a payee: a 128-bit Bloom filter of payees per payer (2 bits per payee).
PAYEE_FILTER_WORDS = 2


def mix64(value: int) -> int:
    """splitmix64's finaliser: spreads an id over 64 bits (same in C)."""
    value = (value + 0x9E3779B97F4A7C15) & U64_MAX
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & U64_MAX
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & U64_MAX
    return value ^ (value >> 31)


def sketch_bits_max(distinct_max: int) -> int:
    """The sketch's expected set bits after `distinct_max` distinct payers,
    rounded: a rule fires when the bits with this payer pass it. Exact rational
    arithmetic at load time keeps floats out of the rules."""
    bits = limits.RULES_SKETCH_BITS
    expected = bits * (1 - Fraction(bits - 1, bits) ** distinct_max)
    return int(expected + Fraction(1, 2))


# A journal record: what `observe` applied, so replay needs neither rule set nor clock.
# Version 1: records only (written before counters had a meaning stamp; replayed as the
# running rule set's). Version 2: the counters' meaning (CounterMeaning), then records.
JOURNAL_VERSION = 1
JOURNAL_VERSION_MEANING = 2
JOURNAL_RECORD = struct.Struct("<qQQQQqQB")   # now, payer, payee, device, qr, qr_expires, amount, flags
JOURNAL_MEANING = struct.Struct("<IQQ")       # currency, structuring band low, high
JOURNAL_FLAG_QR_DYNAMIC = 1
JOURNAL_FLAG_STRUCTURING_BAND = 2


# ---- the rule catalogue ----------------------------------------------------------

class Kind(enum.IntEnum):
    BLOCKLIST = 1
    PAYMENT_CAP_TIER = 2
    PAYMENT_CAP_MCC = 3
    PAYER_DAY_COUNT = 4
    PAYER_DAY_AMOUNT = 5
    PAYER_HOUR_AMOUNT = 6
    NEW_ACCOUNT_COOLING = 7
    BALANCE_CAP = 8
    DEVICE_VELOCITY = 9
    DEVICE_DISTINCT_PAYERS = 10
    STRUCTURING = 11
    MONTHLY_AGGREGATE = 12
    PASS_THROUGH = 13
    DORMANT_REACTIVATION = 14
    BURST = 15
    FIRST_PAYEE = 16
    FAN_IN = 17
    HISTORY_OUTLIER = 18
    MCC_DENY = 19
    STATIC_QR_MERCHANT = 20
    DYNAMIC_QR = 21
    MERCHANT_SPIKE = 22
    TRAVEL_RULE = 23


BLOCKLIST_FIELDS = {"payer": 0, "merchant": 1, "device": 2, "qr": 3}


class Param(NamedTuple):
    slot: str          # where the compiled value goes: "tier", "p0".."p3", "members", "caps"
    type: str          # tier_amounts, tier_counts, amount, count, seconds, percent, distinct, ids, mccs, mcc_caps, field
    doc: str


class KindSpec(NamedTuple):
    code: int          # external code when an enforced decline/review rule of this kind fires
    doc: str
    params: dict       # TOML name -> Param


_LIMIT = Code.RISK_LIMIT_EXCEEDED
_AML = Code.RISK_DECLINED

# The catalogue: the one place that says what each kind checks and what it takes.
KINDS: dict[str, tuple[Kind, KindSpec]] = {
    "blocklist": (Kind.BLOCKLIST, KindSpec(_AML, "payer, merchant, device or QR digest is listed", {
        "field": Param("p0", "field", "payer | merchant | device | qr"),
        "entries": Param("members", "ids", "u64 ids (account ids, device or QR digests)")})),
    "payment_cap_tier": (Kind.PAYMENT_CAP_TIER, KindSpec(_LIMIT, "amount > cap of the payer's KYC tier", {
        "limit_minor": Param("tier", "tier_amounts", "cap per payment, one value or one per tier")})),
    "payment_cap_mcc": (Kind.PAYMENT_CAP_MCC, KindSpec(_LIMIT, "amount > cap of the merchant category", {
        "caps_minor": Param("caps", "mcc_caps", 'table "mcc" = cap_minor')})),
    "payer_day_count": (Kind.PAYER_DAY_COUNT, KindSpec(_LIMIT, "payer's payments in 24 h, this one included, > limit", {
        "limit": Param("tier", "tier_counts", "payments per 24 h, one value or one per tier")})),
    "payer_day_amount": (Kind.PAYER_DAY_AMOUNT, KindSpec(_LIMIT, "payer's amount in 24 h, this one included, > limit", {
        "limit_minor": Param("tier", "tier_amounts", "amount per 24 h")})),
    "payer_hour_amount": (Kind.PAYER_HOUR_AMOUNT, KindSpec(_LIMIT, "payer's amount in 1 h, this one included, > limit", {
        "limit_minor": Param("tier", "tier_amounts", "amount per hour")})),
    "new_account_cooling": (Kind.NEW_ACCOUNT_COOLING, KindSpec(_LIMIT, "account younger than cooling and its 24 h amount > limit", {
        "cooling_seconds": Param("p0", "seconds", "how long an account counts as new"),
        "limit_minor": Param("p1", "amount", "amount per 24 h while new")})),
    "balance_cap": (Kind.BALANCE_CAP, KindSpec(_LIMIT, "a personal payee's balance after credit > cap of its tier", {
        "limit_minor": Param("tier", "tier_amounts", "balance cap per tier")})),
    "device_velocity": (Kind.DEVICE_VELOCITY, KindSpec(_AML, "device's payments in 1 h, this one included, > limit", {
        "limit": Param("p0", "count", "payments per hour per device")})),
    "device_distinct_payers": (Kind.DEVICE_DISTINCT_PAYERS, KindSpec(_AML, "distinct payers on a device in 24 h > limit", {
        "limit": Param("p0", "distinct", "distinct payers per device (sketch estimate)")})),
    "structuring": (Kind.STRUCTURING, KindSpec(_AML, "payment in [threshold - band, threshold) and such payments in 30 days >= count", {
        "threshold_minor": Param("p0", "amount", "the reporting threshold"),
        "band_minor": Param("p1", "amount", "how far under it counts as just under"),
        "count": Param("p2", "count", "payments in the band within 30 days, this one included")})),
    "monthly_aggregate": (Kind.MONTHLY_AGGREGATE, KindSpec(_AML, "payer's amount in 30 days, this one included, >= threshold", {
        "threshold_minor": Param("p0", "amount", "the reporting threshold")})),
    "pass_through": (Kind.PASS_THROUGH, KindSpec(_AML, "out of the payer in 24 h >= percent of what came in, inflow >= minimum", {
        "percent": Param("p0", "percent", "share of the inflow (90)"),
        "inflow_min_minor": Param("p1", "amount", "inflow below this is ignored")})),
    "dormant_reactivation": (Kind.DORMANT_REACTIVATION, KindSpec(_AML, "no payment for dormant_seconds and amount >= minimum", {
        "dormant_seconds": Param("p0", "seconds", "idle time that makes an account dormant"),
        "amount_min_minor": Param("p1", "amount", "smallest amount that matters")})),
    "burst": (Kind.BURST, KindSpec(_AML, "count payments in a row, each under interval after the previous", {
        "interval_seconds": Param("p0", "seconds", "gap under which payments chain (300)"),
        "count": Param("p1", "burst_count", "payments in the chain, this one included")})),
    "first_payee": (Kind.FIRST_PAYEE, KindSpec(_AML, "first payment from this payer to this payee and amount >= minimum", {
        "amount_min_minor": Param("p0", "amount", "smallest amount that matters")})),
    "fan_in": (Kind.FAN_IN, KindSpec(_AML, "distinct payers into a personal account in 24 h > limit", {
        "limit": Param("p0", "distinct", "distinct payers (sketch estimate)")})),
    "history_outlier": (Kind.HISTORY_OUTLIER, KindSpec(_AML, "amount > mean * mean_percent and > max * max_percent of the payer's history", {
        "mean_percent": Param("p0", "percent", "against the running mean"),
        "max_percent": Param("p1", "percent", "against the largest payment so far"),
        "history_min": Param("p2", "count", "payments of history before the rule applies")})),
    "merchant_category_deny": (Kind.MCC_DENY, KindSpec(Code.RISK_CATEGORY_NOT_ALLOWED, "merchant category on the deny list", {
        "mccs": Param("members", "mccs", "merchant category codes")})),
    "static_qr_merchant": (Kind.STATIC_QR_MERCHANT, KindSpec(Code.RISK_QR_REJECTED, "a static QR not registered to the merchant it pays", {})),
    "dynamic_qr": (Kind.DYNAMIC_QR, KindSpec(Code.RISK_QR_REJECTED, "a dynamic QR already used, expired, or for another amount", {})),
    "merchant_spike": (Kind.MERCHANT_SPIKE, KindSpec(_AML, "merchant's inflow today > percent of its daily moving average", {
        "percent": Param("p0", "percent", "spike factor against the average"),
        "average_min_minor": Param("p1", "amount", "averages below this are too young to judge")})),
    "travel_rule": (Kind.TRAVEL_RULE, KindSpec(Code.RISK_TRAVEL_RULE_DATA_MISSING, "cross-border, >= threshold in USD cents, originator or beneficiary data missing", {
        "threshold_usd_minor": Param("p0", "amount", "FATF R.16 threshold (100000 = USD 1,000)")})),
}
KIND_NAMES = {kind: name for name, (kind, _spec) in KINDS.items()}
KIND_CODES = {kind: int(spec.code) for kind, spec in KINDS.values()}

# Kinds whose state depends on a parameter: only one such rule per set.
SINGLETON_KINDS = {Kind.STRUCTURING}


@dataclasses.dataclass(frozen=True, slots=True)
class CompiledRule:
    index: int
    id: str
    version: int
    kind: int                 # Kind
    mode: int                 # Mode
    action: int               # RuleAction
    reason: str               # internal reason code, shown to operators only
    code: int                 # external code when it decides
    tier: tuple = (0,) * TIERS   # per-KYC-tier limits
    p: tuple = (0, 0, 0, 0)      # scalar parameters (meaning by kind, see KINDS)
    members: frozenset = frozenset()
    caps: tuple = ()             # ((mcc, cap_minor), ...) sorted


@dataclasses.dataclass(frozen=True, slots=True)
class RuleSet:
    name: str
    hash: str                 # sha256 hex of the canonical rule set, stamped on every decision
    rules: tuple              # CompiledRule, in evaluation order
    currency: int = 0         # ISO 4217 numeric of every *_minor amount in the set; 0: each payment's own (one-currency switch)

    def counter_meaning(self) -> "CounterMeaning":
        """What the per-account and per-device counters' amounts mean under this set: the
        currency they are converted to, and the structuring band observe flags payments in."""
        low, high = self.structuring_band() or (0, 0)
        return CounterMeaning(self.currency, low, high)

    def structuring_band(self) -> tuple[int, int] | None:
        """[low, high) of the structuring rule that is not off, if any: observe counts payments in it."""
        for rule in self.rules:
            if rule.kind == Kind.STRUCTURING and rule.mode != Mode.OFF:
                return (max(rule.p[0] - rule.p[1], 0), rule.p[0])
        return None


class RuleSetError(ValueError):
    """An invalid rule set; the message names the rule and the field."""


class CounterMeaning(NamedTuple):
    """RuleSet.counter_meaning: counters accumulated under one meaning are never compared with
    limits of another.  A reload that changes it forgets the per-account and per-device
    counters (the dynamic QR replay table stays); the journal stamps it on every blob, so a
    replay forgets at the same point, and a restart with a rules file of another meaning
    replays none of the old counters."""
    currency: int
    structuring_low_minor: int
    structuring_high_minor: int

    def describe(self) -> str:
        band = (f"[{self.structuring_low_minor}, {self.structuring_high_minor})" if self.structuring_high_minor
                else "none")
        return f"currency {self.currency or 'per payment'}, structuring band {band}"


def check_reload_between_batches(journal_pending: bool, old: CounterMeaning, new: CounterMeaning) -> None:
    """A reload that changes the counters' meaning forgets them, so it must come between two
    commits: payments observed since the last one would be journaled under the new meaning."""
    if journal_pending and old != new:
        raise RuleSetError(f"this rule set changes the counters' meaning ({old.describe()} -> {new.describe()}) "
                           "while payments observed since the last commit are not journaled yet: reload "
                           "between batches")


def check_compiled(ruleset: "RuleSet") -> None:
    """What an engine assumes of a RuleSet (load_ruleset guarantees it; a hand-built one may not)."""
    if len(ruleset.rules) > limits.RULES_PER_SET_MAX:
        raise RuleSetError(f"rules: {len(ruleset.rules)} rules, more than {limits.RULES_PER_SET_MAX}")
    for rule in ruleset.rules:
        if rule.kind not in KIND_NAMES or rule.mode not in MODE_NAMES or rule.action not in tuple(RuleAction):
            raise RuleSetError(f"rule {rule.id!r}: kind, mode or action out of range")
        if len(rule.tier) != TIERS or len(rule.p) != 4:
            raise RuleSetError(f"rule {rule.id!r}: parameter tables of the wrong size")


# ---- compilation from TOML -------------------------------------------------------

def _int_in(where: str, value: Any, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise RuleSetError(f"{where}: must be an integer, not {type(value).__name__} {value!r}")
    if not low <= value <= high:
        raise RuleSetError(f"{where}: {value} is outside {low}..{high}")
    return value


def _tier_values(where: str, value: Any, low: int, high: int) -> tuple:
    values = value if isinstance(value, list) else [value] * TIERS
    if len(values) != TIERS:
        raise RuleSetError(f"{where}: give one value or {TIERS} (one per KYC tier), not {len(values)}")
    return tuple(_int_in(f"{where}[{tier}]", item, low, high) for tier, item in enumerate(values))


def _id_list(where: str, value: Any, high: int) -> frozenset:
    if not isinstance(value, list):
        raise RuleSetError(f"{where}: must be a list")
    if len(value) > limits.RULES_LIST_ENTRIES_MAX:
        raise RuleSetError(f"{where}: {len(value)} entries, more than {limits.RULES_LIST_ENTRIES_MAX}")
    return frozenset(_int_in(f"{where}[{i}]", item, 0, high) for i, item in enumerate(value))


def _mcc_caps(where: str, value: Any) -> tuple:
    if not isinstance(value, dict) or not value:
        raise RuleSetError(f'{where}: must be a non-empty table like {{ "7995" = 0 }}')
    if len(value) > limits.RULES_LIST_ENTRIES_MAX:
        raise RuleSetError(f"{where}: {len(value)} entries, more than {limits.RULES_LIST_ENTRIES_MAX}")
    caps = []
    for key, cap in value.items():
        if not (isinstance(key, str) and key.isdigit() and len(key) <= 4):
            raise RuleSetError(f"{where}: key {key!r} is not a merchant category code (0..9999)")
        caps.append((int(key), _int_in(f"{where}.{key}", cap, 0, U64_MAX)))
    return tuple(sorted(caps))


def _compile_param(where: str, param: Param, value: Any) -> Any:
    kind = param.type
    if kind == "tier_amounts":
        return _tier_values(where, value, 0, U64_MAX)
    if kind == "tier_counts":
        return _tier_values(where, value, 0, 2**32 - 1)
    if kind == "amount":
        return _int_in(where, value, 0, U64_MAX)
    if kind == "count":
        return _int_in(where, value, 1, 2**32 - 1)
    if kind == "burst_count":
        return _int_in(where, value, 1, limits.RULES_BURST_COUNT_MAX)
    if kind == "seconds":
        return _int_in(where, value, 1, limits.RULES_DURATION_SECONDS_MAX) * NS_PER_SECOND
    if kind == "percent":
        return _int_in(where, value, 1, limits.RULES_PERCENT_MAX)
    if kind == "distinct":
        return _int_in(where, value, 1, limits.RULES_DISTINCT_MAX)
    if kind == "ids":
        return _id_list(where, value, U64_MAX)
    if kind == "mccs":
        return _id_list(where, value, 9999)
    if kind == "mcc_caps":
        return _mcc_caps(where, value)
    if kind == "field":
        if not isinstance(value, str) or value not in BLOCKLIST_FIELDS:
            raise RuleSetError(f"{where}: {value!r} is not one of {sorted(BLOCKLIST_FIELDS)}")
        return BLOCKLIST_FIELDS[value]
    raise AssertionError(f"catalogue names an unknown parameter type {kind}")


def _name(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value or len(value.encode()) > limits.RULES_NAME_BYTES_MAX:
        raise RuleSetError(f"{where}: must be a non-empty string of at most {limits.RULES_NAME_BYTES_MAX} bytes")
    if not all(ch.isalnum() or ch in "-_.:" for ch in value):
        raise RuleSetError(f"{where}: {value!r} may hold only letters, digits and - _ . :")
    return value


_COMMON_FIELDS = {"id", "kind", "version", "mode", "action", "reason"}
_MODES = {"off": Mode.OFF, "shadow": Mode.SHADOW, "enforce": Mode.ENFORCE}
_ACTIONS = {"flag": RuleAction.FLAG, "review": RuleAction.REVIEW, "decline": RuleAction.DECLINE}


def _choice(where: str, value: Any, choices: dict) -> int:
    # A TOML array or table is unhashable: check the type before the lookup (fuzz finding F3).
    if not isinstance(value, str) or value not in choices:
        raise RuleSetError(f"{where}: {value!r} is not one of {sorted(choices)}")
    return int(choices[value])


def _compile_rule(index: int, table: Any) -> CompiledRule:
    if not isinstance(table, dict):
        raise RuleSetError(f"rules[{index}]: must be a table")
    rule_id = _name(f"rules[{index}].id", table.get("id"))
    where = f"rule {rule_id!r}"
    kind_name = table.get("kind")
    if not isinstance(kind_name, str) or kind_name not in KINDS:
        raise RuleSetError(f"{where}: field 'kind': {kind_name!r} is not one of {sorted(KINDS)}")
    kind, spec = KINDS[kind_name]
    unknown = set(table) - _COMMON_FIELDS - set(spec.params)
    if unknown:
        raise RuleSetError(f"{where}: unknown field(s) {sorted(unknown)} for kind {kind_name!r}")
    slots: dict[str, Any] = {"tier": (0,) * TIERS, "p0": 0, "p1": 0, "p2": 0, "p3": 0,
                             "members": frozenset(), "caps": ()}
    for name, param in spec.params.items():
        if name not in table:
            raise RuleSetError(f"{where}: field {name!r} is required ({param.doc})")
        slots[param.slot] = _compile_param(f"{where}: field {name!r}", param, table[name])
    if kind in (Kind.FAN_IN, Kind.DEVICE_DISTINCT_PAYERS):
        slots["p1"] = sketch_bits_max(slots["p0"])
    if kind == Kind.STRUCTURING and slots["p1"] > slots["p0"]:
        raise RuleSetError(f"{where}: field 'band_minor' must not exceed threshold_minor")
    return CompiledRule(
        index=index, id=rule_id,
        version=_int_in(f"{where}: field 'version'", table.get("version", 1), 1, 2**31 - 1),
        kind=int(kind),
        mode=_choice(f"{where}: field 'mode'", table.get("mode"), _MODES),
        action=_choice(f"{where}: field 'action'", table.get("action"), _ACTIONS),
        reason=_name(f"{where}: field 'reason'", table.get("reason")),
        code=int(spec.code),
        tier=slots["tier"], p=(slots["p0"], slots["p1"], slots["p2"], slots["p3"]),
        members=slots["members"], caps=slots["caps"],
    )


def _canonical(document: dict) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def load_ruleset(toml_text: str) -> RuleSet:
    """Validate and compile a TOML rule set; raise RuleSetError naming the rule and field."""
    if len(toml_text.encode()) > limits.RULES_CONFIG_BYTES_MAX:
        raise RuleSetError(f"rule set is larger than {limits.RULES_CONFIG_BYTES_MAX} bytes")
    try:
        document = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as error:
        raise RuleSetError(f"rule set is not valid TOML: {error}") from None
    unknown = set(document) - {"ruleset", "rules"}
    if unknown:
        raise RuleSetError(f"unknown top-level table(s) {sorted(unknown)}; expected [ruleset] and [[rules]]")
    header = document.get("ruleset", {})
    if not isinstance(header, dict):
        raise RuleSetError("ruleset: must be a table ([ruleset])")
    name = _name("ruleset.name", header.get("name", "unnamed"))
    unknown = set(header) - {"name", "currency"}
    if unknown:
        raise RuleSetError(f"ruleset: unknown field(s) {sorted(unknown)}; expected name and currency")
    currency = _int_in("ruleset.currency", header.get("currency", 0), 0, 999)
    tables = document.get("rules", [])
    if not isinstance(tables, list):
        raise RuleSetError("rules: must be an array of tables ([[rules]])")
    if len(tables) > limits.RULES_PER_SET_MAX:
        raise RuleSetError(f"rules: {len(tables)} rules, more than {limits.RULES_PER_SET_MAX}")
    rules = tuple(_compile_rule(index, table) for index, table in enumerate(tables))
    _check_unique(rules)
    return RuleSet(name=name, hash=hashlib.sha256(_canonical(document)).hexdigest(), rules=rules,
                   currency=currency)


def _check_unique(rules: tuple) -> None:
    seen: set[str] = set()
    singletons: set[int] = set()
    for rule in rules:
        if rule.id in seen:
            raise RuleSetError(f"rule {rule.id!r}: field 'id': used by two rules")
        seen.add(rule.id)
        if rule.kind in SINGLETON_KINDS:
            if rule.kind in singletons:
                raise RuleSetError(f"rule {rule.id!r}: field 'kind': only one {KIND_NAMES[rule.kind]!r} rule per set")
            singletons.add(rule.kind)


# ---- shared by both engines (not hot) ---------------------------------------------

def state_digest(tables) -> bytes:
    """sha256 over (table name, entries in least-recently-used-first order), each
    entry a tuple of ints in the canonical field order both engines produce."""
    digest = hashlib.sha256()
    for name, entries in tables:
        digest.update(name.encode() + b"\0")
        for entry in entries:
            digest.update(repr(entry).encode() + b"\n")
    return digest.digest()


def journal_blob(meaning: CounterMeaning, records: bytes) -> bytes:
    """A version 2 journal blob: the counters' meaning, then the packed records."""
    return bytes([JOURNAL_VERSION_MEANING]) + JOURNAL_MEANING.pack(*meaning) + records


def journal_meaning(blob: bytes) -> CounterMeaning | None:
    """The meaning a blob's records were counted under; None for a version 1 blob (the running
    rule set's).  journal_records refuses a malformed blob."""
    if isinstance(blob, (bytes, bytearray)) and blob[:1] == bytes([JOURNAL_VERSION_MEANING]) \
            and len(blob) >= 1 + JOURNAL_MEANING.size:
        return CounterMeaning(*JOURNAL_MEANING.unpack_from(blob, 1))
    return None


def replay_plan(counted: CounterMeaning, running: CounterMeaning, blob: bytes) -> tuple[bool, bool, CounterMeaning]:
    """How an engine replays one blob: (forget its counters first, count the records -- else
    only their dynamic QR codes are kept --, the meaning its counters have after).  A change of
    meaning between blobs is where a live reload forgot the counters; records of a meaning other
    than the running set's are never counted."""
    meaning = journal_meaning(blob) or running
    return meaning != counted, meaning == running, meaning


def journal_records(blob: bytes):
    """Unpack a journal blob (version 1 or 2) into record tuples; refuse anything malformed."""
    if not isinstance(blob, (bytes, bytearray)) or not blob or blob[0] not in (JOURNAL_VERSION,
                                                                              JOURNAL_VERSION_MEANING):
        raise ValueError(f"rules journal: not a version {JOURNAL_VERSION} or {JOURNAL_VERSION_MEANING} journal: "
                         f"{bytes(blob or b'')[:1]!r}")
    header_bytes = 1 + (JOURNAL_MEANING.size if blob[0] == JOURNAL_VERSION_MEANING else 0)
    if len(blob) < header_bytes:
        raise ValueError("rules journal: a version 2 journal shorter than its header")
    body = memoryview(blob)[header_bytes:]
    if len(body) % JOURNAL_RECORD.size:
        raise ValueError(f"rules journal: {len(body)} bytes is not a whole number of records")
    records = list(JOURNAL_RECORD.iter_unpack(body))
    # Only a corrupt journal holds a time outside the clock's range, and the compiled
    # engine's bucket arithmetic assumes a non-negative time (fuzz finding F2): refuse the
    # whole blob before any record is applied, so a refusal leaves the state untouched.
    for record in records:
        if not 0 <= record[0] <= limits.CLOCK_NS_MAX:
            raise ValueError(f"rules journal: record time {record[0]} is outside 0..{limits.CLOCK_NS_MAX}")
    return records


def rule_stats(hits: int, shadow_hits: int, evaluations: int, samples: int, time_ns_sampled: int) -> dict:
    """One rule's statistics as both engines report them. Time is sampled (one evaluation in
    limits.RULES_TIME_SAMPLE_INTERVAL_EVALUATIONS is timed): `time_ns` estimates the rule's
    whole time as the sampled mean times its evaluations."""
    time_ns = time_ns_sampled * evaluations // samples if samples else 0
    return {"hits": hits, "shadow_hits": shadow_hits, "evaluations": evaluations,
            "samples": samples, "time_ns_sampled": time_ns_sampled, "time_ns": time_ns}


class TableStats(NamedTuple):
    size: int
    capacity: int
    evictions: int


def table_capacities(capacity) -> dict:
    """Table sizes for an engine: the limits, or smaller ones (tests, small deployments)."""
    maxima = {"accounts": limits.RULES_ACCOUNTS_TRACKED_MAX, "devices": limits.RULES_DEVICES_TRACKED_MAX,
              "dynamic_qr": limits.RULES_DYNAMIC_QR_TRACKED_MAX}
    chosen = dict(maxima)
    for name, value in (capacity or {}).items():
        if name not in maxima:
            raise ValueError(f"no rules table named {name!r}; choose from {sorted(maxima)}")
        if not isinstance(value, int) or not 1 <= value <= maxima[name]:
            raise ValueError(f"capacity of {name!r} must be 1..{maxima[name]}, not {value!r}")
        chosen[name] = value
    return chosen
