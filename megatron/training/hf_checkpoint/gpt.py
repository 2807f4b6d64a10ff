"""transformers GPT-2 <-> our Pre-LN GPT (learned positions, LayerNorm, GeLU/ReLU FFN with biases, tied or untied
output layer). Export writes ``GPT2LMHeadModel`` with DSLM's λ/β and logit scale folded into the weights; import
reads ``GPT2LMHeadModel`` / ``GPT2Model``. transformers' ``Conv1D`` stores [in, out], megatron's linears [out, in].
"""

from __future__ import annotations

from typing import Dict, List

import torch

from megatron.training.hf_checkpoint import UnmappableModel
from megatron.training.hf_checkpoint.layout import (branch_multipliers, finish_import, float32_copies, fuse_qkv,
                                                    pad_rows, pre_norm_decoder_reasons, refuse_if_any, split_qkv,
                                                    state_filler, stock_norm_weight)

# transformers activation_function -> our flags (exact GeLU, its tanh approximation, ReLU).
_ACTIVATIONS = {"gelu": [], "gelu_new": ["--openai-gelu"], "gelu_pytorch_tanh": ["--openai-gelu"],
                "relu": ["--activation=relu"]}


def flags_from_hf_config(config: dict) -> List[str]:
    """Our training flags for the GPT-2 a Hugging Face config describes; refuses what has no exact match here."""
    if config.get("model_type", "gpt2") != "gpt2":
        raise UnmappableModel(f"model_type {config.get('model_type')!r} is not GPT-2")
    act = config.get("activation_function", "gelu_new")
    if act not in _ACTIVATIONS:
        raise UnmappableModel(f"activation_function {act!r}: only gelu, gelu_new (tanh GeLU) and relu map exactly")
    for key, stock in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                       ("reorder_and_upcast_attn", False), ("add_cross_attention", False)):
        if bool(config.get(key, stock)) != stock:
            raise UnmappableModel(f"{key}={config[key]}: megatron-core's attention has no such option")
    h, heads, positions = config["n_embd"], config["n_head"], config["n_positions"]
    inner = config.get("n_inner") or 4 * h
    flags = [f"--num-layers={config['n_layer']}", f"--hidden-size={h}", f"--num-attention-heads={heads}",
             f"--ffn-hidden-size={inner}", f"--max-position-embeddings={positions}", f"--seq-length={positions}",
             f"--norm-epsilon={config.get('layer_norm_epsilon', 1e-5)}", "--init-scheme=megatron",
             "--micro-batch-size=1", "--train-iters=0", *_ACTIVATIONS[act]]
    if not config.get("tie_word_embeddings", True):
        flags.append("--untie-embeddings-and-output-weights")
    return flags


def check_exportable(args) -> None:
    """Refuse what GPT-2 on transformers cannot express exactly (the Llama shape maps in :mod:`.llama`)."""
    reasons = pre_norm_decoder_reasons(args, "GPT-2")
    if getattr(args, "normalization", "LayerNorm") != "LayerNorm":
        reasons.append(f"--normalization {args.normalization}")
    if getattr(args, "swiglu", False):
        reasons.append("--swiglu")
    if getattr(args, "position_embedding_type", "learned_absolute") != "learned_absolute":
        reasons.append(f"--position-embedding-type {args.position_embedding_type}")
    if getattr(args, "group_query_attention", False) and args.num_query_groups != args.num_attention_heads:
        reasons.append("--group-query-attention")
    if not getattr(args, "add_bias_linear", True):
        reasons.append("--disable-bias-linear")
    if args.kv_channels * args.num_attention_heads != args.hidden_size:
        reasons.append(f"--kv-channels {args.kv_channels} x {args.num_attention_heads} heads != hidden size")
    refuse_if_any("GPT2LMHeadModel", reasons, " (models with RMSNorm, SwiGLU or RoPE export as LlamaForCausalLM)")


def export_state(args, table, ours: Dict[str, torch.Tensor], vocab_size: int):
    """(Hugging Face config, tensors) of GPT2LMHeadModel; λ/β folded into the output projections (Pre-LN rule)."""
    check_exportable(args)
    mult = branch_multipliers(table, post_ln=False)
    heads, h = args.num_attention_heads, args.hidden_size
    tied = "output_layer.weight" not in ours
    out: Dict[str, torch.Tensor] = {"transformer.wte.weight": ours["embedding.word_embeddings.weight"][:vocab_size],
                                    "transformer.wpe.weight": ours["embedding.position_embeddings.weight"]}
    for i in range(args.num_layers):
        src, dst = f"decoder.layers.{i}.", f"transformer.h.{i}."
        c_attn, c_mlp = mult[2 * i], mult[2 * i + 1]
        out[f"{dst}ln_1.weight"] = stock_norm_weight(args, ours[f"{src}input_layernorm.weight"])
        out[f"{dst}ln_1.bias"] = ours[f"{src}input_layernorm.bias"]
        q, k, v = split_qkv(ours[f"{src}self_attention.linear_qkv.weight"], heads)
        out[f"{dst}attn.c_attn.weight"] = torch.cat([q, k, v], 0).t()
        out[f"{dst}attn.c_attn.bias"] = torch.cat(split_qkv(ours[f"{src}self_attention.linear_qkv.bias"], heads))
        out[f"{dst}attn.c_proj.weight"] = ours[f"{src}self_attention.linear_proj.weight"].t() * c_attn
        out[f"{dst}attn.c_proj.bias"] = ours[f"{src}self_attention.linear_proj.bias"] * c_attn
        out[f"{dst}ln_2.weight"] = stock_norm_weight(args, ours[f"{src}pre_mlp_layernorm.weight"])
        out[f"{dst}ln_2.bias"] = ours[f"{src}pre_mlp_layernorm.bias"]
        out[f"{dst}mlp.c_fc.weight"] = ours[f"{src}mlp.linear_fc1.weight"].t()
        out[f"{dst}mlp.c_fc.bias"] = ours[f"{src}mlp.linear_fc1.bias"]
        out[f"{dst}mlp.c_proj.weight"] = ours[f"{src}mlp.linear_fc2.weight"].t() * c_mlp
        out[f"{dst}mlp.c_proj.bias"] = ours[f"{src}mlp.linear_fc2.bias"] * c_mlp
    s = float(table.lm_logit_scale)  # logits = s·LN_f(x)·Wᵀ: the scale goes into LN_f's weight and bias
    out["transformer.ln_f.weight"] = stock_norm_weight(args, ours["decoder.final_layernorm.weight"]) * s
    out["transformer.ln_f.bias"] = ours["decoder.final_layernorm.bias"] * s
    if not tied:
        out["lm_head.weight"] = ours["output_layer.weight"][:vocab_size]
    act = "relu" if args.activation == "relu" else "gelu_new" if getattr(args, "openai_gelu", False) else "gelu"
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab_size, "n_embd": h,
        "n_layer": args.num_layers, "n_head": heads, "n_positions": args.max_position_embeddings,
        "n_inner": args.ffn_hidden_size, "activation_function": act, "layer_norm_epsilon": args.norm_epsilon,
        "resid_pdrop": args.hidden_dropout, "embd_pdrop": args.hidden_dropout, "attn_pdrop": args.attention_dropout,
        "initializer_range": args.init_method_std, "scale_attn_weights": True, "tie_word_embeddings": tied,
        "torch_dtype": "float32",
    }
    return config, float32_copies(out)


def import_state(hf_tensors: Dict[str, torch.Tensor], config: dict, ours: Dict[str, torch.Tensor]):
    """Our state dict filled from GPT-2 tensors (``transformer.`` prefix optional); returns (state, notes, arch)."""
    body = {k[len("transformer."):]: v for k, v in hf_tensors.items() if k.startswith("transformer.")}
    arch = "GPT2LMHeadModel" if body else "GPT2Model"
    if not body:
        body = dict(hf_tensors)
    heads, state = config["n_head"], {}

    put = state_filler(ours, state)

    rows = ours["embedding.word_embeddings.weight"].shape[0]
    put("embedding.word_embeddings.weight", pad_rows(body["wte.weight"], rows))
    put("embedding.position_embeddings.weight", body["wpe.weight"])
    h = body["wte.weight"].shape[1]
    for i in range(config["n_layer"]):
        src, dst = f"h.{i}.", f"decoder.layers.{i}."
        put(f"{dst}input_layernorm.weight", body[f"{src}ln_1.weight"])
        put(f"{dst}input_layernorm.bias", body[f"{src}ln_1.bias"])
        qkv_w = body[f"{src}attn.c_attn.weight"].t()
        put(f"{dst}self_attention.linear_qkv.weight", fuse_qkv(*qkv_w.split(h, 0), heads))
        put(f"{dst}self_attention.linear_qkv.bias", fuse_qkv(*body[f"{src}attn.c_attn.bias"].split(h, 0), heads))
        put(f"{dst}self_attention.linear_proj.weight", body[f"{src}attn.c_proj.weight"].t())
        put(f"{dst}self_attention.linear_proj.bias", body[f"{src}attn.c_proj.bias"])
        put(f"{dst}pre_mlp_layernorm.weight", body[f"{src}ln_2.weight"])
        put(f"{dst}pre_mlp_layernorm.bias", body[f"{src}ln_2.bias"])
        put(f"{dst}mlp.linear_fc1.weight", body[f"{src}mlp.c_fc.weight"].t())
        put(f"{dst}mlp.linear_fc1.bias", body[f"{src}mlp.c_fc.bias"])
        put(f"{dst}mlp.linear_fc2.weight", body[f"{src}mlp.c_proj.weight"].t())
        put(f"{dst}mlp.linear_fc2.bias", body[f"{src}mlp.c_proj.bias"])
    put("decoder.final_layernorm.weight", body["ln_f.weight"])
    put("decoder.final_layernorm.bias", body["ln_f.bias"])
    notes = finish_import(hf_tensors, ours, state, put, body["wte.weight"].shape[0])
    return state, notes, arch


def hf_vocab_size(hf) -> int:
    return int(hf.config["vocab_size"])
