"""transformers BERT <-> our Post-LN BERT (embedding LayerNorm, MLM head tied to the word embedding, pooler +
binary head). Import reads BertModel / BertForPreTraining / BertForMaskedLM / BertForSequenceClassification;
export writes BertForPreTraining (with a binary head) or BertForMaskedLM, with λ/β and the logit scale folded.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from megatron.training.hf_checkpoint import UnmappableModel
from megatron.training.hf_checkpoint.layout import (branch_multipliers, float32_copies, fuse_qkv, pad_rows,
                                                    split_qkv, state_filler)

_ACTIVATIONS = {"gelu": "gelu", "relu": "relu"}
PADDED_ROW_BIAS = -1.0e4  # exp(-1e4) is 0 in fp32/bf16/fp16: padding rows never take probability  # HF hidden_act -> our --activation (exact erf GeLU)


def flags_from_hf_config(config: dict) -> List[str]:
    """Our training flags for the BERT a Hugging Face config describes; refuses what has no exact match here."""
    if config.get("model_type", "bert") != "bert":
        raise UnmappableModel(f"model_type {config.get('model_type')!r} is not BERT")
    act = config.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS:
        raise UnmappableModel(f"hidden_act {act!r}: only exact GeLU ('gelu') and ReLU are implemented here")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise UnmappableModel(f"position_embedding_type {config['position_embedding_type']!r}: only learned "
                              "absolute positions are implemented here")
    if config.get("is_decoder") or config.get("add_cross_attention"):
        raise UnmappableModel("decoder / cross-attention BERT models are not supported")
    h, heads = config["hidden_size"], config["num_attention_heads"]
    max_pos = config.get("max_position_embeddings", 512)
    types = config.get("type_vocab_size", 2)
    return [f"--num-layers={config['num_hidden_layers']}", f"--hidden-size={h}", f"--num-attention-heads={heads}",
            f"--ffn-hidden-size={config['intermediate_size']}", f"--max-position-embeddings={max_pos}",
            f"--seq-length={max_pos}", f"--norm-epsilon={config.get('layer_norm_eps', 1e-12)}",
            f"--activation={_ACTIVATIONS[act]}", f"--num-tokentypes={types}",
            "--apply-residual-connection-post-layernorm", "--init-scheme=megatron",
            "--micro-batch-size=1", "--train-iters=0"]


def _strip_prefix(tensors: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor], str]:
    """(encoder tensors without the ``bert.`` prefix, head tensors, architecture name)."""
    body = {k[len("bert."):]: v for k, v in tensors.items() if k.startswith("bert.")}
    if not body:
        body = {k: v for k, v in tensors.items() if k.startswith(("embeddings.", "encoder.", "pooler."))}
    heads = {k: v for k, v in tensors.items() if k.startswith(("cls.", "classifier."))}
    if any(k.startswith("classifier.") for k in heads):
        arch = "BertForSequenceClassification"
    elif "cls.seq_relationship.weight" in heads:
        arch = "BertForPreTraining"
    elif "cls.predictions.bias" in heads:
        arch = "BertForMaskedLM"
    else:
        arch = "BertModel"
    return body, heads, arch


def import_state(hf_tensors: Dict[str, torch.Tensor], config: dict, ours: Dict[str, torch.Tensor]):
    """Our state dict filled from Hugging Face tensors; ``ours`` (the freshly built model's) gives shapes and the
    initial values of parts the source lacks. Returns (state, notes): notes name what kept its init."""
    body, heads_t, arch = _strip_prefix(hf_tensors)
    heads = config["num_attention_heads"]
    state, notes = {}, []

    put = state_filler(ours, state)

    rows = ours["embedding.word_embeddings.weight"].shape[0]
    word = body["embeddings.word_embeddings.weight"]
    put("embedding.word_embeddings.weight", pad_rows(word, rows))
    put("embedding.position_embeddings.weight", body["embeddings.position_embeddings.weight"])
    if "embedding.tokentype_embeddings.weight" in ours:
        put("embedding.tokentype_embeddings.weight", body["embeddings.token_type_embeddings.weight"])
    put("embedding.embedding_layernorm.weight", body["embeddings.LayerNorm.weight"])
    put("embedding.embedding_layernorm.bias", body["embeddings.LayerNorm.bias"])
    for i in range(config["num_hidden_layers"]):
        src, dst = f"encoder.layer.{i}.", f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            q, k, v = (body[f"{src}attention.self.{n}.{kind}"] for n in ("query", "key", "value"))
            put(f"{dst}self_attention.linear_qkv.{kind}", fuse_qkv(q, k, v, heads))
            put(f"{dst}self_attention.linear_proj.{kind}", body[f"{src}attention.output.dense.{kind}"])
            put(f"{dst}post_attn_layernorm.{kind}", body[f"{src}attention.output.LayerNorm.{kind}"])
            put(f"{dst}mlp.linear_fc1.{kind}", body[f"{src}intermediate.dense.{kind}"])
            put(f"{dst}mlp.linear_fc2.{kind}", body[f"{src}output.dense.{kind}"])
            put(f"{dst}post_mlp_layernorm.{kind}", body[f"{src}output.LayerNorm.{kind}"])
    if "pooler.dense.weight" in body and "pooler.dense.weight" in ours:
        put("pooler.dense.weight", body["pooler.dense.weight"])
        put("pooler.dense.bias", body["pooler.dense.bias"])
    elif "pooler.dense.weight" in ours:
        notes.append("pooler")
    if "cls.predictions.bias" in heads_t:
        decoder = heads_t.get("cls.predictions.decoder.weight")
        if decoder is not None and not torch.equal(decoder, word):
            raise UnmappableModel("the MLM decoder is not tied to the word embedding (our BERT ties them)")
        put("lm_head.dense.weight", heads_t["cls.predictions.transform.dense.weight"])
        put("lm_head.dense.bias", heads_t["cls.predictions.transform.dense.bias"])
        put("lm_head.layer_norm.weight", heads_t["cls.predictions.transform.LayerNorm.weight"])
        put("lm_head.layer_norm.bias", heads_t["cls.predictions.transform.LayerNorm.bias"])
        # Padding rows: zero embedding, bias PADDED_ROW_BIAS, so the softmax over the real tokens is transformers'.
        bias = pad_rows(heads_t["cls.predictions.bias"], rows)
        bias[heads_t["cls.predictions.bias"].shape[0]:] = PADDED_ROW_BIAS
        put("output_layer.bias", bias)
    else:
        notes.append("MLM head")
    if "cls.seq_relationship.weight" in heads_t and "binary_head.weight" in ours:
        put("binary_head.weight", heads_t["cls.seq_relationship.weight"])
        put("binary_head.bias", heads_t["cls.seq_relationship.bias"])
    elif "binary_head.weight" in ours:
        notes.append("binary head")
    if arch == "BertForSequenceClassification":
        notes.append("(the classifier is not imported: tasks/main.py builds its own task head)")
    for key, value in ours.items():
        if key not in state and not key.endswith("_extra_state"):
            state[key] = value
    return state, notes, arch


def check_exportable(args) -> None:
    """Refuse what BERT on transformers cannot express exactly."""
    if not args.apply_residual_connection_post_layernorm:
        raise UnmappableModel("this BERT is Pre-LN; transformers' BERT is Post-LN (LN after every residual "
                              "merge, embedding LayerNorm) and a Pre-LN model has no exact Post-LN equivalent")
    if args.activation not in ("gelu", "relu"):
        raise UnmappableModel(f"--activation {args.activation} has no transformers BERT hidden_act")
    if args.kv_channels * args.num_attention_heads != args.hidden_size:
        raise UnmappableModel(f"--kv-channels {args.kv_channels} x {args.num_attention_heads} heads != hidden size "
                              f"{args.hidden_size}: transformers' BERT has head size hidden/heads")


def export_state(args, table, ours: Dict[str, torch.Tensor], vocab_size: int):
    """(Hugging Face config, tensors) of BertForPreTraining (with a binary head) or BertForMaskedLM."""
    check_exportable(args)
    mult = branch_multipliers(table, post_ln=True)
    heads = args.num_attention_heads
    binary = "binary_head.weight" in ours
    out: Dict[str, torch.Tensor] = {}
    word = ours["embedding.word_embeddings.weight"][:vocab_size]
    out["bert.embeddings.word_embeddings.weight"] = word
    out["bert.embeddings.position_embeddings.weight"] = ours["embedding.position_embeddings.weight"]
    types = ours.get("embedding.tokentype_embeddings.weight")
    out["bert.embeddings.token_type_embeddings.weight"] = (types if types is not None
                                                           else word.new_zeros((1, word.shape[1])))
    out["bert.embeddings.LayerNorm.weight"] = ours["embedding.embedding_layernorm.weight"]
    out["bert.embeddings.LayerNorm.bias"] = ours["embedding.embedding_layernorm.bias"]
    for i in range(args.num_layers):
        src, dst = f"encoder.layers.{i}.", f"bert.encoder.layer.{i}."
        c_attn, c_mlp = mult[2 * i], mult[2 * i + 1]
        for kind in ("weight", "bias"):
            q, k, v = split_qkv(ours[f"{src}self_attention.linear_qkv.{kind}"], heads)
            out[f"{dst}attention.self.query.{kind}"] = q
            out[f"{dst}attention.self.key.{kind}"] = k
            out[f"{dst}attention.self.value.{kind}"] = v
            out[f"{dst}attention.output.dense.{kind}"] = _scaled(ours[f"{src}self_attention.linear_proj.{kind}"], c_attn)
            out[f"{dst}attention.output.LayerNorm.{kind}"] = ours[f"{src}post_attn_layernorm.{kind}"]
            out[f"{dst}intermediate.dense.{kind}"] = ours[f"{src}mlp.linear_fc1.{kind}"]
            out[f"{dst}output.dense.{kind}"] = _scaled(ours[f"{src}mlp.linear_fc2.{kind}"], c_mlp)
            out[f"{dst}output.LayerNorm.{kind}"] = ours[f"{src}post_mlp_layernorm.{kind}"]
    s = float(table.lm_logit_scale)
    out["cls.predictions.transform.dense.weight"] = ours["lm_head.dense.weight"]
    out["cls.predictions.transform.dense.bias"] = ours["lm_head.dense.bias"]
    out["cls.predictions.transform.LayerNorm.weight"] = _scaled(ours["lm_head.layer_norm.weight"], s)
    out["cls.predictions.transform.LayerNorm.bias"] = _scaled(ours["lm_head.layer_norm.bias"], s)
    out["cls.predictions.bias"] = ours["output_layer.bias"][:vocab_size]
    if binary:
        out["bert.pooler.dense.weight"] = ours["pooler.dense.weight"]
        out["bert.pooler.dense.bias"] = ours["pooler.dense.bias"]
        out["cls.seq_relationship.weight"] = ours["binary_head.weight"]
        out["cls.seq_relationship.bias"] = ours["binary_head.bias"]
    arch = "BertForPreTraining" if binary else "BertForMaskedLM"
    config = {
        "architectures": [arch], "model_type": "bert", "vocab_size": vocab_size, "hidden_size": args.hidden_size,
        "num_hidden_layers": args.num_layers, "num_attention_heads": heads,
        "intermediate_size": args.ffn_hidden_size, "hidden_act": args.activation,
        "hidden_dropout_prob": args.hidden_dropout, "attention_probs_dropout_prob": args.attention_dropout,
        "max_position_embeddings": args.max_position_embeddings, "type_vocab_size": out[
            "bert.embeddings.token_type_embeddings.weight"].shape[0],
        "layer_norm_eps": args.norm_epsilon, "initializer_range": args.init_method_std,
        "position_embedding_type": "absolute", "pad_token_id": 0, "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }
    return config, float32_copies(out)


def _scaled(t: torch.Tensor, c: float) -> torch.Tensor:
    return t if c == 1.0 else t * c


def hf_vocab_size(hf) -> int:
    return int(hf.config["vocab_size"])
