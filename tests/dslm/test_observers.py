"""MomentObserver against direct computations on captured tensors; hook hygiene; JSONL/TensorBoard writer."""

from __future__ import annotations

from megatron.perf import SpeedOptions
import json
import math

import pytest
import torch

from tests.support import causal_inputs, hand_table, make_config


pytestmark = pytest.mark.usefixtures("single_process_megatron")


def _direct_moments(x: torch.Tensor) -> dict:
    """Straight from the definitions with an explicit token-pair covariance matrix (float64)."""
    x = x.detach().double()
    mean = x.mean()
    c = x - mean
    var = (c * c).mean()
    s = x.shape[0]
    # cov[i, j] averaged over sequences and features; keep only i != j
    cov = torch.einsum("ibf,jbf->ij", c, c) / (x.shape[1] * x.shape[2])
    off = cov[~torch.eye(s, dtype=torch.bool)].mean()
    return {"forward_mean": mean.item(), "forward_var": var.item(), "forward_corr": (off / var).item()}


def _hook_counts(model):
    return {name: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for name, m in model.named_modules()}


def _capture(model):
    """Independent capture of layer outputs (with grads), attention q/k and pre-norm inputs."""
    from megatron.core.transformer.transformer_layer import TransformerLayer

    cap = {"out": {}, "qk": {}, "pre": {}}
    handles = []
    handles.append(model.embedding.register_forward_hook(
        lambda m, i, o: cap["out"].setdefault(0, []).append(o) or o.retain_grad()))
    for mod in model.modules():
        if isinstance(mod, TransformerLayer):
            n = mod.layer_number

            def out_hook(m, i, o, n=n):
                o[0].retain_grad()
                cap["out"].setdefault(n, []).append(o[0])
            handles.append(mod.register_forward_hook(out_hook))
            handles.append(mod.self_attention.core_attention.register_forward_pre_hook(
                lambda m, a, n=n: cap["qk"].setdefault(n, []).append((a[0].detach(), a[1].detach()))))
            if mod.post_mlp_layernorm is not None:
                handles.append(mod.post_mlp_layernorm.register_forward_pre_hook(
                    lambda m, a, n=n: cap["pre"].setdefault(n, []).append(a[0].detach())))
    return cap, handles


def _logits_direct(q, k):
    # q, k: [s, b, np, hn] -> scores [b, np, s, s] / sqrt(hn), causal-valid entries
    scores = torch.einsum("ibnh,jbnh->bnij", q.double(), k.double()) / math.sqrt(q.shape[-1])
    s = q.shape[0]
    valid = ~torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1)
    return scores[..., valid]


@pytest.mark.parametrize("post_ln", [False, True])
def test_observer_matches_direct_computation(post_ln):
    from megatron.dslm.mcore.models import build_gpt_model
    from megatron.dslm.mcore.observers import MomentObserver

    model = build_gpt_model(make_config(num_layers=3, hidden=32, heads=4), hand_table(3, std=0.1, lam=0.9, beta=0.5),
                            vocab_size=64, max_sequence_length=16, post_ln=post_ln, seed=2)
    before = _hook_counts(model)
    obs = MomentObserver([model]).attach()
    cap, handles = _capture(model)
    # two micro-batches, pooled by the observer; the direct computation concatenates them along the batch
    for seed in (0, 1):
        tokens, pos, mask = causal_inputs(2, 8, 64, seed=seed)
        (model(tokens, pos, mask) ** 2).mean().backward()
    records = obs.collect()
    obs.detach()
    for h in handles:
        h.remove()
    assert _hook_counts(model) == before, "hooks left behind after detach()"

    assert [r["layer"] for r in records] == [0, 1, 2, 3]
    for rec in records:
        n = rec["layer"]
        outs = cap["out"][n]
        x = torch.cat(outs, dim=1)
        want = _direct_moments(x)
        for key, value in want.items():
            assert rec[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (n, key)
        g = torch.cat([o.grad for o in outs], dim=1).double()
        assert rec["grad_var"] == pytest.approx(g.var(unbiased=False).item(), rel=1e-9)
        if n == 0:
            assert "attn_logit_var" not in rec
            continue
        q = torch.cat([qk[0] for qk in cap["qk"][n]], dim=1)
        k = torch.cat([qk[1] for qk in cap["qk"][n]], dim=1)
        z = _logits_direct(q, k)
        assert rec["attn_logit_var"] == pytest.approx(z.var(unbiased=False).item(), rel=1e-6)
        assert rec["attn_logit_max"] == pytest.approx(z.max().item(), rel=1e-6)
        if post_ln:
            pre = torch.cat(cap["pre"][n], dim=1).double()
            assert rec["pre_norm_var"] == pytest.approx(pre.var(unbiased=False).item(), rel=1e-9)
            assert rec["forward_var"] == pytest.approx(1.0, abs=1e-3)  # normalised by construction
        else:
            assert "pre_norm_var" not in rec


def test_observer_bert_and_fresh_stats_per_attach():
    from megatron.dslm.mcore.models import build_bert_model
    from megatron.dslm.mcore.observers import MomentObserver

    model = build_bert_model(make_config(num_layers=2), hand_table(2, std=0.1), vocab_size=64,
                             max_sequence_length=16, post_ln=True)
    tokens = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    pad = torch.ones(2, 8, dtype=torch.long)
    pad[1, 5:] = 0
    obs = MomentObserver(model)
    results = []
    for _ in range(2):
        obs.attach()
        loss, _ = model(tokens, pad, tokentype_ids=torch.zeros_like(tokens), lm_labels=tokens)
        loss.float().mean().backward()
        results.append(obs.collect())
        obs.detach()
    assert results[0] == results[1]  # attach() starts fresh: no accumulation across logged steps
    assert results[0][0]["layer"] == 0 and "pre_norm_var" in results[0][0]  # before the embedding LN
    assert all(math.isfinite(r["attn_logit_var"]) for r in results[0][1:])
    # no hooks fire after detach
    model(tokens, pad, tokentype_ids=torch.zeros_like(tokens))
    assert obs.collect() == results[1]


def test_write_moment_records(tmp_path):
    from megatron.dslm.mcore.observers import write_moment_records

    class FakeWriter:
        def __init__(self):
            self.calls = []

        def add_scalar(self, tag, value, step):
            self.calls.append((tag, value, step))

    records = [{"layer": 0, "forward_var": 1.5, "forward_mean": 0.0},
               {"layer": 1, "forward_var": 2.5, "grad_var": 0.1}]
    path = tmp_path / "sub" / "moments.jsonl"
    tb = FakeWriter()
    write_moment_records(str(path), records, 1, tb_writer=tb)
    write_moment_records(str(path), records, 5)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 4
    assert lines[0] == {"iteration": 1, "layer": 0, "forward_var": 1.5, "forward_mean": 0.0}
    assert lines[3]["iteration"] == 5 and lines[3]["grad_var"] == 0.1
    assert ("moments/forward_var/layer_1", 2.5, 1) in tb.calls and len(tb.calls) == 4


@pytest.mark.dist
@pytest.mark.parametrize("layout", ["tp2", "pp2"])
@pytest.mark.parametrize("kind", ["gpt", "bert"])
def test_moments_equal_tp1(layout_dumps, layout, kind):
    ref = layout_dumps["tp1"][f"{kind}_moments"]
    got = layout_dumps[layout][f"{kind}_moments"]
    assert [r["layer"] for r in ref] == [r["layer"] for r in got] == list(range(0, 5))
    for a, b in zip(ref, got):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-9), (layout, kind, a["layer"], key)


def test_plot_moments_script(tmp_path):
    """JSONL from the writer -> PNG, with the theory overlay from the model flags."""
    from megatron.dslm.mcore.models import build_gpt_model
    from megatron.dslm.mcore.observers import MomentObserver, write_moment_records

    model = build_gpt_model(make_config(num_layers=2), hand_table(2, std=0.1), vocab_size=64, max_sequence_length=16)
    obs = MomentObserver(model).attach()
    tokens, pos, mask = causal_inputs(2, 8, 64)
    model(tokens, pos, mask).float().pow(2).mean().backward()
    path = tmp_path / "moments.jsonl"
    write_moment_records(str(path), obs.collect(), 3)
    obs.detach()
    from megatron.dslm import plot_moments

    out = tmp_path / "m.png"
    plot_moments.main(["--moments-file", str(path), "--out", str(out), "--num-layers", "2", "--hidden-size", "32",
                       "--num-attention-heads", "4", "--seq-length", "8", "--init-scheme", "megatron"])
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit, match="iterations present"):
        plot_moments.read_records(str(path), iteration=7)


@pytest.mark.parametrize("with_mask", [False, True])
def test_sdpa_attention_logit_moments_equal_local(with_mask):
    """The fused (SDPA) core never forms the scores; the observer recomputes them and must agree with local."""
    from megatron.dslm.mcore.models import build_gpt_model
    from megatron.dslm.mcore.observers import MomentObserver

    records = {}
    for fast in (False, True):
        model = build_gpt_model(make_config(num_layers=2, hidden=32, heads=4), hand_table(2, std=0.2),
                                vocab_size=64, max_sequence_length=16, seed=3, speed=SpeedOptions(sdpa_attention=fast))
        obs = MomentObserver([model]).attach()
        tokens, pos, mask = causal_inputs(2, 8, 64, seed=5)
        (model(tokens, pos, mask if with_mask else None) ** 2).mean().backward()
        records[fast] = obs.collect()
        obs.detach()
    assert [r["layer"] for r in records[True]] == [0, 1, 2]
    for local, fused in zip(records[False], records[True]):
        assert set(local) == set(fused)
        for key in local:
            assert fused[key] == pytest.approx(local[key], rel=1e-5, abs=1e-8), (local["layer"], key)
    assert records[True][1]["attn_logit_var"] > 0


def test_forward_sums_pool_batches_to_the_direct_moments():
    """The public sums/moments pair (used by scripts) pools batches exactly like one concatenated batch."""
    from megatron.dslm.mcore.observers import forward_sums, moments_from_forward

    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 2, 16, generator=g) + 0.3 * torch.randn(1, 2, 16, generator=g)
    b = torch.randn(8, 3, 16, generator=g)
    got = moments_from_forward(forward_sums(a) + forward_sums(b))
    want = _direct_moments(torch.cat([a, b], dim=1))
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
