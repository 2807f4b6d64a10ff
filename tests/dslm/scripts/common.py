"""Shared helpers for the DSLM model-side tests: hand-built InitTables and small megatron-core configs.

Tables are built by hand here (not through the scheme registry) so these tests pin the *mechanism*
(spec, init, hooks) independently of the schemes' formulas.
"""

from __future__ import annotations

import math

import torch

from megatron.dslm.contract import InitTable, LayerInit


def hand_table(num_layers: int, *, scheme: str = "hand", std: float = 0.02, out_std=None, qkv=None,
               per_layer: bool = False, lam: float = 1.0, beta: float = 1.0, logit_scale: float = 1.0,
               embedding_layernorm: bool = False) -> InitTable:
    """Megatron-like table (σ=std, output projections std/√(2N)) unless overridden.

    per_layer: make every std depend on the layer (×(1 + l/N)) so per-layer lookups are exercised.
    qkv: (query_std, key_std, value_std) to make the fused QKV rows differ.
    """
    out_std = std / math.sqrt(2 * num_layers) if out_std is None else out_std
    layers = []
    for l in range(1, num_layers + 1):
        f = (1.0 + l / num_layers) if per_layer else 1.0
        q, k, v = qkv if qkv is not None else (std, std, std)
        layers.append(LayerInit(layer_number=l, query_std=q * f, key_std=k * f, value_std=v * f,
                                attn_proj_std=out_std * f, fc1_std=std * f, fc2_std=out_std * f,
                                attn_lambda=lam, attn_beta=beta, mlp_lambda=lam, mlp_beta=beta))
    return InitTable(scheme=scheme, word_embedding_std=std, position_embedding_std=std * 0.5,
                     tokentype_embedding_std=std * 0.25, layers=tuple(layers), pooler_std=std * 1.5,
                     lm_head_dense_std=std * 2.0, binary_head_std=std * 3.0, lm_logit_scale=logit_scale,
                     embedding_layernorm=embedding_layernorm)


def make_config(num_layers=4, hidden=32, heads=4, tp=1, pp=1, dropout=0.0, **kw):
    from megatron.core.transformer.transformer_config import TransformerConfig

    return TransformerConfig(
        num_layers=num_layers, hidden_size=hidden, num_attention_heads=heads, ffn_hidden_size=4 * hidden,
        hidden_dropout=dropout, attention_dropout=dropout, use_cpu_initialization=True,
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp, bias_dropout_fusion=False,
        masked_softmax_fusion=False, gradient_accumulation_fusion=False, **kw)


def causal_inputs(batch: int, seq: int, vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (batch, seq), generator=g)
    position_ids = torch.arange(seq).unsqueeze(0).expand(batch, -1).contiguous()
    mask = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)[None, None]
    return tokens, position_ids, mask


_LAYOUT_DUMPS: dict = {}


def layout_dumps(tmp_path_factory) -> dict:
    """Full weights + one step's moments at TP1/PP1 (1 process), TP2 and PP2 (2 processes each).

    Cached per pytest process: test_weight_init and test_observers share one set of runs.
    """
    if _LAYOUT_DUMPS:
        return _LAYOUT_DUMPS
    from helpers import REPO_ROOT, free_port, run_python, run_torchrun

    out = tmp_path_factory.mktemp("layouts")
    script = str(REPO_ROOT / "tests" / "dslm" / "scripts" / "dump_full_weights.py")
    dumps = {}
    # the pytest process may already own a process group: give the child its own rendezvous port
    ref = run_python([script, "--out", str(out / "tp1.pt")], timeout=300,
                     env={"MASTER_PORT": str(free_port()), "RANK": "0", "WORLD_SIZE": "1"})
    assert ref.returncode == 0, ref.stderr[-3000:]
    dumps["tp1"] = torch.load(out / "tp1.pt", weights_only=False)
    for name, flags in (("tp2", ["--tp", "2"]), ("pp2", ["--pp", "2"])):
        proc = run_torchrun(2, [script, *flags, "--out", str(out / f"{name}.pt")], timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        dumps[name] = torch.load(out / f"{name}.pt", weights_only=False)
    _LAYOUT_DUMPS.update(dumps)
    return _LAYOUT_DUMPS
