"""SIGKILL the real switch under load, restart it, retry with the same ids: nothing acknowledged is lost.

A short form of bench/soak.py (`make soak` runs the long one): the server runs as
a child process (`switch serve`), the client pipelines payments from several
workers, the server is killed at seeded random moments, and after each restart
every unacknowledged payment is re-sent with its id.  bench/soak.py checks,
after every round and at the end: `switch ledger check` passes, every payment
sent is journaled exactly once (fee leg too), balances equal the payments, each
retry answered EXISTS or OK, re-sent acknowledged payments answer EXISTS, and at
the end the rules' per-payer day counters equal the payers' payments in the ledger.
"""
from __future__ import annotations

import pytest

from bench import soak

KILLS_SHORT = 3


@pytest.mark.parametrize("durability", ["os", "fsync"])
def test_kill_9_under_load_loses_no_acknowledged_payment(tmp_path, durability):
    report = soak.run_soak(tmp_path, kills=KILLS_SHORT, seed=7, durability=durability)
    assert report.failures == []
    assert report.kills == report.rounds_with_nothing_lost == KILLS_SHORT
    assert report.acknowledged_before_kill > 0
    assert report.retried == report.retried_answered_exists + report.retried_answered_ok
    assert report.rechecked_acknowledged > 0
    assert report.rule_probes == soak.PAYER_COUNT          # the rules' counters matched the ledger per payer


def test_the_check_reports_an_acknowledged_payment_missing_from_the_ledger(tmp_path):
    """The soak's verdict can fail: a payment claimed acknowledged but never posted is found."""
    import random

    report = soak.run_soak(tmp_path, kills=1, seed=8, durability="os")
    assert report.ok
    payments = soak.Payments(random.Random(0))
    payments.sent[10**9] = (soak.PAYER_FIRST, 500)
    payments.acknowledged.add(10**9)
    found = soak.SoakReport()
    soak.check_data_dir(tmp_path / "data", payments, found)
    assert any("acknowledged payments lost" in failure for failure in found.failures)
    assert any("not journaled exactly once" in failure for failure in found.failures)
