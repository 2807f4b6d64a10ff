"""transformers Llama <-> our Llama-shaped GPT (RMSNorm, SwiGLU, RoPE, grouped-query attention, bias-free or
biased linears, tied or untied output layer). Export writes ``LlamaForCausalLM`` with DSLM's λ/β folded into the
output projections (RMSNorm is scale invariant like LayerNorm, so the Pre-LN rule holds) and the logit scale into
the final norm's weight; import reads ``LlamaForCausalLM`` / ``LlamaModel``.

Layouts: megatron-core's ``linear_qkv`` holds, per query group, that group's query heads, then its key head, then
its value head; transformers keeps ``q_proj`` [heads·d, h], ``k_proj``/``v_proj`` [groups·d, h], query head i
reading key/value head i // (heads / groups). SwiGLU's ``linear_fc1`` is [gate; up] (megatron-core applies
silu to the first half), transformers' ``gate_proj`` and ``up_proj``.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from megatron.training.hf_checkpoint import UnmappableModel
from megatron.training.hf_checkpoint.layout import (branch_multipliers, finish_import, float32_copies, pad_rows,
                                                    pre_norm_decoder_reasons, refuse_if_any, state_filler,
                                                    stock_norm_weight)


def is_llama_shaped(args) -> bool:
    """A GPT checkpoint whose nearest transformers architecture is Llama rather than GPT-2."""
    return (getattr(args, "normalization", "LayerNorm") == "RMSNorm" or bool(getattr(args, "swiglu", False))
            or getattr(args, "position_embedding_type", "learned_absolute") == "rope")


def flags_from_hf_config(config: dict) -> List[str]:
    """Our training flags for the Llama a Hugging Face config describes; refuses what has no exact match here."""
    if config.get("model_type") != "llama":
        raise UnmappableModel(f"model_type {config.get('model_type')!r} is not Llama")
    if config.get("hidden_act", "silu") != "silu":
        raise UnmappableModel(f"hidden_act {config['hidden_act']!r}: megatron-core's --swiglu is silu-gated")
    # transformers 5 writes rope_parameters {rope_theta, rope_type}; 4.x wrote rope_theta and rope_scaling
    rope = dict(config.get("rope_parameters") or {})
    kind = rope.get("rope_type", "default")
    if config.get("rope_scaling") or kind != "default":
        raise UnmappableModel(f"RoPE scaling {config.get('rope_scaling') or kind!r}: only plain RoPE maps exactly")
    attn_bias, mlp_bias = bool(config.get("attention_bias", False)), bool(config.get("mlp_bias", False))
    if attn_bias != mlp_bias:
        raise UnmappableModel(f"attention_bias={attn_bias} with mlp_bias={mlp_bias}: megatron-core's "
                              "--disable-bias-linear covers every linear at once")
    h, heads = config["hidden_size"], config["num_attention_heads"]
    groups = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or h // heads
    positions = config.get("max_position_embeddings", 2048)
    theta = float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    if theta != int(theta):
        raise UnmappableModel(f"rope_theta {theta}: --rotary-base is an integer")
    flags = [f"--num-layers={config['num_hidden_layers']}", f"--hidden-size={h}", f"--num-attention-heads={heads}",
             f"--ffn-hidden-size={config['intermediate_size']}", f"--kv-channels={head_dim}",
             f"--max-position-embeddings={positions}", f"--seq-length={min(positions, 4096)}",
             f"--norm-epsilon={config.get('rms_norm_eps', 1e-6)}", "--normalization=RMSNorm", "--swiglu",
             "--position-embedding-type=rope", f"--rotary-base={int(theta)}", "--init-scheme=megatron",
             "--micro-batch-size=1", "--train-iters=0"]
    if groups != heads:
        flags += ["--group-query-attention", f"--num-query-groups={groups}"]
    if not attn_bias:
        flags.append("--disable-bias-linear")
    if not config.get("tie_word_embeddings", False):
        flags.append("--untie-embeddings-and-output-weights")
    return flags


def check_exportable(args) -> None:
    """Refuse what LlamaForCausalLM cannot express exactly."""
    reasons = pre_norm_decoder_reasons(args, "Llama")
    if getattr(args, "normalization", "LayerNorm") != "RMSNorm":
        reasons.append(f"--normalization {getattr(args, 'normalization', 'LayerNorm')} (Llama uses RMSNorm)")
    if not getattr(args, "swiglu", False):
        reasons.append("a non-gated FFN (Llama's MLP is SwiGLU: --swiglu)")
    if getattr(args, "position_embedding_type", "learned_absolute") != "rope":
        reasons.append(f"--position-embedding-type {args.position_embedding_type} (Llama uses rope)")
    if getattr(args, "rotary_percent", 1.0) != 1.0:
        reasons.append(f"--rotary-percent {args.rotary_percent}")
    if getattr(args, "rotary_seq_len_interpolation_factor", None):
        reasons.append("--rotary-seq-len-interpolation-factor")
    refuse_if_any("LlamaForCausalLM", reasons)


def _groups(args) -> int:
    return args.num_query_groups if getattr(args, "group_query_attention", False) else args.num_attention_heads


def split_grouped_qkv(qkv: torch.Tensor, heads: int, groups: int) -> Tuple[torch.Tensor, ...]:
    """megatron-core's per-group [q heads, k, v] rows -> (q [heads·d], k [groups·d], v [groups·d])."""
    per = heads // groups
    d = qkv.shape[0] // (groups * (per + 2))
    grouped = qkv.reshape(groups, per + 2, d, *qkv.shape[1:])
    q = grouped[:, :per].reshape(heads * d, *qkv.shape[1:])
    k = grouped[:, per].reshape(groups * d, *qkv.shape[1:])
    v = grouped[:, per + 1].reshape(groups * d, *qkv.shape[1:])
    return q.clone(), k.clone(), v.clone()


def fuse_grouped_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, groups: int) -> torch.Tensor:
    """Inverse of :func:`split_grouped_qkv`."""
    per = heads // groups
    d = q.shape[0] // heads
    rest = q.shape[1:]
    parts = [q.reshape(groups, per, d, *rest), k.reshape(groups, 1, d, *rest), v.reshape(groups, 1, d, *rest)]
    return torch.cat(parts, dim=1).reshape(groups * (per + 2) * d, *rest).clone()


def export_state(args, table, ours: Dict[str, torch.Tensor], vocab_size: int):
    """(Hugging Face config, tensors) of LlamaForCausalLM; λ/β folded into o_proj / down_proj (Pre-norm rule)."""
    check_exportable(args)
    mult = branch_multipliers(table, post_ln=False)
    heads, groups, ffn = args.num_attention_heads, _groups(args), args.ffn_hidden_size
    bias = bool(getattr(args, "add_bias_linear", True))
    tied = "output_layer.weight" not in ours
    out: Dict[str, torch.Tensor] = {"model.embed_tokens.weight": ours["embedding.word_embeddings.weight"][:vocab_size]}
    for i in range(args.num_layers):
        src, dst = f"decoder.layers.{i}.", f"model.layers.{i}."
        c_attn, c_mlp = mult[2 * i], mult[2 * i + 1]
        # megatron-core's TE-free spec keeps the input norm as its own module; the fused spec would name it
        # linear_qkv.layer_norm_weight (both accepted).
        norm1 = ours.get(f"{src}input_layernorm.weight", ours.get(f"{src}self_attention.linear_qkv.layer_norm_weight"))
        norm2 = ours.get(f"{src}pre_mlp_layernorm.weight", ours.get(f"{src}mlp.linear_fc1.layer_norm_weight"))
        out[f"{dst}input_layernorm.weight"] = stock_norm_weight(args, norm1)
        out[f"{dst}post_attention_layernorm.weight"] = stock_norm_weight(args, norm2)
        for kind in ("weight",) + (("bias",) if bias else ()):
            qkv = split_grouped_qkv(ours[f"{src}self_attention.linear_qkv.{kind}"], heads, groups)
            for name, t in zip(("q_proj", "k_proj", "v_proj"), qkv):
                out[f"{dst}self_attn.{name}.{kind}"] = t
            out[f"{dst}self_attn.o_proj.{kind}"] = ours[f"{src}self_attention.linear_proj.{kind}"] * c_attn
            fc1 = ours[f"{src}mlp.linear_fc1.{kind}"]
            out[f"{dst}mlp.gate_proj.{kind}"], out[f"{dst}mlp.up_proj.{kind}"] = fc1[:ffn].clone(), fc1[ffn:].clone()
            out[f"{dst}mlp.down_proj.{kind}"] = ours[f"{src}mlp.linear_fc2.{kind}"] * c_mlp
    # logits = s·RMSNorm_f(x)·Wᵀ: RMSNorm has no bias, so the scale goes into its weight alone
    out["model.norm.weight"] = stock_norm_weight(args, ours["decoder.final_layernorm.weight"]) * float(table.lm_logit_scale)
    if not tied:
        out["lm_head.weight"] = ours["output_layer.weight"][:vocab_size]
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab_size,
        "hidden_size": args.hidden_size, "intermediate_size": ffn, "num_hidden_layers": args.num_layers,
        "num_attention_heads": heads, "num_key_value_heads": groups, "head_dim": args.kv_channels,
        "hidden_act": "silu", "max_position_embeddings": args.max_position_embeddings,
        "rms_norm_eps": args.norm_epsilon, "rope_theta": float(getattr(args, "rotary_base", 10000)),
        "rope_parameters": {"rope_theta": float(getattr(args, "rotary_base", 10000)), "rope_type": "default"},
        "attention_bias": bias, "mlp_bias": bias, "attention_dropout": args.attention_dropout,
        "initializer_range": args.init_method_std, "tie_word_embeddings": tied, "torch_dtype": "float32",
    }
    return config, float32_copies(out)


def import_state(hf_tensors: Dict[str, torch.Tensor], config: dict, ours: Dict[str, torch.Tensor]):
    """Our state dict filled from Llama tensors (``model.`` prefix optional); returns (state, notes, arch)."""
    body = {k[len("model."):]: v for k, v in hf_tensors.items() if k.startswith("model.")}
    arch = "LlamaForCausalLM" if body else "LlamaModel"
    if not body:
        body = dict(hf_tensors)
    heads = config["num_attention_heads"]
    groups = config.get("num_key_value_heads") or heads
    bias = bool(config.get("attention_bias", False))
    state = {}
    put = state_filler(ours, state)
    rows = ours["embedding.word_embeddings.weight"].shape[0]
    put("embedding.word_embeddings.weight", pad_rows(body["embed_tokens.weight"], rows))
    for i in range(config["num_hidden_layers"]):
        src, dst = f"layers.{i}.", f"decoder.layers.{i}."
        put(f"{dst}input_layernorm.weight", body[f"{src}input_layernorm.weight"])
        put(f"{dst}pre_mlp_layernorm.weight", body[f"{src}post_attention_layernorm.weight"])
        for kind in ("weight",) + (("bias",) if bias else ()):
            q, k, v = (body[f"{src}self_attn.{n}.{kind}"] for n in ("q_proj", "k_proj", "v_proj"))
            put(f"{dst}self_attention.linear_qkv.{kind}", fuse_grouped_qkv(q, k, v, heads, groups))
            put(f"{dst}self_attention.linear_proj.{kind}", body[f"{src}self_attn.o_proj.{kind}"])
            put(f"{dst}mlp.linear_fc1.{kind}", torch.cat([body[f"{src}mlp.gate_proj.{kind}"],
                                                          body[f"{src}mlp.up_proj.{kind}"]], 0))
            put(f"{dst}mlp.linear_fc2.{kind}", body[f"{src}mlp.down_proj.{kind}"])
    put("decoder.final_layernorm.weight", body["norm.weight"])
    notes = finish_import(hf_tensors, ours, state, put, body["embed_tokens.weight"].shape[0])
    return state, notes, arch


def hf_vocab_size(hf) -> int:
    return int(hf.config["vocab_size"])
