"""Fixtures shared by the whole suite.

`impl` runs a test once against each core implementation -- the compiled
Cython core and its pure-Python reference twin -- so every behaviour is pinned
down for both.  Tests that compare the two take `compiled` and `reference`.
"""
from __future__ import annotations

import pytest

import core_ext


@pytest.fixture(params=core_ext.IMPLEMENTATIONS)
def impl(request):
    """The core under test, once compiled and once the reference twin."""
    return core_ext.implementation(request.param)


@pytest.fixture
def compiled():
    return core_ext.implementation("compiled")


@pytest.fixture
def reference():
    return core_ext.implementation("reference")
