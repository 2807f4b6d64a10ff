import os
import sys
from pathlib import Path

import pytest

# Offline everywhere: hub downloads fail on our machines and must never be attempted by tests.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


@pytest.fixture(scope="module")
def single_process_megatron():
    """World size 1 (gloo on CPU) with megatron's parallel groups and seeded RNG streams, for in-process builds."""
    from megatron.training.initialize import initialize_distributed, set_random_seed

    initialize_distributed(1, 1)
    set_random_seed(1)
    yield
