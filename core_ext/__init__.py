"""The switch's core: wire decoding, QR validation, rules, ledger posting.

It comes in two implementations with the same functions and results:

* `core_ext.compiled` -- the Cython modules `core_ext/_*.pyx`, the one that
  serves payments;
* `core_ext.reference` -- the pure-Python reference twin, `core_ext/reference/`,
  written for clarity; tests run against both and compare them.

`core_ext.core` is the one selected for this process: the compiled core,
unless SWITCH_PUREPYTHON=1 asks for the twin.  It is resolved on first use,
so that the registries (`core_ext.codes`, `core_ext.limits`) can be imported
before anything is compiled (setup.py does).  A missing compiled core is an
error, never a silent fall back to the slow twin.
"""
from __future__ import annotations

import importlib
import os
import types

IMPLEMENTATIONS = ("compiled", "reference")


def implementation(name: str) -> types.ModuleType:
    """The core named `name` ("compiled" or "reference")."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"no core implementation named {name!r}; choose from {IMPLEMENTATIONS}")
    return importlib.import_module(f"core_ext.{name}")


def _select() -> types.ModuleType:
    if os.environ.get("SWITCH_PUREPYTHON", "") == "1":
        return implementation("reference")
    return implementation("compiled")


def __getattr__(name: str):
    if name == "core":
        selected = _select()
        globals()["core"] = selected
        return selected
    raise AttributeError(f"module 'core_ext' has no attribute {name!r}")
