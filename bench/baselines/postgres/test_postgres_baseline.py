"""The PostgreSQL baseline answers like the switch's ledger, or its figures compare nothing.

Run with `.venv/bin/python -m pytest bench/baselines/postgres -q` (not part of `make test`: it
starts a PostgreSQL server). The tests that need a server share one throwaway cluster and get a
fresh copy of a small ledger each; they are skipped when no PostgreSQL server is installed
(the benchmark itself installs one, the tests do not).
"""
from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import asyncpg
import pytest

from bench.baselines.postgres import cluster as pg_cluster
from bench.baselines.postgres import run as pg_run
from bench.baselines.postgres import schema
from bench.baselines.postgres import workload as wl
from core_ext import limits
from core_ext.codes import Code

BALANCE_MINOR_MAX = 2**63 - 1   # PostgreSQL's bigint
REPOSITORY_ROOT = Path(__file__).resolve().parents[3]
TEMPLATE_DATABASE = "ledger_template"
SMALL = wl.Workload(seed=7, payer_count=3, merchant_count=3)
PAYERS = SMALL.payers()
MERCHANTS = SMALL.merchants()
FEE = wl.FEE_ACCOUNT_ID

needs_server = pytest.mark.skipif(pg_cluster._bin_directory() is None, reason="no PostgreSQL server installed")


# ---- the workload (no server) ----------------------------------------------------------------

def test_the_same_seed_gives_the_same_accounts_and_payments():
    first, second = wl.Workload(seed=3), wl.Workload(seed=3)
    assert first.payers() == second.payers() and first.merchants() == second.merchants()
    assert list(itertools.islice(first.payments(), 2000)) == list(itertools.islice(second.payments(), 2000))


def test_another_seed_gives_other_payments():
    first = list(itertools.islice(wl.Workload(seed=3).payments(), 100))
    other = list(itertools.islice(wl.Workload(seed=4).payments(), 100))
    assert first != other


def test_merchants_are_chosen_zipf_skewed_with_rank_one_hottest():
    payments = list(itertools.islice(wl.Workload(seed=1, merchant_count=1000).payments(), 50_000))
    counts = [sum(1 for p in payments if p.merchant_account_id == wl.MERCHANT_ACCOUNT_ID_BASE + rank)
              for rank in (1, 2, 10)]
    # Zipf s=1.1 over 1,000 ranks: rank 1 takes ~18%, rank 2 2^-1.1 of that, rank 10 5^-1.1 of rank 2.
    assert counts[0] > 1.8 * counts[1] and counts[1] > 4 * counts[2]
    assert 0.15 < counts[0] / len(payments) < 0.21


def test_some_payments_are_exact_retries_of_recent_ones():
    payments = list(itertools.islice(wl.Workload(seed=1).payments(), 20_000))
    retry_count = len(payments) - len({p.transfer_id for p in payments})
    assert 0.005 * len(payments) < retry_count < 0.015 * len(payments)
    assert all(len(p.transfer_id) == 16 and p.amount_minor > 0 for p in payments)


def test_a_funding_scale_multiplies_normal_openings_and_leaves_the_nearly_empty_ones_and_the_draws():
    plain, scaled = wl.Workload(seed=3, payer_count=400), wl.Workload(seed=3, payer_count=400, funding_scale=1000)
    low_count = 0
    for before, after in zip(plain.payers(), scaled.payers(), strict=True):
        assert (after.account_id, after.opening_transfer_id) == (before.account_id, before.opening_transfer_id)
        if before.opening_minor <= wl.LOW_BALANCE_MINOR_MAX:
            low_count += 1
            assert after.opening_minor == before.opening_minor
        else:
            assert after.opening_minor == before.opening_minor * 1000
    assert low_count > 0        # insufficient funds still happen
    assert list(itertools.islice(plain.payments(), 500)) == list(itertools.islice(scaled.payments(), 500))
    assert scaled.describe()["funding_scale"] == 1000 and plain.describe()["funding_scale"] == 1


def test_a_funding_scale_up_to_bigint_is_taken_and_one_more_is_refused():
    scale_max = wl.Workload(seed=3, payer_count=400).funding_scale_max()
    at_limit = wl.Workload(seed=3, payer_count=400, funding_scale=scale_max)
    # The issuance account is debited the total: it must fit bigint, and one more scale would not.
    issued_minor = sum(payer.opening_minor for payer in at_limit.payers())
    assert issued_minor <= BALANCE_MINOR_MAX < issued_minor + sum(
        payer.opening_minor // scale_max for payer in at_limit.payers() if payer.opening_minor >= wl.OPENING_MINOR_MIN)
    with pytest.raises(ValueError, match=f"funding scale {scale_max + 1}: .* at most {scale_max}"):
        wl.Workload(seed=3, payer_count=400, funding_scale=scale_max + 1)
    with pytest.raises(ValueError, match="at least 1"):
        wl.Workload(seed=3, payer_count=400, funding_scale=0)


def test_the_run_command_refuses_an_overflowing_funding_scale_before_starting(capsys):
    scale_max = wl.Workload(seed=1, payer_count=200).funding_scale_max()
    arguments = pg_run.parse_arguments(["--json", "x.json", "--payers", "200", "--funding-scale", str(scale_max)])
    assert arguments.funding_scale == scale_max
    with pytest.raises(SystemExit) as exit_info:
        pg_run.parse_arguments(["--json", "x.json", "--payers", "200", "--funding-scale", str(scale_max + 1)])
    assert exit_info.value.code == 2 and "PostgreSQL bigint" in capsys.readouterr().err


def test_fee_is_rounded_down_in_minor_units():
    assert wl.fee_minor(10_000, 250) == 250
    assert wl.fee_minor(399, 250) == 9      # 9.975 rounds down
    assert wl.fee_minor(39, 250) == 0


# ---- the stored functions (one server for the module) ------------------------------------------

@pytest.fixture(scope="module")
def server():
    if pg_cluster._bin_directory() is None:
        pytest.skip("no PostgreSQL server installed")
    with pg_cluster.throwaway_cluster(connection_count_max=20) as cluster:
        asyncio.run(_make_template(cluster))
        yield cluster


async def _make_template(cluster: pg_cluster.Cluster) -> None:
    admin = await asyncpg.connect(cluster.dsn)
    await admin.execute(f"CREATE DATABASE {TEMPLATE_DATABASE}")
    await admin.close()
    template = await asyncpg.connect(cluster.dsn.rsplit("/", 1)[0] + f"/{TEMPLATE_DATABASE}")
    await schema.install(template, SMALL)
    await template.close()


_database_numbers = itertools.count()


def in_fresh_ledger(server, test):
    """Run `test(connection)` against a fresh copy of the small ledger."""
    async def run():
        name = f"ledger_{next(_database_numbers)}"
        admin = await asyncpg.connect(server.dsn)
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DATABASE}")
        await admin.close()
        connection = await asyncpg.connect(server.dsn.rsplit("/", 1)[0] + f"/{name}")
        try:
            return await test(connection)
        finally:
            await connection.close()
            # Dropped, its dirty pages need no writing at the server's shutdown checkpoint.
            admin = await asyncpg.connect(server.dsn)
            await admin.execute(f"DROP DATABASE {name}")
            await admin.close()
    return asyncio.run(run())


def new_id() -> uuid.UUID:
    return uuid.uuid4()


async def pay(connection, transfer_id, payer, merchant, amount_minor, fee_account=FEE) -> int:
    return await connection.fetchval("SELECT pay($1, $2, $3, $4, $5)",
                                     transfer_id, payer, merchant, fee_account, amount_minor)


async def balances(connection, account_id) -> tuple[int, int]:
    row = await connection.fetchrow(
        "SELECT debits_posted_minor, credits_posted_minor FROM account WHERE id = $1", account_id)
    return row["debits_posted_minor"], row["credits_posted_minor"]


async def leg_count(connection) -> int:
    return await connection.fetchval("SELECT count(*) FROM transfer")


def rich_payer() -> wl.Payer:
    return max(PAYERS, key=lambda payer: payer.opening_minor)


def merchant_with_fee() -> wl.Merchant:
    return next(merchant for merchant in MERCHANTS if merchant.fee_bps > 0)


@needs_server
def test_a_payment_moves_the_amount_to_the_merchant_and_the_fee_to_the_fee_account(server):
    payer, merchant = rich_payer(), merchant_with_fee()
    amount_minor = 12_345
    fee_minor = wl.fee_minor(amount_minor, merchant.fee_bps)

    async def test(connection):
        assert await pay(connection, new_id(), payer.account_id, merchant.account_id, amount_minor) == Code.OK
        assert await balances(connection, payer.account_id) == (amount_minor, payer.opening_minor)
        assert await balances(connection, merchant.account_id) == (fee_minor, amount_minor)
        assert await balances(connection, FEE) == (0, fee_minor)
        await schema.check_invariants(connection, await _ok_ids(connection))
    in_fresh_ledger(server, test)


async def _ok_ids(connection) -> set[bytes]:
    return {row["id"].bytes for row in await connection.fetch("SELECT id FROM payment WHERE result_code = 0")}


@needs_server
def test_a_merchant_without_fee_gets_one_leg_and_the_whole_amount(server):
    payer = rich_payer()

    async def test(connection):
        await connection.execute("UPDATE merchant SET fee_bps = 0 WHERE account_id = $1", MERCHANTS[0].account_id)
        legs_before = await leg_count(connection)
        assert await pay(connection, new_id(), payer.account_id, MERCHANTS[0].account_id, 500) == Code.OK
        assert await leg_count(connection) == legs_before + 1
        assert await balances(connection, MERCHANTS[0].account_id) == (0, 500)
    in_fresh_ledger(server, test)


@needs_server
def test_a_repeated_id_answers_exists_and_posts_nothing_again(server):
    payer, merchant = rich_payer(), merchant_with_fee()
    transfer_id = new_id()

    async def test(connection):
        assert await pay(connection, transfer_id, payer.account_id, merchant.account_id, 1_000) == Code.OK
        legs_before = await leg_count(connection)
        payer_before = await balances(connection, payer.account_id)
        assert await pay(connection, transfer_id, payer.account_id, merchant.account_id, 1_000) == Code.EXISTS
        assert await leg_count(connection) == legs_before
        assert await balances(connection, payer.account_id) == payer_before
    in_fresh_ledger(server, test)


@needs_server
def test_a_repeated_id_with_other_fields_names_the_field_that_differs(server):
    payer, merchant = rich_payer(), merchant_with_fee()
    other_payer = next(p for p in PAYERS if p != payer)
    other_merchant = next(m for m in MERCHANTS if m != merchant)
    transfer_id = new_id()

    async def test(connection):
        assert await pay(connection, transfer_id, payer.account_id, merchant.account_id, 1_000) == Code.OK
        assert (await pay(connection, transfer_id, other_payer.account_id, merchant.account_id, 1_000)
                == Code.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID)
        assert (await pay(connection, transfer_id, payer.account_id, other_merchant.account_id, 1_000)
                == Code.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID)
        assert (await pay(connection, transfer_id, payer.account_id, merchant.account_id, 1_001)
                == Code.EXISTS_WITH_DIFFERENT_AMOUNT)
    in_fresh_ledger(server, test)


@needs_server
def test_a_payer_may_spend_its_whole_balance_but_not_one_minor_unit_more(server):
    payer, merchant = rich_payer(), merchant_with_fee()

    async def test(connection):
        legs_before = await leg_count(connection)
        refused_id = new_id()
        assert (await pay(connection, refused_id, payer.account_id, merchant.account_id, payer.opening_minor + 1)
                == Code.EXCEEDS_CREDITS)
        assert await leg_count(connection) == legs_before
        assert await balances(connection, payer.account_id) == (0, payer.opening_minor)
        # The refusal is recorded: the same id can never succeed later.
        assert (await pay(connection, refused_id, payer.account_id, merchant.account_id, payer.opening_minor + 1)
                == Code.ID_ALREADY_FAILED)
        assert await pay(connection, new_id(), payer.account_id, merchant.account_id, payer.opening_minor) == Code.OK
        assert await balances(connection, payer.account_id) == (payer.opening_minor, payer.opening_minor)
    in_fresh_ledger(server, test)


@needs_server
def test_unknown_accounts_are_named_and_nothing_is_posted(server):
    payer, merchant = rich_payer(), merchant_with_fee()

    async def test(connection):
        legs_before = await leg_count(connection)
        assert await pay(connection, new_id(), 999, merchant.account_id, 100) == Code.DEBIT_ACCOUNT_NOT_FOUND
        assert await pay(connection, new_id(), payer.account_id, 999, 100) == Code.CREDIT_ACCOUNT_NOT_FOUND
        # An account that exists but is no merchant cannot be paid by QR either.
        other_payer = next(p for p in PAYERS if p != payer)
        assert (await pay(connection, new_id(), payer.account_id, other_payer.account_id, 100)
                == Code.CREDIT_ACCOUNT_NOT_FOUND)
        assert (await pay(connection, new_id(), payer.account_id, merchant.account_id, 100, fee_account=998)
                == Code.CREDIT_ACCOUNT_NOT_FOUND)
        assert await leg_count(connection) == legs_before
    in_fresh_ledger(server, test)


@needs_server
@pytest.mark.parametrize("transfer_id, payer_offset, merchant_offset, amount_minor, expected", [
    (uuid.UUID(int=0), 0, 0, 100, Code.ID_MUST_NOT_BE_ZERO),
    (None, 0, 0, 100, Code.ID_MUST_NOT_BE_ZERO),
    (uuid.UUID(int=2**128 - 1), 0, 0, 100, Code.ID_MUST_NOT_BE_INT_MAX),
    ("new", None, 0, 100, Code.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO),
    ("new", 0, None, 100, Code.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO),
    ("new", 0, 0, 0, Code.AMOUNT_MUST_NOT_BE_ZERO),
    ("new", 0, 0, None, Code.AMOUNT_MUST_NOT_BE_ZERO),
    ("new", 0, 0, -1, Code.AMOUNT_MUST_NOT_EXCEED_BALANCE_MAX),
    ("new", 0, "payer", 100, Code.ACCOUNTS_MUST_BE_DIFFERENT),
])
def test_a_malformed_request_gets_its_code_and_is_not_recorded(
        server, transfer_id, payer_offset, merchant_offset, amount_minor, expected):
    payer, merchant = rich_payer(), merchant_with_fee()
    payer_account_id = None if payer_offset is None else payer.account_id
    merchant_account_id = {None: None, 0: merchant.account_id, "payer": payer.account_id}[merchant_offset]
    transfer_id = new_id() if transfer_id == "new" else transfer_id

    async def test(connection):
        assert await pay(connection, transfer_id, payer_account_id, merchant_account_id, amount_minor) == expected
        assert await connection.fetchval("SELECT count(*) FROM payment") == 0
    in_fresh_ledger(server, test)


@needs_server
def test_a_balance_at_the_bigint_limit_overflows_into_a_code_not_an_error(server):
    payer, merchant = rich_payer(), merchant_with_fee()

    async def test(connection):
        # The merchant can take exactly up to 2^63-1 in credits, and not one unit past it.
        # (Opening the merchant's credits by hand breaks double entry; only the code matters.)
        await connection.execute("UPDATE account SET credits_posted_minor = $1 WHERE id = $2",
                                 BALANCE_MINOR_MAX - 100, merchant.account_id)
        assert await pay(connection, new_id(), payer.account_id, merchant.account_id, 101) == Code.OVERFLOWS_CREDITS_POSTED
        assert await pay(connection, new_id(), payer.account_id, merchant.account_id, 100) == Code.OK
    in_fresh_ledger(server, test)


@needs_server
def test_the_sql_fee_equals_the_workloads_fee_even_for_the_largest_amount(server):
    cases = [(1, 250), (399, 250), (10_000, 1), (123_456_789, 37), (BALANCE_MINOR_MAX, 10_000),
             (BALANCE_MINOR_MAX, 9_999), (BALANCE_MINOR_MAX - 1, 250)]

    async def test(connection):
        for amount_minor, fee_bps in cases:
            sql_fee_minor = await connection.fetchval("SELECT fee_minor($1, $2::smallint)", amount_minor, fee_bps)
            assert sql_fee_minor == wl.fee_minor(amount_minor, fee_bps), (amount_minor, fee_bps)
    in_fresh_ledger(server, test)


async def pay_batch(connection, payments: list[tuple[uuid.UUID, int, int, int]]) -> list[int]:
    return await connection.fetchval(
        "SELECT pay_batch($1, $2, $3, $4, $5)",
        [p[0] for p in payments], [p[1] for p in payments], [p[2] for p in payments], FEE,
        [p[3] for p in payments])


@needs_server
def test_a_batch_gives_each_payment_its_own_code_and_catches_repeats_inside_it(server):
    payer, merchant = rich_payer(), merchant_with_fee()
    poor = min(PAYERS, key=lambda p: p.opening_minor)
    repeated_id = new_id()

    async def test(connection):
        codes = await pay_batch(connection, [
            (repeated_id, payer.account_id, merchant.account_id, 700),
            (repeated_id, payer.account_id, merchant.account_id, 700),
            (new_id(), poor.account_id, merchant.account_id, poor.opening_minor + 1),
            (new_id(), payer.account_id, merchant.account_id, 0),
        ])
        assert codes == [Code.OK, Code.EXISTS, Code.EXCEEDS_CREDITS, Code.AMOUNT_MUST_NOT_BE_ZERO]
        assert await balances(connection, payer.account_id) == (700, payer.opening_minor)
    in_fresh_ledger(server, test)


@needs_server
def test_a_batch_takes_batch_events_max_payments_but_not_one_more(server):
    payer, merchant = rich_payer(), merchant_with_fee()
    # Faulty requests fill the batch: they are answered one by one without touching a row, where
    # 8,190 updates of one row in one transaction would make PostgreSQL crawl its version chain.
    filler = [(new_id(), payer.account_id, merchant.account_id, 0) for _ in range(limits.BATCH_EVENTS_MAX - 1)]

    async def test(connection):
        full = filler + [(new_id(), payer.account_id, merchant.account_id, 100)]
        assert await pay_batch(connection, full) == [Code.AMOUNT_MUST_NOT_BE_ZERO] * len(filler) + [Code.OK]
        too_large = full + [(new_id(), payer.account_id, merchant.account_id, 100)]
        assert await pay_batch(connection, too_large) == [Code.BATCH_TOO_LARGE] * (limits.BATCH_EVENTS_MAX + 1)
        assert await balances(connection, payer.account_id) == (100, payer.opening_minor)
    in_fresh_ledger(server, test)


@needs_server
def test_the_invariant_check_fails_loudly_on_a_broken_ledger(server):
    payer, merchant = rich_payer(), merchant_with_fee()

    async def test(connection):
        assert await pay(connection, new_id(), payer.account_id, merchant.account_id, 1_000) == Code.OK
        acknowledged = await _ok_ids(connection)
        await schema.check_invariants(connection, acknowledged)
        with pytest.raises(schema.LedgerInvariantBroken, match="acknowledged but not stored"):
            await schema.check_invariants(connection, acknowledged | {b"\x01" * 16})
        await connection.execute("UPDATE account SET credits_posted_minor = credits_posted_minor + 1 WHERE id = $1",
                                 merchant.account_id)
        with pytest.raises(schema.LedgerInvariantBroken, match="sum of debits equals the sum of credits"):
            await schema.check_invariants(connection, acknowledged)
    in_fresh_ledger(server, test)


# ---- the whole benchmark, briefly --------------------------------------------------------------

@needs_server
@pytest.mark.parametrize("payments_per_call", [1, 8])
def test_a_short_run_writes_the_shared_report_shape(tmp_path, payments_per_call):
    out = tmp_path / "report.json"
    assert pg_run.main(["--json", str(out), "--duration", "0.5", "--warmup", "0.2", "--connections", "4",
                        "--payers", "200", "--merchants", "20",
                        "--payments-per-call", str(payments_per_call)]) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"target", "durability", "throughput_per_s", "count", "by_code", "latency_us",
                           "duration_s", "connections", "workload", "machine"}
    assert report["target"] == "postgres" and report["connections"] == 4
    assert report["count"] == sum(report["by_code"].values()) > 0
    assert set(report["latency_us"]) == {"p50", "p90", "p99", "p999", "max"}
    assert report["latency_us"]["p50"] <= report["latency_us"]["p99"] <= report["latency_us"]["max"]
    assert report["workload"]["payments_per_call"] == payments_per_call
    assert report["workload"]["funding_scale"] == 1


@needs_server
def test_a_ledger_funded_at_the_largest_scale_loads_posts_and_keeps_its_invariants(tmp_path):
    # The issuance account's debits reach bigint's limit minus less than one scale step: loading
    # must not overflow, and a run must post payments with debits still equal to credits.
    scale_max = wl.Workload(seed=1, payer_count=200).funding_scale_max()
    out = tmp_path / "report.json"
    assert pg_run.main(["--json", str(out), "--duration", "0.5", "--warmup", "0.1", "--connections", "2",
                        "--payers", "200", "--merchants", "20", "--funding-scale", str(scale_max)]) == 0
    report = json.loads(out.read_text())
    assert report["workload"]["funding_scale"] == scale_max and report["by_code"]["OK"] > 0


@pytest.fixture
def data_parent():
    """A directory the postgres user can reach (pytest's tmp_path is private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="pg-baseline-test-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@needs_server
def test_a_terminated_run_stops_and_deletes_its_cluster(data_parent):
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.baselines.postgres.run", "--json", str(data_parent / "report.json"),
         "--duration", "30", "--connections", "2", "--payers", "200", "--merchants", "20",
         "--data-parent", str(data_parent)],
        cwd=REPOSITORY_ROOT, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:      # wait until the load runs
            if "loaded" in line:
                break
        assert any(data_parent.glob("switch-pg-baseline-*"))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) != 0
    finally:
        process.kill()
    assert not any(data_parent.glob("switch-pg-baseline-*"))
    assert not (data_parent / "report.json").exists()
