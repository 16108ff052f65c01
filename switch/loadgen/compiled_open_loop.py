"""The open loop on the compiled sender (core_ext/_loadsend.pyx): `--sender c`, the default.

The worker has connected and authenticated its connections with asyncio as for any run; here
their sockets are handed (as duplicated file descriptors) to `OpenLoop`, whose sender and
receiver threads run without the GIL while this thread only relays progress and measures the
process's CPU time.  What the C side recorded is then merged into the worker's HDR Recorder,
so the report is built exactly as for the Python sender.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable

from switch.loadgen.recorder import Recorder

PROGRESS_PERIOD_S = 0.1
SPIN_NS = 30_000      # the sender sleeps until this long before a frame is due, then spins


def run(connections: list, schedules: list[tuple[int, int]], settings, recorder: Recorder, end_ns: int,
        progress_slot: Callable[[int], None]) -> None:
    """Run the open loop until `end_ns`, then drain; `schedules` is (first due ns, interval ns)
    per connection, in the order of `connections` (LoadConnection objects, authenticated)."""
    from core_ext._loadsend import OpenLoop

    descriptors = []
    try:
        specs = []
        for connection, (first_due_ns, interval_ns) in zip(connections, schedules):
            connection.transport.pause_reading()   # the event loop must not read the answers too
            descriptors.append(os.dup(connection.transport.get_extra_info("socket").fileno()))
            ring = connection.ring
            specs.append((descriptors[-1], bytes(ring.buffer), ring.frame_ends, ring.id_offsets,
                          first_due_ns, interval_ns))
        open_loop = OpenLoop(specs, settings.batch_items, recorder.measure_start_ns, recorder.measure_end_ns,
                             recorder.interval_ns, int(settings.drain_timeout_s * 1e9), settings.in_flight_max,
                             SPIN_NS)
        _run_threads(open_loop, recorder, end_ns, progress_slot)
    finally:
        for descriptor in descriptors:
            os.close(descriptor)
    _merge(open_loop.export(), recorder, settings.drain_timeout_s, settings.batch_items)


def _run_threads(open_loop, recorder: Recorder, end_ns: int, progress_slot: Callable[[int], None]) -> None:
    failures: list[BaseException] = []

    def guarded(body: Callable[[], None]) -> Callable[[], None]:
        def thread_body() -> None:
            try:
                body()
            except BaseException as error:  # noqa: BLE001 - re-raised on the worker's thread below
                failures.append(error)
                open_loop.stop()
        return thread_body

    receiver = threading.Thread(target=guarded(open_loop.receive), name="loadsend-receive")
    sender = threading.Thread(target=guarded(lambda: open_loop.send(end_ns)), name="loadsend-send")
    receiver.start()
    sender.start()
    cpu_start_s = None
    while receiver.is_alive() or sender.is_alive():
        progress_slot(open_loop.completed_payments())
        now_ns = time.monotonic_ns()
        if cpu_start_s is None and now_ns >= recorder.measure_start_ns:
            cpu_start_s = time.process_time()
        elif cpu_start_s is not None and not recorder.cpu_s and now_ns >= recorder.measure_end_ns:
            recorder.cpu_s = time.process_time() - cpu_start_s
        receiver.join(PROGRESS_PERIOD_S)
    sender.join()
    if cpu_start_s is not None and not recorder.cpu_s:     # the threads ended before a poll saw the end
        recorder.cpu_s = time.process_time() - cpu_start_s
    progress_slot(open_loop.completed_payments())
    if failures:
        raise failures[0]


def _merge(export: dict, recorder: Recorder, drain_timeout_s: float, items_per_frame: int) -> None:
    recorder.add_values_us(None, export["total"])
    for index, pairs in export["intervals"].items():
        recorder.add_values_us(index, pairs)
    for value_us, count in export["send_lag"]:
        recorder.record_send_lag(value_us * 1000, count)
    recorder.by_code.update(export["by_code"])
    recorder.errors += export["errors"]
    recorder.wraps += export["wraps"]
    recorder.unanswered_frames = export["unanswered_frames"]
    recorder.payments_written = export["frames_written_in_window"] * items_per_frame
    if export["unsent_frames"]:
        recorder.errors.append(f"{export['unsent_frames']} frames due in the window were never written: the in-flight "
                               f"limit or a blocked socket held them back past half the drain ({drain_timeout_s / 2} s)")
    if export["unanswered_frames"]:
        recorder.errors.append(f"{export['unanswered_frames']} frames unanswered at the end of the drain "
                               f"({drain_timeout_s} s at most) or on a lost connection")
