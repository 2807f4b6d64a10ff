"""Suite-wide setup and fixtures. Plain helpers live in tests/support.py (``from tests.support import ...``).

``tests`` and each test folder are packages (``__init__.py``), so pytest's default ``prepend`` import mode
puts the repository root (the first folder above them without ``__init__.py``) on ``sys.path`` itself: no
``sys.path`` edits here or in any test.
"""

import os

import pytest

# Modules whose scripts share the repository's data/reproduce/ folder (indexed data, dataset caches): under
# pytest-xdist they run on one worker, one after another.
_SHARED_REPRODUCE_FOLDER = {"test_reproduce_depth_vs_width.py", "test_scripts.py", "test_gpu_acceptance.py"}


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``--dist loadgroup``) each module is one unit of work, so module-scoped fixtures are
    built once and tests keep their file order; the modules sharing data/reproduce/ form one unit. Modules with
    slow end-to-end runs go first, so the longest runs do not start last on one worker while the other idles."""
    slow_modules = {item.path for item in items if item.get_closest_marker("slow")}
    for item in items:
        group = "reproduce-data" if item.path.name in _SHARED_REPRODUCE_FOLDER else str(item.path)
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: item.path not in slow_modules)  # stable: file order otherwise

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
