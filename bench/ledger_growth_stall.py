"""The ledger's worst batches as its in-memory transfer table grows: 700 batches of 8,000 transfers
(5.6M in all) into the compiled core, in memory, each batch timed.  The slowest batches are the ones
that double the transfer index (a full rehash) or the transfer array (a realloc of 128 B a row):
what stalled the 60 s end-to-end run for 2.5 s (bench/RESULTS.md 5.3).

    .venv/bin/python bench/ledger_growth_stall.py
"""
import time
from core_ext import compiled as core
from core_ext.types import Account, Transfer
L = core.Ledger()
L.create_accounts([Account(id=1, ledger=1, code=1), Account(id=2, ledger=1, code=1)], 1)
tid = 1; worst = []
for b in range(700):
    ts = [Transfer(id=tid + i, debit_account_id=1, credit_account_id=2, amount=1, ledger=1, code=1) for i in range(8000)]
    tid += 8000
    t0 = time.perf_counter(); L.create_transfers(ts, 2); dt = time.perf_counter() - t0
    worst.append((dt, tid))
worst.sort(reverse=True)
print([(round(d*1000,1), t) for d, t in worst[:6]], 'median ms', round(sorted(w[0] for w in worst)[350]*1000, 2))
