"""Fixtures shared by tests/dslm: the multi-process layout runs are made once per session."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "scripts"))


@pytest.fixture(scope="session")
def layout_dumps(tmp_path_factory):
    """Full weights and moments dumped by TP1, TP2 and PP2 runs (shared by the weight-init and observer tests)."""
    from common import layout_dumps as dumps

    return dumps(tmp_path_factory)

