"""The run's report: the JSON file (the baselines write the same shape), the text summary, compare.

JSON keys shared with bench/baselines (so `switch bench compare` reads both): target,
durability, throughput_per_s, count, by_code (code names), latency_us {p50, p90, p99, p999, max},
duration_s, connections, workload, machine.  throughput_per_s is the ACCEPTED rate: answers other
than BUSY per second (a switch shedding load answers BUSY fast, and a closed loop re-sends at once,
so counting those would reward shedding); answered_per_s counts every answer and busy_share says
how many were BUSY.  The latencies are over every answer, BUSY included.  The generator adds: build_mode, mode, settings,
switch (the switch's own `stats` over the run), send_lag_us (open loop: how late the generator sent, already
inside the latencies), offered_achieved_per_s, bare_fsync_us (e2e fsync runs: bare_fsync.py), timeline
(per interval: payments and latency by send time), histogram (HDR, base64: the plot's
percentile curve), errors and stream_wraps.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
from typing import Any

from core_ext.codes import Code, name_of
from switch.loadgen import switch_stats
from switch.loadgen.recorder import Merged, latency_summary_us
from switch.loadgen.runner import RunSettings

COMPARED_LATENCIES = ("p50", "p90", "p99", "p999", "max")


def build(merged: Merged, settings: RunSettings, workload: dict, target: str, durability: str,
          build_mode: str, interval_s: float) -> dict[str, Any]:
    count = merged.total.get_total_count()
    busy = merged.by_code.get(Code.BUSY, 0)
    timeline = []
    for index in sorted(merged.intervals):
        histogram = merged.intervals[index]
        summary = latency_summary_us(histogram)
        timeline.append({"t_s": round(index * interval_s, 3), "count": histogram.get_total_count(),
                         "p50_us": summary["p50"], "p99_us": summary["p99"], "max_us": summary["max"]})
    return {
        "target": target,
        "durability": durability,
        "build_mode": build_mode,
        "mode": settings.mode,
        "throughput_per_s": round((count - busy) / settings.duration_s, 1),
        "answered_per_s": round(count / settings.duration_s, 1),
        "busy_share": round(busy / count, 4) if count else 0.0,
        "count": count,
        "by_code": {name_of(code): merged.by_code[code] for code in sorted(merged.by_code)},
        "latency_us": latency_summary_us(merged.total) if count else dict.fromkeys(COMPARED_LATENCIES, 0),
        "duration_s": settings.duration_s,
        "connections": settings.connections,
        "settings": dataclasses.asdict(settings),
        "offered_rate_per_s": settings.rate_per_s if settings.mode == "open" else None,
        # Open loop: payments really written in the window, per second -- below the offered rate when
        # sockets blocked or the in-flight limit held sends back.  (The Python sender does not count
        # writes: there, the payments due in the window that it sent at all.)
        "offered_achieved_per_s": round(_payments_written(merged, settings) / settings.duration_s, 1)
                                  if settings.mode == "open" else None,
        "send_lag_us": latency_summary_us(merged.send_lag) if merged.send_lag.get_total_count() else None,
        "workload": {key: workload[key] for key in ("seed", "payers", "merchants", "funding_scale", "mix_per_mille",
                                                    "fee_bps", "rules_sha256")}
                    | {"wallets": len(workload["wallets"]), "ledgers": workload["ledgers"]},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "timeline": timeline,
        "histogram": merged.total.encode().decode("ascii") if count else "",
        "stream_wraps": merged.wraps,
        # Frames never answered are in no percentile: when nonzero the latencies are a lower bound.
        "unanswered_frames": merged.unanswered_frames,
        # The generator's own CPU per payment in the window: 1e6 / this = its one-core ceiling.
        "generator_cpu_s": round(merged.cpu_s, 3),
        "generator_cpu_us_per_payment": round(merged.cpu_s * 1e6 / count, 2) if count else None,
        "errors": merged.errors[:50],
    }


def _payments_written(merged: Merged, settings: RunSettings) -> int:
    if merged.payments_written is not None:
        return merged.payments_written
    return merged.send_lag.get_total_count() * settings.batch_items


def summary_text(report: dict) -> str:
    latency = report["latency_us"]
    lines = [
        f"target {report['target']}  durability {report['durability']}  build {report.get('build_mode', '?')}  "
        f"mode {report.get('mode', '?')}  connections {report['connections']}",
        f"throughput {report['throughput_per_s']:,.0f} payments/s accepted  ({report['count']:,d} answered in "
        f"{report['duration_s']} s, {report.get('busy_share', 0):.1%} of them BUSY)",
        "latency us  " + "  ".join(f"{name} {latency[name]:,d}" for name in COMPARED_LATENCIES),
    ]
    switch = report.get("switch")
    if switch and switch.get("batch_us") and switch["batch_us"]["count"]:
        batch_us, commit_us = switch["batch_us"], switch.get("commit_us") or {"sum": 0, "count": 1}
        lines.append(f"switch says  {switch['batches']:,d} batches, {switch['payments_answered']:,d} payments "
                     f"(warm-up and drain included), mean batch {batch_us['sum'] // batch_us['count']:,d} us, "
                     f"mean commit {commit_us['sum'] // max(commit_us['count'], 1):,d} us")
        wait = [switch_stats.bucket_percentile(switch.get("wait_us"), fraction) for fraction in (0.5, 0.99)]
        if wait[0] is not None:
            # The switch's own wait per batch, arrival of its oldest request to its answers written:
            # beside the client's latency, it says whether the time went inside the switch or not.
            lines.append("switch wait per batch us (bucket upper bounds)  "
                         f"p50 <= {wait[0]:,d}  p99 <= {'?' if wait[1] is None else format(wait[1], ',d')}")
    if report.get("send_lag_us"):
        lag = report["send_lag_us"]
        lines.append(f"send lag us (inside the latency)  p50 {lag['p50']:,d}  p99 {lag['p99']:,d}  max {lag['max']:,d}"
                     f"  (sender {report.get('settings', {}).get('sender', '?')})")
    if report.get("offered_achieved_per_s") is not None:
        lines.append(f"offered {report['offered_rate_per_s']:,d}/s, sent {report['offered_achieved_per_s']:,.0f}/s")
    bare = report.get("bare_fsync_us")
    if bare:
        commit = f", the switch wrote {bare['commit_bytes']:,d} bytes per batch" if bare.get("commit_bytes") else ""
        lines.append(f"bare fsync us ({bare['bytes']:,d} bytes{commit})  p50 {bare['p50']:,d}  p99 {bare['p99']:,d}  "
                     f"switch p99 - bare p99 {bare['switch_p99_minus_bare_p99_us']:,d}")
    lines.append("by code     " + "  ".join(f"{name} {count:,d}" for name, count in report["by_code"].items()))
    if report.get("generator_cpu_us_per_payment") and report.get("mode") == "open":
        # The open loop polls between sends to be on time: its CPU is not a per-payment cost.
        lines.append(f"generator CPU {report['generator_cpu_s']:.2f} s in the window (polling included)")
    elif report.get("generator_cpu_us_per_payment"):
        cost_us = report["generator_cpu_us_per_payment"]
        lines.append(f"generator CPU {cost_us:.2f} us/payment (one-core ceiling ~{1e6 / cost_us:,.0f}/s)")
    if report.get("unanswered_frames"):
        lines.append(f"WARNING: {report['unanswered_frames']:,d} frames never answered: "
                     "the latencies are a lower bound")
    if report.get("stream_wraps"):
        lines.append(f"WARNING: the stream wrapped {report['stream_wraps']} times: raise --stream-items")
    for error in report.get("errors", [])[:5]:
        lines.append(f"error: {error}")
    return "\n".join(lines)


def write(report: dict, path: str) -> None:
    with open(path, "w") as file:
        json.dump(report, file, indent=1)
        file.write("\n")


def load(path: str) -> dict:
    with open(path) as file:
        report = json.load(file)
    missing = [key for key in ("throughput_per_s", "latency_us", "count", "by_code") if key not in report]
    if missing:
        raise ValueError(f"{path}: not a load report (missing {', '.join(missing)})")
    return report


def compare_text(first: dict, second: dict, first_name: str = "A", second_name: str = "B") -> str:
    """B relative to A: throughput ratio (higher is better for B) and latency ratios (lower is)."""
    def ratio(b: float, a: float) -> str:
        return f"{b / a:.2f}x" if a else "n/a"

    rows = [("", first_name, second_name, "B/A")]
    rows.append(("target", str(first.get("target", "?")), str(second.get("target", "?")), ""))
    rows.append(("durability", str(first.get("durability", "?")), str(second.get("durability", "?")), ""))
    rows.append(("throughput/s", f"{first['throughput_per_s']:,.0f}", f"{second['throughput_per_s']:,.0f}",
                 ratio(second["throughput_per_s"], first["throughput_per_s"])))
    for name in COMPARED_LATENCIES:
        a, b = first["latency_us"].get(name, 0), second["latency_us"].get(name, 0)
        rows.append((f"latency {name} us", f"{a:,d}", f"{b:,d}", ratio(b, a)))
    for name, key in (("bare fsync p99 us", "p99"), ("p99 - bare p99 us", "switch_p99_minus_bare_p99_us")):
        a, b = (first.get("bare_fsync_us") or {}).get(key), (second.get("bare_fsync_us") or {}).get(key)
        if a is not None or b is not None:
            rows.append((name, "-" if a is None else f"{a:,d}", "-" if b is None else f"{b:,d}",
                         ratio(b, a) if a and b is not None else ""))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    return "\n".join("  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                               for column, (cell, width) in enumerate(zip(row, widths))) for row in rows)
