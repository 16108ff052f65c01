"""The shared payment model of the load benchmark: payers, merchants and a seeded payment stream.

This is the same model the PostgreSQL baseline runs (bench/baselines/postgres/workload.py,
documented in bench/baselines/README.md), drawn in the same order from the same seeded
`random.Random` streams, so both produce the identical base stream of payments for a seed: a
test compares them draw for draw.  It is re-implemented here rather than imported because the
load generator is part of the installed `switch` package, and bench/ is not.

- `payer_count` payers, each funded with an opening balance: most 500.00-50,000.00 times
  `funding_scale`, a few (LOW_BALANCE_PERCENT) nearly empty, unscaled, so that some payments fail
  for insufficient funds;
- `merchant_count` merchants chosen per payment Zipf-skewed (s = 1.1): rank 1 is the hottest;
- each payment: a fresh 16-byte id, a uniformly chosen payer, a Zipf-chosen merchant and an
  amount of 1.00-2,000.00 (minor units 100-200,000); RETRY_PERCENT of payments instead repeat
  one of the last RETRY_WINDOW_COUNT payments exactly (a wallet retrying after a lost answer).

Amounts are integer minor units; the only floats are the Zipf selection weights.
"""
from __future__ import annotations

import bisect
import collections
import itertools
import random
from collections.abc import Iterator
from typing import NamedTuple

PAYER_COUNT_DEFAULT = 10_000
MERCHANT_COUNT_DEFAULT = 1_000
SEED_DEFAULT = 1
ZIPF_EXPONENT = 1.1
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
# The largest total of opening balances: PostgreSQL's bigint (and TOML's integer), tighter than the
# switch's u64.  Every balance of a run stays at or below the total issued, since payments only
# move money that was issued.
ISSUED_MINOR_MAX = 2**63 - 1
# The baseline draws a fee rate per merchant (0-250 bps); the switch charges one rate per
# currency, so the generated config uses this mid value for every currency (see fixture.py).
FEE_BPS_MAX = 250


class BasePayment(NamedTuple):
    transfer_id: bytes      # 16 bytes, the client-chosen idempotency key
    payer_index: int        # 0 .. payer_count-1
    merchant_rank: int      # 1 .. merchant_count (1 = hottest)
    amount_minor: int


def opening_balances_minor(seed: int, payer_count: int, funding_scale: int = FUNDING_SCALE_DEFAULT) -> list[int]:
    """Every payer's opening balance, in the baseline's draw order (payers stream); the normally
    funded ones times `funding_scale` (refused past funding_scale_max)."""
    check_funding_scale(seed, payer_count, funding_scale)
    return [minor * funding_scale if normal else minor for normal, minor in _drawn_openings(seed, payer_count)]


def _drawn_openings(seed: int, payer_count: int) -> list[tuple[bool, int]]:
    """(normally funded?, unscaled opening) per payer: the draws do not depend on the scale."""
    rng = random.Random(f"{seed}/payers")
    openings = []
    for _ in range(payer_count):
        if rng.randrange(100) < LOW_BALANCE_PERCENT:
            openings.append((False, rng.randint(0, LOW_BALANCE_MINOR_MAX)))
        else:
            openings.append((True, rng.randint(OPENING_MINOR_MIN, OPENING_MINOR_MAX)))
        rng.randbytes(16)  # the baseline's opening transfer id: drawn to stay in step
    return openings


def funding_scale_max(seed: int, payer_count: int) -> int:
    """The largest funding scale whose total of opening balances fits ISSUED_MINOR_MAX."""
    openings = _drawn_openings(seed, payer_count)
    normal_minor = sum(minor for normal, minor in openings if normal)
    low_minor = sum(minor for normal, minor in openings if not normal)
    if normal_minor == 0:   # nobody to scale: any scale issues the same total
        return ISSUED_MINOR_MAX
    return (ISSUED_MINOR_MAX - low_minor) // normal_minor


def check_funding_scale(seed: int, payer_count: int, funding_scale: int) -> None:
    if funding_scale < 1:
        raise ValueError(f"funding scale {funding_scale}: must be at least 1")
    scale_max = funding_scale_max(seed, payer_count)
    if funding_scale > scale_max:
        raise ValueError(f"funding scale {funding_scale}: the opening balances of {payer_count} payers (seed {seed}) "
                         f"would total more than {ISSUED_MINOR_MAX} minor units (PostgreSQL bigint); "
                         f"at most {scale_max}")


def zipf_cumulative_weights(merchant_count: int) -> list[float]:
    """Cumulative 1/rank^s weights: rank r is chosen with probability (1/r^s) / total."""
    return list(itertools.accumulate(1.0 / rank ** ZIPF_EXPONENT for rank in range(1, merchant_count + 1)))


def base_payments(seed: int, payer_count: int, merchant_count: int) -> Iterator[BasePayment]:
    """The endless, repeatable base stream of payments (retries included)."""
    if payer_count < 1 or merchant_count < 1:
        raise ValueError("a workload needs at least one payer and one merchant")
    rng = random.Random(f"{seed}/payments")
    cumulative = zipf_cumulative_weights(merchant_count)
    weight_total = cumulative[-1]
    recent: collections.deque[BasePayment] = collections.deque(maxlen=RETRY_WINDOW_COUNT)
    while True:
        if recent and rng.randrange(100) < RETRY_PERCENT:
            yield recent[rng.randrange(len(recent))]
            continue
        rank_index = bisect.bisect_right(cumulative, rng.random() * weight_total)
        transfer_id = rng.randbytes(16)
        payer_index = rng.randrange(payer_count)
        payment = BasePayment(transfer_id, payer_index, 1 + min(rank_index, merchant_count - 1),
                              rng.randint(PAYMENT_AMOUNT_MINOR_MIN, PAYMENT_AMOUNT_MINOR_MAX))
        recent.append(payment)
        yield payment


def describe(seed: int, payer_count: int, merchant_count: int, funding_scale: int = FUNDING_SCALE_DEFAULT) -> dict:
    """The model's parameters for a report; the same keys the baseline reports."""
    return {
        "seed": seed, "payers": payer_count, "merchants": merchant_count, "zipf_exponent": ZIPF_EXPONENT,
        "amount_minor_range": [PAYMENT_AMOUNT_MINOR_MIN, PAYMENT_AMOUNT_MINOR_MAX],
        "retry_percent": RETRY_PERCENT, "low_balance_percent": LOW_BALANCE_PERCENT, "funding_scale": funding_scale,
    }
