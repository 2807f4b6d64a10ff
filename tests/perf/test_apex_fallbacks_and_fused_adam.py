"""CPU-mode optimizer fast paths: foreach multi-tensor fallbacks and torch's fused AdamW, against the slow originals."""

import copy

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _cpu_mode():
    from megatron.perf import cpu_compat

    cpu_compat.enable_cpu_mode()
    yield


def _tensors(seed, shapes=((7, 3), (5,), (128, 64), (1,))):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g) * (i + 1) for i, s in enumerate(shapes)]


def test_foreach_l2_norm_matches_megatron_local():
    from megatron.core.utils import local_multi_tensor_l2_norm
    from megatron.perf.apex_fallbacks import foreach_l2_norm

    flag = torch.zeros(1, dtype=torch.int)
    tensors = _tensors(0)
    ours, _ = foreach_l2_norm(2048, flag, [tensors], False)
    ref, _ = local_multi_tensor_l2_norm(2048, flag, [tensors], False)
    assert ours.shape == ref.shape == (1,)
    torch.testing.assert_close(ours, ref.to(ours.device), rtol=1e-6, atol=0)
    closed_form = torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)).float()
    torch.testing.assert_close(ours[0], closed_form, rtol=1e-6, atol=0)
    empty, _ = foreach_l2_norm(2048, flag, [[]], False)
    assert empty.tolist() == [0.0]


@pytest.mark.parametrize("in_place", [True, False])
@pytest.mark.parametrize("scale", [0.37, 1.0])
def test_foreach_scale_matches_megatron_local(in_place, scale):
    from megatron.core.utils import local_multi_tensor_scale
    from megatron.perf.apex_fallbacks import foreach_scale

    flag = torch.zeros(1, dtype=torch.int)
    src = _tensors(1)
    dst_ours = src if in_place else [torch.zeros_like(t) for t in src]
    src_ref = [t.clone() for t in src]
    dst_ref = src_ref if in_place else [torch.zeros_like(t) for t in src]
    foreach_scale(2048, flag, [src, dst_ours], scale)
    local_multi_tensor_scale(2048, flag, [src_ref, dst_ref], scale)
    for a, b in zip(dst_ours, dst_ref):
        assert torch.equal(a, b)


def test_install_replaces_only_local_fallbacks():
    from megatron.core import utils as mcore_utils
    from megatron.core.optimizer import clip_grads
    from megatron.perf import apex_fallbacks

    apex_fallbacks.install()
    assert clip_grads.l2_norm_impl is apex_fallbacks.foreach_l2_norm
    assert clip_grads.multi_tensor_scale_impl is apex_fallbacks.foreach_scale
    assert apex_fallbacks.install() == []  # idempotent: nothing local left to swap
    sentinel = object()  # e.g. apex's amp_C kernel: must be left alone
    saved = clip_grads.l2_norm_impl
    clip_grads.l2_norm_impl = sentinel
    try:
        apex_fallbacks.install()
        assert clip_grads.l2_norm_impl is sentinel
    finally:
        clip_grads.l2_norm_impl = saved
    assert mcore_utils.local_multi_tensor_l2_norm is not apex_fallbacks.foreach_l2_norm


def test_fused_cpu_adamw_matches_reference_loop():
    """What use_fused_cpu_adam switches to gives the per-parameter AdamW result (5 steps, weight decay)."""
    from megatron.perf.fused_adam import use_fused_cpu_adam

    params = [torch.nn.Parameter(t) for t in _tensors(2)]
    ref_params = [torch.nn.Parameter(t.detach().clone()) for t in params]

    class _Wrapped:  # megatron's optimizer wrapper exposes the torch optimizer as .optimizer
        def __init__(self, opt):
            self.optimizer = opt

    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1, foreach=False)
    ref = torch.optim.AdamW(ref_params, lr=1e-2, weight_decay=0.1, foreach=False)
    use_fused_cpu_adam(_Wrapped(opt))
    assert opt.param_groups[0]["fused"] is True and opt.param_groups[0]["foreach"] is False
    for step in range(5):
        grads = _tensors(10 + step)
        for p, q, g in zip(params, ref_params, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    for p, q, start in zip(params, ref_params, _tensors(2)):
        assert not torch.equal(p, start)
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    # a state dict round-trip keeps it usable (what resume does)
    clone = torch.optim.AdamW([torch.nn.Parameter(p.detach().clone()) for p in params], lr=1e-2)
    clone.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert clone.param_groups[0]["fused"] is True
