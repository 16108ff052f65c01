"""The switch's TOML configuration: participants, ledgers (currencies), accounts, merchants.

    [switch]
    name = "qr-switch"            # sent in the handshake challenge
    accounts_max = 100000         # sizes the in-memory ledger
    rate_items_per_second = 200000
    rate_burst_items = 400000
    rules = "rules.toml"          # the risk rule set (relative to this file); absent: no rules
    review_timeout_seconds = 86400   # a payment held for review is voided after this if nobody decides
    review_queue_items_max = 100000  # held payments at once; past it a payment to hold is declined REVIEW_QUEUE_FULL

    [[participants]]              # one per wallet (or operator)
    id = 1                        # u64, what the client names in `auth`
    name = "TrueMoney"
    role = "wallet"               # "wallet" or "operator"
    secret = "..."                # the HMAC key: its UTF-8 bytes
    accounts = [[1000, 1999], 5001]   # inclusive ranges and single ids it owns
    rate_items_per_second = 50000     # optional: its own token bucket (at most the limits' maxima);
    rate_burst_items = 100000         #   absent: the [switch] values

    [[ledgers]]                   # one per currency (ISO 4217 numeric)
    ledger = 764
    fee_account_id = 9764         # collects the merchant discount
    settlement_account_id = 8764  # funds opening balances (issuance)
    fee_bps = 50                  # merchant discount rate, basis points
    usd_minor_per_million_minor = 28000   # US cents per 1,000,000 minor units (FATF R.16 conversion)

    [[accounts]]                  # created at start (idempotent), funded once
    id = 1001
    ledger = 764
    code = 1                      # docs/INTERNALS.md: 1 wallet, 2 merchant, 3 fee, 4 settlement
    owner = 1                     # participant id (user_data_64)
    kyc_tier = 0                  # user_data_32
    flags = ["debits_must_not_exceed_credits", "history"]
    opening_balance_minor = 500000

    [[merchants]]                 # keyword arguments of MerchantDirectory.register
    ...

Errors are ConfigError with the path of the offending entry: an operator must
see exactly which line to fix, and a switch never starts half configured.
"""
from __future__ import annotations

import bisect
import dataclasses
import pathlib
import sys
from typing import Any

from core_ext import limits
from core_ext.types import AccountFlags

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib

ROLE_WALLET = "wallet"
ROLE_OPERATOR = "operator"
ROLES = (ROLE_WALLET, ROLE_OPERATOR)
SECRET_BYTES_MIN = 16
FEE_BPS_MAX = 10_000
_ACCOUNT_FLAG_NAMES = {
    "debits_must_not_exceed_credits": AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS,
    "credits_must_not_exceed_debits": AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS,
    "history": AccountFlags.HISTORY,
}


class ConfigError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Participant:
    id: int
    name: str
    role: str
    secret: bytes
    # Sorted, non-overlapping inclusive ranges: ownership is a binary search.
    range_starts: tuple[int, ...]
    range_ends: tuple[int, ...]
    # Its token bucket (items: a payment, a transfer): its own entry's, else the [switch] values.
    rate_items_per_second: int = limits.RATE_ITEMS_PER_SECOND
    rate_burst_items: int = limits.RATE_BURST_ITEMS

    @property
    def is_operator(self) -> bool:
        return self.role == ROLE_OPERATOR

    def owns(self, account_id: int) -> bool:
        index = bisect.bisect_right(self.range_starts, account_id) - 1
        return index >= 0 and account_id <= self.range_ends[index]


@dataclasses.dataclass(frozen=True)
class LedgerConfig:
    ledger: int
    fee_account_id: int
    settlement_account_id: int
    fee_bps: int
    # US cents per million minor units of this currency: amount_usd_minor = amount * rate // 10^6
    # (integer arithmetic; 0 = no rate, the travel rule then sees USD 0).
    usd_minor_per_million_minor: int = 0


@dataclasses.dataclass(frozen=True)
class AccountConfig:
    id: int
    ledger: int
    code: int
    owner: int
    kyc_tier: int
    flags: int
    opening_balance_minor: int


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    accounts_max: int
    rate_items_per_second: int
    rate_burst_items: int
    participants: dict[int, Participant]
    ledgers: dict[int, LedgerConfig]
    accounts: list[AccountConfig]
    merchants: list[dict[str, Any]]
    rules_path: str | None = None          # the rule set's TOML, resolved against the config's directory
    review_timeout_seconds: int = limits.REVIEW_TIMEOUT_SECONDS_DEFAULT
    review_queue_items_max: int = limits.REVIEW_QUEUE_ITEMS_MAX


def load(path: str | pathlib.Path) -> Config:
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: {error}") from error
    config = parse(document)
    if config.rules_path is not None:
        config = dataclasses.replace(config, rules_path=str(pathlib.Path(path).parent / config.rules_path))
    return config


def parse(document: dict[str, Any]) -> Config:
    switch = document.get("switch", {})
    rate = _rate(switch, "switch", (limits.RATE_ITEMS_PER_SECOND, limits.RATE_BURST_ITEMS))
    participants = [_participant(entry, f"participants[{index}]", rate)
                    for index, entry in enumerate(document.get("participants", []))]
    ledgers = [_ledger(entry, f"ledgers[{index}]") for index, entry in enumerate(document.get("ledgers", []))]
    accounts = [_account(entry, f"accounts[{index}]") for index, entry in enumerate(document.get("accounts", []))]
    config = Config(
        name=_str(switch.get("name", "qr-switch"), "switch.name"),
        accounts_max=_int(switch.get("accounts_max", limits.ACCOUNTS_MAX), "switch.accounts_max", 1, limits.ACCOUNTS_MAX),
        rate_items_per_second=rate[0],
        rate_burst_items=rate[1],
        participants=_unique({p.id: p for p in participants}, participants, "participants"),
        ledgers=_unique({entry.ledger: entry for entry in ledgers}, ledgers, "ledgers"),
        accounts=accounts,
        merchants=[dict(entry) for entry in document.get("merchants", [])],
        rules_path=_str(switch["rules"], "switch.rules") if "rules" in switch else None,
        review_timeout_seconds=_int(switch.get("review_timeout_seconds", limits.REVIEW_TIMEOUT_SECONDS_DEFAULT),
                                    "switch.review_timeout_seconds", 1, limits.TIMEOUT_SECONDS_MAX),
        review_queue_items_max=_int(switch.get("review_queue_items_max", limits.REVIEW_QUEUE_ITEMS_MAX),
                                    "switch.review_queue_items_max", 1, limits.REVIEW_QUEUE_ITEMS_MAX),
    )
    _check_accounts(config)
    return config


def _rate(table: dict, where: str, default: tuple[int, int]) -> tuple[int, int]:
    """(rate_items_per_second, rate_burst_items) of a [switch] or [[participants]] table, each
    1..its limit; a key left out takes `default`'s."""
    return (_int(table.get("rate_items_per_second", default[0]), f"{where}.rate_items_per_second", 1,
                 limits.RATE_ITEMS_PER_SECOND),
            _int(table.get("rate_burst_items", default[1]), f"{where}.rate_burst_items", 1, limits.RATE_BURST_ITEMS))


def _unique(mapping: dict, entries: list, what: str) -> dict:
    if len(mapping) != len(entries):
        raise ConfigError(f"{what}: duplicate id")
    return mapping


def _int(value: Any, where: str, minimum: int = 0, maximum: int = 2**64 - 1) -> int:
    if type(value) is not int or not minimum <= value <= maximum:
        raise ConfigError(f"{where}: expected an integer in {minimum}..{maximum}, got {value!r}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a non-empty string")
    return value


def _participant(entry: dict, where: str, rate: tuple[int, int]) -> Participant:
    role = entry.get("role")
    if role not in ROLES:
        raise ConfigError(f"{where}.role: expected one of {ROLES}, got {role!r}")
    secret = _str(entry.get("secret"), f"{where}.secret").encode()
    if len(secret) < SECRET_BYTES_MIN:
        raise ConfigError(f"{where}.secret: at least {SECRET_BYTES_MIN} bytes")
    ranges = []
    for index, item in enumerate(entry.get("accounts", [])):
        item_where = f"{where}.accounts[{index}]"
        if isinstance(item, list) and len(item) == 2:
            first, last = _int(item[0], item_where, 1), _int(item[1], item_where, 1)
            if first > last:
                raise ConfigError(f"{item_where}: range start after end")
            ranges.append((first, last))
        else:
            account_id = _int(item, item_where, 1)
            ranges.append((account_id, account_id))
    ranges.sort()
    for (_, previous_end), (start, _) in zip(ranges, ranges[1:]):
        if start <= previous_end:
            raise ConfigError(f"{where}.accounts: overlapping ranges")
    participant_rate = _rate(entry, where, rate)
    return Participant(
        id=_int(entry.get("id"), f"{where}.id", 1), name=_str(entry.get("name", "?"), f"{where}.name"),
        role=role, secret=secret,
        range_starts=tuple(start for start, _ in ranges), range_ends=tuple(end for _, end in ranges),
        rate_items_per_second=participant_rate[0], rate_burst_items=participant_rate[1],
    )


def _ledger(entry: dict, where: str) -> LedgerConfig:
    return LedgerConfig(
        ledger=_int(entry.get("ledger"), f"{where}.ledger", 1, 2**32 - 1),
        fee_account_id=_int(entry.get("fee_account_id"), f"{where}.fee_account_id", 1),
        settlement_account_id=_int(entry.get("settlement_account_id"), f"{where}.settlement_account_id", 1),
        fee_bps=_int(entry.get("fee_bps", 0), f"{where}.fee_bps", 0, FEE_BPS_MAX),
        usd_minor_per_million_minor=_int(entry.get("usd_minor_per_million_minor", 0),
                                         f"{where}.usd_minor_per_million_minor", 0, limits.USD_RATE_PER_MILLION_MAX),
    )


def _account(entry: dict, where: str) -> AccountConfig:
    flags = 0
    for name in entry.get("flags", []):
        if name not in _ACCOUNT_FLAG_NAMES:
            raise ConfigError(f"{where}.flags: unknown flag {name!r}")
        flags |= int(_ACCOUNT_FLAG_NAMES[name])
    return AccountConfig(
        id=_int(entry.get("id"), f"{where}.id", 1, 2**64 - 2),
        ledger=_int(entry.get("ledger"), f"{where}.ledger", 1, 2**32 - 1),
        code=_int(entry.get("code"), f"{where}.code", 1, 2**16 - 1),
        owner=_int(entry.get("owner", 0), f"{where}.owner"),
        kyc_tier=_int(entry.get("kyc_tier", 0), f"{where}.kyc_tier", 0, 2**32 - 1),
        flags=flags,
        opening_balance_minor=_int(entry.get("opening_balance_minor", 0), f"{where}.opening_balance_minor"),
    )


def _check_accounts(config: Config) -> None:
    """Cross-references an operator gets wrong: unknown currencies, owners, funding accounts."""
    ids = {account.id for account in config.accounts}
    if len(ids) != len(config.accounts):
        raise ConfigError("accounts: duplicate id")
    for account in config.accounts:
        if account.owner and account.owner not in config.participants:
            raise ConfigError(f"account {account.id}: owner {account.owner} is not a participant")
        if account.opening_balance_minor and account.ledger not in config.ledgers:
            raise ConfigError(f"account {account.id}: opening balance in ledger {account.ledger} without a [[ledgers]] entry")
    for ledger in config.ledgers.values():
        for account_id in (ledger.fee_account_id, ledger.settlement_account_id):
            if account_id not in ids:
                raise ConfigError(f"ledger {ledger.ledger}: account {account_id} is not in [[accounts]]")
