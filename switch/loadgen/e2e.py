"""The one-command run: fixture, a fresh `switch serve` on 127.0.0.1, the load, the report, stop.

The switch reports its durability and build mode itself (`stats`, see switch_stats.py); the
build mode of this tree is the fallback should it not answer.  The switch is
pinned to one CPU and the generator to the other when the machine has two or more, so the two
do not fight for a core.  The data directory is fresh per run and removed afterwards; the
switch is stopped with SIGTERM (graceful) even when the load fails.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Iterator

from switch.loadgen import bare_fsync, fixture, run_load
from switch.loadgen.runner import RunSettings

# Reading a large generated config and funding every wallet takes a while at start-up.
SERVE_READY_TIMEOUT_S = 300.0
SERVE_STOP_TIMEOUT_S = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def cpu_split() -> tuple[tuple[int, ...], int | None]:
    """(generator CPUs, server CPU): the last allowed CPU for the switch, the rest for the load."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return (), None
    return tuple(cpus[:-1]), cpus[-1]


@contextlib.contextmanager
def serving(config_path: pathlib.Path, durability: str, port: int, cpu: int | None, log_path: pathlib.Path,
            host: str = "127.0.0.1") -> Iterator[tuple[subprocess.Popen, pathlib.Path]]:
    """`switch serve` in a subprocess with a fresh data dir, until the block ends: (process, data dir)."""
    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="switch-bench-data-"))
    command = [sys.executable, "-m", "switch", "serve", "--config", str(config_path), "--data", str(data_dir),
               "--host", host, "--port", str(port), "--durability", durability]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None)
    # A SIGTERM to the run must still stop the switch it started: make it unwind like Ctrl-C.
    previous_handler = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        _wait_listening(process, host, port, log_path)
        yield process, data_dir
    finally:
        _stop(process)
        shutil.rmtree(data_dir, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous_handler)


def _exit_on_sigterm(signal_number, frame) -> None:
    raise SystemExit(128 + signal_number)


def _wait_listening(process: subprocess.Popen, host: str, port: int, log_path: pathlib.Path) -> None:
    deadline = time.monotonic() + SERVE_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"`switch serve` exited with {process.returncode}:\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.2)
    raise RuntimeError(f"`switch serve` did not listen on {host}:{port} within {SERVE_READY_TIMEOUT_S} s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(SERVE_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def build_mode() -> str:
    """The core the spawned switch loads: this same tree's (`compiled/release`, ...)."""
    import core_ext
    info = core_ext.core.build_info()
    return f"{info['implementation']}/{info['mode']}"


def run_e2e(directory: str | pathlib.Path, spec: fixture.FixtureSpec, settings: RunSettings, durability: str,
            stream_items: int | None, progress=None, fsync_probe_bytes: int = bare_fsync.PROBE_BYTES_DEFAULT,
            fsync_probe_samples: int = bare_fsync.SAMPLES_DEFAULT) -> dict:
    """Generate (or reuse) the fixture in `directory`, serve it, load it; returns the report.
    With durability fsync, the data directory's bare fsync is probed right before and right
    after the load (bare_fsync.py)."""
    directory = pathlib.Path(directory)
    config_path, workload_path = directory / "switch.toml", directory / "workload.json"
    if not _fixture_matches(workload_path, spec):
        config_path, workload_path = fixture.write_fixture(directory, spec)
    workload = fixture.load_workload(workload_path)
    generator_cpus, server_cpu = cpu_split()
    port = free_port(settings.host)
    settings = RunSettings(**{**settings.__dict__, "port": port, "cpus": settings.cpus or generator_cpus})
    with serving(config_path, durability, port, server_cpu, directory / "serve.log", settings.host) as (process,
                                                                                                        data_dir):
        probing = durability == "fsync" and fsync_probe_samples > 0
        before_us = bare_fsync.probe(data_dir, fsync_probe_bytes, fsync_probe_samples) if probing else []
        written_before = bare_fsync.written_bytes(process.pid)
        report = run_load(workload, settings, stream_items=stream_items, target="switch", durability=durability,
                          build_mode=build_mode(), progress=progress, cache_dir=str(directory))
        written_after = bare_fsync.written_bytes(process.pid)
        if probing:
            after_us = bare_fsync.probe(data_dir, fsync_probe_bytes, fsync_probe_samples)
            report["bare_fsync_us"] = bare_fsync.summary(
                before_us, after_us, fsync_probe_bytes, report["latency_us"]["p99"],
                _commit_bytes(written_before, written_after, report.get("switch")))
        return report


def _commit_bytes(written_before: int | None, written_after: int | None, switch: dict | None) -> int | None:
    """What the switch wrote to storage per batch over the run (warm-up and drain included)."""
    if written_before is None or written_after is None or not switch or not switch.get("batches"):
        return None
    return (written_after - written_before) // switch["batches"]


def _fixture_matches(workload_path: pathlib.Path, spec: fixture.FixtureSpec) -> bool:
    if not workload_path.exists() or not workload_path.with_name("switch.toml").exists():
        return False
    try:
        workload = fixture.load_workload(workload_path)
    except ValueError:
        return False
    return (workload["seed"], workload["payers"], workload["merchants"], len(workload["wallets"]),
            workload["funding_scale"], workload["rules_sha256"]) == (
        spec.seed, spec.payer_count, spec.merchant_count, spec.wallet_count, spec.funding_scale, spec.rules_sha256())
