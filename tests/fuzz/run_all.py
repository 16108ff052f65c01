"""`make fuzz`: every target for FUZZ_SECONDS each, then a table of executions and findings.

    .venv/bin/python tests/fuzz/run_all.py [--seconds 300] [--workdir build/fuzz] [target ...]

The grown corpora and any reproducers stay in the work directory (build/fuzz,
ignored by git); copy a reproducer to tests/fuzz/corpus/<target>/crash-<what>
to keep it.  Exit status 1 when any target found something.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import harness


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=300, help="fuzzing time per target")
    parser.add_argument("--workdir", type=pathlib.Path, default=harness.ROOT / "build" / "fuzz")
    parser.add_argument("targets", nargs="*", help=f"some of {', '.join(harness.TARGETS)} (default: all)")
    options = parser.parse_args()
    unknown = set(options.targets) - set(harness.TARGETS)
    if unknown:
        parser.error(f"no fuzz target named {', '.join(sorted(unknown))}")
    options.targets = options.targets or list(harness.TARGETS)
    results = []
    for target in options.targets:
        print(f"fuzzing {target} for {options.seconds} s ...", flush=True)
        result = harness.run_target(target, options.seconds, options.workdir)
        if not result.clean:
            print(result.output[-6000:])
        results.append(result)
    print(f"\n{'target':<14} {'executions':>12} {'seconds':>8}  result")
    for result in results:
        verdict = "no finding" if result.clean else f"FINDING (exit {result.returncode}) {' '.join(result.artifacts)}"
        print(f"{result.target:<14} {result.executions:>12} {result.seconds:>8}  {verdict}")
    return 0 if all(result.clean for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
