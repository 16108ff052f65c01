"""`--plot FILE.png`: latency over the run and the percentile curve, from a report.

Left: p50, p99 and max latency per interval by send time, with the payments answered per
interval on a second axis (a stall shows as a dip in one and a spike in the other).  Right: the
HDR percentile curve, latency against 1/(1-percentile) on a log axis, so the tail (99.9%,
99.99%) gets as much room as the median.
"""
from __future__ import annotations

from hdrh.histogram import HdrHistogram

# Percentiles of the curve: dense up to the tail, like HDR's own percentile distribution.
_CURVE_PERCENTILES = (0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0)


def percentile_curve(report: dict) -> list[tuple[float, int]]:
    """(percentile, latency_us) points of the report's HDR histogram."""
    if not report.get("histogram"):
        return []
    histogram = HdrHistogram.decode(report["histogram"].encode("ascii"))
    return [(percentile, int(histogram.get_value_at_percentile(percentile))) for percentile in _CURVE_PERCENTILES]


def write_plot(report: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    figure, (over_time, curve) = plt.subplots(1, 2, figsize=(13, 4.8))
    title = (f"{report.get('target', '?')} {report.get('mode', '?')} loop, durability {report.get('durability', '?')}, "
             f"{report.get('throughput_per_s', 0):,.0f} payments/s")
    figure.suptitle(title)
    _plot_over_time(over_time, report)
    _plot_curve(curve, report)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_over_time(axes, report: dict) -> None:
    timeline = report.get("timeline", [])
    seconds = [point["t_s"] for point in timeline]
    for key, label in (("p50_us", "p50"), ("p99_us", "p99"), ("max_us", "max")):
        axes.plot(seconds, [point[key] / 1000 for point in timeline], marker=".", label=label)
    axes.set_xlabel("send time in the measured window (s)")
    axes.set_ylabel("latency (ms)")
    axes.set_yscale("log")
    axes.grid(True, which="both", alpha=0.3)
    counts = axes.twinx()
    interval_s = seconds[1] - seconds[0] if len(seconds) > 1 else 1.0
    counts.bar(seconds, [point["count"] for point in timeline], width=0.8 * interval_s, alpha=0.15, color="gray",
               align="edge")
    counts.set_ylabel("payments answered per interval")
    axes.legend(loc="upper left")
    axes.set_title("latency over time")


def _plot_curve(axes, report: dict) -> None:
    points = [(percentile, latency_us) for percentile, latency_us in percentile_curve(report) if percentile < 100.0]
    # x = 1/(1-p): 2 at the median, 100 at p99, 1000 at p99.9.
    axes.plot([1 / (1 - percentile / 100) for percentile, _ in points], [latency_us / 1000 for _, latency_us in points],
              marker="o")
    axes.set_xscale("log")
    axes.set_xticks([2, 10, 100, 1000, 10_000, 100_000])
    axes.set_xticklabels(["50%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
    axes.set_xlabel("percentile")
    axes.set_ylabel("latency (ms)")
    axes.grid(True, which="both", alpha=0.3)
    axes.set_title("latency by percentile (HDR)")
