"""Activation recompute reruns forwards inside backward: logged moments must still count each forward once.

Recompute replays the RNG, so a rerun adds an exact duplicate, which leaves the moments (ratios of sums)
unchanged: the pooled sums themselves (element counts included) are compared as well.
"""

from __future__ import annotations

import pytest
import torch

from tests.support import causal_inputs, hand_table, make_config

pytestmark = pytest.mark.usefixtures("single_process_megatron")

MODES = {
    "none": {},
    "selective": dict(recompute_granularity="selective"),
    "full-uniform": dict(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1),
    "full-uniform-2": dict(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=2),
    "full-block": dict(recompute_granularity="full", recompute_method="block", recompute_num_layers=1),
}


def _step_records(mode: str, post_ln: bool, sdpa: bool = False):
    from megatron.dslm.mcore.models import build_gpt_model
    from megatron.dslm.mcore.observers import MomentObserver
    from megatron.training.initialize import set_random_seed
    from megatron.perf import SpeedOptions

    set_random_seed(1)  # same dropout stream in every mode: the recompute must replay it, not draw anew
    model = build_gpt_model(make_config(num_layers=2, hidden=32, heads=4, dropout=0.1, **MODES[mode]),
                            hand_table(2, std=0.1, lam=0.9, beta=0.5), vocab_size=64, max_sequence_length=16,
                            post_ln=post_ln, seed=4, speed=SpeedOptions(sdpa_attention=sdpa))
    model.train()
    calls = {"layer": 0}
    for layer in model.decoder.layers:
        layer.register_forward_hook(lambda *_: calls.__setitem__("layer", calls["layer"] + 1))
    obs = MomentObserver([model]).attach()
    for seed in (0, 1):  # two micro-batches of one logged step
        tokens, pos, mask = causal_inputs(2, 8, 64, seed=seed)
        (model(tokens, pos, mask) ** 2).mean().backward()
    records = obs.collect()
    obs.detach()
    return records, calls["layer"], _sums(obs)


def _sums(obs):
    """The pooled sufficient sums per layer and field: a duplicated forward doubles them."""
    out = {}
    for number, st in obs._stats.items():
        for field in ("fwd", "grad", "logit", "pre_norm", "pre_norm_attn"):
            value = getattr(st, field)
            if value is not None:
                out[(number, field)] = value.tolist()
    return out


def _assert_same_sums(ref, got, mode):
    assert set(got) == set(ref), mode
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), (mode, key)


@pytest.mark.parametrize("post_ln", [False, True])
@pytest.mark.parametrize("mode", [m for m in MODES if m != "none"])
def test_moments_under_recompute_equal_no_recompute(mode, post_ln):
    ref, ref_calls, ref_sums = _step_records("none", post_ln)
    got, calls, sums = _step_records(mode, post_ln)
    if mode.startswith("full"):
        assert calls > ref_calls  # the layers really ran twice: otherwise this test proves nothing
    assert [r["layer"] for r in got] == [r["layer"] for r in ref] == [0, 1, 2]
    for a, b in zip(ref, got):
        assert "grad_var" in a and ("attn_logit_var" in a or a["layer"] == 0)
        assert set(b) == set(a), (mode, a["layer"])
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12), (mode, a["layer"], key)
    _assert_same_sums(ref_sums, sums, mode)


def test_sdpa_logit_moments_under_selective_recompute():
    ref, _, ref_sums = _step_records("none", False, sdpa=True)
    got, _, sums = _step_records("selective", False, sdpa=True)
    _assert_same_sums(ref_sums, sums, "selective-sdpa")
    for a, b in zip(ref, got):
        assert set(b) == set(a)
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12), (a["layer"], key)


def test_observer_still_records_a_no_grad_forward():
    """Forwards under torch.no_grad (moment figures at init) are not mistaken for recompute."""
    from megatron.dslm.mcore.models import build_gpt_model
    from megatron.dslm.mcore.observers import MomentObserver

    model = build_gpt_model(make_config(num_layers=2, **MODES["full-uniform"]), hand_table(2, std=0.1),
                            vocab_size=64, max_sequence_length=16, seed=4)
    obs = MomentObserver([model]).attach()
    tokens, pos, mask = causal_inputs(2, 8, 64)
    with torch.no_grad():
        model(tokens, pos, mask)
    records = obs.collect()
    obs.detach()
    assert [r["layer"] for r in records] == [0, 1, 2]
    assert all("forward_var" in r and "grad_var" not in r for r in records)
