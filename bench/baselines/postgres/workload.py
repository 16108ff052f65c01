"""The load benchmark's workload: accounts and a seeded stream of QR payments.

Pure Python with no database in sight, so the switch's own load generator can import it and
both sides run exactly the same payments.  Everything is drawn from `random.Random` seeded
with a string (deterministic across runs and Python versions); accounts and payments draw from
separate streams so that a longer run never changes the accounts.

The workload (docs in bench/baselines/README.md):

- one ledger (356, INR), one fee account, one issuance account that funds the wallets;
- `payer_count` wallet accounts that may not go below zero, funded by an opening transfer:
  most with 500.00-50,000.00 times `funding_scale`, a few (LOW_BALANCE_PERCENT) nearly empty,
  unscaled, so that some payments are refused for insufficient funds, as happens in real traffic;
- `merchant_count` merchant accounts, each with a fee of 0-250 basis points, chosen per payment
  Zipf-skewed (s = 1.1): merchant rank 1 (the lowest id) is the hottest;
- each payment: a fresh 16-byte id, a uniformly chosen payer, a Zipf-chosen merchant and an
  amount of 1.00-2,000.00; RETRY_PERCENT of payments instead repeat one of the last
  RETRY_WINDOW_COUNT payments exactly (a wallet retrying after a lost response), which the
  ledger must answer with EXISTS (or ID_ALREADY_FAILED) and not post again.

Amounts are integer minor units; the only floats are the Zipf selection weights.
"""
from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
import random
from collections.abc import Iterator

LEDGER = 356                      # ISO 4217 numeric: INR
ACCOUNT_CODE_WALLET = 1           # account kinds, as in docs/INTERNALS.md
ACCOUNT_CODE_MERCHANT = 2
ACCOUNT_CODE_FEE = 3
ACCOUNT_CODE_ISSUANCE = 4
TRANSFER_CODE_PAYMENT = 1         # transfer kinds: payer -> merchant leg, merchant -> fee leg,
TRANSFER_CODE_FEE = 2             # and the opening transfer that funds a wallet
TRANSFER_CODE_OPENING = 3

FEE_ACCOUNT_ID = 1
ISSUANCE_ACCOUNT_ID = 2
MERCHANT_ACCOUNT_ID_BASE = 1_000_000     # merchant of rank r (1-based) is BASE + r
PAYER_ACCOUNT_ID_BASE = 100_000_000      # payer index i (0-based) is BASE + 1 + i

PAYER_COUNT_DEFAULT = 10_000
MERCHANT_COUNT_DEFAULT = 1_000
SEED_DEFAULT = 1
ZIPF_EXPONENT = 1.1
FEE_BPS_MAX = 250
OPENING_MINOR_MIN = 50_000
OPENING_MINOR_MAX = 5_000_000
LOW_BALANCE_PERCENT = 5
LOW_BALANCE_MINOR_MAX = 20_000
PAYMENT_AMOUNT_MINOR_MIN = 100
PAYMENT_AMOUNT_MINOR_MAX = 200_000
RETRY_PERCENT = 1
RETRY_WINDOW_COUNT = 1_000
# A closed-loop run drains the unscaled balances within seconds, after which most answers are
# refusals; a run funds the normal payers FUNDING_SCALE times more to keep measuring postings.
FUNDING_SCALE_DEFAULT = 1
# The largest total of opening balances: PostgreSQL's bigint, tighter than the switch's u64.  The
# issuance account is debited that total, and every other balance stays at or below it, since
# payments only move money that was issued.
ISSUED_MINOR_MAX = 2**63 - 1


@dataclasses.dataclass(frozen=True, slots=True)
class Payer:
    account_id: int
    opening_minor: int
    opening_transfer_id: bytes   # 16 bytes: the funding transfer's id


@dataclasses.dataclass(frozen=True, slots=True)
class Merchant:
    account_id: int
    fee_bps: int


@dataclasses.dataclass(frozen=True, slots=True)
class Payment:
    transfer_id: bytes           # 16 bytes, the client-chosen idempotency key
    payer_account_id: int
    merchant_account_id: int
    amount_minor: int


def fee_minor(amount_minor: int, fee_bps: int) -> int:
    """The scheme's fee: amount * bps / 10,000, rounded down, in minor units."""
    return amount_minor * fee_bps // 10_000


@dataclasses.dataclass(frozen=True)
class Workload:
    seed: int = SEED_DEFAULT
    payer_count: int = PAYER_COUNT_DEFAULT
    merchant_count: int = MERCHANT_COUNT_DEFAULT
    funding_scale: int = FUNDING_SCALE_DEFAULT

    def __post_init__(self) -> None:
        if self.payer_count < 1 or self.merchant_count < 1:
            raise ValueError("a workload needs at least one payer and one merchant")
        if self.merchant_count >= PAYER_ACCOUNT_ID_BASE - MERCHANT_ACCOUNT_ID_BASE:
            raise ValueError("merchant ids would run into payer ids")
        if self.funding_scale < 1:
            raise ValueError(f"funding scale {self.funding_scale}: must be at least 1")
        scale_max = self.funding_scale_max()
        if self.funding_scale > scale_max:
            raise ValueError(f"funding scale {self.funding_scale}: the opening balances of {self.payer_count} payers "
                             f"(seed {self.seed}) would total more than {ISSUED_MINOR_MAX} minor units "
                             f"(PostgreSQL bigint); at most {scale_max}")

    def funding_scale_max(self) -> int:
        """The largest funding scale whose total of opening balances fits ISSUED_MINOR_MAX."""
        rng = random.Random(f"{self.seed}/payers")
        unscaled = [self._payer(rng, index).opening_minor for index in range(self.payer_count)]
        # A normal opening is at least OPENING_MINOR_MIN, a low one at most LOW_BALANCE_MINOR_MAX, below it.
        normal_minor = sum(minor for minor in unscaled if minor >= OPENING_MINOR_MIN)
        low_minor = sum(minor for minor in unscaled if minor < OPENING_MINOR_MIN)
        if normal_minor == 0:   # nobody to scale: any scale issues the same total
            return ISSUED_MINOR_MAX
        return (ISSUED_MINOR_MAX - low_minor) // normal_minor

    def describe(self) -> dict:
        """The workload's parameters, for a benchmark report."""
        return {
            "seed": self.seed, "payers": self.payer_count, "merchants": self.merchant_count,
            "zipf_exponent": ZIPF_EXPONENT, "ledger": LEDGER, "fee_bps_max": FEE_BPS_MAX,
            "amount_minor_range": [PAYMENT_AMOUNT_MINOR_MIN, PAYMENT_AMOUNT_MINOR_MAX],
            "retry_percent": RETRY_PERCENT, "low_balance_percent": LOW_BALANCE_PERCENT,
            "funding_scale": self.funding_scale,
        }

    def payers(self) -> list[Payer]:
        rng = random.Random(f"{self.seed}/payers")
        return [self._payer(rng, index, self.funding_scale) for index in range(self.payer_count)]

    @staticmethod
    def _payer(rng: random.Random, index: int, funding_scale: int = 1) -> Payer:
        # The same draws whatever the scale: only the normally funded balance is multiplied.
        if rng.randrange(100) < LOW_BALANCE_PERCENT:
            opening_minor = rng.randint(0, LOW_BALANCE_MINOR_MAX)
        else:
            opening_minor = rng.randint(OPENING_MINOR_MIN, OPENING_MINOR_MAX) * funding_scale
        return Payer(PAYER_ACCOUNT_ID_BASE + 1 + index, opening_minor, rng.randbytes(16))

    def merchants(self) -> list[Merchant]:
        rng = random.Random(f"{self.seed}/merchants")
        return [Merchant(MERCHANT_ACCOUNT_ID_BASE + rank, rng.randint(0, FEE_BPS_MAX))
                for rank in range(1, self.merchant_count + 1)]

    def payments(self) -> Iterator[Payment]:
        """An endless, repeatable stream of payments (retries included)."""
        rng = random.Random(f"{self.seed}/payments")
        merchant_cumulative_weights = list(itertools.accumulate(
            1.0 / rank ** ZIPF_EXPONENT for rank in range(1, self.merchant_count + 1)))
        weight_total = merchant_cumulative_weights[-1]
        recent: collections.deque[Payment] = collections.deque(maxlen=RETRY_WINDOW_COUNT)
        while True:
            if recent and rng.randrange(100) < RETRY_PERCENT:
                yield recent[rng.randrange(len(recent))]
                continue
            # bisect on the cumulative weights: rank r with probability (1/r^s) / total
            rank_index = bisect.bisect_right(merchant_cumulative_weights, rng.random() * weight_total)
            payment = Payment(
                transfer_id=rng.randbytes(16),
                payer_account_id=PAYER_ACCOUNT_ID_BASE + 1 + rng.randrange(self.payer_count),
                merchant_account_id=MERCHANT_ACCOUNT_ID_BASE + 1 + min(rank_index, self.merchant_count - 1),
                amount_minor=rng.randint(PAYMENT_AMOUNT_MINOR_MIN, PAYMENT_AMOUNT_MINOR_MAX),
            )
            recent.append(payment)
            yield payment
