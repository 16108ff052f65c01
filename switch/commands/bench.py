"""`switch bench`: load a running switch like many wallets would, and report what it did.

    switch bench workload --out DIR [--payers N --merchants M --seed K --wallets W --funding-scale F]
    switch bench run --workload DIR/workload.json --port P [--mode closed|open --rate R ...] --json OUT.json
    switch bench e2e --dir DIR --durability fsync|os [...] --json OUT.json   (starts and stops the switch)
    switch bench compare A.json B.json
    switch bench echo --port P                  (a trivial peer: the generator's own ceiling)
"""
from __future__ import annotations

import functools
import os
import sys

import click

from core_ext import limits


_FUNDING_SCALE_OPTION = click.option(
    "--funding-scale", type=click.IntRange(1), default=1, show_default=True,
    help="Multiply the normally funded payers' opening balances by this (the nearly empty 5% stay so), "
         "so that a long closed-loop run posts payments instead of refusing them for lack of funds.")


def _fixture_spec(**values):
    """The fixture's spec, its sizes and funding checked before anything is written or started."""
    from switch.loadgen import fixture

    spec = fixture.FixtureSpec(**values)
    try:
        spec.check()
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    return spec


def _run_options(function):
    """The options every load run takes (run and e2e)."""
    options = [
        click.option("--mode", type=click.Choice(["closed", "open"]), default="closed", show_default=True,
                     help="closed: DEPTH frames in flight per connection, maximum throughput; "
                          "open: a fixed offered RATE, latency from each frame's intended send time."),
        click.option("--rate", "rate_per_s", type=click.IntRange(1, 10_000_000), default=10_000, show_default=True,
                     help="Open loop: offered payments per second."),
        click.option("--sender", type=click.Choice(["c", "python"]), default="c", show_default=True,
                     help="Open loop: the compiled sender (threads without the GIL: on time to microseconds while it has a CPU) "
                          "or the asyncio one it replaced (late by milliseconds at p99), for comparison."),
        click.option("--in-flight-max", type=click.IntRange(1, limits.IN_FLIGHT_REQUESTS_MAX),
                     default=limits.IN_FLIGHT_REQUESTS_MAX, show_default=True,
                     help="Open loop, C sender: frames in flight per connection; past it that connection's "
                          "frames wait (and their lateness shows in the latency)."),
        click.option("--connections", type=click.IntRange(1, limits.CONNECTIONS_MAX), default=16, show_default=True),
        click.option("--depth", type=click.IntRange(1, limits.IN_FLIGHT_REQUESTS_MAX), default=64, show_default=True,
                     help="Closed loop: frames in flight per connection (pipelining)."),
        click.option("--batch", "batch_items", type=click.IntRange(1, limits.BATCH_FRAME_ITEMS_MAX), default=1,
                     show_default=True, help="1: one `pay` per frame; more: `pay_batch` frames of this many payments."),
        click.option("--warmup", "warmup_s", type=click.FloatRange(0, 3600), default=2.0, show_default=True,
                     help="Seconds of load before measuring."),
        click.option("--duration", "duration_s", type=click.FloatRange(0.1, 86_400), default=10.0, show_default=True,
                     help="Measured seconds."),
        click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True,
                     help="Generator processes; connections are split over them and their histograms merged."),
        click.option("--stream-items", type=click.IntRange(1, 100_000_000), default=None,
                     help="Payments pre-encoded before the run; past them the stream wraps (reported: ids are made "
                          "fresh, but dynamic QR codes are then answered QR_REPLAYED).  Default: open loop, what "
                          "the rate sends in warm-up + duration (up to 4,000,000); closed loop, 400,000."),
        click.option("--json", "json_path", type=click.Path(dir_okay=False, writable=True),
                     help="Write the report here."),
        click.option("--plot", "plot_path", type=click.Path(dir_okay=False, writable=True),
                     help="Write latency over time and the percentile curve here (PNG)."),
        click.option("--quiet", is_flag=True, help="No live progress line."),
    ]
    return functools.reduce(lambda wrapped, option: option(wrapped), reversed(options), function)


@click.group("bench")
def bench() -> None:
    """Load benchmark: generate a workload, load a switch, compare reports."""


@bench.command("workload")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for switch.toml and workload.json.")
@click.option("--payers", type=click.IntRange(1), default=10_000, show_default=True)
@click.option("--merchants", type=click.IntRange(1), default=1_000, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--wallets", type=click.IntRange(1), default=4, show_default=True,
              help="Wallet participants; each has its own rate limit, so more wallets allow a higher total rate.")
@click.option("--rules", "rules_path", type=click.Path(exists=True, dir_okay=False),
              help="A rule set for the switch to run (e.g. switch/demo/rules.toml); default: no rules.")
@_FUNDING_SCALE_OPTION
def workload(out_dir, payers, merchants, seed, wallets, rules_path, funding_scale) -> None:
    """Write the switch config and the generator's workload file for PAYERS and MERCHANTS."""
    from switch.loadgen import fixture

    spec = _fixture_spec(seed=seed, payer_count=payers, merchant_count=merchants, wallet_count=wallets,
                         rules_path=rules_path, funding_scale=funding_scale)
    config_path, workload_path = fixture.write_fixture(out_dir, spec)
    click.echo(f"wrote {config_path} (serve it with `switch serve --config {config_path} --data DIR`)")
    click.echo(f"wrote {workload_path} (load it with `switch bench run --workload {workload_path}`)")


@bench.command("run")
@click.option("--workload", "workload_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=7878, show_default=True, type=click.IntRange(1, 65535))
@click.option("--durability", default="unknown", show_default=True,
              help="The switch's durability for the report, when it cannot say itself (no `stats`).")
@click.option("--build-mode", default="unknown", show_default=True,
              help="The switch's build mode for the report, when it cannot say itself.")
@click.option("--target", default="switch", show_default=True, help="What is loaded, for the report.")
@click.option("--cpus", default="", help="Pin the generator processes to these CPUs, e.g. 0 or 0,1.")
@_run_options
def run(workload_path, host, port, durability, build_mode, target, cpus, json_path, plot_path, quiet, stream_items,
        **run_settings) -> None:
    """Load a running switch at HOST:PORT with the payments of WORKLOAD."""
    from switch.loadgen import RunSettings, fixture, run_load

    settings = _settings(RunSettings, host=host, port=port, cpus=_cpus(cpus), **run_settings)
    report = _guarded(lambda: run_load(
        fixture.load_workload(workload_path), settings, stream_items=stream_items, target=target,
        durability=durability, build_mode=build_mode, progress=_progress(quiet),
        cache_dir=os.path.dirname(os.path.abspath(workload_path))))
    _finish(report, json_path, plot_path)


@bench.command("e2e")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False),
              help="Fixture directory (generated when missing or of another size) and the switch's log.")
@click.option("--durability", type=click.Choice(["fsync", "os"]), default="fsync", show_default=True)
@click.option("--payers", type=click.IntRange(1), default=10_000, show_default=True)
@click.option("--merchants", type=click.IntRange(1), default=1_000, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--wallets", type=click.IntRange(1), default=4, show_default=True)
@click.option("--rules", "rules_path", type=click.Path(exists=True, dir_okay=False),
              help="A rule set for the switch to run; default: no rules.")
@click.option("--fsync-probe-bytes", type=click.IntRange(512, 64 << 20), default=32_768, show_default=True,
              help="fsync runs: bytes of each bare write+fdatasync probe of the data directory's disk, taken "
                   "right before and after the load (the report shows what the switch wrote per commit).")
@click.option("--fsync-probe-samples", type=click.IntRange(0, 100_000), default=200, show_default=True,
              help="fsync runs: probes before and again after the load (0: no bare-fsync reference).")
@_FUNDING_SCALE_OPTION
@_run_options
def e2e(directory, durability, payers, merchants, seed, wallets, rules_path, fsync_probe_bytes, fsync_probe_samples,
        funding_scale, json_path, plot_path, quiet, stream_items, **run_settings) -> None:
    """Start a fresh `switch serve` on 127.0.0.1, load it, report, stop it: one command."""
    from switch.loadgen import RunSettings, e2e as e2e_module

    spec = _fixture_spec(seed=seed, payer_count=payers, merchant_count=merchants, wallet_count=wallets,
                         rules_path=rules_path, funding_scale=funding_scale)
    settings = _settings(RunSettings, **run_settings)
    report = _guarded(lambda: e2e_module.run_e2e(directory, spec, settings, durability, stream_items,
                                                 progress=_progress(quiet), fsync_probe_bytes=fsync_probe_bytes,
                                                 fsync_probe_samples=fsync_probe_samples))
    _finish(report, json_path, plot_path)


@bench.command("compare")
@click.argument("first", type=click.Path(exists=True, dir_okay=False))
@click.argument("second", type=click.Path(exists=True, dir_okay=False))
def compare(first, second) -> None:
    """Print SECOND relative to FIRST: throughput and latency percentiles, as ratios."""
    from switch.loadgen import report as report_module

    try:
        reports = report_module.load(first), report_module.load(second)
    except (ValueError, OSError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(report_module.compare_text(*reports, first_name=first, second_name=second))


@bench.command("echo")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=7979, show_default=True, type=click.IntRange(0, 65535))
@click.option("--service-ms", type=click.FloatRange(0, 10_000), default=0.0, show_default=True,
              help="Answer serially, this long per frame: a slow peer (0: as fast as it can).")
@click.option("--cpu", type=click.IntRange(0), default=None, help="Pin the peer to this CPU.")
def echo(host, port, service_ms, cpu) -> None:
    """A trivial peer answering every payment OK: measures the generator's own ceiling."""
    from switch.loadgen import echo as echo_module
    from switch.server import new_event_loop

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    loop = new_event_loop(use_uvloop=True)
    server = loop.run_until_complete(echo_module.start(host, port, service_ms / 1000))
    click.echo(f"echo peer on {host}:{server.sockets[0].getsockname()[1]} (Ctrl-C to stop)")
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        loop.close()


def _settings(settings_class, **values):
    try:
        settings = settings_class(**values)
        settings.check()
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    return settings


def _cpus(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise click.UsageError(f"--cpus: {error}") from error


def _progress(quiet: bool):
    if quiet:
        return None
    from switch.loadgen.runner import progress_printer
    return progress_printer(sys.stderr)


def _guarded(make_report):
    from switch.loadgen.runner import RunFailed

    try:
        report = make_report()
    except (RunFailed, RuntimeError, OSError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    finally:
        click.echo("", err=True)  # end the progress line
    return report


def _finish(report: dict, json_path: str | None, plot_path: str | None) -> None:
    from switch.loadgen import report as report_module

    click.echo(report_module.summary_text(report))
    if json_path:
        report_module.write(report, json_path)
        click.echo(f"wrote {json_path}")
    if plot_path:
        from switch.loadgen.plot import write_plot
        write_plot(report, plot_path)
        click.echo(f"wrote {plot_path}")
