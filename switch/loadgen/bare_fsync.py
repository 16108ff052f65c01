"""The bare-fsync reference of a `--durability fsync` run: what the disk alone costs a commit.

An `fsync` switch answers only after its batch's LMDB commit is on disk, so its latency can
never beat one synchronous write of a commit's bytes to the same filesystem.  `probe` measures
that floor: `samples` times, one pwrite of `size_bytes` into a preallocated file in the data
directory, then fdatasync; run_e2e takes one probe right before the load and one right after,
and the report states p50/p99 of both together and the switch's p99 minus the bare p99.

The size is `--fsync-probe-bytes` (a commit's bytes must be known before the run starts); the
report also states what the switch really wrote per commit in the run (`commit_bytes`: the
`write_bytes` of its /proc/<pid>/io -- bytes it dirtied for the disk -- over its batches), so a
probe of another size is visible.  The probe is a floor in two more ways: it overwrites blocks
already allocated (LMDB's copy-on-write pages may need new ones), and LMDB syncs twice per
commit (the data pages, then the meta page) where the probe syncs once.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import time

SAMPLES_DEFAULT = 200
PROBE_BYTES_DEFAULT = 32_768
PROBE_SLOTS = 16             # the probe cycles over this many slots of the file, like pages being reused
PROBE_FILE = ".bare-fsync-probe"


def probe(directory: str | os.PathLike, size_bytes: int, samples: int = SAMPLES_DEFAULT) -> list[int]:
    """Microseconds of `samples` write-then-fdatasync rounds of `size_bytes` in `directory`."""
    if size_bytes < 1 or samples < 1:
        raise ValueError("the probe needs a positive size and sample count")
    path = pathlib.Path(directory) / PROBE_FILE
    block = os.urandom(size_bytes)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(descriptor, bytes(size_bytes * PROBE_SLOTS))   # allocate the blocks before timing
        os.fsync(descriptor)
        timings_us = []
        for sample in range(samples):
            started_ns = time.monotonic_ns()
            os.pwrite(descriptor, block, (sample % PROBE_SLOTS) * size_bytes)
            os.fdatasync(descriptor)
            timings_us.append((time.monotonic_ns() - started_ns) // 1000)
        return timings_us
    finally:
        os.close(descriptor)
        with contextlib.suppress(OSError):
            path.unlink()


def percentile(values: list[int], fraction: float) -> int:
    """The nearest-rank percentile (fraction in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(round(fraction * len(ordered))) - 1))]


def written_bytes(pid: int) -> int | None:
    """Bytes the process `pid` has caused to be written to storage, or None when not accounted."""
    try:
        for line in pathlib.Path(f"/proc/{pid}/io").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == "write_bytes":
                return int(value)
    except (OSError, ValueError):
        pass
    return None


def summary(before_us: list[int], after_us: list[int], size_bytes: int, switch_p99_us: int,
            commit_bytes: int | None) -> dict:
    """The report's `bare_fsync_us`: the probes' percentiles and the switch's p99 above them."""
    both = before_us + after_us
    p99 = percentile(both, 0.99)
    return {
        "bytes": size_bytes, "samples": len(both),
        "p50": percentile(both, 0.50), "p99": p99,
        "before": {"p50": percentile(before_us, 0.50), "p99": percentile(before_us, 0.99)},
        "after": {"p50": percentile(after_us, 0.50), "p99": percentile(after_us, 0.99)},
        "switch_p99_minus_bare_p99_us": switch_p99_us - p99,
        "commit_bytes": commit_bytes,
    }
