"""Overload the real switch at ten times its sustainable rate; report shedding, latency and memory.

    python -m bench.overload --seconds 5 --factor 10 --durability fsync

1. Start `switch serve` (the soak ledger, with one wallet per connection so the per-participant
   rate limit is not what is measured), pinned to the last CPU, the generators to the others.
   Measure the sustainable rate: closed loop, every connection keeping --depth pay_batch frames of
   64 payments in flight, for --seconds; sustainable = the OK payments per second of that run.
2. Schedule --factor times that rate, open loop, on the same --connections spread over
   --processes generator processes, the same frames, for --seconds.  A frame whose socket already
   holds GENERATOR_BACKLOG_BYTES_MAX unsent is not sent (the switch's TCP backpressure) and counted
   as skipped: "scheduled" counts every frame due, "offered" the frames handed to the sockets.
   Meanwhile a polite client (its own wallet, one pay_batch frame at a time, every 10 ms) measures
   what an ordinary wallet sees, and the server's resident memory is sampled.
3. Report scheduled and offered vs sustainable, accepted / shed (BUSY) counts, the latency of
   accepted frames (client side: from the instant a frame was due to its answer), the switch's own
   histograms (a batch's oldest request wait, batch and commit time), the polite client's
   latency, and peak resident memory: VmHWM (everything, the ledger's memory-mapped pages
   included) and the anonymous part (RssAnon, sampled: buffers, queues, Python objects), which is
   what overload can grow, against its bound (rss_bound_bytes).

Frames are encoded once per connection and stamped per send (a new request id, new transfer
ids), so a generator process spends microseconds per 64 payments, not a msgpack encoding.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing
import os
import pathlib
import sys
import tempfile
import time

import msgpack

from bench import soak
from core_ext import limits
from switch import protocol

FRAME_PAYMENTS = 64
TICK_SECONDS = 0.002
DRAIN_SECONDS_MAX = 30.0
START_DELAY_SECONDS = 0.5
# Request ids from here up are msgpack uint32: every stamped frame keeps the encoded layout.
REQUEST_ID_FIRST = 1 << 16
# A client-side cap on bytes handed to one socket and not yet sent: past it the generator skips a
# frame (counted as not offered) instead of buffering without bound in its own memory.
GENERATOR_BACKLOG_BYTES_MAX = 4 << 20
WALLET_FIRST = 20
PAYERS_PER_WALLET = 4
POLITE_INTERVAL_SECONDS = 0.01
RSS_SAMPLE_SECONDS = 0.05
ID_MARK = b"\xa5" * 8
CODE_BUSY = 600


# ---- the switch under test ---------------------------------------------------------------------

def wallet_id(index: int) -> int:
    return WALLET_FIRST + index


def wallet_secret(index: int) -> str:
    return f"overload-wallet-{index:04d}-secret-0123456789"


def payer_ids(index: int) -> list[int]:
    first = soak.PAYER_FIRST + index * PAYERS_PER_WALLET
    return list(range(first, first + PAYERS_PER_WALLET))


def config_toml(wallets: int) -> str:
    """The soak switch (its merchant, fee and settlement accounts, rule set) with `wallets` wallets,
    each owning its own payers: the per-participant rate limit then caps no measurement."""
    head = soak.CONFIG_TOML[:soak.CONFIG_TOML.index(f"\n[[participants]]\nid = {soak.WALLET_ID}\n")]
    tail = soak.CONFIG_TOML[soak.CONFIG_TOML.index("\n[[ledgers]]"):soak.CONFIG_TOML.index(
        f"\n[[accounts]]\nid = {soak.PAYER_FIRST}\n")]
    parts = [head]
    for index in range(wallets):
        payers = payer_ids(index)
        parts.append(f'\n[[participants]]\nid = {wallet_id(index)}\nname = "overload wallet {index}"\n'
                     f'role = "wallet"\nsecret = "{wallet_secret(index)}"\naccounts = [[{payers[0]}, {payers[-1]}]]\n')
    parts.append(tail)
    for index in range(wallets):
        for payer in payer_ids(index):
            parts.append(f'\n[[accounts]]\nid = {payer}\nledger = {soak.THB}\ncode = 1\nowner = {wallet_id(index)}\n'
                         f'flags = ["debits_must_not_exceed_credits"]\n'
                         f'opening_balance_minor = {soak.OPENING_BALANCE_MINOR}\n')
    return "".join(parts)


def write_config(directory: pathlib.Path, wallets: int) -> pathlib.Path:
    (directory / soak.RULES_FILE_NAME).write_text(soak.rules_toml(2**32 - 1))
    path = directory / "overload.toml"
    path.write_text(config_toml(wallets))
    return path


def cpu_split() -> tuple[set[int], set[int]]:
    """(server CPUs, generator CPUs): the last CPU for the switch, the others for the load, so the
    two do not fight for one core (on one CPU both get it)."""
    cpus = sorted(os.sched_getaffinity(0))
    return ({cpus[-1]}, set(cpus[:-1])) if len(cpus) > 1 else (set(cpus), set(cpus))


def pin_process(pid: int, cpus: set[int]) -> None:
    """Every thread of `pid` (threads started later inherit it)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), cpus)


def proc_status_kib(pid: int, field: str) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def rss_bound_bytes(rss_before: int, connections: int, accepted_payments: int, bytes_per_payment: float) -> int:
    """The switch's anonymous memory under overload: what it held before; the ledger's growth by the
    payments it accepted (at the bytes per payment the closed-loop run measured: the ledger keeps its
    transfers in memory, so this is the workload, not the overload); every connection's unanswered
    requests (in_flight_bytes_max) and unsent answers (write_buffer_bytes_max); and the queue's
    events at a generous 1 KiB each (a pay_batch item is ~100 bytes)."""
    per_connection = limits.IN_FLIGHT_BYTES_MAX + limits.WRITE_BUFFER_BYTES_MAX
    return round(rss_before + accepted_payments * bytes_per_payment + connections * per_connection
                 + limits.SERVER_QUEUE_EVENTS_MAX * 1024)


# ---- frames --------------------------------------------------------------------------------------

class FrameStamp:
    """One pay_batch frame of FRAME_PAYMENTS payments encoded once, cut around its request id and
    the first 8 bytes of each transfer id; `frame(request_id, serial)` joins the pieces with a new
    request id and `serial` as those 8 bytes (the other 8 are the item's index): fresh ids for
    every frame without encoding one."""

    def __init__(self, qr_payload: str, payers: list[int]) -> None:
        items = [[ID_MARK + index.to_bytes(8, "big"), payers[index % len(payers)], qr_payload, 100 + index, None, None]
                 for index in range(FRAME_PAYMENTS)]
        encoded = protocol.pack_frame([REQUEST_ID_FIRST, "pay_batch", items])
        assert encoded[4:6] == b"\x93\xce", "the request id must be a msgpack uint32"
        self.pieces: list[bytes] = [encoded[:6], b""]
        rest = encoded[10:]
        for _ in range(FRAME_PAYMENTS):
            at = rest.index(ID_MARK)
            self.pieces += [rest[:at], b""]
            rest = rest[at + len(ID_MARK):]
        self.pieces.append(rest)

    def frame(self, request_id: int, serial: int) -> bytes:
        pieces = self.pieces
        pieces[1] = request_id.to_bytes(4, "big")
        pieces[3::2] = [serial.to_bytes(8, "big")] * FRAME_PAYMENTS
        return b"".join(pieces)


# ---- one generator connection --------------------------------------------------------------------

class Link(asyncio.Protocol):
    """A wallet connection: sends stamped frames, reads answers in order, counts codes and latency."""

    def __init__(self, stamp: FrameStamp, serial_base: int) -> None:
        self.stamp = stamp
        self.serial = serial_base
        self.next_request_id = REQUEST_ID_FIRST
        self.transport: asyncio.Transport | None = None
        self.unpacker = msgpack.Unpacker(raw=False)
        self.pending_header: int | None = None
        self.buffer = bytearray()
        self.due: collections.deque[float] = collections.deque()     # per unanswered frame, when it was due
        self.codes: collections.Counter = collections.Counter()
        self.accepted_latencies: list[float] = []
        self.frames_sent = 0
        self.frames_skipped = 0
        self.ready: asyncio.Future | None = None
        self.idle: asyncio.Event = asyncio.Event()
        self.answers_seen = 0

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.ready = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 4:
            size = int.from_bytes(self.buffer[:4], "big")
            if len(self.buffer) < 4 + size:
                return
            body = bytes(self.buffer[4:4 + size])
            del self.buffer[:4 + size]
            self._on_message(msgpack.unpackb(body, raw=False))

    def _on_message(self, message: list) -> None:
        if not self.ready.done():
            self.ready.set_result(message)
            return
        due = self.due.popleft()
        if message[1] == 0:
            self.codes.update(code for code, _ in message[2])
            self.accepted_latencies.append(time.monotonic() - due)
        else:
            self.codes[message[1]] += FRAME_PAYMENTS
        if not self.due:
            self.idle.set()

    def connection_lost(self, exc) -> None:
        self.idle.set()

    def send(self, due: float) -> None:
        """One frame, unless this socket already holds GENERATOR_BACKLOG_BYTES_MAX unsent."""
        if self.transport.get_write_buffer_size() > GENERATOR_BACKLOG_BYTES_MAX:
            self.frames_skipped += 1
            return
        self.serial += 1
        self.due.append(due)
        self.idle.clear()
        self.transport.write(self.stamp.frame(self.next_request_id, self.serial))
        self.next_request_id += 1
        self.frames_sent += 1


async def connect(port: int, index: int, stamp: FrameStamp, serial_base: int) -> Link:
    loop = asyncio.get_running_loop()
    _, link = await loop.create_connection(lambda: Link(stamp, serial_base), "127.0.0.1", port)
    challenge = await link.ready
    link.ready = loop.create_future()
    link.transport.write(protocol.pack_frame(protocol.auth_message(
        wallet_id(index), wallet_secret(index).encode(), challenge[3])))
    welcome = await link.ready
    assert welcome[1] == 0, welcome
    return link


# ---- one generator process -----------------------------------------------------------------------

async def closed_loop(links: list[Link], depth: int, seconds: float) -> None:
    """Every link keeps `depth` frames in flight: each answer is followed by one new frame."""
    stop_at = time.monotonic() + seconds

    async def keep_full(link: Link) -> None:
        while time.monotonic() < stop_at:
            while len(link.due) < depth:
                link.send(time.monotonic())
            await asyncio.sleep(0.0005)
    await asyncio.gather(*(keep_full(link) for link in links))


async def open_loop(links: list[Link], frames_per_second: float, seconds: float) -> None:
    """Frames due on a fixed schedule over the links, round robin, whatever the answers."""
    started = time.monotonic()
    sent = 0
    turn = 0
    while (elapsed := time.monotonic() - started) < seconds:
        due_count = int(elapsed * frames_per_second)
        while sent < due_count:
            links[turn].send(started + sent / frames_per_second)
            turn = (turn + 1) % len(links)
            sent += 1
        await asyncio.sleep(TICK_SECONDS)


async def generate(port: int, wallets: list[int], mode: str, rate: float, seconds: float, depth: int,
                   serial_base: int, start_at: float) -> dict:
    qr_payload = soak.static_qr()
    links = [await connect(port, index, FrameStamp(qr_payload, payer_ids(index)), serial_base + (index << 40))
             for index in wallets]
    await asyncio.sleep(max(0.0, start_at - time.time()))
    started = time.monotonic()
    if mode == "closed":
        await closed_loop(links, depth, seconds)
    else:
        await open_loop(links, rate * len(links) / FRAME_PAYMENTS, seconds)
    sent_seconds = time.monotonic() - started
    try:
        await asyncio.wait_for(asyncio.gather(*(link.idle.wait() for link in links)), DRAIN_SECONDS_MAX)
    except asyncio.TimeoutError:
        pass
    for link in links:
        link.transport.close()
    codes: collections.Counter = collections.Counter()
    for link in links:
        codes.update(link.codes)
    return {"codes": dict(codes), "sent_seconds": sent_seconds,
            "frames_sent": sum(link.frames_sent for link in links),
            "frames_skipped": sum(link.frames_skipped for link in links),
            "unanswered_frames": sum(len(link.due) for link in links),
            "accepted_latencies": [x for link in links for x in link.accepted_latencies]}


def generator_process(arguments: tuple, results) -> None:
    from switch.server import new_event_loop

    loop = new_event_loop()
    try:
        results.put(loop.run_until_complete(generate(*arguments)))
    except BaseException as error:       # the parent must hear of it, not wait forever
        results.put({"error": repr(error)})
    finally:
        loop.close()


def run_generators(port: int, connections: int, processes: int, mode: str, rate_per_connection: float,
                   seconds: float, depth: int, serial_base: int, start_at: float) -> list:
    """Start the generator processes; return them and the queue their results arrive on."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = []
    for number in range(processes):
        wallets = list(range(number, connections, processes))
        arguments = (port, wallets, mode, rate_per_connection, seconds, depth, serial_base, start_at)
        worker = context.Process(target=generator_process, args=(arguments, results), daemon=True)
        worker.start()
        workers.append(worker)
    return [workers, results]


def merge(parts: list[dict]) -> dict:
    errors = [part["error"] for part in parts if "error" in part]
    if errors:
        raise RuntimeError(f"a generator failed: {errors}")
    codes: collections.Counter = collections.Counter()
    for part in parts:
        codes.update(part["codes"])
    latencies = sorted(x for part in parts for x in part["accepted_latencies"])
    return {"codes": codes, "sent_seconds": max(part["sent_seconds"] for part in parts),
            "frames_sent": sum(part["frames_sent"] for part in parts),
            "frames_skipped": sum(part["frames_skipped"] for part in parts),
            "unanswered_frames": sum(part["unanswered_frames"] for part in parts),
            "accepted_latency_ms": quantiles_ms(latencies)}


def quantiles_ms(sorted_seconds: list[float]) -> dict:
    if not sorted_seconds:
        return {}
    return {name: round(sorted_seconds[int(q * (len(sorted_seconds) - 1))] * 1000, 1)
            for name, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))}


# ---- the parent: polite client, memory, the switch's own statistics ------------------------------

async def polite_client(port: int, index: int, serial_base: int, stop: asyncio.Event) -> dict:
    """One `pay` at a time, every POLITE_INTERVAL_SECONDS: the latency of every answer, OK or BUSY."""
    link = await connect(port, index, FrameStamp(soak.static_qr(), payer_ids(index)), serial_base)
    latencies = []
    while not stop.is_set():
        link.idle.clear()
        sent_at = time.monotonic()
        link.send(sent_at)
        await link.idle.wait()
        latencies.append(time.monotonic() - sent_at)
        await asyncio.sleep(POLITE_INTERVAL_SECONDS)
    link.transport.close()
    return {"frames": len(latencies), "codes": {code: count // FRAME_PAYMENTS for code, count in link.codes.items()},
            "latency_ms": quantiles_ms(sorted(latencies))}


async def sample_rss_anon(pid: int, stop: asyncio.Event) -> int:
    """Peak anonymous resident memory (not the ledger's file pages), sampled every RSS_SAMPLE_SECONDS."""
    peak = 0
    while not stop.is_set():
        peak = max(peak, proc_status_kib(pid, "RssAnon") * 1024)
        await asyncio.sleep(RSS_SAMPLE_SECONDS)
    return peak


async def server_stats(port: int) -> dict:
    """The switch's own statistics (the stats operation)."""
    from switch.client import AsyncClient

    async with AsyncClient("127.0.0.1", port, soak.OPERATOR_ID, soak.OPERATOR_SECRET) as operator:
        return await operator.stats()


def histogram_quantiles_us(before: dict, after: dict) -> dict:
    """p50 and p99 of what was observed in between, as the upper bound of their histogram bucket."""
    counts = [b - a for a, b in zip(before["counts"], after["counts"])]
    total = sum(counts)
    bounds = list(after["bounds"]) + [float("inf")]
    quantiles = {}
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        seen = 0
        for bound, count in zip(bounds, counts):
            seen += count
            if total and seen >= q * total:
                quantiles[f"{name}_at_most_us"] = bound
                break
    return {"count": total, **quantiles}


def switch_view(before: dict, after: dict) -> dict:
    """Batches, their mean size, the request wait (a batch's oldest request, arrival to answers), the
    batch and commit times, and the requests shed, between two stats snapshots."""
    events = after["batch_events"]["sum"] - before["batch_events"]["sum"]
    batches = after["batch_events"]["count"] - before["batch_events"]["count"]
    busy = sum(count for _, code, count in after["requests"] if code == CODE_BUSY) - \
        sum(count for _, code, count in before["requests"] if code == CODE_BUSY)
    wait_counts = [b - a for a, b in zip(before["wait_us"]["counts"], after["wait_us"]["counts"])]
    budget_us = limits.SERVER_QUEUE_WAIT_MS_MAX * 1000
    over_budget = sum(count for bound, count in zip(list(after["wait_us"]["bounds"]) + [float("inf")], wait_counts)
                      if bound > budget_us)
    return {"batches": batches, "events_per_batch": round(events / max(1, batches)), "busy_requests": busy,
            "batches_waiting_over_budget": over_budget,
            **{name: histogram_quantiles_us(before[name], after[name]) for name in ("wait_us", "batch_us", "commit_us")}}


async def phase(port: int, server_pid: int, arguments, mode: str, rate_per_connection: float,
                serial_base: int) -> dict:
    """One generator run (closed or open loop) with the polite client and the RSS sampler beside it."""
    loop = asyncio.get_running_loop()
    stats_before = await server_stats(port)
    workers, results = run_generators(port, arguments.connections, arguments.processes, mode, rate_per_connection,
                                      arguments.seconds, arguments.depth, serial_base,
                                      time.time() + START_DELAY_SECONDS + 0.1 * arguments.connections)
    stop = asyncio.Event()
    polite = asyncio.ensure_future(polite_client(port, arguments.connections, serial_base + (1 << 48), stop))
    rss = asyncio.ensure_future(sample_rss_anon(server_pid, stop))
    parts = [await loop.run_in_executor(None, results.get) for _ in workers]
    stop.set()
    for worker in workers:
        worker.join()
    result = merge(parts)
    result["polite"] = await polite
    result["server_peak_rss_anon_bytes"] = await rss
    result["switch"] = switch_view(stats_before, await server_stats(port))
    return result


def summary(mode: str, result: dict) -> dict:
    codes = result.pop("codes")
    ok = codes.get(0, 0)
    seconds = result["sent_seconds"]
    scheduled = (result["frames_sent"] + result["frames_skipped"]) * FRAME_PAYMENTS
    return {"mode": mode, "scheduled_payments_per_second": round(scheduled / seconds),
            "offered_payments_per_second": round(result["frames_sent"] * FRAME_PAYMENTS / seconds),
            "accepted_ok_payments_per_second": round(ok / seconds), "ok": ok, "busy": codes.get(CODE_BUSY, 0),
            "other_codes": {code: n for code, n in codes.items() if code not in (0, CODE_BUSY)}, **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--factor", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--depth", type=int, default=16, help="closed loop: frames in flight per connection")
    parser.add_argument("--durability", choices=("fsync", "os"), default="fsync")
    parser.add_argument("--serve-args", default="", help="extra arguments for switch serve, e.g. \"--loop asyncio\"")
    parser.add_argument("--sustainable", type=int, default=0,
                        help="skip the closed-loop run and take this many payments/s as sustainable")
    arguments = parser.parse_args(argv)
    from switch.server import new_event_loop

    loop = new_event_loop()
    with tempfile.TemporaryDirectory(prefix="switch-overload-") as work_dir:
        config = write_config(pathlib.Path(work_dir), arguments.connections + 1)     # +1: the polite client
        server = soak.SwitchProcess(config, pathlib.Path(work_dir) / "data", arguments.durability, tuple(arguments.serve_args.split()))
        server.start()
        pid = server.process.pid
        server_cpus, generator_cpus = cpu_split()
        pin_process(pid, server_cpus)
        os.sched_setaffinity(0, generator_cpus)         # the generators fork from here and inherit it
        anon_start = proc_status_kib(pid, "RssAnon") * 1024
        try:
            if arguments.sustainable:
                closed, sustainable = {}, arguments.sustainable
            else:
                closed = summary("closed", loop.run_until_complete(phase(server.port, pid, arguments, "closed", 0, 1 << 56)))
                sustainable = closed["accepted_ok_payments_per_second"]
            rss_before = proc_status_kib(pid, "VmHWM") * 1024
            anon_before = proc_status_kib(pid, "RssAnon") * 1024
            target = sustainable * arguments.factor
            opened = summary("open", loop.run_until_complete(
                phase(server.port, pid, arguments, "open", target / arguments.connections, 2 << 56)))
            rss_peak = proc_status_kib(pid, "VmHWM") * 1024
        finally:
            server.stop()
            loop.close()
    bytes_per_payment = (anon_before - anon_start) / closed["ok"] if closed.get("ok") else 0.0
    bound = rss_bound_bytes(anon_before, arguments.connections + 1, opened["ok"], bytes_per_payment)
    anon_peak = opened["server_peak_rss_anon_bytes"]
    report = {"durability": arguments.durability, "server_cpus": sorted(server_cpus),
              "generator_cpus": sorted(generator_cpus), "connections": arguments.connections,
              "processes": arguments.processes, "sustainable_payments_per_second": sustainable,
              "factor": arguments.factor, "target_payments_per_second": round(target),
              "scheduled_over_sustainable": round(opened["scheduled_payments_per_second"] / max(1, sustainable), 2),
              "offered_over_sustainable": round(opened["offered_payments_per_second"] / max(1, sustainable), 2),
              "sustainable_run": closed, "overload_run": opened,
              "server_peak_rss_mib_before_overload": rss_before >> 20, "server_peak_rss_mib": rss_peak >> 20,
              "server_rss_anon_mib_at_start": anon_start >> 20, "ledger_bytes_per_payment": round(bytes_per_payment),
              "server_rss_anon_mib_before_overload": anon_before >> 20, "server_peak_rss_anon_mib": anon_peak >> 20,
              "server_rss_anon_bound_mib": bound >> 20, "rss_anon_within_bound": anon_peak <= bound}
    print(json.dumps(report, indent=2, default=str))
    return 0 if opened["unanswered_frames"] == 0 and anon_peak <= bound else 1


if __name__ == "__main__":
    sys.exit(main())
