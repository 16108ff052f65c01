"""`switch stats`: what a running switch did, asked over the protocol as an operator.

The connection options (`operator_options`, `operator_client`) are shared with
`switch review` and `switch rules stats --port`.
"""
from __future__ import annotations

import functools
import json

import click

from core_ext.codes import name_of


def operator_options(command):
    """--host, --port, --participant, --secret: an operator participant of the running switch."""
    options = [
        click.option("--host", default="127.0.0.1", show_default=True),
        click.option("--port", default=7878, show_default=True, type=click.IntRange(1, 65535)),
        click.option("--participant", "participant_id", required=True, type=click.IntRange(1, 2**64 - 1),
                     envvar="SWITCH_PARTICIPANT", help="An operator participant id (or env SWITCH_PARTICIPANT)."),
        click.option("--secret", required=True, envvar="SWITCH_SECRET", help="Its secret (or env SWITCH_SECRET)."),
    ]
    return functools.reduce(lambda wrapped, option: option(wrapped), reversed(options), command)


def operator_call(host: str, port: int, participant_id: int, secret: str, method: str, *args):
    """One client call; a refused request or a lost connection becomes a ClickException."""
    from switch.client import Client, SwitchError

    try:
        with Client(host, port, participant_id, secret) as client:
            return getattr(client, method)(*args)
    except (OSError, SwitchError) as error:
        raise click.ClickException(f"{method}: {error}") from error


@click.command("stats")
@operator_options
@click.option("--json", "as_json", is_flag=True, help="Print the raw stats map as JSON.")
def stats(host, port, participant_id, secret, as_json) -> None:
    """Counters, histograms, rules and build of the running switch."""
    snapshot = operator_call(host, port, participant_id, secret, "stats")
    if as_json:
        click.echo(json.dumps(snapshot, indent=2, default=lambda value: value.hex()))
        return
    for line in format_stats(snapshot):
        click.echo(line)


def format_stats(snapshot: dict) -> list[str]:
    build = snapshot["build"]
    lines = [
        f"up {snapshot['uptime_ns'] / 1e9:,.1f} s, core {build['implementation']} ({build['mode']}), "
        f"durability {snapshot['durability']}, journal at batch {snapshot['batch_sequence']}",
        f"connections {snapshot['connections']} / {snapshot['connections_max']}, "
        f"queued events {snapshot['queue_events']}, batches {snapshot['batches']:,}",
        f"rule set {snapshot['ruleset_name'] or '(none)'} {(snapshot['ruleset_hash'] or '')[:16]}, "
        f"held for review {snapshot['reviews_pending']}",
        "", "payments by result:",
    ]
    lines += [f"  {name_of(code):<32} {count:>14,}" for code, count in snapshot["payments"]] or ["  (none yet)"]
    for key, title, unit in (("wait_us", "oldest request's time in the switch, per batch", "us"),
                             ("commit_us", "commit time", "us"), ("batch_us", "batch time", "us"),
                             ("batch_requests", "requests per batch", ""), ("batch_events", "events per batch", "")):
        lines += ["", f"{title}: " + histogram_summary(snapshot[key], unit)]
    if snapshot["rules"]:
        lines += ["", rule_header()] + [rule_line(*rule) for rule in snapshot["rules"]]
    return lines


def histogram_summary(histogram: dict, unit: str) -> str:
    """count, mean, and the bucket bounds holding p50 / p99 / max (bucketed, so 'at most')."""
    count = histogram["count"]
    if not count:
        return "no observations"
    return (f"{count:,} observed, mean {histogram['sum'] / count:,.0f}{unit}, p50 <= {quantile_bound(histogram, 0.5)}"
            f"{unit}, p99 <= {quantile_bound(histogram, 0.99)}{unit}, max <= {quantile_bound(histogram, 1.0)}{unit}")


def quantile_bound(histogram: dict, quantile: float) -> str:
    """The upper bound of the bucket holding the quantile ('+Inf' past the last bound)."""
    needed = quantile * histogram["count"]
    seen = 0
    for index, count in enumerate(histogram["counts"]):
        seen += count
        if count and seen >= needed:
            return f"{histogram['bounds'][index]:,}" if index < len(histogram["bounds"]) else "+Inf"
    return "+Inf"


def rule_header() -> str:
    return f"  {'rule':<28} {'evaluations':>12} {'hits':>10} {'shadow hits':>12} {'ns/eval':>8} {'est. ms':>10}"


def rule_line(rule_id: str, evaluations: int, hits: int, shadow_hits: int, samples: int = 0,
              time_ns_sampled: int = 0) -> str:
    """ns/eval: the sampled evaluations' mean; est. ms: that mean times every evaluation."""
    mean_ns = time_ns_sampled // samples if samples else 0
    estimate_ms = time_ns_sampled * evaluations // samples // 1_000_000 if samples else 0
    return (f"  {rule_id:<28} {evaluations:>12,} {hits:>10,} {shadow_hits:>12,} {mean_ns:>8,} "
            f"{estimate_ms:>10,}")
