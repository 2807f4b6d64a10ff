"""Suite-wide setup and fixtures. Plain helpers live in tests/support.py (``from tests.support import ...``).

``tests`` and each test folder are packages (``__init__.py``), so pytest's default ``prepend`` import mode
puts the repository root (the first folder above them without ``__init__.py``) on ``sys.path`` itself: no
``sys.path`` edits here or in any test.
"""

import os

import pytest

# Offline everywhere: hub downloads fail on our machines and must never be attempted by tests.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def single_process_megatron():
    """World size 1 (gloo on CPU) with megatron's parallel groups and seeded RNG streams, for in-process builds.

    The one such fixture of the suite: use it with ``pytestmark = pytest.mark.usefixtures("single_process_megatron")``
    (or per test). Module-scoped so every module starts from the same RNG state (seed 1)."""
    from megatron.training.initialize import initialize_distributed, set_random_seed

    initialize_distributed(1, 1)
    set_random_seed(1)  # megatron's RNG tracker must hold its streams before any forward
    yield
