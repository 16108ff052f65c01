"""Builds the compiled core (core_ext/_*.pyx).

Two build modes, chosen by one environment variable:

* release (default): -O2, warnings on, Cython's safety checks off in the hot
  loops (each module states its own directives where it needs them);
* SWITCH_DEBUG=1: the profiling/debug build -- annotate HTML beside each .pyx,
  `linetrace` with CYTHON_TRACE_NOGIL so profilers and coverage see Cython
  lines, and SWITCH_DEBUG_CHECKS for the extra assertions in the core.
  Benchmarks refuse to run on it (see core_ext.build_info()).

Before cythonizing, the registries that are Python data (result codes,
limits) are written out as .pxi files so the C side can never drift from them.
"""
import os
import pathlib
import sys

from setuptools import Extension, setup

ROOT = pathlib.Path(__file__).resolve().parent
DEBUG = os.environ.get("SWITCH_DEBUG", "") == "1"
# Build only some modules (comma-separated stems, e.g. "_qr,_ledger") while iterating.
ONLY = {stem for stem in os.environ.get("SWITCH_BUILD_ONLY", "").split(",") if stem}


def write_generated_pxi() -> None:
    """Regenerate codes.pxi and limits.pxi from their Python single sources."""
    sys.path.insert(0, str(ROOT))
    try:
        from core_ext import codes, limits
    finally:
        sys.path.pop(0)
    for name, text in (("codes.pxi", codes.as_pxi()), ("limits.pxi", limits.as_pxi())):
        target = ROOT / "core_ext" / name
        if not target.exists() or target.read_text() != text:
            target.write_text(text)


def build_mode_changed() -> bool:
    """True when the last cythonize ran in the other mode.

    Cython only regenerates a .c file when its sources changed, so after a
    debug build a "release" build would otherwise compile the old traced C
    (13x slower QR validation was seen) while build_info() says release.
    """
    stamp = ROOT / "core_ext" / ".build_mode"
    mode = "debug" if DEBUG else "release"
    previous = stamp.read_text() if stamp.exists() else ""
    stamp.write_text(mode)
    return previous != mode


def extensions() -> list:
    from Cython.Build import cythonize

    macros = [("SWITCH_BUILD_MODE", '"debug"' if DEBUG else '"release"')]
    directives = {"language_level": 3, "embedsignature": True}
    if DEBUG:
        macros += [("CYTHON_TRACE_NOGIL", "1"), ("SWITCH_DEBUG_CHECKS", "1")]
        directives.update(linetrace=True, boundscheck=True, wraparound=True)
    else:
        directives.update(boundscheck=False, wraparound=False, cdivision=True)
    compile_args = ["-O2", "-Wall", "-Wno-unused-function", "-Wno-unreachable-code"]
    if DEBUG:
        compile_args = ["-O1", "-g", "-Wall", "-Wno-unused-function"]

    modules = []
    for pyx in sorted((ROOT / "core_ext").glob("_*.pyx")):
        if ONLY and pyx.stem not in ONLY:
            continue
        modules.append(Extension(
            f"core_ext.{pyx.stem}",
            [str(pyx.relative_to(ROOT))],
            define_macros=macros,
            extra_compile_args=compile_args,
        ))
    return cythonize(
        modules,
        compiler_directives=directives,
        annotate=DEBUG or os.environ.get("SWITCH_ANNOTATE", "") == "1",
        nthreads=int(os.environ.get("SWITCH_BUILD_JOBS", "2")),
        force=build_mode_changed(),
    )


write_generated_pxi()
setup(ext_modules=extensions())
