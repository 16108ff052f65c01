"""Install the baseline ledger into a PostgreSQL database and check its invariants afterwards.

schema.sql is a template: its `{{NAME}}` placeholders are the switch's own result codes, limits
and workload constants, filled in here so that no number is written down twice.
"""
from __future__ import annotations

import re
import uuid
from pathlib import Path

import asyncpg

from bench.baselines.postgres import workload as wl
from core_ext import limits
from core_ext.codes import Code

SCHEMA_TEMPLATE_PATH = Path(__file__).with_name("schema.sql")
_PLACEHOLDER = re.compile(r"\{\{([A-Z0-9_]+)\}\}")
# How many offending rows a failed check names; enough to start debugging, short enough to read.
REPORTED_ROWS_MAX = 10


class LedgerInvariantBroken(AssertionError):
    """The ledger after a run breaks double entry, a balance limit, or an acknowledgement."""


def template_values() -> dict[str, int]:
    values = {f"CODE_{code.name}": int(code) for code in Code}
    values["TRANSFER_CODE_PAYMENT"] = wl.TRANSFER_CODE_PAYMENT
    values["TRANSFER_CODE_FEE"] = wl.TRANSFER_CODE_FEE
    values["BATCH_EVENTS_MAX"] = limits.BATCH_EVENTS_MAX
    return values


def render_schema() -> str:
    """schema.sql with every placeholder filled in; an unknown name is an error, not a blank."""
    values = template_values()

    def substitute(match: re.Match) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"schema.sql names {{{{{name}}}}}, which is no result code or known constant")
        return str(values[name])

    return _PLACEHOLDER.sub(substitute, SCHEMA_TEMPLATE_PATH.read_text())


async def install(connection: asyncpg.Connection, workload: wl.Workload) -> None:
    """Create the tables and functions, open the accounts, and leave a quiet, analyzed cluster."""
    await connection.execute(render_schema())
    await _load_accounts(connection, workload)
    await connection.execute("ANALYZE")
    # Flush the load now, so that no checkpoint triggered by it lands inside the measurement.
    await connection.execute("CHECKPOINT")


async def _load_accounts(connection: asyncpg.Connection, workload: wl.Workload) -> None:
    payers = workload.payers()
    merchants = workload.merchants()
    issued_minor = sum(payer.opening_minor for payer in payers)
    columns = ("id", "ledger", "code", "debits_must_not_exceed_credits",
               "debits_posted_minor", "credits_posted_minor")
    accounts = [
        (wl.FEE_ACCOUNT_ID, wl.LEDGER, wl.ACCOUNT_CODE_FEE, False, 0, 0),
        # The issuance account is debited every opening balance: money enters by double entry too.
        (wl.ISSUANCE_ACCOUNT_ID, wl.LEDGER, wl.ACCOUNT_CODE_ISSUANCE, False, issued_minor, 0),
    ]
    accounts += [(merchant.account_id, wl.LEDGER, wl.ACCOUNT_CODE_MERCHANT, False, 0, 0)
                 for merchant in merchants]
    accounts += [(payer.account_id, wl.LEDGER, wl.ACCOUNT_CODE_WALLET, True, 0, payer.opening_minor)
                 for payer in payers]
    openings = [
        (uuid.UUID(bytes=payer.opening_transfer_id), 0, wl.ISSUANCE_ACCOUNT_ID, payer.account_id,
         payer.opening_minor, wl.LEDGER, wl.TRANSFER_CODE_OPENING)
        for payer in payers if payer.opening_minor > 0
    ]
    async with connection.transaction():
        await connection.copy_records_to_table("account", records=accounts, columns=columns)
        await connection.copy_records_to_table(
            "merchant", records=[(m.account_id, m.fee_bps) for m in merchants],
            columns=("account_id", "fee_bps"))
        await connection.copy_records_to_table(
            "transfer", records=openings,
            columns=("payment_id", "leg_index", "debit_account_id", "credit_account_id",
                     "amount_minor", "ledger", "code"))


# Each query returns the rows that break one invariant; all must come back empty.
_INVARIANT_QUERIES = {
    "per ledger, the sum of debits equals the sum of credits": """
        SELECT ledger, sum(debits_posted_minor) AS debits_minor, sum(credits_posted_minor) AS credits_minor
        FROM account GROUP BY ledger
        HAVING sum(debits_posted_minor) <> sum(credits_posted_minor)""",
    "every balance equals the sum of the transfers that moved it": """
        WITH leg AS (
            SELECT debit_account_id AS account_id, amount_minor AS debit_minor, 0::bigint AS credit_minor
            FROM transfer
            UNION ALL
            SELECT credit_account_id, 0::bigint, amount_minor FROM transfer),
        journal AS (
            SELECT account_id, sum(debit_minor) AS debits_minor, sum(credit_minor) AS credits_minor
            FROM leg GROUP BY account_id)
        SELECT a.id, a.debits_posted_minor, a.credits_posted_minor, j.debits_minor, j.credits_minor
        FROM account a FULL JOIN journal j ON j.account_id = a.id
        WHERE a.id IS NULL
           OR a.debits_posted_minor <> COALESCE(j.debits_minor, 0)
           OR a.credits_posted_minor <> COALESCE(j.credits_minor, 0)""",
    "no wallet is below zero": """
        SELECT id, debits_posted_minor, credits_posted_minor FROM account
        WHERE debits_must_not_exceed_credits AND debits_posted_minor > credits_posted_minor""",
    "every accepted payment has its payer -> merchant leg, of its amount": f"""
        SELECT p.id FROM payment p
        LEFT JOIN transfer t ON t.payment_id = p.id AND t.leg_index = 0
        WHERE p.result_code = {int(Code.OK)}
          AND (t.payment_id IS NULL OR t.amount_minor <> p.amount_minor
               OR t.debit_account_id <> p.payer_account_id
               OR t.credit_account_id <> p.merchant_account_id)""",
    "no refused payment moved money": f"""
        SELECT p.id, p.result_code FROM payment p JOIN transfer t ON t.payment_id = p.id
        WHERE p.result_code <> {int(Code.OK)}""",
}


async def check_invariants(connection: asyncpg.Connection, acknowledged_ok_ids: set[bytes]) -> None:
    """Raise LedgerInvariantBroken, naming the rows, unless the ledger is sound and holds
    exactly the payments the clients were told were accepted."""
    failures = []
    for invariant, query in _INVARIANT_QUERIES.items():
        rows = await connection.fetch(f"{query} LIMIT {REPORTED_ROWS_MAX}")
        if rows:
            failures.append(f"{invariant}: broken by {[tuple(row) for row in rows]}")
    stored_ok_ids = {row["id"].bytes for row in await connection.fetch(
        "SELECT id FROM payment WHERE result_code = $1", int(Code.OK))}
    if stored_ok_ids != acknowledged_ok_ids:
        lost_count = len(acknowledged_ok_ids - stored_ok_ids)
        unacknowledged_count = len(stored_ok_ids - acknowledged_ok_ids)
        failures.append(f"acknowledged payments: {lost_count} acknowledged but not stored, "
                        f"{unacknowledged_count} stored but never acknowledged")
    if failures:
        raise LedgerInvariantBroken("the PostgreSQL ledger is inconsistent after the run:\n  "
                                    + "\n  ".join(failures))
