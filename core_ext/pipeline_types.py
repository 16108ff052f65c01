"""The payment path's shared definitions: what the pay flow tells the rules, and the audit log.

Neither hot nor different between the compiled core and its twin, so it lives
once here (like core_ext/rules_types.py):

* the digests the rules see for a device and a QR payload (u64, 0 = none);
* the tables that turn a merchant's ISO 3166 alpha-2 country and a payer's
  ledger (ISO 4217 currency) into ISO 3166 numeric countries;
* the audit record: one per risk decision worth keeping (every decline and
  review, and an approval when any rule fired), in a journaled component named
  "audit" so it commits in the same LMDB transaction as the postings it explains.
  The byte format is documented in docs/INTERNALS.md ("The audit log").
"""
from __future__ import annotations

import hashlib
import struct
from typing import Iterator, NamedTuple

from core_ext import limits

U64_MAX = 2**64 - 1
U128_MAX = 2**128 - 1
NS_PER_SECOND = 1_000_000_000
BASIS_POINTS = 10_000
# Transfer codes (the ledger's `code` field) the switch itself posts.
TRANSFER_CODE_PAYMENT = 1
TRANSFER_CODE_MERCHANT_FEE = 2
TRANSFER_CODE_OPENING_BALANCE = 3
# Account codes (docs/INTERNALS.md): a person's receiving account is what the fan-in and balance cap rules watch.
ACCOUNT_CODE_PERSONAL_RECEIVING = 5
RATE_SCALE = 1_000_000              # usd_minor_per_million_minor is per this many minor units
MODE_CODES = {"off": 0, "shadow": 1, "enforce": 2}
MODE_NAMES = {code: name for name, code in MODE_CODES.items()}

# ISO 3166-1 numeric of the countries the switch's profiles serve (a merchant's `country`).
COUNTRY_NUMERIC: dict[str, int] = {
    "TH": 764, "PH": 608, "IN": 356, "ID": 360, "SG": 702, "MY": 458, "VN": 704, "KH": 116,
    "BR": 76, "US": 840,
}
# A wallet account's country, from its ledger (ISO 4217): the currency a wallet is issued in.
LEDGER_COUNTRY: dict[int, int] = {
    764: 764, 608: 608, 356: 356, 360: 360, 702: 702, 458: 458, 704: 704, 116: 116, 986: 76, 840: 840,
}


# ---- settings the pipeline takes (built from the switch config by the engine) ------

class LedgerSettings(NamedTuple):
    ledger: int                          # ISO 4217 numeric
    fee_bps: int                         # merchant discount, basis points
    fee_account_id: int
    usd_minor_per_million_minor: int     # FATF R.16 conversion (0: none)


class ParticipantSettings(NamedTuple):
    id: int
    is_operator: bool
    range_starts: tuple                  # sorted inclusive ranges of owned accounts
    range_ends: tuple
    rate_items_per_second: int = 0       # this participant's token bucket; 0: PipelineSettings' rate
    rate_burst_items: int = 0


class PipelineSettings(NamedTuple):
    participants: tuple                  # ParticipantSettings
    ledgers: tuple                       # LedgerSettings
    review_timeout_seconds: int
    rate_items_per_second: int
    rate_burst_items: int


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


def derive_id(purpose: bytes, source_id: int) -> int:
    """A u128 id derived from another id: the same payment id always yields the same fee
    leg id, so an idempotent retry posts the same legs and gets EXISTS, never a double."""
    digest = hashlib.blake2b(purpose + source_id.to_bytes(16, "big"), digest_size=16).digest()
    derived = int.from_bytes(digest, "big")
    return derived if 0 < derived < U128_MAX else 1


def fee_id_for(payment_id: int) -> int:
    return derive_id(b"merchant-fee", payment_id)


# ---- what the rules are told ---------------------------------------------------

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
DIGEST_SEED_DEVICE = 0x6465766963650000     # "device"
DIGEST_SEED_QR = 0x7172000000000000         # "qr"


def mix64(value: int) -> int:
    """splitmix64's finaliser (the same as core_ext.rules_types.mix64)."""
    value = (value + 0x9E3779B97F4A7C15) & U64_MAX
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & U64_MAX
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & U64_MAX
    return value ^ (value >> 31)


def digest_u64(seed: int, data: bytes) -> int:
    """A nonzero u64 digest (0 means "none" to the rules): FNV-1a over the bytes, finished
    with mix64. Not a cryptographic hash, and it need not be: a collision only merges two
    devices' (or codes') counters, and whoever can choose a device id can change it anyway.
    Chosen because the compiled pipeline computes it in a few nanoseconds per payment."""
    value = FNV_OFFSET ^ seed
    for byte in data:
        value = ((value ^ byte) * FNV_PRIME) & U64_MAX
    return mix64(value) or 1


def device_digest(device_id: str | None) -> int:
    if not device_id:
        return 0
    return digest_u64(DIGEST_SEED_DEVICE, device_id.encode("utf-8", "surrogatepass"))


def qr_digest(payload: str) -> int:
    return digest_u64(DIGEST_SEED_QR, payload.encode("utf-8", "surrogatepass"))


def usd_minor(amount_minor: int, usd_minor_per_million_minor: int) -> int:
    """Integer conversion, floored and saturated at u64 (no float anywhere)."""
    return min(amount_minor * usd_minor_per_million_minor // RATE_SCALE, U64_MAX)


def available_minor(account) -> int:
    """What a wallet may still spend: credits posted less debits posted and reserved, never negative."""
    return max(account.credits_posted - account.debits_posted - account.debits_pending, 0)


# ---- the audit log ----------------------------------------------------------

AUDIT_VERSION = 1
# record_bytes, payment id (16, big-endian), payer, merchant account, amount, ledger,
# timestamp, action, external code, rule set hash (32 raw bytes of its sha256), fired count.
AUDIT_HEADER = struct.Struct("<H16sQQQIqBH32sB")
AUDIT_FIRED_MAX = limits.RULES_PER_SET_MAX


class FiredRule(NamedTuple):
    rule_id: str
    reason: str
    mode: str            # "shadow" or "enforce"


class AuditRecord(NamedTuple):
    payment_id: int
    payer_account_id: int
    merchant_account_id: int
    amount_minor: int
    ledger: int
    timestamp_ns: int
    action: int          # rules_types.Action: 0 approve, 1 review, 2 decline
    code: int            # the code the wallet was answered
    ruleset_hash: str    # hex
    fired: tuple         # FiredRule, in rule order


def _short_text(text: str) -> bytes:
    data = text.encode()
    if len(data) > limits.RULES_NAME_BYTES_MAX:
        raise ValueError(f"audit: {text!r} is longer than {limits.RULES_NAME_BYTES_MAX} bytes")
    return bytes([len(data)]) + data


def encode_audit_record(record: AuditRecord) -> bytes:
    fired = b"".join(bytes([MODE_CODES[mode]]) + _short_text(rule_id) + _short_text(reason)
                     for rule_id, reason, mode in record.fired)
    size = AUDIT_HEADER.size + len(fired)
    return AUDIT_HEADER.pack(
        size, record.payment_id.to_bytes(16, "big"), record.payer_account_id, record.merchant_account_id,
        record.amount_minor, record.ledger, record.timestamp_ns, record.action, record.code,
        bytes.fromhex(record.ruleset_hash), len(record.fired)) + fired


def iter_audit_records(blob: bytes) -> Iterator[AuditRecord]:
    """Decode one "audit" journal section; refuse anything malformed with ValueError."""
    if not blob or blob[0] != AUDIT_VERSION:
        raise ValueError(f"audit journal: not a version {AUDIT_VERSION} section")
    position = 1
    while position < len(blob):
        if position + AUDIT_HEADER.size > len(blob):
            raise ValueError("audit journal: truncated record header")
        (size, payment_id, payer, merchant, amount, ledger, timestamp_ns, action, code, ruleset_hash,
         fired_count) = AUDIT_HEADER.unpack_from(blob, position)
        end = position + size
        if size < AUDIT_HEADER.size or end > len(blob) or fired_count > AUDIT_FIRED_MAX:
            raise ValueError("audit journal: record size or fired count out of range")
        fired, cursor = [], position + AUDIT_HEADER.size
        for _ in range(fired_count):
            mode = blob[cursor] if cursor < end else None
            rule_id, cursor = _read_short_text(blob, cursor + 1, end)
            reason, cursor = _read_short_text(blob, cursor, end)
            if mode not in MODE_NAMES:
                raise ValueError("audit journal: unknown rule mode")
            fired.append(FiredRule(rule_id, reason, MODE_NAMES[mode]))
        if cursor != end:
            raise ValueError("audit journal: record size does not match its rules")
        yield AuditRecord(int.from_bytes(payment_id, "big"), payer, merchant, amount, ledger, timestamp_ns,
                          action, code, ruleset_hash.hex(), tuple(fired))
        position = end


def _read_short_text(blob: bytes, position: int, end: int) -> tuple[str, int]:
    if position >= end or position + 1 + blob[position] > end:
        raise ValueError("audit journal: text runs past its record")
    length = blob[position]
    return bytes(blob[position + 1:position + 1 + length]).decode(), position + 1 + length


class AuditLog:
    """The journaled component "audit": records appended in a batch commit with it.

    It keeps no state a payment needs, only a count and a running digest, so that
    recovery can tell two replays apart (state_hash) and an operator command can
    read the records themselves from the journal (iter_audit_records)."""

    name = "audit"

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._pending_count = 0
        self.reset()

    def append(self, record: AuditRecord) -> None:
        self._pending.append(encode_audit_record(record))
        self._pending_count += 1

    def append_encoded(self, records: bytes, count: int) -> None:
        """`count` records already encoded back to back (the compiled pipeline writes them in C)."""
        self._pending.append(records)
        self._pending_count += count

    def take_journal(self) -> bytes | None:
        if not self._pending:
            return None
        blob = bytes([AUDIT_VERSION]) + b"".join(self._pending)
        self._absorb(blob, self._pending_count)
        self._pending, self._pending_count = [], 0
        return blob

    def apply_journal(self, blob: bytes) -> None:
        # Decoding validates: a corrupt section stops recovery instead of being counted.
        self._absorb(blob, sum(1 for _ in iter_audit_records(blob)))

    def _absorb(self, blob: bytes, count: int) -> None:
        self.records_total += count
        self._digest.update(blob)

    def state_hash(self) -> bytes:
        return self._digest.copy().digest() + self.records_total.to_bytes(8, "big")

    def reset(self) -> None:
        self._pending = []
        self._pending_count = 0
        self.records_total = 0
        self._digest = hashlib.sha256()
