"""Fixtures shared by tests/dslm: the multi-process layout runs are made once per session."""

import pytest


@pytest.fixture(scope="session")
def layout_dumps(tmp_path_factory):
    """Full weights and moments dumped by TP1, TP2 and PP2 runs (shared by the weight-init and observer tests)."""
    from tests.support import layout_dumps as dumps

    return dumps(tmp_path_factory)

