"""What the loaded switch says about itself: its durability and build, and what it did in the run.

The generator asks the switch's `stats` operation (docs/PROTOCOL.md 4.8, operator role) before
and after the run, as the workload's operator participant.  The report then states the
durability and build mode the switch *reports*, not what the command line claimed, and adds the
switch's own view of the run: batches executed and payments answered in between, and how long
its batches and commits took.  A switch that cannot answer (an older one, the echo peer, a
workload without an operator) leaves the command-line labels in place.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger("switch.loadgen")

STATS_TIMEOUT_S = 5.0


def fetch(host: str, port: int, operator: dict | None) -> dict | None:
    """The switch's `stats` map, or None when it cannot be had."""
    if not operator:
        return None
    from switch.client import AsyncClient, SwitchError

    async def ask() -> dict:
        async with AsyncClient(host, port, operator["participant_id"], operator["secret"],
                               reconnect_attempts=0) as client:
            return await client.stats()

    with contextlib.suppress(OSError, SwitchError, asyncio.TimeoutError, ValueError):
        stats = asyncio.run(asyncio.wait_for(ask(), STATS_TIMEOUT_S))
        # A peer that is not a switch (the echo peer) may answer anything at all.
        if isinstance(stats, dict) and isinstance(stats.get("durability"), str):
            return stats
    log.warning("the switch at %s:%d did not answer `stats`; using the command line's labels", host, port)
    return None


def summarize(before: dict | None, after: dict | None) -> dict[str, Any] | None:
    """The switch's view of the run: the change of its counters between the two answers."""
    if not before or not after:
        return None
    payments_before = dict((code, count) for code, count in before.get("payments", []))
    payments = sum(count - payments_before.get(code, 0) for code, count in after.get("payments", []))
    return {
        "durability": after.get("durability"),
        "build": after.get("build"),
        "batches": after.get("batches", 0) - before.get("batches", 0),
        "payments_answered": payments,
        "batch_us": _histogram_delta(before.get("batch_us"), after.get("batch_us")),
        "commit_us": _histogram_delta(before.get("commit_us"), after.get("commit_us")),
        "wait_us": _histogram_delta(before.get("wait_us"), after.get("wait_us")),
    }


def bucket_percentile(histogram: dict | None, fraction: float) -> int | None:
    """The upper bound of the bucket holding the `fraction` (0..1) quantile of a `stats`
    histogram (None past its last bound, or when empty): an upper estimate of that percentile."""
    if not histogram or not histogram.get("count"):
        return None
    wanted, seen = fraction * histogram["count"], 0
    for bound, count in zip(histogram["bounds"], histogram["counts"]):
        seen += count
        if seen >= wanted:
            return bound
    return None


def _histogram_delta(before: dict | None, after: dict | None) -> dict | None:
    """The observations made between two answers (histograms are cumulative since start)."""
    if not after:
        return None
    if not before or before.get("bounds") != after.get("bounds"):
        return after
    return {"bounds": after["bounds"],
            "counts": [now - then for now, then in zip(after["counts"], before["counts"])],
            "sum": after["sum"] - before["sum"], "count": after["count"] - before["count"]}


def build_mode(stats: dict | None) -> str | None:
    build = (stats or {}).get("build")
    return f"{build.get('implementation')}/{build.get('mode')}" if isinstance(build, dict) else None
