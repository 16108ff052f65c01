"""Crash soak: SIGKILL the real switch under load at seeded random moments; nothing acknowledged is lost.

    python -m bench.soak --kills 100 --seed 1 --durability fsync      (what `make soak` runs)

One round: start `switch serve` on a data directory, drive payments at it with
the Python client from several pipelined workers (each acknowledged transfer id
is recorded), SIGKILL the server at a random moment drawn from the seed, restart
it on the same directory, and re-send every payment that was not acknowledged
with its original transfer id.  A retry must answer EXISTS (it was applied
before the kill) or OK (it was not, and is posted now); a sample of payments
acknowledged earlier is re-sent too and must answer EXISTS.

At the end the server is stopped gracefully and the data directory is checked
offline: `switch ledger check` passes; every payment sent is in the journal
exactly once (so every acknowledged one is there, and no retry doubled one);
every fee leg likewise; the payer, merchant and fee balances equal the sums of
the payments.  tests/test_crash_server.py runs a short soak in `make test`.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent

WALLET_ID = 1
WALLET_SECRET = "soak-wallet-secret-0123456789"
OPERATOR_ID = 9
OPERATOR_SECRET = "soak-operator-secret-012345678"
RULES_FILE_NAME = "soak-rules.toml"
PROBE_ID_FIRST = 10**12     # transfer ids of the rule-counter probe payments, past any the load uses
THB = 764
PAYER_FIRST, PAYER_COUNT = 1001, 64
MERCHANT_ACCOUNT, FEE_ACCOUNT, SETTLEMENT_ACCOUNT = 5001, 9764, 8764
MERCHANT_PROMPTPAY_ID = "0066812345678"
MERCHANT_NAME = "Soak Tuk-Tuk"
FEE_BPS = 50
# Large enough that no payment of a long soak fails for funds: every payment sent must post.
OPENING_BALANCE_MINOR = 10**15
AMOUNT_MINOR_MAX = 100_000
PAYMENT_TRANSFER_CODE, FEE_TRANSFER_CODE = 1, 2
WORKERS = 8                    # pipelined pay_many calls in flight at once
CHUNK_PAYMENTS_MAX = 64        # payments per pay_many call (one pay_batch frame)
KILL_AFTER_SECONDS = (0.05, 1.5)
RECHECK_ACKNOWLEDGED_MAX = 200
SERVER_READY_SECONDS_MAX = 60.0

CONFIG_TOML = f"""
[switch]
name = "soak-switch"
accounts_max = 10000
rules = "{RULES_FILE_NAME}"

[[participants]]
id = {OPERATOR_ID}
name = "soak operator"
role = "operator"
secret = "{OPERATOR_SECRET}"
accounts = []

[[participants]]
id = {WALLET_ID}
name = "soak wallet"
role = "wallet"
secret = "{WALLET_SECRET}"
accounts = [[1000, 1999]]

[[ledgers]]
ledger = {THB}
fee_account_id = {FEE_ACCOUNT}
settlement_account_id = {SETTLEMENT_ACCOUNT}
fee_bps = {FEE_BPS}

[[accounts]]
id = {SETTLEMENT_ACCOUNT}
ledger = {THB}
code = 4

[[accounts]]
id = {FEE_ACCOUNT}
ledger = {THB}
code = 3

[[accounts]]
id = {MERCHANT_ACCOUNT}
ledger = {THB}
code = 2
flags = ["debits_must_not_exceed_credits"]

[[merchants]]
scheme = "promptpay"
merchant_id = "{MERCHANT_PROMPTPAY_ID}"
account_id = {MERCHANT_ACCOUNT}
name = "{MERCHANT_NAME}"
mcc = "4121"
country = "TH"
currency = {THB}
""" + "".join(f"""
[[accounts]]
id = {PAYER_FIRST + index}
ledger = {THB}
code = 1
owner = {WALLET_ID}
flags = ["debits_must_not_exceed_credits"]
opening_balance_minor = {OPENING_BALANCE_MINOR}
""" for index in range(PAYER_COUNT))


def rules_toml(payer_day_count_limit: int) -> str:
    """One enforced rule whose counters the soak can read back: a payer's payments in 24 h."""
    return f"""
[ruleset]
name = "soak-day-count-{payer_day_count_limit}"

[[rules]]
id = "payer-day-count"
kind = "payer_day_count"
version = 1
mode = "enforce"
action = "decline"
reason = "SOAK_DAY_COUNT"
limit = {payer_day_count_limit}
"""


def write_config(directory: pathlib.Path) -> pathlib.Path:
    """The switch config, and its rule set with a limit no load reaches."""
    (directory / RULES_FILE_NAME).write_text(rules_toml(2**32 - 1))
    path = directory / "soak.toml"
    path.write_text(CONFIG_TOML)
    return path


def static_qr() -> str:
    from switch import qrmake

    return qrmake.make_payload(qrmake.QrSpec(
        profile="promptpay", merchant_id=MERCHANT_PROMPTPAY_ID, name=MERCHANT_NAME, city="Bangkok",
        mcc="4121", currency=THB, country="TH"))


@dataclasses.dataclass
class SoakReport:
    kills: int = 0
    rounds_with_nothing_lost: int = 0
    payments_sent: int = 0
    acknowledged_before_kill: int = 0
    retried: int = 0
    retried_answered_exists: int = 0
    retried_answered_ok: int = 0
    rechecked_acknowledged: int = 0
    rule_probes: int = 0
    restart_seconds_max: float = 0.0
    transfers_in_ledger: int = 0
    batches_in_journal: int = 0
    data_bytes: int = 0
    failures: list = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


class SwitchProcess:
    """`python -m switch serve` on a data directory, on a free port, as a child process."""

    def __init__(self, config_path: pathlib.Path, data_dir: pathlib.Path, durability: str,
                 extra_args: tuple = ()) -> None:
        self.config_path, self.data_dir, self.durability = config_path, data_dir, durability
        self.extra_args = extra_args
        self.process: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> float:
        """Start and wait until it listens; the seconds that took (journal replay included)."""
        started = time.monotonic()
        # The server's log goes to a file beside the config: a failed start shows why.
        self.log_path = self.config_path.parent / "server.log"
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "switch", "serve", "--config", str(self.config_path),
                 "--data", str(self.data_dir), "--port", "0", "--durability", self.durability, *self.extra_args],
                stdout=subprocess.PIPE, stderr=log_file, text=True, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
        line = self.process.stdout.readline()
        if "listening on" not in line:
            self.process.kill()
            self.process.wait()
            tail = self.log_path.read_text(errors="replace").splitlines()[-3:]
            raise RuntimeError(f"switch did not start (exit {self.process.returncode}): {line!r} {tail}")
        self.port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
        return time.monotonic() - started

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)

    def stop(self, timeout_seconds: float = 30.0) -> int:
        """SIGTERM (graceful: answer what was received, checkpoint, close); the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def wait_dead(self) -> int:
        return self.process.wait(30)


class Payments:
    """Every payment sent, by transfer id, and which ones the switch acknowledged."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.next_id = 1
        self.sent: dict[int, tuple[int, int]] = {}        # transfer id -> (payer, amount_minor)
        self.acknowledged: set[int] = set()
        self.probes_sent = 0

    def new_chunk(self) -> list[int]:
        ids = []
        for _ in range(self.rng.randint(1, CHUNK_PAYMENTS_MAX)):
            transfer_id = self.next_id
            self.next_id += 1
            self.sent[transfer_id] = (PAYER_FIRST + self.rng.randrange(PAYER_COUNT),
                                      self.rng.randint(1, AMOUNT_MINOR_MAX))
            ids.append(transfer_id)
        return ids

    def unacknowledged(self) -> list[int]:
        return sorted(set(self.sent) - self.acknowledged)


BUSY_RETRY_SECONDS = 0.05
BUSY_RETRIES_MAX = 200


async def pay_until_not_busy(client, requests: list) -> list:
    """pay_many, re-sending what the switch shed with BUSY (same ids) after a pause, as a wallet would."""
    from core_ext.codes import Code

    results = {}
    for _ in range(BUSY_RETRIES_MAX):
        for result in await client.pay_many(requests):
            results[result.transfer_id] = result
        requests = [r for r in requests if results[r.transfer_id].code == Code.BUSY]
        if not requests:
            break
        await asyncio.sleep(BUSY_RETRY_SECONDS)
    return list(results.values())


def _requests(payments: Payments, ids: list[int], qr_payload: str) -> list:
    from switch.client import PayRequest

    return [PayRequest(i, payments.sent[i][0], qr_payload, payments.sent[i][1]) for i in ids]


async def _worker(client, payments: Payments, qr_payload: str, report: SoakReport, stop: asyncio.Event) -> None:
    """Pay chunk after chunk until the connection dies; record what was acknowledged."""
    from core_ext.codes import Code

    while not stop.is_set():
        ids = payments.new_chunk()
        report.payments_sent += len(ids)
        results = await asyncio.gather(*(client.pay(*r) for r in _requests(payments, ids, qr_payload)),
                                       return_exceptions=True)
        for transfer_id, result in zip(ids, results):
            if isinstance(result, BaseException):
                stop.set()              # the server is gone: this payment's fate is unknown
            elif result.code in (Code.OK, Code.EXISTS):
                payments.acknowledged.add(transfer_id)
                report.acknowledged_before_kill += 1
            elif result.code == Code.BUSY:
                continue                # shed, nothing applied: re-sent with the retries
            else:
                report.failures.append(f"payment {transfer_id} answered {Code(result.code).name} under load")


async def _load_until_killed(server: SwitchProcess, payments: Payments, qr_payload: str, report: SoakReport,
                             kill_after_seconds: float) -> None:
    from switch.client import AsyncClient

    client = AsyncClient("127.0.0.1", server.port, WALLET_ID, WALLET_SECRET, reconnect_attempts=0)
    await client.connect()
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(kill_after_seconds, server.kill)
    await asyncio.gather(*(_worker(client, payments, qr_payload, report, stop) for _ in range(WORKERS)))
    await client.close()


async def _retry(port: int, payments: Payments, qr_payload: str, report: SoakReport, rng: random.Random) -> None:
    """Re-send the unacknowledged with their ids (OK or EXISTS), and a sample of the acknowledged (EXISTS)."""
    from core_ext.codes import Code
    from switch.client import AsyncClient

    unacknowledged = payments.unacknowledged()
    acknowledged = sorted(payments.acknowledged)
    sample = rng.sample(acknowledged, min(RECHECK_ACKNOWLEDGED_MAX, len(acknowledged)))
    async with AsyncClient("127.0.0.1", port, WALLET_ID, WALLET_SECRET) as client:
        retried = await pay_until_not_busy(client, _requests(payments, unacknowledged, qr_payload))
        rechecked = await pay_until_not_busy(client, _requests(payments, sample, qr_payload))
    for result in retried:
        report.retried += 1
        if result.code == Code.EXISTS:
            report.retried_answered_exists += 1
        elif result.code == Code.OK:
            report.retried_answered_ok += 1
        else:
            report.failures.append(f"retry of {result.transfer_id} answered {Code(result.code).name}")
            continue
        payments.acknowledged.add(result.transfer_id)
    for result in rechecked:
        report.rechecked_acknowledged += 1
        if result.code != Code.EXISTS:
            report.failures.append(f"acknowledged {result.transfer_id} re-sent answered {Code(result.code).name}")


async def probe_rule_counters(port: int, payments: Payments, qr_payload: str, report: SoakReport) -> None:
    """The rules' per-payer counters must count every posted payment exactly once, kills and retries
    included.  Reload the rule set (counters carry over) with a payments-per-day limit between the
    payers' ledger counts: each payer's next payment must be declined exactly when its count reached it."""
    from core_ext.codes import Code
    from switch.client import AsyncClient

    counts = collections.Counter(payer for payer, _ in payments.sent.values())
    limit = max(1, sorted(counts.values())[len(counts) // 2])
    async with AsyncClient("127.0.0.1", port, OPERATOR_ID, OPERATOR_SECRET) as operator:
        await operator.reload_rules(rules_toml(limit))
    probes = {PROBE_ID_FIRST + payments.probes_sent + index: (PAYER_FIRST + index, 1_000)
              for index in range(PAYER_COUNT)}
    payments.probes_sent += PAYER_COUNT
    payments.sent.update(probes)
    async with AsyncClient("127.0.0.1", port, WALLET_ID, WALLET_SECRET) as client:
        results = await pay_until_not_busy(client, _requests(payments, sorted(probes), qr_payload))
        async with AsyncClient("127.0.0.1", port, OPERATOR_ID, OPERATOR_SECRET) as operator:
            await operator.reload_rules(rules_toml(2**32 - 1))
    for result in results:
        payer = probes[result.transfer_id][0]
        declined = counts[payer] >= limit
        if result.code == Code.OK and not declined:
            payments.acknowledged.add(result.transfer_id)
        elif declined and result.code in (Code.RISK_DECLINED, Code.RISK_LIMIT_EXCEEDED):
            del payments.sent[result.transfer_id]       # declined: never posted
        else:
            report.failures.append(f"rule counter of payer {payer}: ledger has {counts[payer]} payments, "
                                   f"limit {limit}, its next payment answered {Code(result.code).name}")
        report.rule_probes += 1


def check_data_dir(data_dir: pathlib.Path, payments: Payments, report: SoakReport) -> None:
    """Offline: ledger check, each payment and fee leg exactly once, balances equal the payments."""
    from core_ext import core
    from core_ext.reference.ledger import iter_journal_records
    from switch import storage
    from switch.commands.ledger import run_check
    from switch.engine import fee_id_for

    check = run_check(str(data_dir))
    if not check["ok"]:
        report.failures.append(f"ledger check: {check['violations'][:5]}")
    report.transfers_in_ledger = check["transfers"]
    report.batches_in_journal = check.get("batches") or 0
    report.data_bytes = sum(path.stat().st_size for path in data_dir.iterdir() if path.is_file())
    ledger = core.Ledger(accounts_max=10_000)
    seen: collections.Counter = collections.Counter()
    env = storage.open_environment(data_dir, readonly=True)
    try:
        for _, sections in storage.iterate_journal(env):
            for name, blob in sections:
                if name == ledger.name:
                    ledger.apply_journal(blob)
                    seen.update(record.id for kind, record in iter_journal_records(blob) if kind == "transfer")
    finally:
        env.close()
    doubled = [transfer_id for transfer_id, count in seen.items() if count > 1]
    # A payment under 200 satang has a zero fee (floor of 50 bps): no fee leg.
    missing = [i for i, (_, amount_minor) in payments.sent.items()
               if seen[i] != 1 or seen[fee_id_for(i)] != (1 if amount_minor * FEE_BPS // 10_000 else 0)]
    if doubled:
        report.failures.append(f"{len(doubled)} transfers journaled more than once, e.g. {doubled[:3]}")
    if missing:
        report.failures.append(f"{len(missing)} payments not journaled exactly once, e.g. {missing[:3]}")
    lost = payments.acknowledged - {i for i in payments.sent if seen[i] == 1}
    if lost:
        report.failures.append(f"{len(lost)} acknowledged payments lost, e.g. {sorted(lost)[:3]}")
    _check_balances(ledger, payments, report)


def _check_balances(ledger, payments: Payments, report: SoakReport) -> None:
    debits_by_payer: collections.Counter = collections.Counter()
    fees_minor = 0
    for payer, amount_minor in payments.sent.values():
        debits_by_payer[payer] += amount_minor
        fees_minor += amount_minor * FEE_BPS // 10_000
    payer_ids = [PAYER_FIRST + index for index in range(PAYER_COUNT)]
    accounts = ledger.lookup_accounts(payer_ids + [MERCHANT_ACCOUNT, FEE_ACCOUNT])
    for payer, account in zip(payer_ids, accounts):
        if account.debits_posted != debits_by_payer[payer]:
            report.failures.append(f"payer {payer}: debits {account.debits_posted}, payments {debits_by_payer[payer]}")
    merchant, fee = accounts[-2:]
    if merchant.credits_posted != sum(debits_by_payer.values()) or merchant.debits_posted != fees_minor:
        report.failures.append("merchant balances differ from the payments")
    if fee.credits_posted != fees_minor:
        report.failures.append(f"fee account: credits {fee.credits_posted}, fees {fees_minor}")


def run_soak(work_dir: pathlib.Path, kills: int, seed: int, durability: str = "os",
             extra_server_args: tuple = ()) -> SoakReport:
    """Kill the server `kills` times under load, then check everything; never raises for a finding."""
    from switch.server import new_event_loop

    rng = random.Random(seed)
    report = SoakReport()
    data_dir = work_dir / "data"
    server = SwitchProcess(write_config(work_dir), data_dir, durability, extra_server_args)
    payments = Payments(rng)
    qr_payload = static_qr()
    loop = new_event_loop()
    try:
        report.restart_seconds_max = server.start()
        _run_rounds(server, payments, qr_payload, report, rng, loop, kills, data_dir)
        loop.run_until_complete(probe_rule_counters(server.port, payments, qr_payload, report))
        if server.stop() != 0:
            report.failures.append("graceful stop did not exit 0")
    except RuntimeError as error:                 # the switch would not start: a finding, not a crash
        report.failures.append(str(error))
    finally:
        server.kill()
        loop.close()
    if (data_dir / "data.mdb").exists():
        check_data_dir(data_dir, payments, report)
    return report


def _run_rounds(server: SwitchProcess, payments: Payments, qr_payload: str, report: SoakReport,
                rng: random.Random, loop, kills: int, data_dir: pathlib.Path) -> None:
    for _ in range(kills):
        failures_before = len(report.failures)
        kill_after_seconds = rng.uniform(*KILL_AFTER_SECONDS)
        loop.run_until_complete(_load_until_killed(server, payments, qr_payload, report, kill_after_seconds))
        if server.wait_dead() != -signal.SIGKILL:
            report.failures.append("the server exited before it was killed")
        report.kills += 1
        report.restart_seconds_max = max(report.restart_seconds_max, server.start())
        loop.run_until_complete(_retry(server.port, payments, qr_payload, report, rng))
        # Beside the running server (read-only, no lock): everything sent so far is now posted once.
        check_data_dir(data_dir, payments, report)
        if len(report.failures) == failures_before:
            report.rounds_with_nothing_lost += 1
        print(f"kill {report.kills}: {report.payments_sent} payments sent, {len(report.failures)} failures, "
              f"restart {report.restart_seconds_max:.2f} s max", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--durability", choices=("fsync", "os"), default="fsync")
    parser.add_argument("--work-dir", type=pathlib.Path, help="Kept afterwards (default: a temporary directory).")
    arguments = parser.parse_args(argv)
    started = time.monotonic()
    if arguments.work_dir:
        arguments.work_dir.mkdir(parents=True, exist_ok=True)
        report = run_soak(arguments.work_dir, arguments.kills, arguments.seed, arguments.durability)
    else:
        with tempfile.TemporaryDirectory(prefix="switch-soak-") as work_dir:
            report = run_soak(pathlib.Path(work_dir), arguments.kills, arguments.seed, arguments.durability)
    summary = {**dataclasses.asdict(report), "ok": report.ok, "durability": arguments.durability,
               "seed": arguments.seed, "seconds": round(time.monotonic() - started, 1)}
    summary["restart_seconds_max"] = round(report.restart_seconds_max, 3)
    print(json.dumps(summary, indent=2))
    print(f"{'OK' if report.ok else 'FAILED'}: {report.kills} kills, {report.rounds_with_nothing_lost} survived with "
          f"nothing lost; {report.payments_sent} payments sent, {report.retried} retried "
          f"({report.retried_answered_exists} EXISTS, {report.retried_answered_ok} posted on retry)")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
