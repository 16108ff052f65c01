"""Operator metrics: what the running switch did, for the `stats` operation and Prometheus.

`OpsStats` is the one source of truth.  The server and the engine update it with
plain integer counters and fixed-bucket histograms (no locks, no per-item
library calls on the hot path); the `stats` protocol operation returns its
`snapshot()`; and `MetricsExporter` serves the same numbers to Prometheus on a
separate HTTP port, converted at scrape time.  A scrape therefore costs the
switch nothing between scrapes.

Metric names (docs/OPERATIONS.md says what each means and which alerts to set):

    switch_payments_total{code}              payments decided by the pipeline, by result code name
    switch_requests_total{op,code}           requests answered, by operation and whole-request code
    switch_batch_seconds                     histogram: engine time of one batch (execute + commit)
    switch_commit_seconds                    histogram: the LMDB write transaction of one batch
    switch_request_wait_seconds              histogram: per batch, its oldest request's time in the switch
    switch_batch_requests / _events          histograms: requests and ledger events per batch
    switch_connections / _max                open connections, and the limit
    switch_queue_events                      ledger events waiting for the next batch
    switch_rule_evaluations_total{rule}      per rule: evaluations, enforced hits, shadow hits
    switch_rule_hits_total{rule}
    switch_rule_shadow_hits_total{rule}
    switch_rule_time_samples_total{rule}     per rule: evaluations timed (one in 64), and the
    switch_rule_time_sampled_seconds_total{rule}   time they took
    switch_reviews_pending                   payments held for review, not yet resolved
    switch_pipeline_total{counter}           the payment pipeline's own counters and stage timers
    switch_uptime_seconds, switch_build_info
"""
from __future__ import annotations

import bisect
import collections
import logging
import threading
import time
from typing import Any, Callable, Iterable

from core_ext import limits
from core_ext.codes import Code, name_of
from switch import protocol

log = logging.getLogger("switch.metrics")

NS_PER_SECOND = 1_000_000_000
# Operation names counted as themselves: the protocol's, the fast path's ("raw_pay"), "auth" (a second
# handshake) and "" (a frame whose request could not be read).
_KNOWN_OPS = frozenset((*protocol.OPERATIONS, "raw_pay", "auth", ""))
US_PER_SECOND = 1_000_000
# Upper bounds of the histogram buckets; an implicit +Inf bucket follows.
# Microseconds: a batch commits in tens of us (os durability) to milliseconds (fsync).
DURATION_US_BOUNDS = (50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000)
# Requests or events per batch, up to server_batch_events_max (8190).
BATCH_SIZE_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8190)


class Histogram:
    """Counts per fixed bucket; integer observations (microseconds, items)."""

    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds: Iterable[int]) -> None:
        self.bounds = tuple(bounds)
        assert list(self.bounds) == sorted(set(self.bounds)), "bounds must be strictly increasing"
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0
        self.count = 0

    def observe(self, value: int) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le semantics).
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def snapshot(self) -> dict:
        """{"bounds": [...], "counts": [...per bucket, +Inf last], "sum": n, "count": n} (not cumulative)."""
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": self.total, "count": self.count}


class OpsStats:
    """What the switch did since it started; updated by the server (event loop) and the
    engine (commit thread), read by the stats operation and by a Prometheus scrape."""

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.started_ns = clock_ns()
        self.clock_ns = clock_ns
        self.batches = 0
        self.requests = collections.Counter()          # (op, code) -> requests
        self.batch_requests = Histogram(BATCH_SIZE_BOUNDS)
        self.batch_events = Histogram(BATCH_SIZE_BOUNDS)
        self.batch_us = Histogram(DURATION_US_BOUNDS)
        self.commit_us = Histogram(DURATION_US_BOUNDS)
        self.wait_us = Histogram(DURATION_US_BOUNDS)
        # Set by the server that owns the connections (the engine does not know them).
        self.connections: Callable[[], int] = lambda: 0
        self.connections_max = 0
        self.queue_events: Callable[[], int] = lambda: 0

    def uptime_seconds(self) -> float:
        return (self.clock_ns() - self.started_ns) / NS_PER_SECOND

    def observe_batch(self, batch: list, outcomes: list, batch_ns: int, wait_ns: int | None = None) -> None:
        """One batch answered: its size, its engine time, how long its oldest request was in the
        switch (arrival to answer written: the batch's worst latency), and each request's code.
        `batch` is the server's [(connection, request), ...].  Payments are counted per payment
        by the pipeline that decides them (its stats "codes"), not here: its fast path answers
        with frames it encoded itself.  Runs on the event loop after the answers are written."""
        self.batches += 1
        self.batch_requests.observe(len(batch))
        self.batch_us.observe(batch_ns // 1000)
        if wait_ns is not None:
            self.wait_us.observe(wait_ns // 1000)
        events = 0
        for _, request in batch:
            events += request.events
        # outcome[0] is the request-level code of an Outcome and of a pipeline-encoded answer alike.
        # An operation name the protocol does not define is the client's own text: counted as
        # "other", so a client cannot grow this table (or a scrape's label set) without bound.
        known = _KNOWN_OPS
        requests = self.requests
        for (_, request), outcome in zip(batch, outcomes):
            if request.op == "raw_run":         # a FrameRun: its frames counted as the raw_pay requests they are
                codes = outcome[2] if len(outcome) > 2 else {outcome[0]: request.count}
                for code, count in codes.items():
                    requests[("raw_pay", code)] += count
            else:
                requests[(request.op if request.op in known else "other", outcome[0])] += 1
        self.batch_events.observe(events)

    def observe_shed(self, op: str, frames: int = 1) -> None:
        """A request answered BUSY by the server without entering a batch (a FrameRun: its frames,
        counted as the raw_pay requests they are, as observe_batch does)."""
        if op == "raw_run":
            op = "raw_pay"
        self.requests[(op if op in _KNOWN_OPS else "other", Code.BUSY)] += frames

    def timed_commit(self, commit: Callable[[], Any]) -> Callable[[], Any]:
        """Wrap a storage commit so every call's duration lands in commit_us (also when it fails)."""
        def commit_and_time(*args):
            start_ns = time.perf_counter_ns()
            try:
                return commit(*args)
            finally:
                self.commit_us.observe((time.perf_counter_ns() - start_ns) // 1000)
        return commit_and_time

    def snapshot(self) -> dict:
        """The stats operation's view (plain msgpack-able types; codes by number)."""
        return {
            "uptime_ns": self.clock_ns() - self.started_ns,
            "batches": self.batches,
            "connections": self.connections(),
            "connections_max": self.connections_max,
            "queue_events": self.queue_events(),
            # Arrays, not maps: the protocol's maps have str keys and at most 32 entries.
            "requests": [[op, int(code), count] for (op, code), count in sorted(self.requests.items())],
            "batch_requests": self.batch_requests.snapshot(),
            "batch_events": self.batch_events.snapshot(),
            "batch_us": self.batch_us.snapshot(),
            "commit_us": self.commit_us.snapshot(),
            "wait_us": self.wait_us.snapshot(),
        }


# ---- Prometheus -----------------------------------------------------------------------

def _histogram_family(name: str, documentation: str, histogram: Histogram, divisor: int = 1):
    """Prometheus wants seconds: integer microseconds are divided (not multiplied by 1e-6, which
    would print bucket bounds like 9.999999999999999e-05)."""
    from prometheus_client.core import HistogramMetricFamily

    snapshot = histogram.snapshot()    # one copy: buckets and sum agree within a scrape
    cumulative, buckets = 0, []
    for bound, count in zip(snapshot["bounds"], snapshot["counts"]):
        cumulative += count
        buckets.append((repr(bound / divisor), cumulative))
    buckets.append(("+Inf", cumulative + snapshot["counts"][-1]))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=snapshot["sum"] / divisor)


class SwitchCollector:
    """A prometheus_client collector reading OpsStats and the engine at scrape time."""

    def __init__(self, stats: OpsStats, engine_stats: Callable[[], dict] | None = None) -> None:
        self.stats = stats
        self.engine_stats = engine_stats or (lambda: {})

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        stats = self.stats
        requests = CounterMetricFamily("switch_requests", "Requests answered, by operation and code.",
                                       labels=["op", "code"])
        for (op, code), count in sorted(dict(stats.requests).items()):
            requests.add_metric([op, name_of(code)], count)
        yield requests
        yield CounterMetricFamily("switch_batches", "Batches executed and committed.", value=stats.batches)
        yield _histogram_family("switch_batch_seconds", "Engine time of one batch: execute and commit.",
                                stats.batch_us, US_PER_SECOND)
        yield _histogram_family("switch_commit_seconds", "The storage write transaction of one batch.",
                                stats.commit_us, US_PER_SECOND)
        yield _histogram_family("switch_request_wait_seconds",
                                "Per batch: arrival of its oldest request to its answers written.",
                                stats.wait_us, US_PER_SECOND)
        yield _histogram_family("switch_batch_requests", "Requests per batch.", stats.batch_requests)
        yield _histogram_family("switch_batch_events", "Ledger events per batch.", stats.batch_events)
        yield GaugeMetricFamily("switch_connections", "Open client connections.", value=stats.connections())
        yield GaugeMetricFamily("switch_connections_max", "The connections limit.", value=stats.connections_max)
        yield GaugeMetricFamily("switch_queue_events", "Ledger events waiting for the next batch.",
                                value=stats.queue_events())
        yield GaugeMetricFamily("switch_uptime_seconds", "Seconds since the switch started.",
                                value=stats.uptime_seconds())
        yield from self._engine_families(InfoMetricFamily, CounterMetricFamily, GaugeMetricFamily)

    def _engine_families(self, InfoMetricFamily, CounterMetricFamily, GaugeMetricFamily):
        try:
            engine = self.engine_stats()
        except Exception:       # a scrape must never take the switch down; the next one retries
            log.exception("engine statistics unavailable for this scrape")
            return
        payments = CounterMetricFamily("switch_payments", "Payments decided, by result code.", labels=["code"])
        for code, count in engine.get("payments") or ():
            payments.add_metric([name_of(code)], count)
        yield payments
        build = engine.get("build", {})
        yield InfoMetricFamily("switch_build", "Core implementation, build mode, durability, rule set.", value={
            "implementation": str(build.get("implementation", "")), "mode": str(build.get("mode", "")),
            "durability": str(engine.get("durability", "")), "ruleset_hash": str(engine.get("ruleset_hash") or "")})
        families = {key: CounterMetricFamily(f"switch_rule_{key}", f"Per rule: {text}.", labels=["rule"])
                    for key, text in (("evaluations", "payments evaluated"), ("hits", "enforced matches"),
                                      ("shadow_hits", "matches in shadow mode"))}
        # Sampled time as two monotonic counters (an estimate of the total could go down):
        # rate(..._time_sampled_seconds_total) / rate(..._time_samples_total) is a rule's mean time.
        samples = CounterMetricFamily("switch_rule_time_samples", "Per rule: evaluations timed (one in "
                                      f"{limits.RULES_TIME_SAMPLE_INTERVAL_EVALUATIONS}).", labels=["rule"])
        sampled = CounterMetricFamily("switch_rule_time_sampled_seconds", "Per rule: time spent in the timed "
                                      "evaluations.", labels=["rule"])
        for rule_id, evaluations, hits, shadow_hits, *timing in engine.get("rules") or ():
            for key, value in (("evaluations", evaluations), ("hits", hits), ("shadow_hits", shadow_hits)):
                families[key].add_metric([rule_id], value)
            if timing:
                samples.add_metric([rule_id], timing[0])
                sampled.add_metric([rule_id], timing[1] / NS_PER_SECOND)
        yield from families.values()
        yield samples
        yield sampled
        yield GaugeMetricFamily("switch_reviews_pending", "Payments held for review, not yet resolved.",
                                value=engine.get("reviews_pending", 0))
        pipeline = CounterMetricFamily("switch_pipeline", "Payment pipeline counters since start: calls, payments, "
                                       "and cumulative nanoseconds per stage (names ending in _ns).",
                                       labels=["counter"])
        for name, value in engine.get("pipeline") or ():
            if isinstance(value, int):
                pipeline.add_metric([name], value)
        yield pipeline


class MetricsExporter:
    """Serves /metrics on its own HTTP port from a thread; its own registry, so several
    switches (tests) in one process never share or collide."""

    def __init__(self, stats: OpsStats, engine_stats: Callable[[], dict] | None = None) -> None:
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SwitchCollector(stats, engine_stats))
        self._httpd = None
        self._thread: threading.Thread | None = None

    def start(self, host: str, port: int) -> tuple[str, int]:
        from prometheus_client import start_http_server

        self._httpd, self._thread = start_http_server(port, addr=host, registry=self.registry)
        address = self._httpd.server_address
        log.info("metrics on http://%s:%d/metrics", address[0], address[1])
        return address[0], address[1]

    def render(self) -> bytes:
        """The exposition text, as a scrape would get it (for tests and `switch stats --prometheus`)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None
