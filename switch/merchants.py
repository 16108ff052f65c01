"""The merchant directory and the dynamic-QR guard: a journaled component named "merchants".

* (scheme, merchant identifier) -> Merchant(account_id, name, mcc, country, currency).
  A QR result lists its merchant keys most specific first; `resolve` pays the
  first one registered.  A valid code that names no registered merchant is
  refused by the caller with MERCHANT_NOT_REGISTERED.
* The set of used dynamic QR codes, keyed by a digest of the payload text: a
  dynamic code is single use, must be paid before its expiry, and binds its
  amount (`check_and_consume`).

Both live in memory; every change is recorded as an effect that switch/storage.py
writes into the LMDB journal with the batch that caused it (`take_journal`), and
replays on open (`apply_journal`), so a replayed code is still refused after a
restart.  Pruning of expired digests is an effect too, so recovery is exact.
"""
from __future__ import annotations

import dataclasses
import hashlib

import msgpack

from core_ext import limits
from core_ext.codes import Code
from core_ext.qr_tables import CURRENCY_EXPONENTS

NAME = "merchants"
DIGEST_BYTES = 16
ACCOUNT_ID_MAX = 2**64 - 2          # 2^64-1 is reserved by the ledger
MCC_CHARS = 4
# Effect tags in the journal.
_REGISTER, _USE, _PRUNE = "r", "u", "p"
# Unpacking a journal blob: a batch holds at most one effect per payment.
_UNPACK_LIMITS = dict(max_str_len=4 * limits.MERCHANT_ID_CHARS_MAX, max_bin_len=DIGEST_BYTES,
                      max_array_len=limits.MERCHANT_KEYS_MAX + limits.BATCH_EVENTS_MAX, max_map_len=0, max_ext_len=0)


@dataclasses.dataclass(frozen=True, slots=True)
class Merchant:
    account_id: int      # the ledger account credited for this merchant's payments
    name: str
    mcc: str             # ISO 18245, four digits
    country: str         # ISO 3166-1 alpha-2
    currency: int        # ISO 4217 numeric: the ledger of account_id


def payload_digest(payload: str) -> bytes:
    """The single-use key of a dynamic code: 128 bits of SHA-256 of its exact text."""
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).digest()[:DIGEST_BYTES]


class MerchantDirectory:
    """Registered merchants and used dynamic QR codes; see the module docstring."""

    name = NAME

    def __init__(self) -> None:
        self._merchants: dict[tuple[str, str], Merchant] = {}
        self._used_expiry_s: dict[bytes, int] = {}     # digest -> expiry (0: none)
        self._effects: list[list] = []

    # ---- the directory ----------------------------------------------------------
    def register(self, scheme: str, merchant_id: str, account_id: int, name: str, mcc: str, country: str,
                 currency: int) -> int:
        """Add (scheme, merchant_id); the same registration again is OK and changes nothing."""
        merchant = Merchant(account_id, name, mcc, country, currency)
        if not _key_ok(scheme, merchant_id) or not _merchant_ok(merchant):
            return Code.MERCHANT_FIELD_INVALID
        existing = self._merchants.get((scheme, merchant_id))
        if existing is not None:
            return Code.OK if existing == merchant else Code.MERCHANT_ALREADY_REGISTERED
        if len(self._merchants) >= limits.MERCHANT_KEYS_MAX:
            return Code.MERCHANTS_LIMIT_REACHED
        self._merchants[(scheme, merchant_id)] = merchant
        self._effects.append([_REGISTER, scheme, merchant_id, account_id, name, mcc, country, currency])
        return Code.OK

    def lookup(self, scheme: str, merchant_id: str) -> Merchant | None:
        return self._merchants.get((scheme, merchant_id))

    def resolve(self, qr_result) -> Merchant | None:
        """The merchant of the first registered key of a valid QR result, or None."""
        if not qr_result.valid:
            return None
        for key in qr_result.merchant_keys:
            merchant = self._merchants.get(tuple(key))
            if merchant is not None:
                return merchant
        return None

    def __len__(self) -> int:
        return len(self._merchants)

    def registrations(self) -> list[tuple[str, str, Merchant]]:
        """Every (scheme, merchant identifier, merchant): what the compiled pipeline mirrors into C."""
        return [(scheme, merchant_id, merchant) for (scheme, merchant_id), merchant in self._merchants.items()]

    # ---- the dynamic-QR guard --------------------------------------------------------
    def check_and_consume(self, qr_result, payload: str, amount_minor: int, now_s: int) -> int:
        """OK and record the use, or the code that refuses this payment of this QR code.

        Any code with an amount binds it; only a dynamic code is single use and expires.
        """
        if not qr_result.valid:
            return qr_result.code
        if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) \
                or not 0 < amount_minor <= limits.AMOUNT_MINOR_MAX:
            return Code.PAYMENT_AMOUNT_INVALID
        if qr_result.amount_minor is not None and amount_minor != qr_result.amount_minor:
            return Code.AMOUNT_MISMATCH
        if not qr_result.dynamic:
            return Code.OK
        expiry_s = qr_result.expiry_s or 0
        if expiry_s and now_s >= expiry_s:
            return Code.PAYMENT_QR_EXPIRED
        digest = payload_digest(payload)
        if digest in self._used_expiry_s:
            return Code.QR_REPLAYED
        if len(self._used_expiry_s) >= limits.USED_QR_COUNT_MAX:
            self._prune(now_s)
            self._effects.append([_PRUNE, now_s])
            if len(self._used_expiry_s) >= limits.USED_QR_COUNT_MAX:
                return Code.USED_QR_LIMIT_REACHED
        self._used_expiry_s[digest] = expiry_s
        self._effects.append([_USE, digest, expiry_s])
        return Code.OK

    def was_used(self, payload: str) -> bool:
        return payload_digest(payload) in self._used_expiry_s

    def _prune(self, now_s: int) -> None:
        """Forget used codes whose expiry passed: they are refused as expired anyway."""
        expired = [digest for digest, expiry_s in self._used_expiry_s.items() if expiry_s and expiry_s <= now_s]
        for digest in expired:
            del self._used_expiry_s[digest]

    # ---- journaled component (docs/INTERNALS.md) ---------------------------------------
    def take_journal(self) -> bytes | None:
        if not self._effects:
            return None
        blob = msgpack.packb(self._effects, use_bin_type=True)
        self._effects = []
        return blob

    def apply_journal(self, blob: bytes) -> None:
        """Re-apply recorded effects (recovery); effects are applied as recorded, never re-decided."""
        effects = msgpack.unpackb(blob, raw=False, **_UNPACK_LIMITS)
        if not isinstance(effects, list):
            raise ValueError("merchants journal: not a list of effects")
        for effect in effects:
            self._apply_effect(effect)

    def _apply_effect(self, effect) -> None:
        kind = effect[0] if isinstance(effect, list) and effect else None
        if kind == _REGISTER and len(effect) == 8:
            scheme, merchant_id, account_id, name, mcc, country, currency = effect[1:]
            self._merchants[(scheme, merchant_id)] = Merchant(account_id, name, mcc, country, currency)
        elif kind == _USE and len(effect) == 3 and isinstance(effect[1], bytes):
            self._used_expiry_s[effect[1]] = int(effect[2])
        elif kind == _PRUNE and len(effect) == 2:
            self._prune(int(effect[1]))
        else:
            raise ValueError(f"merchants journal: unknown effect {effect!r:.80}")

    def state_hash(self) -> bytes:
        digest = hashlib.sha256()
        for (scheme, merchant_id), merchant in sorted(self._merchants.items()):
            digest.update(msgpack.packb([scheme, merchant_id, *dataclasses.astuple(merchant)], use_bin_type=True))
        digest.update(b"\x00used")
        for used, expiry_s in sorted(self._used_expiry_s.items()):
            digest.update(used + expiry_s.to_bytes(8, "big", signed=True))
        return digest.digest()

    def reset(self) -> None:
        self._merchants.clear()
        self._used_expiry_s.clear()
        self._effects = []


def _key_ok(scheme, merchant_id) -> bool:
    return (isinstance(scheme, str) and 0 < len(scheme) <= limits.QR_GUID_CHARS_MAX
            and isinstance(merchant_id, str) and 0 < len(merchant_id) <= limits.MERCHANT_ID_CHARS_MAX)


def _merchant_ok(merchant: Merchant) -> bool:
    account_id, currency = merchant.account_id, merchant.currency
    return (isinstance(account_id, int) and not isinstance(account_id, bool) and 0 < account_id <= ACCOUNT_ID_MAX
            and isinstance(merchant.name, str) and 0 < len(merchant.name) <= limits.MERCHANT_NAME_CHARS_MAX
            and isinstance(merchant.mcc, str) and len(merchant.mcc) == MCC_CHARS and merchant.mcc.isascii()
            and merchant.mcc.isdigit()
            and isinstance(merchant.country, str) and len(merchant.country) == 2 and merchant.country.isascii()
            and merchant.country.isalpha() and merchant.country.isupper()
            and isinstance(currency, int) and not isinstance(currency, bool) and currency in CURRENCY_EXPONENTS)
