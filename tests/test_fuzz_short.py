"""The fuzz targets of tests/fuzz, in the short form `make test` runs.

* every target fuzzes for a few seconds in its own process (atheris and
  libFuzzer own the process they run in) and must find nothing;
* every committed seed replays clean in this process, so a regression shows up
  as an ordinary test failure naming the input;
* every committed reproducer (corpus/<target>/crash-*) is a registered finding
  that still fails, until its owner fixes it: then its strict xfail turns into
  a failure, and the entry (and any tolerance in the target) goes.

`make fuzz` runs the same targets for FUZZ_SECONDS each (tests/fuzz/run_all.py).
"""
from __future__ import annotations

import concurrent.futures
import importlib
import os
import subprocess
import sys

import pytest

from core_ext import limits  # noqa: F401  (the repository's modules import before tests/fuzz's)

FUZZ_DIR = os.path.join(os.path.dirname(__file__), "fuzz")
if FUZZ_DIR not in sys.path:
    sys.path.insert(0, FUZZ_DIR)

import harness  # noqa: E402

# Seconds of fuzzing per target; the targets run side by side, so the whole is a few seconds more.
SHORT_SECONDS = int(os.environ.get("FUZZ_SHORT_SECONDS", "2"))

# (target, reproducer file) -> (what is wrong, the target's tolerance flag that
# lets long runs look past it, or None).  Each is listed in the fuzzing report.
KNOWN_FINDINGS = {
}


def target_module(target: str):
    return importlib.import_module(f"fuzz_{target}")


@pytest.fixture(scope="module")
def short_runs(tmp_path_factory):
    """Every target fuzzed at once, each in its own process: the wall time of one run, not six."""
    workdir = tmp_path_factory.mktemp("fuzz")
    with concurrent.futures.ThreadPoolExecutor(len(harness.TARGETS)) as pool:
        runs = {target: pool.submit(harness.run_target, target, SHORT_SECONDS, workdir) for target in harness.TARGETS}
        return {target: run.result() for target, run in runs.items()}


@pytest.mark.parametrize("target", harness.TARGETS)
def test_fuzzing_each_target_briefly_finds_nothing(target, short_runs):
    result = short_runs[target]
    assert result.clean, f"fuzz_{target} found something:\n{result.output[-4000:]}"
    # The seeds alone are that many executions: fewer means the run never got going.
    assert result.executions >= len(harness.seed_files(target)) > 0, result.output[-2000:]


@pytest.mark.parametrize("target", harness.TARGETS)
def test_every_committed_seed_replays_clean(target):
    check_input = target_module(target).test_one_input
    for path in harness.seed_files(target):
        try:
            check_input(path.read_bytes())
        except Exception as error:  # noqa: BLE001 - any escape is the finding; name the input
            pytest.fail(f"{path.relative_to(harness.ROOT)}: {type(error).__name__}: {error}")


def test_every_reproducer_is_a_registered_finding():
    committed = {(target, path.name) for target in harness.TARGETS for path in harness.reproducer_files(target)}
    assert committed == set(KNOWN_FINDINGS), "register each crash-* in KNOWN_FINDINGS, or delete it once fixed"


@pytest.mark.parametrize("target, name", [
    pytest.param(target, name, marks=pytest.mark.xfail(strict=True, reason=reason), id=f"{target}/{name}")
    for (target, name), (reason, _flag) in KNOWN_FINDINGS.items()
])
def test_known_finding_reproducer_still_fails(target, name):
    # In a process of its own: a reproducer may corrupt memory (F2 does) and must not take pytest down.
    flag = KNOWN_FINDINGS[(target, name)][1]
    script = (f"import fuzz_{target} as target\n"
              + (f"target.{flag} = False\n" if flag else "")
              + f"target.test_one_input(open({str(harness.corpus_dir(target) / name)!r}, 'rb').read())\n")
    completed = subprocess.run([sys.executable, "-c", script], cwd=FUZZ_DIR, capture_output=True, text=True,
                               errors="replace", timeout=60)
    assert completed.returncode == 0, completed.stderr[-2000:]
