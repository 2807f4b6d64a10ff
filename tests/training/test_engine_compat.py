"""The megatron-core differences the code answers in one place (megatron/training/engine_compat.py, patch 6 of
megatron/perf/cpu_compat.py), checked against the engine that is installed."""

import pytest
import torch

from megatron.training import engine_compat


@pytest.mark.parametrize("text, release", [
    ("0.16.1", (0, 16, 1)), ("0.19.2", (0, 19, 2)), ("0.19.0rc1", (0, 19, 0)), ("0.17.1+local", (0, 17, 1)),
])
def test_release_number_parses(text, release):
    assert engine_compat._release(text) == release


def test_common_state_place_agrees_with_what_the_installed_engine_reads():
    """The version threshold says where common state lives; the engine's own reader must agree (0.19 has a
    separate path for a legacy common.pt, 0.16 only reads common.pt)."""
    from megatron.core.dist_checkpointing import serialization

    reads_shards = hasattr(serialization, "_legacy_common_state_exists")
    assert engine_compat.COMMON_STATE_IN_SHARDS == reads_shards
    assert ("common.pt" in engine_compat.CHECKPOINT_REQUIRED_FILES) == (not reads_shards)
    assert {".metadata", "metadata.json"} <= set(engine_compat.CHECKPOINT_REQUIRED_FILES)


def test_cpu_mode_current_stream_waits_for_nothing():
    from megatron.perf import cpu_compat

    cpu_compat.enable_cpu_mode()
    stream = torch.cuda.current_stream()
    assert stream is torch.cuda.current_stream()
    assert stream.wait_event(object()) is None and stream.wait_stream(stream) is None
    assert stream.synchronize() is None and stream.query() is True
