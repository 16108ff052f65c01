"""Plain data types shared by the compiled core, its twin and the Python side.

The ledger follows TigerBeetle's data model: accounts with four u64 balances,
transfers with a client-chosen u128 id that is their idempotency key.  All
money is an integer count of minor units; nothing here is ever a float.
"""
from __future__ import annotations

import dataclasses
import enum


class AccountFlags(enum.IntFlag):
    NONE = 0
    LINKED = 1 << 0
    DEBITS_MUST_NOT_EXCEED_CREDITS = 1 << 1
    CREDITS_MUST_NOT_EXCEED_DEBITS = 1 << 2
    HISTORY = 1 << 3


ACCOUNT_FLAGS_KNOWN = int(
    AccountFlags.LINKED | AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
    | AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS | AccountFlags.HISTORY
)


class TransferFlags(enum.IntFlag):
    NONE = 0
    LINKED = 1 << 0
    PENDING = 1 << 1
    POST_PENDING_TRANSFER = 1 << 2
    VOID_PENDING_TRANSFER = 1 << 3
    BALANCING_DEBIT = 1 << 4
    BALANCING_CREDIT = 1 << 5


TRANSFER_FLAGS_KNOWN = int(
    TransferFlags.LINKED | TransferFlags.PENDING | TransferFlags.POST_PENDING_TRANSFER
    | TransferFlags.VOID_PENDING_TRANSFER | TransferFlags.BALANCING_DEBIT | TransferFlags.BALANCING_CREDIT
)


@dataclasses.dataclass(slots=True)
class Account:
    id: int                      # u64, nonzero
    ledger: int                  # u32: one currency per ledger
    code: int                    # u16: account kind (see docs/INTERNALS.md)
    flags: int = 0               # AccountFlags
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    debits_pending: int = 0      # the four balances: u64 minor units, set by the ledger only
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0
    timestamp: int = 0           # ns, assigned by the ledger: unique and strictly increasing


@dataclasses.dataclass(slots=True)
class Transfer:
    id: int                      # u128, nonzero: the client's idempotency key
    debit_account_id: int
    credit_account_id: int
    amount: int                  # u64 minor units
    ledger: int
    code: int
    flags: int = 0               # TransferFlags
    pending_id: int = 0          # u128: the pending transfer a post/void refers to
    timeout: int = 0             # seconds a pending transfer may stay pending (0: forever)
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    timestamp: int = 0           # ns, assigned by the ledger
