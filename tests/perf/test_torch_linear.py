"""``F.linear`` TP linears (megatron/perf/torch_linear.py) equal megatron-core's autograd-Function path
(fp32, CPU)."""

from megatron.perf import SpeedOptions

import pytest
import torch

from tests.support import causal_inputs, hand_table, make_config


pytestmark = pytest.mark.usefixtures("single_process_megatron")


def _run(model, inputs):
    out = model(*inputs)
    out.float().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("post_ln", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_torch_linears_match_megatron_gpt(post_ln, dropout):
    from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
    from megatron.perf.torch_linear import TorchColumnParallelLinear, TorchRowParallelLinear
    from megatron.dslm.mcore.models import build_gpt_model
    from megatron.training.initialize import set_random_seed

    tokens, pos, _ = causal_inputs(3, 16, 64, seed=5)
    results = []
    for fast in (False, True):
        model = build_gpt_model(make_config(num_layers=3, hidden=64, heads=4, dropout=dropout),
                                hand_table(3, std=0.3, lam=0.8, beta=0.6), vocab_size=64, max_sequence_length=16,
                                seed=4, post_ln=post_ln, speed=SpeedOptions(torch_linear=fast))
        linears = [m for m in model.modules() if isinstance(m, (ColumnParallelLinear, RowParallelLinear))]
        fast_ones = [m for m in linears if isinstance(m, (TorchColumnParallelLinear, TorchRowParallelLinear))]
        # 4 per layer (qkv, proj, fc1, fc2) + the output layer; all on the fast path at TP=1
        assert len(linears) == 13 and len(fast_ones) == (13 if fast else 0)
        assert all(m._torch_path for m in fast_ones)
        # biases are real (non-zero) so folding them into the GEMM is exercised
        for m in linears:
            if m.bias is not None:
                with torch.no_grad():
                    m.bias.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(7))
        set_random_seed(123)  # same dropout masks in both runs (default and model-parallel RNG streams)
        results.append(_run(model, (tokens, pos, None)))
    (out_ref, g_ref), (out_fast, g_fast) = results
    assert out_ref.std() > 0.1
    # fp32 rounding (bias inside vs after the GEMM) scales with the magnitudes involved
    scale = max(1.0, out_ref.abs().max().item())
    torch.testing.assert_close(out_fast, out_ref, rtol=1e-5, atol=1e-5 * scale)
    assert set(g_ref) == set(g_fast) and len(g_ref) > 10
    for name in g_ref:
        assert g_ref[name].abs().max() > 0, name
        g_scale = max(1.0, g_ref[name].abs().max().item())
        torch.testing.assert_close(g_fast[name], g_ref[name], rtol=1e-5, atol=1e-6 * g_scale, msg=name)


def test_bias_is_returned_separately_when_activation_fusion_wants_it():
    """With bias_activation_fusion the MLP fuses bias+GeLU itself: fc1 must keep handing the bias back."""
    from megatron.dslm.mcore.models import build_gpt_model

    model = build_gpt_model(make_config(num_layers=1, hidden=32, heads=4, bias_activation_fusion=True),
                            hand_table(1, std=0.1), vocab_size=64, max_sequence_length=8, seed=1,
                            speed=SpeedOptions(torch_linear=True))
    layer = model.decoder.layers[0]
    x = torch.randn(8, 2, 32)
    out, bias = layer.mlp.linear_fc1(x)
    assert bias is layer.mlp.linear_fc1.bias
    torch.testing.assert_close(out, x @ layer.mlp.linear_fc1.weight.t())
    out, bias = layer.mlp.linear_fc2(torch.randn(8, 2, 128))
    assert bias is None  # row-parallel: bias folded, bda adds nothing


def test_tensor_parallel_layers_keep_megatron_path(monkeypatch):
    """A linear with a TP partner (faked here: group size 2) is swapped but must take megatron's own path."""
    from megatron.perf import torch_linear as fast_linear
    from megatron.dslm.mcore.models import build_gpt_model

    class _FakeGroup:
        def size(self):
            return 2

    model = build_gpt_model(make_config(num_layers=1, hidden=32, heads=4), hand_table(1, std=0.1), vocab_size=64,
                            max_sequence_length=8, seed=1, speed=SpeedOptions(torch_linear=False))
    fc1 = model.decoder.layers[0].mlp.linear_fc1
    real_group = fc1.tp_group
    fc1.tp_group = _FakeGroup()
    assert fast_linear._torch_path_possible(fc1) is False
    fc1.tp_group = real_group
    assert fast_linear._torch_path_possible(fc1) is True
    fc1.sequence_parallel = True
    assert fast_linear._torch_path_possible(fc1) is False
