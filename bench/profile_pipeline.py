"""A fixed, seeded payment workload through the compiled pipeline, to run under a profiler.

The bodies are built first (outside any measurement); then `--payments` payments go through
`Pipeline.run` in `pay_batch` frames of `--batch`, each round's journals dropped (commit excluded),
and the script prints payments per second and the pipeline's own nanoseconds per payment per stage.

    python bench/profile_pipeline.py                         # plain run: rate and stages
    python bench/profile_pipeline.py --cprofile profile/cprofile.txt
    py-spy record --native -o profile/flame.svg -- .venv/bin/python bench/profile_pipeline.py
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*Pipeline_*run*' \\
        --callgrind-out-file=profile/callgrind.out .venv/bin/python bench/profile_pipeline.py --payments 20000
    perf record -g -- .venv/bin/python bench/profile_pipeline.py

`make profile` runs the usual ones and writes their reports to ./profile/; docs/PROFILING.md reads them.
It refuses the trace/debug build (make debug) unless --allow-trace-build: cProfile then sees the
core's def functions, but every number is the trace build's, not release's.
"""
from __future__ import annotations

import argparse
import cProfile
import pathlib
import pstats
import sys
import time

if __package__ in (None, ""):        # run as a script: make the repository importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.pipeline_workload import (  # noqa: E402  (after the path fix above)
    PARTICIPANT_ID, Stream, TraceBuildError, approved_count, build_mode, workload_engine)
from core_ext import limits  # noqa: E402

STAGES = ("decode", "qr", "decide_post", "respond")
REPORT_LINES = 40


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
    arguments = parser.parse_args(argv)
    if not 1 <= arguments.batch <= limits.BATCH_FRAME_ITEMS_MAX:
        parser.error(f"--batch must be 1..{limits.BATCH_FRAME_ITEMS_MAX}")
    if arguments.payments < arguments.batch:
        parser.error("--payments must be at least --batch")
    return arguments


def run_rounds(pipeline, storage, bodies: list) -> int:
    """The measured loop: one Pipeline.run per body; returns the approved payments."""
    approved = 0
    for body, now_ns in bodies:
        storage.commit()
        approved += approved_count(pipeline.run(PARTICIPANT_ID, body, now_ns))
    return approved


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


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        engine = workload_engine(arguments.implementation, arguments.allow_trace_build)
    except TraceBuildError as error:
        print(f"profile_pipeline: {error}", file=sys.stderr)
        return 2
    stream = Stream(arguments.batch, arguments.seed)
    bodies = [stream.next_body() for _ in range(arguments.payments // arguments.batch)]
    profiler = cProfile.Profile() if arguments.cprofile else None
    started_ns = time.perf_counter_ns()
    if profiler:
        profiler.enable()
    approved = run_rounds(engine.pipeline, engine.storage, bodies)
    if profiler:
        profiler.disable()
    elapsed_ns = time.perf_counter_ns() - started_ns
    payments = len(bodies) * arguments.batch
    print(f"{payments:,} payments in frames of {arguments.batch:,} ({arguments.implementation}, "
          f"{build_mode()} build{', under cProfile' if profiler else ''}): "
          f"{payments * 10**9 / elapsed_ns:,.0f} payments/s, {approved / payments:.1%} approved")
    print(stage_report(engine.pipeline.stats()))
    if profiler:
        write_cprofile_report(profiler, arguments.cprofile)
        print(f"cProfile report (cumulative, then own time): {arguments.cprofile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
