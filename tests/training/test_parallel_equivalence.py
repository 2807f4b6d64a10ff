"""TP / PP / DP layouts train the same model: per-iteration losses equal the 1-process run within 1e-5.

This holds only because weights are drawn layout-independently (megatron.dslm.mcore.weight_init) and fp32 is used;
dropout is off because tensor-parallel regions use per-rank dropout streams.
"""

import pytest

from tests.training.gpt_cases import NO_DROPOUT, TINY_GPT, assert_ok, losses
from tests.support import run_torchrun

ITERS = ["--train-iters", "6"]

LAYOUTS = {
    "tp2": (2, ["--tensor-model-parallel-size", "2"]),
    "pp2": (2, ["--pipeline-model-parallel-size", "2"]),
    "tp2pp2": (4, ["--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2"]),
    "dp2-distopt": (2, ["--use-distributed-optimizer"]),
}


@pytest.fixture(scope="module")
def reference_losses():
    proc = run_torchrun(1, TINY_GPT + NO_DROPOUT + ITERS, timeout=600)
    assert_ok(proc)
    ref = losses(proc.stdout)
    assert sorted(ref) == list(range(1, 7))
    return ref


@pytest.mark.dist
# Every layout with the default scheme; DSLM (per-layer sigma, lambda/beta residuals) on TP2xPP2, which
# exercises TP and PP at once and keeps the suite short.
@pytest.mark.parametrize("scheme,layout", [("megatron", name) for name in sorted(LAYOUTS)] + [("dslm", "tp2pp2")])
def test_layout_matches_single_process(reference_losses, layout, scheme):
    nproc, flags = LAYOUTS[layout]
    if scheme != "megatron":
        ref_proc = run_torchrun(1, TINY_GPT + NO_DROPOUT + ITERS + ["--init-scheme", scheme], timeout=600)
        assert_ok(ref_proc)
        ref = losses(ref_proc.stdout)
    else:
        ref = reference_losses
    proc = run_torchrun(nproc, TINY_GPT + NO_DROPOUT + ITERS + flags + ["--init-scheme", scheme], timeout=900)
    assert_ok(proc)
    got = losses(proc.stdout)
    assert sorted(got) == sorted(ref)
    for it in ref:
        assert got[it] == pytest.approx(ref[it], abs=1e-5), f"iteration {it}: {got[it]} vs {ref[it]}"
    # The losses must move: equality of constant curves would prove nothing.
    assert ref[6] < ref[1]
