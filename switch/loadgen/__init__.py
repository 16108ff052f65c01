"""The load generator behind `switch bench`: load a running switch the way wallets would.

    model.py      the shared payment model (payers, Zipf-skewed merchants, amounts, retries),
                  draw for draw the PostgreSQL baseline's
    fixture.py    the switch config (switch.toml) and workload file (workload.json) for N payers / M merchants
    stream.py     the QR layer: each base payment as an encoded `pay` item of some kind
    frames.py     frames pre-encoded per connection; sending is slicing
    connection.py one connection: handshake, sends, answers read by a streaming Unpacker
    runner.py     connections over processes; closed and open loop; warm-up, measure, drain
    compiled_open_loop.py  the open loop on the compiled sender (core_ext/_loadsend.pyx), the default
    bare_fsync.py the disk's own write+fdatasync time beside an fsync run (e2e)
    recorder.py   HDR histograms per interval, codes; merged across processes
    report.py     the JSON report, the summary, compare
    plot.py       latency over time and the percentile curve (matplotlib)
    echo.py       a trivial peer to measure the generator's own ceiling
    e2e.py        the one-command run: fixture, `switch serve` subprocess, load, report
    switch_stats.py the switch's own `stats` before and after: durability, build, batches

`run_load` is the whole run for callers (the CLI, bench/load, tests).
"""
from __future__ import annotations

from typing import Callable

from switch.loadgen import recorder, report, runner, switch_stats
from switch.loadgen.runner import RunSettings
from switch.loadgen.stream import build_items

__all__ = ["RunSettings", "run_load"]


def run_load(workload: dict, settings: RunSettings, *, stream_items: int | None = None,
             target: str = "switch", durability: str = "unknown", build_mode: str = "unknown",
             progress: Callable[[float, str, int], None] | None = None, cache_dir: str | None = None) -> dict:
    """Build the stream (or read it from `cache_dir`), run it against settings.host:port, and
    return the report (a dict).  `stream_items` None: sized to the run (runner.items_needed)."""
    settings.check()
    runner.check_connections(workload, settings.connections)
    items = build_items(workload, runner.items_needed(settings, stream_items), cache_dir)
    plans = runner.plan_connections(workload, items, settings.connections)
    stats_before = switch_stats.fetch(settings.host, settings.port, workload.get("operator"))
    exports = runner.run(settings, plans, progress)
    stats_after = switch_stats.fetch(settings.host, settings.port, workload.get("operator")) if stats_before else None
    merged = recorder.merge(exports)
    interval_s = recorder.interval_for(settings.duration_s)
    # What the switch reports about itself wins over what the caller said it was.
    durability = (stats_after or {}).get("durability") or durability
    build_mode = switch_stats.build_mode(stats_after) or build_mode
    built = report.build(merged, settings, workload, target, durability, build_mode, interval_s)
    built["switch"] = switch_stats.summarize(stats_before, stats_after)
    return built
