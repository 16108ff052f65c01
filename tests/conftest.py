"""Fixtures shared by the whole suite.

`impl` runs a test once against each core implementation -- the compiled
Cython core and its pure-Python reference twin -- so every behaviour is pinned
down for both.  Tests that compare the two take `compiled` and `reference`.
`loop_kind` runs a server test on each event loop; `config` is the small
switch configuration of test_server_helpers (a module may override it).
"""
from __future__ import annotations

import pytest

import core_ext
import test_server_helpers
from switch import config as config_module


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


@pytest.fixture(params=test_server_helpers.LOOP_KINDS)
def loop_kind(request):
    return request.param


@pytest.fixture
def config():
    return config_module.parse(test_server_helpers.document())
