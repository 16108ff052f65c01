"""The ledger's cdef API (core_ext/_ledger.pxd) works from another compiled module.

Builds tests/ledger_c_api_probe.pyx against the .pxd (a few seconds of compiling)
and posts through create_accounts_c / create_transfers_c / lookup_*_c, the calls
a compiled batch pipeline makes without a Python object per transfer.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from core_ext import compiled

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROBE = ROOT / "tests" / "ledger_c_api_probe.pyx"
BUILD_SCRIPT = """
import sys
from Cython.Build import cythonize
from setuptools import Extension, setup
sys.argv[1:] = ["build_ext", "--inplace", "-q"]
setup(ext_modules=cythonize([Extension("ledger_c_api_probe", ["ledger_c_api_probe.pyx"])],
                            include_path=[{root!r}], quiet=True, language_level=3))
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    build_dir = tmp_path_factory.mktemp("c_api")
    shutil.copy(PROBE, build_dir / PROBE.name)
    result = subprocess.run([sys.executable, "-c", BUILD_SCRIPT.format(root=str(ROOT))], cwd=build_dir,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    built = next(build_dir.glob("ledger_c_api_probe*.so"))
    spec = importlib.util.spec_from_file_location("ledger_c_api_probe", built)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_compiled_module_posts_through_the_c_api(probe):
    outcome = probe.post_through_c_api(compiled.Ledger(accounts_max=10))
    assert outcome["status"] == 0
    assert outcome["refused_status"] == -2                # now_ns past the clock: nothing applied
    assert outcome["raised"] == "ValueError"              # the same, through the GIL-holding entry point
    assert outcome["account_codes"] == [0, 0]
    assert outcome["transfer_codes"] == [0, 100, 120]     # OK, LINKED_EVENT_FAILED, ACCOUNTS_MUST_BE_DIFFERENT
    assert outcome["stored_timestamp"] == 2000            # the event is updated to what was stored
    assert outcome["found_amount"] == 5 and outcome["credit_balance"] == 5
    assert outcome["rolled_back_missing"] and outcome["unknown_account_missing"]
