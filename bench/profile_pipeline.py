"""A fixed, seeded payment workload through the compiled pipeline, to run under a profiler.

The bodies are built first (outside any measurement); then `--payments` payments go through
`Pipeline.run` in `pay_batch` frames of `--batch`, each round's journals dropped (commit excluded),
and the script prints payments per second (of wall time, and of this thread's CPU time: on a shared
machine the wall clock also counts the waits for a CPU) and the pipeline's own nanoseconds per payment
per stage.

    python bench/profile_pipeline.py                         # plain run: rate and stages
    python bench/profile_pipeline.py --cprofile profile/cprofile.txt
    py-spy record --native -o profile/flame.svg -- .venv/bin/python bench/profile_pipeline.py
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect='__pyx_pw_*Pipeline_*run' \\
        --callgrind-out-file=profile/callgrind.out .venv/bin/python bench/profile_pipeline.py --payments 20000
    perf record -e cpu-clock -g -- .venv/bin/python bench/profile_pipeline.py

`make profile` runs the usual ones and writes their reports to ./profile/; docs/PROFILING.md reads them.
It refuses the trace/debug build (make debug) unless --allow-trace-build: cProfile then sees the
core's functions and their call counts, but every time is the trace build's, not release's.
Payments that do not fill a last frame are left out (--payments is rounded down to whole frames).
"""
from __future__ import annotations

import argparse
import cProfile
import pathlib
import pstats
import re
import subprocess
import sys
import time

if __package__ in (None, ""):        # run as a script: make the repository importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.pipeline_workload import (  # noqa: E402  (after the path fix above)
    PARTICIPANT_ID, Stream, TraceBuildError, approved_count, build_mode, workload_engine)
from core_ext import limits  # noqa: E402

STAGES = ("decode", "qr", "rules", "post", "respond")
REPORT_LINES = 40
# The core's C functions worth a line in the callgrind summary: (label, regular expression of the symbol).
CALLGRIND_FUNCTIONS = (
    ("Pipeline.run (all of it)", r"^__pyx_pw_.*Pipeline_\d+run$"),
    ("  read pay items (msgpack reader)", r"_pipeline_read_pay_item$"),
    ("    of which UTF-8 check", r"_pipeline_utf8_strict$"),
    ("  QR stage (cache, merchant)", r"Pipeline__qr_stage$"),
    ("    of which qr_validate (cache misses)", r"_qr_qr_validate$"),
    ("  decide and post", r"Pipeline__decide_post$"),
    ("    rules evaluate", r"RuleEngine_evaluate_struct$"),
    ("    rules observe", r"RuleEngine_observe_struct$"),
    ("    ledger create_transfers", r"Ledger_create_transfers_c$"),
    ("  response frame", r"Pipeline__frame$"),
    ("rules LRU find (evaluate and touch)", r"_Lru_find$"),
    ("rules LRU touch (observe, hinted)", r"_Lru_touch_hinted$"),
    ("Python dict lookups (any caller)", r"^PyDict_GetItemWithError$"),
    ("Python int creation (any caller)", r"^PyLong_FromUnsignedLong$"),
)
CALLGRIND_LINE = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+\S*?:(\S+)")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=100_000, help="payments in all (default 100,000)")
    parser.add_argument("--batch", type=int, default=1_000,
                        help=f"payments per pay_batch frame, 1..{limits.BATCH_FRAME_ITEMS_MAX} (default 1,000)")
    parser.add_argument("--seed", type=int, default=1, help="payer order (default 1)")
    parser.add_argument("--implementation", choices=("compiled", "reference"), default="compiled")
    parser.add_argument("--cprofile", type=pathlib.Path, metavar="REPORT",
                        help="run under cProfile; write the report sorted by cumulative time to REPORT")
    parser.add_argument("--allow-trace-build", action="store_true", help="run on the debug build too")
    parser.add_argument("--callgrind-summary", type=pathlib.Path, metavar="CALLGRIND_OUT",
                        help="run nothing: print the inclusive instructions per payment of the core's main "
                             "functions from a callgrind output of a run of --payments payments")
    arguments = parser.parse_args(argv)
    if not 1 <= arguments.batch <= limits.BATCH_FRAME_ITEMS_MAX:
        parser.error(f"--batch must be 1..{limits.BATCH_FRAME_ITEMS_MAX}")
    if arguments.payments < arguments.batch:
        parser.error("--payments must be at least --batch")
    return arguments


def run_rounds(pipeline, storage, bodies: list) -> list[bytes]:
    """The measured loop: one Pipeline.run per body; returns the response frames (read after the clock
    stops: unpacking them in the loop took a sixth of its samples in py-spy)."""
    frames = []
    for body, now_ns in bodies:
        storage.commit()
        frames.append(pipeline.run(PARTICIPANT_ID, body, now_ns))
    return frames


def write_cprofile_report(profiler: cProfile.Profile, report_path: pathlib.Path) -> None:
    report_path.parent.mkdir(parents=True, exist_ok=True)
    with report_path.open("w") as report:
        statistics = pstats.Stats(profiler, stream=report)
        statistics.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(REPORT_LINES)
        statistics.sort_stats(pstats.SortKey.TIME).print_stats(REPORT_LINES)


def stage_report(stats: dict) -> str:
    """The pipeline's own timers, as ns per payment per stage and each stage's share."""
    payments = max(1, stats["payments"])
    total_ns = sum(stats[f"{stage}_ns"] for stage in STAGES) or 1
    parts = [f"{stage} {stats[f'{stage}_ns'] / payments:,.0f} ns ({100 * stats[f'{stage}_ns'] / total_ns:.0f}%)"
             for stage in STAGES]
    return "per payment: " + ", ".join(parts)


def inclusive_instructions(callgrind_out: pathlib.Path) -> dict[str, int]:
    """function symbol -> inclusive instruction count, from callgrind_annotate --inclusive=yes."""
    listing = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--auto=no", "--threshold=100", str(callgrind_out)],
        check=True, capture_output=True, text=True).stdout
    counts: dict[str, int] = {}
    for line in listing.splitlines():
        match = CALLGRIND_LINE.match(line)
        if match:
            # A function can be listed twice (under two spellings of its file): keep the larger.
            symbol, count = match.group(2), int(match.group(1).replace(",", ""))
            counts[symbol] = max(count, counts.get(symbol, 0))
    return counts


def callgrind_summary(callgrind_out: pathlib.Path, payments: int) -> list[str]:
    """Lines of inclusive instructions per payment (and share of Pipeline.run) per CALLGRIND_FUNCTIONS."""
    counts = inclusive_instructions(callgrind_out)

    def total_of(pattern: str) -> int:
        return max((count for symbol, count in counts.items() if re.search(pattern, symbol)), default=0)

    run_total = total_of(CALLGRIND_FUNCTIONS[0][1]) or 1
    lines = [f"inclusive instructions per payment ({payments:,} payments, {callgrind_out}):"]
    for label, pattern in CALLGRIND_FUNCTIONS:
        count = total_of(pattern)
        lines.append(f"  {label:<40} {count / payments:>9,.0f}  {100 * count / run_total:5.1f}%")
    return lines


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.callgrind_summary:
        print("\n".join(callgrind_summary(arguments.callgrind_summary, arguments.payments)))
        return 0
    try:
        engine = workload_engine(arguments.implementation, arguments.allow_trace_build)
    except TraceBuildError as error:
        print(f"profile_pipeline: {error}", file=sys.stderr)
        return 2
    stream = Stream(arguments.batch, arguments.seed)
    bodies = [stream.next_body() for _ in range(arguments.payments // arguments.batch)]
    profiler = cProfile.Profile() if arguments.cprofile else None
    started_ns, started_cpu_ns = time.perf_counter_ns(), time.thread_time_ns()
    if profiler:
        profiler.enable()
    frames = run_rounds(engine.pipeline, engine.storage, bodies)
    if profiler:
        profiler.disable()
    elapsed_ns, cpu_ns = time.perf_counter_ns() - started_ns, max(1, time.thread_time_ns() - started_cpu_ns)
    approved = sum(approved_count(frame) for frame in frames)
    payments = len(bodies) * arguments.batch
    print(f"{payments:,} payments in frames of {arguments.batch:,} ({arguments.implementation}, "
          f"{build_mode()} build{', under cProfile' if profiler else ''}): "
          f"{payments * 10**9 / elapsed_ns:,.0f} payments/s, {approved / payments:.1%} approved")
    # On a shared machine the wall clock also counts the time this thread waited for a CPU.
    print(f"per CPU second of this thread: {payments * 10**9 / cpu_ns:,.0f} payments "
          f"({100 * cpu_ns / elapsed_ns:.0f}% of the wall time on a CPU)")
    print(stage_report(engine.pipeline.stats()))
    if profiler:
        write_cprofile_report(profiler, arguments.cprofile)
        print(f"cProfile report (cumulative, then own time): {arguments.cprofile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
