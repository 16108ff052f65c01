"""The PostgreSQL baseline of the load benchmark: the switch's workload against a durable
PostgreSQL ledger that posts each payment with one stored-function call.

    python -m bench.baselines.postgres.run --json OUT.json \\
        [--duration S --warmup S --connections C --payers N --merchants M --seed K \\
         --payments-per-call K --funding-scale F]

It starts a throwaway cluster on loopback (cluster.py), loads the schema and accounts
(schema.py, schema.sql), runs a closed loop of C connections for the warm-up and the measured
duration, checks the ledger's invariants (failing loudly if any is broken), stops and deletes
the cluster, and writes the report in the shape the switch's own load generator writes.

asyncpg cannot pipeline requests on one connection, so each connection has exactly one call in
flight; concurrency comes from connections. `--payments-per-call K` posts K payments per call
in one transaction (pay_batch): one WAL flush for K payments, PostgreSQL's best case.
`--funding-scale F` multiplies the normally funded payers' opening balances (as the switch's
`switch bench e2e --funding-scale F` does), so a long run keeps posting payments.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator

import asyncpg
from hdrh.histogram import HdrHistogram

from bench.baselines.postgres import cluster as pg_cluster
from bench.baselines.postgres import schema
from bench.baselines.postgres import workload as wl
from core_ext import limits
from core_ext.codes import Code, name_of

DURATION_S_DEFAULT = 10.0
WARMUP_S_DEFAULT = 2.0
CONNECTION_COUNT_DEFAULT = 16
# One connection is one postgres backend process; past a few hundred the machine, not the
# ledger, is what gets measured.
CONNECTION_COUNT_MAX = 1_000
# The HDR histogram's range and precision: 1 us to one hour, 3 significant digits.
LATENCY_US_MAX = 3_600_000_000
LATENCY_SIGNIFICANT_DIGITS = 3
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}

PAY_ONE = "SELECT pay($1, $2, $3, $4, $5)"
PAY_BATCH = "SELECT pay_batch($1, $2, $3, $4, $5)"


@dataclasses.dataclass
class Recorder:
    """What the load produced: latencies and codes inside the measured window, and every id the
    ledger acknowledged as accepted (warm-up included) for the invariant check."""
    measure_start_ns: int
    histogram: HdrHistogram = dataclasses.field(
        default_factory=lambda: HdrHistogram(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS))
    by_code: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    count: int = 0
    last_finish_ns: int = 0
    acknowledged_ok_ids: set[bytes] = dataclasses.field(default_factory=set)

    def record(self, payments: list[wl.Payment], codes: list[int], start_ns: int, finish_ns: int) -> None:
        if len(codes) != len(payments):
            raise RuntimeError(f"the ledger answered {len(codes)} codes for {len(payments)} payments")
        for payment, code in zip(payments, codes):
            if code == Code.OK:
                self.acknowledged_ok_ids.add(payment.transfer_id)
        if start_ns < self.measure_start_ns:
            return  # warm-up
        # Every payment of a call waited for the whole call: that is its latency.
        latency_us = max(1, (finish_ns - start_ns) // 1_000)
        self.histogram.record_value(latency_us, len(payments))
        self.by_code.update(name_of(code) for code in codes)
        self.count += len(payments)
        self.last_finish_ns = max(self.last_finish_ns, finish_ns)


async def _post(statement: asyncpg.prepared_stmt.PreparedStatement,
                payments: list[wl.Payment]) -> list[int]:
    if len(payments) == 1:
        payment = payments[0]
        return [await statement.fetchval(uuid.UUID(bytes=payment.transfer_id), payment.payer_account_id,
                                         payment.merchant_account_id, wl.FEE_ACCOUNT_ID,
                                         payment.amount_minor)]
    return await statement.fetchval(
        [uuid.UUID(bytes=payment.transfer_id) for payment in payments],
        [payment.payer_account_id for payment in payments],
        [payment.merchant_account_id for payment in payments],
        wl.FEE_ACCOUNT_ID,
        [payment.amount_minor for payment in payments])


async def _connection_loop(dsn: str, payments: Iterator[wl.Payment], payments_per_call: int,
                           recorder: Recorder, end_ns: int) -> None:
    """One connection, one call in flight, until the end: a closed loop."""
    connection = await asyncpg.connect(dsn)
    try:
        statement = await connection.prepare(PAY_ONE if payments_per_call == 1 else PAY_BATCH)
        while time.perf_counter_ns() < end_ns:
            # One event loop thread shares the iterator, so every run sends the same stream.
            batch = [next(payments) for _ in range(payments_per_call)]
            start_ns = time.perf_counter_ns()
            codes = await _post(statement, batch)
            recorder.record(batch, codes, start_ns, time.perf_counter_ns())
    except BaseException:
        # Failed or cancelled mid-call: a graceful close would trip over the call in progress.
        connection.terminate()
        raise
    await connection.close()


async def _run_load(dsn: str, workload: wl.Workload, arguments: argparse.Namespace) -> Recorder:
    payments = workload.payments()
    start_ns = time.perf_counter_ns()
    measure_start_ns = start_ns + int(arguments.warmup * 1e9)
    recorder = Recorder(measure_start_ns)
    end_ns = measure_start_ns + int(arguments.duration * 1e9)
    loops = [asyncio.ensure_future(_connection_loop(dsn, payments, arguments.payments_per_call, recorder, end_ns))
             for _ in range(arguments.connections)]
    try:
        await asyncio.gather(*loops)
    except BaseException:
        # One connection failed: stop the others before the cluster goes away under them.
        # (asyncio.TaskGroup does this, but the project supports Python 3.10.)
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        raise
    return recorder


def _report(recorder: Recorder, workload: wl.Workload, arguments: argparse.Namespace,
            server_version: str) -> dict:
    duration_s = max(recorder.last_finish_ns - recorder.measure_start_ns, 1) / 1e9
    histogram = recorder.histogram
    latency_us = {name: histogram.get_value_at_percentile(percentile)
                  for name, percentile in PERCENTILES.items()}
    latency_us["max"] = histogram.get_max_value()
    by_code = {name: 0 for name in ("OK", "EXISTS", "EXCEEDS_CREDITS")}
    by_code.update(recorder.by_code)
    return {
        "target": "postgres",
        "durability": "fsync (synchronous_commit=on)",
        "throughput_per_s": recorder.count / duration_s,
        "count": recorder.count,
        "by_code": by_code,
        "latency_us": latency_us,
        "duration_s": duration_s,
        "connections": arguments.connections,
        "workload": {**workload.describe(), "payments_per_call": arguments.payments_per_call,
                     "warmup_s": arguments.warmup},
        "machine": {"cpus": os.cpu_count(), "postgres_version": server_version},
    }


async def run_benchmark(arguments: argparse.Namespace) -> dict:
    workload = wl.Workload(arguments.seed, arguments.payers, arguments.merchants, arguments.funding_scale)
    with pg_cluster.throwaway_cluster(arguments.connections, arguments.data_parent) as cluster:
        admin = await asyncpg.connect(cluster.dsn)
        try:
            server_version = await admin.fetchval("SHOW server_version")
            await schema.install(admin, workload)
            _log(f"{workload.payer_count} payers, {workload.merchant_count} merchants loaded; "
                 f"{arguments.connections} connections x {arguments.payments_per_call} payments per call, "
                 f"{arguments.warmup:g} s warm-up + {arguments.duration:g} s")
            recorder = await _run_load(cluster.dsn, workload, arguments)
            await schema.check_invariants(admin, recorder.acknowledged_ok_ids)
        finally:
            await admin.close()
    if recorder.count == 0:
        raise RuntimeError("no payment completed inside the measured window")
    return _report(recorder, workload, arguments, server_version)


def _log(message: str) -> None:
    print(f"[postgres baseline] {message}", file=sys.stderr, flush=True)


def _positive_int(maximum: int):
    def parse(text: str) -> int:
        value = int(text)
        if not 1 <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{value} is outside 1..{maximum}")
        return value
    return parse


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def _non_negative_seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds")
    return value


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.baselines.postgres.run",
        description="The load benchmark's workload against a durable PostgreSQL ledger (stored function).")
    parser.add_argument("--json", required=True, metavar="OUT.json", help="where to write the report")
    parser.add_argument("--duration", type=_positive_seconds, default=DURATION_S_DEFAULT,
                        help="measured seconds (default %(default)s)")
    parser.add_argument("--warmup", type=_non_negative_seconds, default=WARMUP_S_DEFAULT,
                        help="unmeasured seconds first (default %(default)s)")
    parser.add_argument("--connections", type=_positive_int(CONNECTION_COUNT_MAX),
                        default=CONNECTION_COUNT_DEFAULT, help="connections, one call in flight each")
    parser.add_argument("--payers", type=_positive_int(10**7), default=wl.PAYER_COUNT_DEFAULT)
    parser.add_argument("--merchants", type=_positive_int(10**6), default=wl.MERCHANT_COUNT_DEFAULT)
    parser.add_argument("--seed", type=int, default=wl.SEED_DEFAULT)
    parser.add_argument("--payments-per-call", type=_positive_int(limits.BATCH_EVENTS_MAX), default=1,
                        help="payments per stored-function call and transaction (default 1)")
    parser.add_argument("--data-parent", metavar="DIR", default=None,
                        help="where the throwaway cluster's directory goes (default: the temp dir)")
    parser.add_argument("--funding-scale", type=_positive_int(wl.ISSUED_MINOR_MAX), default=wl.FUNDING_SCALE_DEFAULT,
                        help="multiply the normally funded payers' opening balances by this (default %(default)s)")
    arguments = parser.parse_args(argv)
    try:   # refused before a cluster starts: a scale whose opening balances overflow bigint
        wl.Workload(arguments.seed, arguments.payers, arguments.merchants, arguments.funding_scale)
    except ValueError as error:
        parser.error(str(error))
    return arguments


def _exit_on_signal(signal_number: int, frame) -> None:
    # SystemExit unwinds through the cluster's `finally`, which stops and deletes it.
    raise SystemExit(128 + signal_number)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    # Ctrl-C raises KeyboardInterrupt by itself; a kill or a closed terminal should clean up too.
    for signal_number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signal_number, _exit_on_signal)
    try:
        report = asyncio.run(run_benchmark(arguments))
    except schema.LedgerInvariantBroken as error:
        _log(f"FAILED: {error}")
        return 1
    with open(arguments.json, "w") as out:
        json.dump(report, out, indent=2)
        out.write("\n")
    latency_us = report["latency_us"]
    _log(f"{report['throughput_per_s']:,.0f} payments/s, p50 {latency_us['p50']} us, "
         f"p99 {latency_us['p99']} us, codes {report['by_code']} -> {arguments.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
