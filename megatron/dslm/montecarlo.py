"""Monte-Carlo measurements of every closed form in ``megatron.dslm.theory`` (torch, CPU).

One ``case_*`` per component draws inputs, weights and gradients, runs the component in torch and returns
{quantity: (predicted, measured)}; one ``sweep_*`` draws random configurations in the reference's ranges,
sized for one CPU core (docs/theory.md, "Monte-Carlo verification"). ``tests/dslm/theory`` and
``python -m megatron.dslm.simulate`` both use them.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

from .theory import activations, attention, blocks, gated, layers, output_layer, rmsnorm
from .theory.moments import GradMoments, Moments
from .theory.rotary import Rotary, rotary_logit_corr

# Reference percentiles (50/90/99, %) of |predicted - measured| / |measured| (docs/theory.md,
# "Monte-Carlo verification"); None where the reference reports none.
REFERENCE = {
    ("linear", "var"): (0.4, 1.4, 2.8),
    ("relu", "var"): (0.5, 1.9, 3.4),
    ("gelu", "var"): (0.2, 0.6, 1.3),
    ("layernorm", "grad_var"): (0.4, 1.5, 3.2),
    ("dropout", "var"): (0.1, 0.5, 1.5),
    ("softmax", "var"): (0.2, 0.9, 4.0),
    ("sha", "var"): (1.4, 4.1, 7.8),
    ("sha", "grad_var"): (2.2, 13.3, 44.5),
}


def correlated_normal(gen, shape, mean: float, std: float, corr: float) -> torch.Tensor:
    """Tokens (dim -2) jointly Gaussian with the given mean, std and pairwise correlation."""
    shared_shape = shape[:-2] + (1, shape[-1])
    shared = torch.randn(shared_shape, generator=gen)
    own = torch.randn(shape, generator=gen)
    return mean + std * (math.sqrt(corr) * shared + math.sqrt(1.0 - corr) * own)


def token_cov(t: torch.Tensor, mean: float = None) -> float:
    """Mean covariance of two distinct tokens (dim -2) of the same feature, about ``mean`` (default: sample mean)."""
    centre = t.mean() if mean is None else mean
    c = t - centre
    length = t.shape[-2]
    total = c.sum(-2)
    pairs = (total**2 - (c**2).sum(-2)).mean() / (length * (length - 1))
    return float(pairs)


def _measure(out: torch.Tensor, inp: torch.Tensor, grad: torch.Tensor) -> Dict[str, float]:
    out.backward(grad)
    return {
        "mean": float(out.detach().mean()),
        "var": float(out.detach().var()),
        "cov": token_cov(out.detach()),
        "grad_var": float(inp.grad.pow(2).mean()),
        "grad_cov": token_cov(inp.grad, 0.0),
    }


def _predicted(fwd: Moments, bwd: GradMoments) -> Dict[str, float]:
    return {"mean": fwd.mean, "var": fwd.var, "cov": fwd.cov, "grad_var": bwd.var, "grad_cov": bwd.cov}


# ---- one function per component: (config, generator) -> {quantity: (predicted, measured)} ----


def case_linear(cfg, gen):
    x = correlated_normal(gen, (cfg["batch"], cfg["length"], cfg["d_in"]), cfg["mean"], cfg["std"], cfg["corr"])
    x.requires_grad_(True)
    w = torch.randn(cfg["batch"], cfg["d_in"], cfg["d_out"], generator=gen) * cfg["weight_std"]
    g = correlated_normal(gen, (cfg["batch"], cfg["length"], cfg["d_out"]), 0.0, cfg["grad_std"], cfg["grad_corr"])
    measured = _measure(x @ w, x, g)
    xm = Moments(cfg["mean"], cfg["std"] ** 2, cfg["corr"])
    gm = GradMoments(cfg["grad_std"] ** 2, cfg["grad_corr"])
    pred = _predicted(layers.linear(xm, cfg["d_in"], cfg["weight_std"]), layers.linear_backward(gm, cfg["d_out"], cfg["weight_std"]))
    return {k: (pred[k], measured[k]) for k in ("var", "cov", "grad_var", "grad_cov")}


def _case_activation(name, fn):
    def case(cfg, gen):
        shape = (cfg["batch"], cfg["length"], cfg["width"])
        x = correlated_normal(gen, shape, 0.0, cfg["std"], cfg["corr"]).requires_grad_(True)
        g = correlated_normal(gen, shape, 0.0, cfg["grad_std"], cfg["grad_corr"])
        measured = _measure(fn(x), x, g)
        xm = Moments(0.0, cfg["std"] ** 2, cfg["corr"])
        gm = GradMoments(cfg["grad_std"] ** 2, cfg["grad_corr"])
        pred = _predicted(activations.activation(xm, name), activations.activation_backward(gm, xm, name))
        return {k: (pred[k], measured[k]) for k in ("mean", "var", "cov", "grad_var", "grad_cov")}

    return case


def case_layernorm(cfg, gen):
    shape = (cfg["batch"], cfg["length"], cfg["width"])
    x = correlated_normal(gen, shape, cfg["mean"], cfg["std"], cfg["corr"]).requires_grad_(True)
    g = correlated_normal(gen, shape, 0.0, cfg["grad_std"], cfg["grad_corr"])
    out = torch.nn.functional.layer_norm(x, (cfg["width"],)) * cfg["gamma"] + cfg["beta"]
    measured = _measure(out, x, g)
    xm = Moments(cfg["mean"], cfg["std"] ** 2, cfg["corr"])
    gm = GradMoments(cfg["grad_std"] ** 2, cfg["grad_corr"])
    fwd = layers.layernorm(xm, cfg["width"], cfg["gamma"], cfg["beta"])
    pred = _predicted(fwd, layers.layernorm_backward(gm, xm, cfg["width"], cfg["gamma"]))
    return {k: (pred[k], measured[k]) for k in ("var", "cov", "grad_var", "grad_cov")}


def case_dropout(cfg, gen):
    shape = (cfg["batch"], cfg["length"], cfg["width"])
    x = correlated_normal(gen, shape, cfg["mean"], cfg["std"], cfg["corr"]).requires_grad_(True)
    g = correlated_normal(gen, shape, 0.0, cfg["grad_std"], cfg["grad_corr"])
    keep = (torch.rand(shape, generator=gen) >= cfg["p"]).float() / (1.0 - cfg["p"])
    measured = _measure(x * keep, x, g)
    xm = Moments(cfg["mean"], cfg["std"] ** 2, cfg["corr"])
    gm = GradMoments(cfg["grad_std"] ** 2, cfg["grad_corr"])
    pred = _predicted(layers.dropout(xm, cfg["p"]), layers.dropout_backward(gm, cfg["p"]))
    return {k: (pred[k], measured[k]) for k in ("var", "cov", "grad_var", "grad_cov")}


def case_softmax(cfg, gen):
    shape = (cfg["batch"], cfg["length"])
    logits = correlated_normal(gen, shape + (1,), 0.0, cfg["std"], 0.0).squeeze(-1)
    shared = torch.randn(cfg["batch"], 1, generator=gen) * cfg["std"]
    logits = (math.sqrt(cfg["corr"]) * shared + math.sqrt(1.0 - cfg["corr"]) * logits).requires_grad_(True)
    probs = torch.softmax(logits, -1)
    g = torch.randn(shape, generator=gen) * cfg["grad_std"]
    probs.backward(g)
    lm = Moments(0.0, cfg["std"] ** 2, cfg["corr"])
    gm = GradMoments(cfg["grad_std"] ** 2, 0.0)
    out = {}
    for full in (True, False):
        suffix = "" if full else "_approx"
        fwd = attention.softmax(lm, cfg["length"], full=full)
        bwd = attention.softmax_backward(gm, lm, cfg["length"], full=full)
        out["var" + suffix] = (fwd.var, float(probs.detach().var()))
        out["grad_var" + suffix] = (bwd.var, float(logits.grad.pow(2).mean()))
    return out


def case_sha(cfg, gen):
    b, n, d, dk = cfg["batch"], cfg["length"], cfg["d"], cfg["head_dim"]
    x = correlated_normal(gen, (b, n, d), 0.0, cfg["std"], cfg["corr"]).requires_grad_(True)
    wq = torch.randn(b, d, dk, generator=gen) * cfg["qk_std"]
    wk = torch.randn(b, d, dk, generator=gen) * cfg["qk_std"]
    wv = torch.randn(b, d, dk, generator=gen) * cfg["value_std"]
    scores = (x @ wq) @ (x @ wk).transpose(-1, -2) / math.sqrt(dk)
    if cfg["causal"]:
        scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    probs = torch.softmax(scores, -1)
    if cfg["p"] > 0:
        probs = probs * (torch.rand(probs.shape, generator=gen) >= cfg["p"]).float() / (1.0 - cfg["p"])
    out = probs @ (x @ wv)
    g = correlated_normal(gen, (b, n, dk), 0.0, cfg["grad_std"], cfg["grad_corr"])
    measured = _measure(out, x, g)
    xm = Moments(0.0, cfg["std"] ** 2, cfg["corr"])
    gm = GradMoments(cfg["grad_std"] ** 2, cfg["grad_corr"])
    args = (d, cfg["qk_std"], cfg["qk_std"], cfg["value_std"], n, cfg["p"], cfg["causal"])
    fwd = attention.single_head_attention(xm, *args)
    bwd = attention.single_head_attention_backward(gm, xm, d, dk, *args[1:])
    value_only = attention.single_head_attention_backward(gm, xm, d, dk, *args[1:], value_path_only=True)
    pred = _predicted(fwd, bwd)
    result = {k: (pred[k], measured[k]) for k in ("var", "cov", "grad_var")}
    result["grad_var_value_path_only"] = (value_only.var, measured["grad_var"])
    return result


def case_ffn(cfg, gen):
    b, n, d, f = cfg["batch"], cfg["length"], cfg["d"], cfg["ffn"]
    act = torch.relu if cfg["activation"] == "relu" else torch.nn.functional.gelu
    x = correlated_normal(gen, (b, n, d), 0.0, cfg["std"], cfg["corr"]).requires_grad_(True)
    w1 = torch.randn(b, d, f, generator=gen) * cfg["fc1_std"]
    w2 = torch.randn(b, f, d, generator=gen) * cfg["fc2_std"]
    g = correlated_normal(gen, (b, n, d), 0.0, cfg["grad_std"], cfg["grad_corr"])
    measured = _measure(act(x @ w1) @ w2, x, g)
    xm = Moments(0.0, cfg["std"] ** 2, cfg["corr"])
    gm = GradMoments(cfg["grad_std"] ** 2, cfg["grad_corr"])
    args = (d, f, cfg["fc1_std"], cfg["fc2_std"], cfg["activation"])
    pred = _predicted(blocks.ffn(xm, *args), blocks.ffn_backward(gm, xm, *args))
    return {k: (pred[k], measured[k]) for k in ("var", "cov", "grad_var")}


def case_mha(cfg, gen):
    b, n, d, heads = cfg["batch"], cfg["length"], cfg["d"], cfg["heads"]
    head_dim = d // heads
    x = correlated_normal(gen, (b, n, d), 0.0, cfg["std"], cfg["corr"]).requires_grad_(True)
    w = {k: torch.randn(b, d, d, generator=gen) * cfg[k + "_std"] for k in ("query", "key", "value", "out")}

    def split(t):
        return t.view(b, n, heads, head_dim).transpose(1, 2)

    scores = split(x @ w["query"]) @ split(x @ w["key"]).transpose(-1, -2) / math.sqrt(head_dim)
    if cfg["causal"]:
        scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    probs = torch.softmax(scores, -1)
    if cfg["p"] > 0:
        probs = probs * (torch.rand(probs.shape, generator=gen) >= cfg["p"]).float() / (1.0 - cfg["p"])
    out = (probs @ split(x @ w["value"])).transpose(1, 2).reshape(b, n, d) @ w["out"]
    g = correlated_normal(gen, (b, n, d), 0.0, cfg["grad_std"], cfg["grad_corr"])
    measured = _measure(out, x, g)
    xm = Moments(0.0, cfg["std"] ** 2, cfg["corr"])
    gm = GradMoments(cfg["grad_std"] ** 2, cfg["grad_corr"])
    spec = attention.AttentionConfig(d, heads, head_dim, cfg["query_std"], cfg["key_std"], cfg["value_std"],
                                     cfg["out_std"], n, cfg["p"], cfg["causal"])
    pred = _predicted(attention.multi_head_attention(xm, spec), attention.multi_head_attention_backward(gm, xm, spec))
    return {k: (pred[k], measured[k]) for k in ("var", "cov", "grad_var")}


def case_rmsnorm(cfg, gen):
    shape = (cfg["batch"], cfg["length"], cfg["width"])
    x = correlated_normal(gen, shape, cfg["mean"], cfg["std"], cfg["corr"]).requires_grad_(True)
    g = correlated_normal(gen, shape, 0.0, cfg["grad_std"], cfg["grad_corr"])
    out = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True)) * cfg["gamma"]
    measured = _measure(out, x, g)
    xm = Moments(cfg["mean"], cfg["std"] ** 2, cfg["corr"])
    gm = GradMoments(cfg["grad_std"] ** 2, cfg["grad_corr"])
    fwd = rmsnorm.rmsnorm(xm, cfg["width"], cfg["gamma"])
    pred = _predicted(fwd, rmsnorm.rmsnorm_backward(gm, xm, cfg["width"], cfg["gamma"]))
    keys = ("mean", "var", "cov", "grad_var", "grad_cov") if cfg["mean"] else ("var", "cov", "grad_var", "grad_cov")
    return {k: (pred[k], measured[k]) for k in keys}


def _case_gated(activation_name):
    act = torch.nn.functional.silu if activation_name == "silu" else torch.nn.functional.gelu

    def case(cfg, gen):
        b, n, d, f = cfg["batch"], cfg["length"], cfg["d"], cfg["ffn"]
        x = correlated_normal(gen, (b, n, d), 0.0, cfg["std"], cfg["corr"])
        # Per-token normalised at the given std, as the block's norm hands it over (theory.gated).
        x = (x * cfg["std"] * torch.rsqrt(x.pow(2).mean(-1, keepdim=True))).requires_grad_(True)
        w_gate = torch.randn(b, d, f, generator=gen) * cfg["gate_std"]
        w_up = torch.randn(b, d, f, generator=gen) * cfg["up_std"]
        w_down = torch.randn(b, f, d, generator=gen) * cfg["down_std"]
        g = correlated_normal(gen, (b, n, d), 0.0, cfg["grad_std"], cfg["grad_corr"])
        measured = _measure((act(x @ w_gate) * (x @ w_up)) @ w_down, x, g)
        xm = Moments(0.0, cfg["std"] ** 2, cfg["corr"])
        gm = GradMoments(cfg["grad_std"] ** 2, cfg["grad_corr"])
        spec = gated.GatedFFN(d, f, cfg["gate_std"], cfg["up_std"], cfg["down_std"], activation_name)
        pred = _predicted(gated.gated_ffn(xm, spec), gated.gated_ffn_backward(gm, xm, spec))
        return {k: (pred[k], measured[k]) for k in ("var", "cov", "grad_var", "grad_cov")}

    return case


def apply_rotary(t: torch.Tensor, rotary: Rotary) -> torch.Tensor:
    """megatron-core's rotate-half RoPE on (..., tokens, head_dim) at positions 0..tokens-1."""
    freqs = torch.tensor(rotary.frequencies(), dtype=t.dtype)
    half = freqs.numel()
    if half == 0:
        return t
    angles = torch.arange(t.shape[-2], dtype=t.dtype)[:, None] * freqs[None, :]
    cos, sin = torch.cos(angles).repeat(1, 2), torch.sin(angles).repeat(1, 2)
    rot, rest = t[..., : 2 * half], t[..., 2 * half:]
    turned = torch.cat([-rot[..., half:], rot[..., :half]], dim=-1)
    return torch.cat([rot * cos + turned * sin, rest], dim=-1)


def case_rope_sha(cfg, gen):
    b, n, d, dk = cfg["batch"], cfg["length"], cfg["d"], cfg["head_dim"]
    rotary = Rotary(dk, cfg["base"], cfg["percent"])
    x = correlated_normal(gen, (b, n, d), 0.0, cfg["std"], cfg["corr"]).requires_grad_(True)
    wq = torch.randn(b, d, dk, generator=gen) * cfg["qk_std"]
    wk = torch.randn(b, d, dk, generator=gen) * cfg["qk_std"]
    wv = torch.randn(b, d, dk, generator=gen) * cfg["value_std"]
    q, k = apply_rotary(x @ wq, rotary), apply_rotary(x @ wk, rotary)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dk)
    if cfg["causal"]:
        scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    last_row = scores.detach()[:, -1, :]  # every key visible, also when causal
    logit_var = float(last_row.var())
    lag = 4
    centred = last_row - last_row.mean()
    logit_corr = float((centred[:, :-lag] * centred[:, lag:]).mean()) / logit_var
    out = torch.softmax(scores, -1) @ (x @ wv)
    g = correlated_normal(gen, (b, n, dk), 0.0, cfg["grad_std"], cfg["grad_corr"])
    measured = _measure(out, x, g)
    xm = Moments(0.0, cfg["std"] ** 2, cfg["corr"])
    gm = GradMoments(cfg["grad_std"] ** 2, cfg["grad_corr"])
    args = (d, cfg["qk_std"], cfg["qk_std"], cfg["value_std"], n, 0.0, cfg["causal"])
    fwd = attention.single_head_attention(xm, *args)
    bwd = attention.single_head_attention_backward(gm, xm, d, dk, *args[1:], rotary=rotary)
    pred = _predicted(fwd, bwd)
    result = {k: (pred[k], measured[k]) for k in ("var", "cov", "grad_var")}
    result["logit_var"] = (attention.attention_logit_var(xm, d, cfg["qk_std"], cfg["qk_std"]), logit_var)
    result["logit_corr_lag4"] = (float(rotary_logit_corr(cfg["corr"], lag, rotary)), logit_corr)
    return result


def case_gqa(cfg, gen):
    b, n, d, heads, groups = cfg["batch"], cfg["length"], cfg["d"], cfg["heads"], cfg["groups"]
    head_dim = d // heads
    x = correlated_normal(gen, (b, n, d), 0.0, cfg["std"], cfg["corr"]).requires_grad_(True)
    wq = torch.randn(b, d, d, generator=gen) * cfg["query_std"]
    wk = torch.randn(b, d, groups * head_dim, generator=gen) * cfg["key_std"]
    wv = torch.randn(b, d, groups * head_dim, generator=gen) * cfg["value_std"]
    wo = torch.randn(b, d, d, generator=gen) * cfg["out_std"]

    def split(t, count):  # (b, n, count*hd) -> (b, heads, n, hd), each K/V group repeated for its heads
        t = t.view(b, n, count, head_dim).transpose(1, 2)
        return t.repeat_interleave(heads // count, dim=1)

    scores = split(x @ wq, heads) @ split(x @ wk, groups).transpose(-1, -2) / math.sqrt(head_dim)
    if cfg["causal"]:
        scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    out = (torch.softmax(scores, -1) @ split(x @ wv, groups)).transpose(1, 2).reshape(b, n, d) @ wo
    g = correlated_normal(gen, (b, n, d), 0.0, cfg["grad_std"], cfg["grad_corr"])
    measured = _measure(out, x, g)
    xm = Moments(0.0, cfg["std"] ** 2, cfg["corr"])
    gm = GradMoments(cfg["grad_std"] ** 2, cfg["grad_corr"])
    spec = attention.AttentionConfig(d, heads, head_dim, cfg["query_std"], cfg["key_std"], cfg["value_std"],
                                     cfg["out_std"], n, 0.0, cfg["causal"], num_query_groups=groups)
    pred = _predicted(attention.multi_head_attention(xm, spec), attention.multi_head_attention_backward(gm, xm, spec))
    return {k: (pred[k], measured[k]) for k in ("var", "cov", "grad_var")}


def case_output_layer(cfg, gen):
    """Untied output layer with logit scale, token-summed cross-entropy on targets drawn uniformly from
    1 / collision words (so two tokens share a target with probability ``collision``)."""
    b, n, d, v = cfg["batch"], cfg["length"], cfg["d"], cfg["vocab"]
    h = correlated_normal(gen, (b, n, d), 0.0, cfg["std"], cfg["corr"]).requires_grad_(True)
    w = torch.randn(b, v, d, generator=gen) * cfg["weight_std"]
    logits = cfg["scale"] * h @ w.transpose(-1, -2)
    words = max(1, round(1.0 / cfg["collision"]))
    targets = torch.randint(0, words, (b, n), generator=gen)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, v), targets.reshape(-1), reduction="sum")
    loss.backward()
    hm = Moments(0.0, cfg["std"] ** 2, cfg["corr"])
    z = output_layer.output_logits(hm, d, cfg["weight_std"], cfg["scale"])
    g = output_layer.cross_entropy_backward(z, v, cfg["weight_std"], cfg["scale"], 1.0 / words)
    return {
        "logit_var": (z.var, float(logits.detach().var())),
        "logit_cov": (z.cov, token_cov(logits.detach(), 0.0)),
        "grad_var": (g.var, float(h.grad.pow(2).mean())),
        "grad_cov": (g.cov, token_cov(h.grad, 0.0)),
    }


# ---- sweeps: random configurations in the reference's ranges, sized for one CPU core ----


def _pick(rng, values):
    return values[rng.integers(len(values))]


def sweep_linear(rng):
    d_out = int(_pick(rng, [64, 128, 256]))
    # Shared-token noise averages only over batch x d_out independent columns: size the batch for ~0.3%.
    return dict(batch=200000 // d_out // 2, length=16, d_in=int(_pick(rng, [64, 128, 256])), d_out=d_out,
                mean=float(rng.uniform(-1, 1)), std=float(rng.uniform(0.2, 2)), corr=float(rng.uniform(0, 0.9)),
                weight_std=float(rng.uniform(0.01, 0.2)), grad_std=float(rng.uniform(0.2, 2)), grad_corr=float(rng.uniform(0, 0.9)))


def sweep_activation(rng):
    return dict(batch=512, length=16, width=512, std=float(rng.uniform(0.2, 3)), corr=float(rng.uniform(0, 0.95)),
                grad_std=float(rng.uniform(0.2, 2)), grad_corr=float(rng.uniform(0, 0.9)))


def sweep_layernorm(rng):
    return dict(batch=1024, length=16, width=int(_pick(rng, [128, 256, 512])), mean=float(rng.uniform(-1, 1)),
                std=float(rng.uniform(0.2, 3)), corr=float(rng.uniform(0, 0.9)), gamma=float(rng.uniform(0.5, 2)),
                beta=float(rng.uniform(-0.5, 0.5)), grad_std=float(rng.uniform(0.2, 2)), grad_corr=float(rng.uniform(0, 0.9)))


def sweep_dropout(rng):
    return dict(batch=512, length=8, width=1024, mean=float(rng.uniform(-1, 1)), std=float(rng.uniform(0.2, 2)),
                corr=float(rng.uniform(0, 0.9)), p=float(_pick(rng, [0.05, 0.1, 0.2, 0.3, 0.5])),
                grad_std=float(rng.uniform(0.2, 2)), grad_corr=float(rng.uniform(0, 0.9)))


def sweep_softmax(rng):
    return dict(batch=16384, length=int(_pick(rng, [32, 64, 128, 256])), std=float(rng.uniform(0.1, 1.5)),
                corr=float(rng.uniform(0, 0.9)), grad_std=float(rng.uniform(0.2, 2)))


def sweep_sha(rng):
    d, head_dim = int(_pick(rng, [64, 128])), int(_pick(rng, [16, 32, 64]))
    # Logit variance up to ~2 (unsaturated softmax, the regime an init should be in); the batch gives
    # ~20k independent value columns so that sampling noise stays near 1%.
    return dict(batch=20000 // head_dim, length=int(_pick(rng, [32, 64])), d=d, head_dim=head_dim,
                std=float(rng.uniform(0.5, 1.2)), corr=float(rng.uniform(0, 0.9)),
                qk_std=float(rng.uniform(0.2, 1.0)) / math.sqrt(d), value_std=float(rng.uniform(0.5, 2)) / math.sqrt(d),
                p=float(_pick(rng, [0.0, 0.1, 0.2])), causal=bool(rng.integers(2)),
                grad_std=float(rng.uniform(0.5, 2)), grad_corr=float(rng.uniform(0, 0.8)))


def sweep_ffn(rng):
    d = int(_pick(rng, [64, 128]))
    f = int(_pick(rng, [2, 4])) * d
    return dict(batch=40000 // d, length=8, d=d, ffn=f, activation=str(_pick(rng, ["relu", "gelu"])),
                std=float(rng.uniform(0.5, 2)), corr=float(rng.uniform(0, 0.9)),
                fc1_std=float(rng.uniform(0.5, 2)) / math.sqrt(d), fc2_std=float(rng.uniform(0.5, 2)) / math.sqrt(f),
                grad_std=float(rng.uniform(0.5, 2)), grad_corr=float(rng.uniform(0, 0.8)))


def sweep_mha(rng):
    d = int(_pick(rng, [64, 128]))
    return dict(batch=20000 // d, length=int(_pick(rng, [16, 32])), d=d, heads=int(_pick(rng, [1, 2, 4])),
                std=float(rng.uniform(0.5, 1.2)), corr=float(rng.uniform(0, 0.9)),
                query_std=float(rng.uniform(0.2, 1.0)) / math.sqrt(d), key_std=float(rng.uniform(0.2, 1.0)) / math.sqrt(d),
                value_std=float(rng.uniform(0.5, 2)) / math.sqrt(d), out_std=float(rng.uniform(0.5, 2)) / math.sqrt(d),
                p=float(_pick(rng, [0.0, 0.1])), causal=bool(rng.integers(2)),
                grad_std=float(rng.uniform(0.5, 2)), grad_corr=float(rng.uniform(0, 0.8)))


def sweep_rmsnorm(rng):
    mean = float(rng.uniform(-1, 1)) if rng.integers(2) else 0.0
    return dict(batch=1024, length=16, width=int(_pick(rng, [128, 256, 512])), mean=mean,
                std=float(rng.uniform(0.2, 3)), corr=float(rng.uniform(0, 0.9)), gamma=float(rng.uniform(0.5, 2)),
                grad_std=float(rng.uniform(0.2, 2)), grad_corr=float(rng.uniform(0, 0.9)))


def sweep_gated(rng):
    d = int(_pick(rng, [64, 128]))
    f = int(_pick(rng, [2, 8 / 3, 4]) * d) // 8 * 8
    return dict(batch=30000 // d, length=8, d=d, ffn=f, std=float(rng.uniform(0.5, 2)), corr=float(rng.uniform(0, 0.9)),
                gate_std=float(rng.uniform(0.3, 2)) / math.sqrt(d), up_std=float(rng.uniform(0.5, 2)) / math.sqrt(d),
                down_std=float(rng.uniform(0.5, 2)) / math.sqrt(f),
                grad_std=float(rng.uniform(0.5, 2)), grad_corr=float(rng.uniform(0, 0.8)))


def sweep_rope_sha(rng):
    d, head_dim = int(_pick(rng, [64, 128])), int(_pick(rng, [16, 32, 64]))
    return dict(batch=20000 // head_dim, length=int(_pick(rng, [32, 64, 128])), d=d, head_dim=head_dim,
                std=float(rng.uniform(0.5, 1.2)), corr=float(rng.uniform(0, 0.9)),
                qk_std=float(rng.uniform(0.2, 1.0)) / math.sqrt(d), value_std=float(rng.uniform(0.5, 2)) / math.sqrt(d),
                base=float(_pick(rng, [100.0, 10000.0, 500000.0])), percent=float(_pick(rng, [1.0, 0.5])),
                causal=bool(rng.integers(2)), grad_std=float(rng.uniform(0.5, 2)), grad_corr=float(rng.uniform(0, 0.8)))


def sweep_gqa(rng):
    d = int(_pick(rng, [64, 128]))
    heads = int(_pick(rng, [4, 8]))
    return dict(batch=20000 // d, length=int(_pick(rng, [16, 32])), d=d, heads=heads,
                groups=int(_pick(rng, [1, 2, heads // 2])), std=float(rng.uniform(0.5, 1.2)), corr=float(rng.uniform(0, 0.9)),
                query_std=float(rng.uniform(0.2, 1.0)) / math.sqrt(d), key_std=float(rng.uniform(0.2, 1.0)) / math.sqrt(d),
                value_std=float(rng.uniform(0.5, 2)) / math.sqrt(d), out_std=float(rng.uniform(0.5, 2)) / math.sqrt(d),
                causal=bool(rng.integers(2)), grad_std=float(rng.uniform(0.5, 2)), grad_corr=float(rng.uniform(0, 0.8)))


def sweep_output_layer(rng):
    d = int(_pick(rng, [64, 128]))
    return dict(batch=24, length=32, d=d, vocab=int(_pick(rng, [256, 1024, 4096])), std=1.0,
                corr=float(rng.uniform(0, 0.6)), weight_std=float(rng.uniform(0.3, 1.2)) / math.sqrt(d),
                scale=float(rng.uniform(0.5, 1.5)), collision=float(_pick(rng, [0.01, 0.05, 0.2])))


COMPONENTS: Dict[str, Tuple[Callable, Callable, int, int]] = {
    # name: (sweep, case, full-run configurations, quick configurations)
    "linear": (sweep_linear, case_linear, 100, 12),
    "relu": (sweep_activation, _case_activation("relu", torch.relu), 100, 12),
    "gelu": (sweep_activation, _case_activation("gelu", torch.nn.functional.gelu), 100, 12),
    "layernorm": (sweep_layernorm, case_layernorm, 100, 12),
    "dropout": (sweep_dropout, case_dropout, 100, 12),
    "softmax": (sweep_softmax, case_softmax, 100, 12),
    "sha": (sweep_sha, case_sha, 100, 12),
    "ffn": (sweep_ffn, case_ffn, 50, 8),
    "mha": (sweep_mha, case_mha, 50, 8),
    # Today's decoder block (docs/theory.md, "Today's decoder block")
    "rmsnorm": (sweep_rmsnorm, case_rmsnorm, 100, 12),
    "swiglu": (sweep_gated, _case_gated("silu"), 50, 8),
    "geglu": (sweep_gated, _case_gated("gelu"), 50, 8),
    "rope_sha": (sweep_rope_sha, case_rope_sha, 100, 12),
    "gqa": (sweep_gqa, case_gqa, 50, 8),
    "output_layer": (sweep_output_layer, case_output_layer, 50, 8),
}


def relative_errors(name: str, num_configs: int, seed: int) -> Dict[str, List[float]]:
    """Relative errors (fractions) per quantity over ``num_configs`` random configurations.

    Quantities whose measured value is near zero relative to the scale (a covariance of nearly
    uncorrelated tokens) are skipped: a relative error of a zero is meaningless.
    """
    sweep, case, _, _ = COMPONENTS[name]
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    errors: Dict[str, List[float]] = {}
    for _ in range(num_configs):
        cfg = sweep(rng)
        for quantity, (predicted, measured) in case(cfg, gen).items():
            if abs(measured) < 1e-12 or ("cov" in quantity and abs(measured) < 0.05 * abs(predicted) + 1e-9):
                continue
            errors.setdefault(quantity, []).append(abs(predicted - measured) / abs(measured))
    return errors
