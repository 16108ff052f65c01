"""The load run: items split over connections, connections over processes, open or closed loop.

The parent builds the item stream once (stream.py), routes every item to a connection that
authenticates as the wallet owning its payer, then forks `processes` workers.  Each worker
encodes its connections' frames (frames.py), connects and authenticates, and waits at a
barrier; the parent then sets one start instant (CLOCK_MONOTONIC is system-wide, so every
process shares it).  Phases: warm-up (answers counted for the progress line only), the measured
window, then a drain of the answers still in flight.  Each worker sends its Recording to the
parent, which merges the histograms.

- closed loop: every connection keeps `depth` frames in flight; each read of answers is
  followed by one write of as many new frames as were answered;
- open loop: the offered `rate` is split over the connections, each sending its frames on a
  fixed schedule (staggered so the total is even); a frame's latency runs from the instant it
  was due, so a generator or switch that falls behind shows in the latency, not in a lower rate.
"""
from __future__ import annotations

import asyncio
import dataclasses
import gc
import multiprocessing
import os
import sys
import time
import traceback
from typing import Callable

from core_ext import limits
from switch.loadgen import compiled_open_loop
from switch.loadgen.connection import LoadConnection
from switch.loadgen.frames import FrameRing
from switch.loadgen.recorder import Recorder, interval_for
from switch.loadgen.stream import Item

MODES = ("closed", "open")
SENDERS = ("c", "python")            # open loop: the compiled sender (compiled_open_loop.py) or asyncio
START_DELAY_NS = 50_000_000          # between the barrier and the common start: every worker sees it
BARRIER_TIMEOUT_S = 120.0            # frame encoding and connecting, per worker
PROGRESS_PERIOD_S = 0.1
SPIN_THRESHOLD_NS = 2_000_000        # open loop: nearer than this, poll instead of sleeping (timer granularity)


@dataclasses.dataclass(frozen=True)
class RunSettings:
    host: str = "127.0.0.1"
    port: int = 7878
    mode: str = "closed"
    rate_per_s: int = 10_000          # open loop: offered payments per second
    depth: int = 64                   # closed loop: frames in flight per connection
    batch_items: int = 1              # 1: `pay` frames; more: `pay_batch` frames of that many items
    warmup_s: float = 2.0
    duration_s: float = 10.0
    connections: int = 16
    processes: int = 1
    drain_timeout_s: float = 10.0
    cpus: tuple[int, ...] = ()        # pin the workers to these CPUs (round robin)
    sender: str = "c"                 # open loop: which sender (SENDERS)
    in_flight_max: int = limits.IN_FLIGHT_REQUESTS_MAX   # open loop, C sender: frames in flight per connection

    def check(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if self.sender not in SENDERS:
            raise ValueError(f"sender must be one of {SENDERS}")
        if not 1 <= self.in_flight_max <= limits.IN_FLIGHT_REQUESTS_MAX:
            raise ValueError(f"in_flight_max must be 1..{limits.IN_FLIGHT_REQUESTS_MAX}")
        if self.connections < 1 or not 1 <= self.processes <= self.connections:
            raise ValueError("need at least one connection, and 1..connections processes")
        if self.depth < 1 or self.batch_items < 1 or self.rate_per_s < 1:
            raise ValueError("depth, batch_items and rate must be positive")
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("duration must be positive and warm-up not negative")


@dataclasses.dataclass
class ConnectionPlan:
    index: int
    participant_id: int
    secret: bytes
    items: list[Item]


STREAM_ITEMS_CLOSED_LOOP = 400_000     # closed loop: the rate is not known before the run
STREAM_ITEMS_SIZED_MAX = 4_000_000     # open loop: past this the stream wraps (building costs ~20 us an item)


def items_needed(settings: RunSettings, stream_items: int | None) -> int:
    """The stream's length: `stream_items` when given; else in open loop what the schedule
    sends (+ slack) up to STREAM_ITEMS_SIZED_MAX, so no item is sent twice; else (closed loop)
    STREAM_ITEMS_CLOSED_LOOP.  Never fewer than one frame per connection twice over."""
    if stream_items is None and settings.mode == "open":
        total_s = settings.warmup_s + settings.duration_s
        stream_items = min(int(settings.rate_per_s * total_s * 1.02), STREAM_ITEMS_SIZED_MAX)
    elif stream_items is None:
        stream_items = STREAM_ITEMS_CLOSED_LOOP
    frames_minimum = settings.connections * settings.batch_items * 2
    if settings.mode == "closed":
        frames_minimum = settings.connections * settings.batch_items * (settings.depth + 1)
    return max(stream_items, frames_minimum)


def check_connections(workload: dict, connection_count: int) -> None:
    """Every wallet needs a connection of its own: a connection speaks for one participant."""
    if connection_count < len(workload["wallets"]):
        raise ValueError(f"the workload has {len(workload['wallets'])} wallets: run at least that many connections")


def plan_connections(workload: dict, items: list[Item], connection_count: int) -> list[ConnectionPlan]:
    """Connection c authenticates as wallet c % W and carries that wallet's payments in turn."""
    check_connections(workload, connection_count)
    wallets = workload["wallets"]
    plans = [ConnectionPlan(c, wallets[c % len(wallets)]["participant_id"],
                            wallets[c % len(wallets)]["secret"].encode(), []) for c in range(connection_count)]
    by_wallet = [plans[wallet::len(wallets)] for wallet in range(len(wallets))]
    turns = [0] * len(wallets)
    for item in items:
        candidates = by_wallet[item.wallet]
        candidates[turns[item.wallet] % len(candidates)].items.append(item)
        turns[item.wallet] += 1
    return plans


# ---- one worker process ------------------------------------------------------------

class Worker:
    def __init__(self, settings: RunSettings, plans: list[ConnectionPlan],
                 progress_slot: Callable[[int], None]) -> None:
        self.settings = settings
        self.plans = plans
        self.progress_slot = progress_slot
        self.connections: list[LoadConnection] = []
        self.recorder: Recorder | None = None
        self.end_ns = 0

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.recorder = Recorder(0, 0, interval_for(self.settings.duration_s))
        for plan in self.plans:
            ring = FrameRing(plan.items, self.settings.batch_items)
            _, connection = await loop.create_connection(
                lambda ring=ring, plan=plan: LoadConnection(ring, plan.participant_id, plan.secret, self.recorder),
                self.settings.host, self.settings.port)
            await connection.ready
            self.connections.append(connection)

    async def run(self, start_ns: int) -> dict:
        settings = self.settings
        measure_start_ns = start_ns + int(settings.warmup_s * 1e9)
        self.end_ns = measure_start_ns + int(settings.duration_s * 1e9)
        self.recorder.measure_start_ns, self.recorder.measure_end_ns = measure_start_ns, self.end_ns
        if settings.mode == "open" and settings.sender == "c":
            # Threads without the GIL send and receive; the event loop stays idle meanwhile.
            compiled_open_loop.run(self.connections, self._open_loop_schedules(start_ns), settings, self.recorder,
                                   self.end_ns, self.progress_slot)
        else:
            await self._asyncio_run(start_ns, measure_start_ns)
        for connection in self.connections:
            connection.transport.close()
        return self.recorder.export()

    async def _asyncio_run(self, start_ns: int, measure_start_ns: int) -> None:
        progress = asyncio.get_running_loop().create_task(self._report_progress())
        cpu = asyncio.get_running_loop().create_task(self._measure_cpu(measure_start_ns))
        await _sleep_until(start_ns)
        if self.settings.mode == "closed":
            await self._closed_loop()
        else:
            await self._open_loop(start_ns)
        await self._drain()
        progress.cancel()
        await cpu
        self.progress_slot(self.recorder.completed_total)

    def _open_loop_schedules(self, start_ns: int) -> list[tuple[int, int]]:
        """(first due instant, interval) per connection: each offers its share of this worker's
        share of the rate, in proportion to its items, staggered so the total is even."""
        settings = self.settings
        items_total = sum(len(plan.items) for plan in self.plans) or 1
        worker_rate = settings.rate_per_s * len(self.plans) / settings.connections
        schedules = []
        for plan in self.plans:
            frames_per_s = worker_rate * len(plan.items) / items_total / settings.batch_items
            interval_ns = max(1, int(1e9 / frames_per_s))
            schedules.append((start_ns + plan.index * interval_ns // settings.connections, interval_ns))
        return schedules

    async def _closed_loop(self) -> None:
        depth, end_ns = self.settings.depth, self.end_ns

        def refill(connection: LoadConnection) -> None:
            now_ns = time.monotonic_ns()
            free = depth - connection.in_flight_frames()
            if free > 0 and now_ns < end_ns and not connection.transport.is_closing():
                connection.send(free, now_ns)

        now_ns = time.monotonic_ns()
        for connection in self.connections:
            connection.on_answers = refill
            connection.send(depth, now_ns)
        await _sleep_until(end_ns)

    async def _open_loop(self, start_ns: int) -> None:
        recorder = self.recorder
        schedules = [(connection, first_ns, interval_ns) for connection, (first_ns, interval_ns)
                     in zip(self.connections, self._open_loop_schedules(start_ns))]
        while (now_ns := time.monotonic_ns()) < self.end_ns:
            next_due_ns = self.end_ns
            for connection, first_ns, interval_ns in schedules:
                due = (now_ns - first_ns) // interval_ns + 1 if now_ns >= first_ns else 0
                late = due - connection.sent_frames
                if late > 0 and not connection.transport.is_closing():
                    first_due_ns = first_ns + connection.sent_frames * interval_ns
                    connection.send(late, first_due_ns, interval_ns)
                    if recorder.measured(first_due_ns):
                        recorder.record_send_lag(now_ns - first_due_ns, late)
                next_due_ns = min(next_due_ns, first_ns + connection.sent_frames * interval_ns)
            wait_ns = next_due_ns - time.monotonic_ns()
            # Timers fire at millisecond granularity: sleep only when the next frame is far off.
            await asyncio.sleep((wait_ns - SPIN_THRESHOLD_NS) / 1e9 if wait_ns > SPIN_THRESHOLD_NS else 0)

    async def _drain(self) -> None:
        """Wait for the answers still in flight on open connections, up to the drain timeout;
        whatever stays unanswered (there, or on a connection that was lost) is reported."""
        deadline_ns = time.monotonic_ns() + int(self.settings.drain_timeout_s * 1e9)
        while time.monotonic_ns() < deadline_ns:
            if not any(c.in_flight_frames() for c in self.connections if not c.transport.is_closing()):
                break
            await asyncio.sleep(0.005)
        unanswered = sum(connection.in_flight_frames() for connection in self.connections)
        if unanswered:
            self.recorder.unanswered_frames = unanswered
            self.recorder.errors.append(f"{unanswered} frames unanswered at the end of the drain "
                                        f"({self.settings.drain_timeout_s} s at most)")

    async def _measure_cpu(self, measure_start_ns: int) -> None:
        """This process's CPU seconds in the measured window: the generator's cost per payment,
        which stays true on a shared machine where the wall-clock rate does not."""
        await _sleep_until(measure_start_ns)
        cpu_start_s = time.process_time()
        await _sleep_until(self.end_ns)
        self.recorder.cpu_s = time.process_time() - cpu_start_s

    async def _report_progress(self) -> None:
        while True:
            self.progress_slot(self.recorder.completed_total)
            await asyncio.sleep(PROGRESS_PERIOD_S)


async def _sleep_until(instant_ns: int) -> None:
    wait_ns = instant_ns - time.monotonic_ns()
    if wait_ns > 0:
        await asyncio.sleep(wait_ns / 1e9)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.new_event_loop()


def _worker_main(settings: RunSettings, plans: list[ConnectionPlan], index: int, barrier, start_value,
                 progress, pipe) -> None:
    """Body of one worker process; every failure goes back through `pipe`, never lost."""
    try:
        if settings.cpus:
            os.sched_setaffinity(0, {settings.cpus[index % len(settings.cpus)]})
        loop = _new_loop()
        asyncio.set_event_loop(loop)

        def progress_slot(count: int) -> None:
            progress[index] = count

        worker = Worker(settings, plans, progress_slot)
        loop.run_until_complete(worker.connect())
        # The run allocates no reference cycles; a collector walking the hundreds of thousands of
        # pre-built items would only add pauses to the latencies it measures.
        gc.collect()
        gc.freeze()
        gc.disable()
        barrier.wait(BARRIER_TIMEOUT_S)
        while not start_value.value:
            time.sleep(0.001)
        pipe.send(("ok", loop.run_until_complete(worker.run(start_value.value))))
        loop.close()
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which fails the run
        barrier.abort()
        pipe.send(("error", f"worker {index}: {error!r}\n{traceback.format_exc()}"))


# ---- the parent --------------------------------------------------------------------

class RunFailed(RuntimeError):
    pass


def run(settings: RunSettings, plans: list[ConnectionPlan],
        progress_line: Callable[[float, str, int], None] | None = None) -> list[dict]:
    """Fork the workers, start them together, relay progress, collect their recordings."""
    settings.check()
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(settings.processes + 1)
    start_value = context.RawValue("q", 0)
    progress = context.RawArray("q", settings.processes)
    workers = []
    for index in range(settings.processes):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_worker_main, daemon=True, args=(
            settings, plans[index::settings.processes], index, barrier, start_value, progress, sender))
        process.start()
        sender.close()
        workers.append((process, receiver))
    try:
        barrier.wait(BARRIER_TIMEOUT_S + 5)
    except Exception:
        raise RunFailed(_worker_errors(workers) or "workers did not get ready") from None
    start_ns = time.monotonic_ns() + START_DELAY_NS
    start_value.value = start_ns
    results = _collect(settings, workers, progress, start_ns, progress_line)
    for process, _ in workers:
        process.join(5)
    return results


def _worker_errors(workers) -> str:
    messages = []
    for process, receiver in workers:
        if receiver.poll(5):
            status, payload = receiver.recv()
            if status == "error":
                messages.append(payload)
        process.join(1)
        if process.is_alive():
            process.kill()
    return "\n".join(messages)


def _collect(settings: RunSettings, workers, progress, start_ns: int, progress_line) -> list[dict]:
    results: dict[int, dict] = {}
    deadline_s = time.monotonic() + settings.warmup_s + settings.duration_s + settings.drain_timeout_s + 30
    while len(results) < len(workers):
        for index, (process, receiver) in enumerate(workers):
            if index in results or not receiver.poll(0):
                continue
            status, payload = receiver.recv()
            if status == "error":
                for other, _ in workers:
                    other.kill()
                raise RunFailed(payload)
            results[index] = payload
        if time.monotonic() > deadline_s:
            for process, _ in workers:
                process.kill()
            raise RunFailed("workers did not finish in time")
        if progress_line is not None:
            elapsed_s = (time.monotonic_ns() - start_ns) / 1e9
            phase = "warm-up" if elapsed_s < settings.warmup_s else (
                "measure" if elapsed_s < settings.warmup_s + settings.duration_s else "drain")
            progress_line(elapsed_s, phase, sum(progress))
        time.sleep(0.25 if progress_line is not None else 0.02)
    return [results[index] for index in range(len(workers))]


def progress_printer(stream=sys.stderr) -> Callable[[float, str, int], None]:
    """A live line: elapsed time, phase, answered payments and the rate over the last second."""
    history: list[tuple[float, int]] = []

    def show(elapsed_s: float, phase: str, answered: int) -> None:
        history.append((elapsed_s, answered))
        while len(history) > 1 and history[0][0] < elapsed_s - 1.0:
            history.pop(0)
        (then_s, then_count) = history[0]
        rate = (answered - then_count) / (elapsed_s - then_s) if elapsed_s > then_s else 0.0
        stream.write(f"\r{elapsed_s:6.1f} s  {phase:8s}  {answered:>11,d} answered  {rate:>10,.0f}/s ")
        stream.flush()

    return show
