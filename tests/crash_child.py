"""Child of tests/test_crash.py: posts batches forever and acknowledges each committed one.

Usage: crash_child.py DATA_DIR SEED DURABILITY FIRST_ID

Prints "ready" once the journal is replayed, then one line per committed batch:
"ack <sequence> <id>,<id>,..." listing the transfers applied in it -- printed only
after Storage.commit() returned, exactly as a server answers only after its commit.
"""
from __future__ import annotations

import random
import sys
import time

from core_ext import core
from core_ext.types import Account, AccountFlags, Transfer, TransferFlags
from switch.storage import Storage

ACCOUNT_COUNT = 50


def _next_transfer(rng: random.Random, transfer_id: int, pending_ids: list[int]) -> Transfer:
    """Mostly payments, some linked; some two-phase: reserve (expiring in a second), then post or void."""
    choice = rng.random()
    if choice < 0.15 and pending_ids:
        flags = rng.choice([TransferFlags.POST_PENDING_TRANSFER, TransferFlags.VOID_PENDING_TRANSFER])
        return Transfer(transfer_id, 0, 0, 0, 0, 0, flags, pending_id=pending_ids.pop(rng.randrange(len(pending_ids))))
    debit, credit = rng.sample(range(1, ACCOUNT_COUNT + 1), 2)
    if choice < 0.3:
        pending_ids.append(transfer_id)
        return Transfer(transfer_id, debit, credit, rng.randint(1, 1000), 356, 1, TransferFlags.PENDING, timeout=1)
    flags = TransferFlags.LINKED if rng.random() < 0.2 else 0
    return Transfer(transfer_id, debit, credit, rng.randint(1, 1000), 356, 1, flags)


def main() -> None:
    data_dir, seed, durability, first_id = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    rng = random.Random(seed)
    ledger = core.Ledger(accounts_max=1000)
    storage = Storage.open(data_dir, [ledger], durability=durability, checkpoint_interval_batches=7)
    if ledger.account_count == 0:
        # Odd accounts may not overdraw, so some transfers fail their balance check.
        accounts = [Account(i, 356, 1, AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS if i % 2 else 0)
                    for i in range(1, ACCOUNT_COUNT + 1)]
        assert ledger.create_accounts(accounts, time.time_ns()) == [0] * ACCOUNT_COUNT
        storage.commit()
    print("ready", flush=True)
    next_id = first_id
    pending_ids: list[int] = []
    while True:
        batch = []
        for _ in range(rng.choice([1, 10, 200])):
            batch.append(_next_transfer(rng, next_id, pending_ids))
            next_id += 1
        batch[-1].flags &= ~TransferFlags.LINKED
        now_ns = time.time_ns()
        ledger.expire_pending(now_ns)
        codes = ledger.create_transfers(batch, now_ns)
        sequence = storage.commit()
        applied = [str(t.id) for t, code in zip(batch, codes) if code == 0]
        print(f"ack {sequence} {','.join(applied)}", flush=True)


if __name__ == "__main__":
    main()
