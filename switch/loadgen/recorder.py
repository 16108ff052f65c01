"""What one generator process measured: HDR histograms of latency, codes, counts.

Latency is recorded in microseconds into an HDR histogram per interval of the run (by the
request's send time -- the intended one in open loop), so the report can plot latency over time
and merge the intervals into the whole.  Processes send their `Recording` to the parent as
plain data (histograms in HDR's compressed encoding) and the parent merges them.
"""
from __future__ import annotations

import collections
import dataclasses

from hdrh.histogram import HdrHistogram

# 1 us to one hour at 3 significant digits: ~0.1% resolution at any latency.
LATENCY_US_MIN = 1
LATENCY_US_MAX = 3_600_000_000
LATENCY_SIGNIFICANT_DIGITS = 3
INTERVAL_S_MAX = 1.0
INTERVAL_S_MIN = 0.1
INTERVALS_PER_RUN = 20


def interval_for(duration_s: float) -> float:
    """About 20 points over time for a short run, one a second for a long one."""
    return min(INTERVAL_S_MAX, max(INTERVAL_S_MIN, duration_s / INTERVALS_PER_RUN))
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LATENCY_US_MIN, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS)


class Recorder:
    """Per-process recording; `record` is on the hot path, so it does as little as it can."""

    def __init__(self, measure_start_ns: int, measure_end_ns: int, interval_s: float = INTERVAL_S_MAX) -> None:
        self.measure_start_ns = measure_start_ns
        self.measure_end_ns = measure_end_ns
        self.interval_ns = int(interval_s * 1e9)
        self.intervals: dict[int, HdrHistogram] = {}
        self.send_lag = new_histogram()
        self.by_code: collections.Counter = collections.Counter()
        self.completed_total = 0      # every answered payment, warm-up included (progress line)
        self.errors: list[str] = []
        self.wraps = 0
        self.cpu_s = 0.0              # CPU time of this process in the measured window
        self.unanswered_frames = 0    # still in flight when the drain gave up
        # The whole window, when recorded apart from the intervals (the compiled sender keeps it
        # at finer resolution than its per-interval histograms); None: the intervals merged.
        self.total: HdrHistogram | None = None
        self.payments_written = None  # open loop, C sender: payments written in the window (None: not counted)

    def measured(self, sent_ns: int) -> bool:
        return self.measure_start_ns <= sent_ns < self.measure_end_ns

    def record(self, sent_ns: int, latency_ns: int, payment_count: int) -> None:
        """`payment_count` payments sent at `sent_ns` answered after `latency_ns`."""
        index = (sent_ns - self.measure_start_ns) // self.interval_ns
        histogram = self.intervals.get(index)
        if histogram is None:
            histogram = self.intervals[index] = new_histogram()
        histogram.record_value(max(LATENCY_US_MIN, min(latency_ns // 1000, LATENCY_US_MAX)), payment_count)

    def record_send_lag(self, lag_ns: int, frame_count: int) -> None:
        self.send_lag.record_value(max(LATENCY_US_MIN, min(lag_ns // 1000, LATENCY_US_MAX)), frame_count)

    def add_values_us(self, index: int | None, pairs: list[tuple[int, int]]) -> None:
        """(latency_us, payments) pairs recorded elsewhere, into interval `index` (None: the total)."""
        if index is None:
            if self.total is None:
                self.total = new_histogram()
            histogram = self.total
        else:
            if index not in self.intervals:
                self.intervals[index] = new_histogram()
            histogram = self.intervals[index]
        for value_us, count in pairs:
            histogram.record_value(max(LATENCY_US_MIN, min(value_us, LATENCY_US_MAX)), count)

    def export(self) -> dict:
        return {
            "intervals": {index: histogram.encode() for index, histogram in self.intervals.items()},
            "send_lag": self.send_lag.encode(),
            "total": self.total.encode() if self.total is not None else None,
            "by_code": dict(self.by_code), "errors": list(self.errors), "wraps": self.wraps,
            "cpu_s": self.cpu_s, "unanswered_frames": self.unanswered_frames,
            "payments_written": self.payments_written,
        }


@dataclasses.dataclass
class Merged:
    """Recordings of every process, merged."""
    intervals: dict[int, HdrHistogram]
    total: HdrHistogram
    send_lag: HdrHistogram
    by_code: collections.Counter
    errors: list[str]
    wraps: int
    cpu_s: float                      # generator CPU seconds in the measured window, all processes
    unanswered_frames: int
    payments_written: int | None      # open loop, C sender: payments written in the window, all processes


def merge(exports: list[dict]) -> Merged:
    intervals: dict[int, HdrHistogram] = {}
    total, send_lag = new_histogram(), new_histogram()
    by_code: collections.Counter = collections.Counter()
    errors, wraps, cpu_s, unanswered_frames, payments_written = [], 0, 0.0, 0, None
    for export in exports:
        for index, encoded in export["intervals"].items():
            histogram = HdrHistogram.decode(encoded)
            intervals.setdefault(int(index), new_histogram()).add(histogram)
            if export.get("total") is None:
                total.add(histogram)
        if export.get("total") is not None:
            total.add(HdrHistogram.decode(export["total"]))
        send_lag.add(HdrHistogram.decode(export["send_lag"]))
        by_code.update({int(code): count for code, count in export["by_code"].items()})
        errors += export["errors"]
        wraps += export["wraps"]
        cpu_s += export["cpu_s"]
        unanswered_frames += export["unanswered_frames"]
        if export.get("payments_written") is not None:
            payments_written = (payments_written or 0) + export["payments_written"]
    return Merged(intervals, total, send_lag, by_code, errors, wraps, cpu_s, unanswered_frames, payments_written)


def latency_summary_us(histogram: HdrHistogram) -> dict[str, int]:
    summary = {name: int(histogram.get_value_at_percentile(percentile)) for name, percentile in PERCENTILES}
    summary["max"] = int(histogram.get_max_value())
    return summary
