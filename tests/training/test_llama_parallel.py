"""A Llama-shaped GPT (RMSNorm, SwiGLU, RoPE, grouped-query attention, no biases, untied output, q/k norms) trains
the same at TP=2 and PP=2 as in one process: per-iteration losses within 1e-5 (fp32, CPU, gloo).

TP=2 splits the grouped QKV by whole key/value groups and each rank's fc1 into its own [gate | linear] halves;
equal losses need the keyed init to put the same full weights behind every split (megatron.dslm.mcore.weight_init).
"""

import pytest

from tests.training.gpt_cases import NO_DROPOUT, TINY_GPT, assert_ok, losses
from tests.support import run_torchrun

ITERS = ["--train-iters", "6"]
LLAMA = ["--swiglu", "--normalization", "RMSNorm", "--position-embedding-type", "rope", "--rotary-base", "500000",
         "--group-query-attention", "--num-query-groups", "2", "--disable-bias-linear",
         "--untie-embeddings-and-output-weights", "--qk-layernorm", "--apply-layernorm-1p"]
LAYOUTS = {
    "tp2": (2, ["--tensor-model-parallel-size", "2"]),
    "pp2": (2, ["--pipeline-model-parallel-size", "2"]),
}
_REFERENCE = {}


def _scheme_flags(scheme: str) -> list:
    """The scheme's flags; a scheme with no table for this shape yet is skipped with the registry's reason."""
    from megatron.dslm.config import model_arch
    from megatron.dslm.schemes.registry import build_init_table
    from megatron.training.config import build_parser

    args = build_parser().parse_args(TINY_GPT[1:] + LLAMA + ["--init-scheme", scheme])
    args.ffn_hidden_size = None
    try:
        build_init_table(scheme, model_arch(args))
    except (KeyError, ValueError, NotImplementedError) as err:
        pytest.skip(f"init scheme {scheme} builds no table for the Llama shape yet: {err!r}")
    return ["--init-scheme", scheme]


def _reference(scheme: str) -> dict:
    if scheme not in _REFERENCE:
        proc = run_torchrun(1, TINY_GPT + NO_DROPOUT + ITERS + LLAMA + _scheme_flags(scheme), timeout=600)
        assert_ok(proc)
        _REFERENCE[scheme] = losses(proc.stdout)
        assert sorted(_REFERENCE[scheme]) == list(range(1, 7))
    return _REFERENCE[scheme]


@pytest.mark.dist
@pytest.mark.parametrize("scheme,layout", [("megatron", "tp2"), ("megatron", "pp2"), ("dslm", "tp2"),
                                           ("dslm", "pp2")])
def test_llama_layout_matches_single_process(scheme, layout):
    flags = _scheme_flags(scheme)
    ref = _reference(scheme)
    nproc, layout_flags = LAYOUTS[layout]
    proc = run_torchrun(nproc, TINY_GPT + NO_DROPOUT + ITERS + LLAMA + flags + layout_flags, timeout=900)
    assert_ok(proc)
    got = losses(proc.stdout)
    assert sorted(got) == sorted(ref)
    for it in ref:
        assert got[it] == pytest.approx(ref[it], abs=1e-5), f"iteration {it}: {got[it]} vs {ref[it]}"
    assert ref[6] < ref[1]  # the losses move: equal constant curves would prove nothing


@pytest.mark.dist
def test_llama_full_weights_equal_at_tp2(tmp_path):
    """Gate and linear halves of fc1 and the grouped QKV rows: the same full tensors at TP=2 as at TP=1."""
    import torch

    from tests.support import REPO_ROOT

    script = str(REPO_ROOT / "tests" / "dslm" / "scripts" / "dump_llama_weights.py")
    full = {}
    for tp in (1, 2):
        proc = run_torchrun(tp, [script, "--tp", str(tp), "--out", str(tmp_path / f"tp{tp}.pt")], timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        full[tp] = torch.load(tmp_path / f"tp{tp}.pt", weights_only=False)
    assert full[1].keys() == full[2].keys()
    fc1 = [k for k in full[1] if "linear_fc1.weight" in k]
    qkv = [k for k in full[1] if "linear_qkv.weight" in k]
    assert fc1 and qkv and "output_layer.weight#None" in full[1]
    for name, ref in full[1].items():
        assert not torch.isnan(full[2][name]).any(), f"{name}: unfilled shards at TP=2"
        assert torch.equal(ref, full[2][name]), name
    # The global fc1 is [gate; linear] with the table's two stds (gate 0.07 * layer, linear 0.02 * (1 + l/4)).
    for name in fc1:
        layer = int(name.split("#")[1]) + 1
        gate, up = full[1][name].chunk(2, dim=0)
        assert gate.std().item() == pytest.approx(0.07 * layer, rel=0.1)
        assert up.std().item() == pytest.approx(0.02 * (1 + layer / 4), rel=0.1)
