"""Overload the real switch at ten times its sustainable rate; report shedding, latency and memory.

    python -m bench.overload --seconds 5 --factor 10 --durability fsync

1. Start `switch serve` (the soak configuration, bench/soak.py) and measure the
   sustainable rate: closed loop, pipelined pay_batch frames, for --seconds.
2. Offer --factor times that rate, open loop, from --connections raw connections
   sending pay_batch frames on a fixed schedule, for --seconds.  Report what was
   accepted and shed (BUSY), the latency of accepted frames (send to answer:
   it includes the generator's own send queue once it outruns the server), the
   switch's own wait histogram (a batch's oldest request, arrival to answer),
   and the server's peak resident memory (VmHWM from /proc).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import pathlib
import sys
import tempfile
import time

from bench import soak

FRAME_PAYMENTS = 64
TICK_SECONDS = 0.005
DRAIN_SECONDS_MAX = 60.0


def server_peak_rss_bytes(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class Frames:
    """Pre-packed pay_batch frames with fresh transfer ids."""

    def __init__(self, qr_payload: str) -> None:
        self.qr_payload = qr_payload
        self.next_id = 1
        self.request_id = 0

    def next(self) -> tuple[int, bytes]:
        from switch import protocol

        items = [[protocol.id_to_wire(self.next_id + i), soak.PAYER_FIRST + (self.next_id + i) % soak.PAYER_COUNT,
                  self.qr_payload, 100 + i, None, None] for i in range(FRAME_PAYMENTS)]
        self.next_id += FRAME_PAYMENTS
        self.request_id += 1
        return self.request_id, protocol.pack_frame([self.request_id, "pay_batch", items])


async def _connect(port: int):
    from switch import protocol

    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
    challenge = await _read(reader)
    writer.write(protocol.pack_frame(protocol.auth_message(soak.WALLET_ID, soak.WALLET_SECRET.encode(), challenge[3])))
    welcome = await _read(reader)
    assert welcome[1] == 0, welcome
    return reader, writer


async def _read(reader):
    import msgpack

    header = await reader.readexactly(4)
    return msgpack.unpackb(await reader.readexactly(int.from_bytes(header, "big")), raw=False)


async def closed_loop(port: int, seconds: float, depth: int = 64) -> float:
    """Payments per second with `depth` frames in flight on one connection: the sustainable rate."""
    reader, writer = await _connect(port)
    frames = Frames(soak.static_qr())
    for _ in range(depth):
        writer.write(frames.next()[1])
    answered = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        answer = await _read(reader)
        answered += sum(1 for code, _ in answer[2] if code == 0) if answer[1] == 0 else 0
        writer.write(frames.next()[1])
    elapsed = time.monotonic() - started
    for _ in range(depth):
        await _read(reader)
    writer.close()
    return answered / elapsed


async def open_loop(port: int, rate_per_second: float, seconds: float, connections: int, first_id: int) -> dict:
    """Send frames on a fixed schedule whatever the answers; count codes and accepted latency."""
    frames = Frames(soak.static_qr())
    frames.next_id = first_id
    links = [await _connect(port) for _ in range(connections)]
    sent_at: list[dict[int, float]] = [{} for _ in links]
    counts: collections.Counter = collections.Counter()
    latencies: list[float] = []
    done = asyncio.Event()

    async def read_answers(index: int) -> None:
        reader = links[index][0]
        while not (done.is_set() and not sent_at[index]):
            try:
                answer = await asyncio.wait_for(_read(reader), DRAIN_SECONDS_MAX)
            except (asyncio.TimeoutError, asyncio.IncompleteReadError):
                return
            started = sent_at[index].pop(answer[0])
            if answer[1] == 0:
                codes = [code for code, _ in answer[2]]
                counts.update(codes)
                if 0 in codes:
                    latencies.append(time.monotonic() - started)
            else:
                counts[answer[1]] += FRAME_PAYMENTS

    readers = [asyncio.ensure_future(read_answers(index)) for index in range(connections)]
    frames_per_tick = rate_per_second * TICK_SECONDS / FRAME_PAYMENTS
    owed = 0.0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        owed += frames_per_tick
        while owed >= 1:
            request_id, frame = frames.next()
            index = request_id % connections
            sent_at[index][request_id] = time.monotonic()
            links[index][1].write(frame)
            owed -= 1
        await asyncio.sleep(TICK_SECONDS)
    offered = (frames.request_id * FRAME_PAYMENTS) / (time.monotonic() - started)
    done.set()
    await asyncio.gather(*readers)
    for _, writer in links:
        writer.close()
    latencies.sort()
    return {"offered_payments_per_second": round(offered), "ok": counts[0], "busy": counts[600],
            "other_codes": {code: n for code, n in counts.items() if code not in (0, 600)},
            "unanswered_frames": sum(len(pending) for pending in sent_at),
            "accepted_latency_ms": {name: round(latencies[int(q * (len(latencies) - 1))] * 1000, 1)
                                    for name, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))} if latencies else {}}


async def server_wait_us(port: int) -> dict:
    """The switch's own histogram of request wait (arrival of a batch's oldest request to its answers)."""
    from switch.client import AsyncClient

    async with AsyncClient("127.0.0.1", port, soak.OPERATOR_ID, soak.OPERATOR_SECRET) as operator:
        return (await operator.stats())["wait_us"]


def wait_quantiles_us(before: dict, after: dict) -> dict:
    """p50 and p99 of the batches in between, as the upper bound of their histogram bucket."""
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
    return {"batches": total, **quantiles}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--factor", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--durability", choices=("fsync", "os"), default="fsync")
    arguments = parser.parse_args(argv)
    from switch.server import new_event_loop

    loop = new_event_loop()
    with tempfile.TemporaryDirectory(prefix="switch-overload-") as work_dir:
        server = soak.SwitchProcess(soak.write_config(pathlib.Path(work_dir)), pathlib.Path(work_dir) / "data",
                                    arguments.durability)
        server.start()
        try:
            sustainable = loop.run_until_complete(closed_loop(server.port, arguments.seconds))
            rss_before = server_peak_rss_bytes(server.process.pid)
            wait_before = loop.run_until_complete(server_wait_us(server.port))
            result = loop.run_until_complete(open_loop(server.port, sustainable * arguments.factor,
                                                       arguments.seconds, arguments.connections, 10**9))
            result["server_wait"] = wait_quantiles_us(wait_before, loop.run_until_complete(server_wait_us(server.port)))
            rss_peak = server_peak_rss_bytes(server.process.pid)
        finally:
            server.stop()
            loop.close()
    report = {"durability": arguments.durability, "sustainable_payments_per_second": round(sustainable),
              "factor": arguments.factor, **result, "server_peak_rss_mib_before_overload": rss_before >> 20,
              "server_peak_rss_mib": rss_peak >> 20}
    print(json.dumps(report, indent=2))
    return 0 if result["unanswered_frames"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
