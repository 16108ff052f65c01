"""The one registry of result codes and the one home of limits stay true to the docs."""
import os
import pathlib
import subprocess
import sys

import pytest

import core_ext
from core_ext import codes, limits

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_errors_doc_is_generated_from_the_registry():
    doc = (ROOT / "docs" / "ERRORS.md").read_text()
    assert doc == codes.as_markdown(), "docs/ERRORS.md is stale: run `make docs`"


def test_every_code_has_a_unique_number_and_name():
    assert len({entry.value for entry in codes.ENTRIES.values()}) == len(codes.ENTRIES)
    assert len(set(codes.Code.__members__)) == len(codes.ENTRIES)
    assert codes.Code.OK == 0


def test_compiled_core_sees_the_same_codes_and_limits():
    pxi = (ROOT / "core_ext" / "codes.pxi").read_text()
    assert pxi == codes.as_pxi(), "core_ext/codes.pxi is stale: rebuild"
    assert (ROOT / "core_ext" / "limits.pxi").read_text() == limits.as_pxi()


def test_both_implementations_export_the_same_names():
    compiled = core_ext.implementation("compiled")
    reference = core_ext.implementation("reference")
    assert sorted(compiled.__all__) == sorted(reference.__all__)
    for name in compiled.__all__:
        assert hasattr(compiled, name) and hasattr(reference, name), name


def test_build_info_names_the_implementation(impl):
    info = impl.build_info()
    assert info["implementation"] in core_ext.IMPLEMENTATIONS
    assert info["mode"] in {"release", "debug", "python"}


def test_switch_help_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "switch", "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_switch_purepython_selects_the_reference_twin_for_a_whole_process():
    probe = "import core_ext; print(core_ext.core.build_info()['implementation'])"
    for setting, expected in (("1", "reference"), ("", "compiled"), ("0", "compiled")):
        env = {**os.environ, "SWITCH_PUREPYTHON": setting}
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == expected, (setting, result.stdout)


def test_an_unknown_implementation_name_is_refused():
    with pytest.raises(ValueError, match="no core implementation named"):
        core_ext.implementation("fast")
