"""Initialise a built megatron-core model from an InitTable, identically at every TP/PP layout.

megatron-core's own init draws per rank (GPU-style: neither TP- nor PP-invariant) or per module in
construction order (``use_cpu_initialization``: TP-invariant, not PP-invariant), and it offers one σ for all
layers. Here every weight is drawn *whole* from a generator keyed on ``(seed, checkpoint key, global layer
index)``, scaled by the table's std for its role (per row where Q/K/V differ), and only this rank's slice is
kept. The keys, global shapes and offsets come from ``model.sharded_state_dict()`` — the same metadata
dist_checkpointing uses to reassemble a checkpoint across layouts — so the full weights are the same for any
TP/PP split and the global RNG is never touched.

Exact invariance needs the *same padded vocabulary* at every layout: megatron pads the vocab to a multiple of
``make_vocab_size_divisible_by × TP``, which changes the embedding's global shape (and so its draw) with TP.
Pad to a TP-independent size (e.g. divisible by 128 × the largest TP you use) when comparing layouts.
"""

from __future__ import annotations

import zlib
from typing import List, Optional, Union

import torch

from megatron.dslm.contract import InitTable, LayerInit

# Roles of the weights megatron-core's GPTModel/BertModel (local spec) and our specs expose, by key suffix.
_EMBEDDING_ROLES = {
    "word_embeddings.weight": "word_embedding_std",
    "position_embeddings.weight": "position_embedding_std",
    "tokentype_embeddings.weight": "tokentype_embedding_std",
}
_HEAD_ROLES = {
    "pooler.dense.weight": "pooler_std",
    "lm_head.dense.weight": "lm_head_dense_std",
    "binary_head.weight": "binary_head_std",
    # An untied output layer: the table's output_layer_std (None -> the word-embedding std, so the logits match
    # the tied model's at init).
    "output_layer.weight": "output_layer_std",
}
_LAYER_ROLES = {
    "linear_proj.weight": "attn_proj_std",
    "linear_fc1.weight": "fc1_std",
    "linear_fc2.weight": "fc2_std",
}


def keyed_generator(seed: int, key: str, layer: Optional[int] = None) -> torch.Generator:
    """A CPU generator whose stream depends only on (seed, key, layer), never on rank, layout or call order.

    Seeded by a stable 64-bit hash (crc32, adler32) — never Python's salted ``hash()``.
    """
    text = f"{int(seed)}|{key}|{'-' if layer is None else int(layer)}".encode()
    gen = torch.Generator(device="cpu")
    gen.manual_seed((zlib.crc32(text) << 32) | zlib.adler32(text))
    return gen


def qkv_row_std(layer: LayerInit, num_attention_heads: int, num_query_groups: int, head_dim: int) -> torch.Tensor:
    """Per-row std of megatron's fused QKV weight (global rows).

    Layout per query group g: ``[np/ng · hn query rows | hn key rows | hn value rows]`` (MHA: ``[q|k|v]`` per
    head); tensor parallelism splits whole groups, so the global row order is fixed.
    """
    if num_attention_heads % num_query_groups:
        raise ValueError(f"{num_attention_heads} heads not divisible by {num_query_groups} query groups")
    q_rows = num_attention_heads // num_query_groups * head_dim
    group = torch.cat([
        torch.full((q_rows,), float(layer.query_std)),
        torch.full((head_dim,), float(layer.key_std)),
        torch.full((head_dim,), float(layer.value_std)),
    ])
    return group.repeat(num_query_groups)


def fc1_row_std(layer: LayerInit, ffn_hidden_size: int, gated: bool) -> torch.Tensor:
    """Per-row std of fc1 (global rows). A gated FFN's fc1 is ``[gate rows | linear rows]`` in the checkpoint's
    global view (megatron-core stores each TP rank's gate and linear halves side by side and its sharded state
    dict splits them, so global rows ``0 .. ffn-1`` are the gate); the gate half gets ``gate_std`` (None ->
    ``fc1_std``)."""
    up = torch.full((ffn_hidden_size,), float(layer.fc1_std))
    if not gated:
        return up
    gate_std = layer.fc1_std if layer.gate_std is None else layer.gate_std
    return torch.cat([torch.full((ffn_hidden_size,), float(gate_std)), up])


def _is_norm_key(key: str) -> bool:
    # e.g. decoder.layers.input_layernorm.weight, ...linear_qkv.layer_norm_weight, lm_head.layer_norm.bias,
    # decoder.final_layernorm.weight, embedding.embedding_layernorm.weight, decoder.layers.post_mlp_layernorm.*
    return any("norm" in part for part in key.split(".")[:-1]) or key.rsplit(".", 1)[-1].startswith("layer_norm")


def _role_std(key: str, table: InitTable, layer_number: Optional[int], config, rows: int):
    """The std for a weight (a float, or a per-row tensor for the fused QKV)."""
    for suffix, field in _EMBEDDING_ROLES.items():
        if key.endswith(suffix):
            return getattr(table, field)
    for suffix, field in _HEAD_ROLES.items():
        if key.endswith(suffix):
            std = getattr(table, field)
            return table.word_embedding_std if std is None else std
    is_qkv = key.endswith("linear_qkv.weight")
    layer_field = next((f for s, f in _LAYER_ROLES.items() if key.endswith(s)), None)
    if not is_qkv and layer_field is None:
        raise KeyError(f"apply_init_table: no init role for weight '{key}' (add one to megatron/dslm/mcore/weight_init.py)")
    if layer_number is None:
        raise ValueError(f"apply_init_table: '{key}' is a layer weight but carries no layer axis")
    if layer_number > len(table.layers):
        raise ValueError(f"InitTable '{table.scheme}' has {len(table.layers)} layers; the model has layer "
                         f"{layer_number}: build the table for the model's --num-layers")
    layer = table.layer(layer_number)
    if layer_field == "fc1_std":
        std = fc1_row_std(layer, config.ffn_hidden_size, bool(config.gated_linear_unit))
        if std.numel() != rows:
            raise ValueError(f"fc1 '{key}' has {rows} global rows, expected {std.numel()} (ffn hidden size "
                             f"{config.ffn_hidden_size}{', gated' if config.gated_linear_unit else ''})")
        return std
    if layer_field is not None:
        return getattr(layer, layer_field)
    head_dim = config.kv_channels or config.hidden_size // config.num_attention_heads
    groups = config.num_query_groups or config.num_attention_heads
    std = qkv_row_std(layer, config.num_attention_heads, groups, head_dim)
    if std.numel() != rows:
        raise ValueError(f"fused QKV '{key}' has {rows} global rows, expected {std.numel()} "
                         f"({config.num_attention_heads} heads, {groups} groups, head dim {head_dim})")
    return std


def _init_one(sh_ten, table: InitTable, seed: int, config) -> None:
    key = sh_ten.key
    prepend = sh_ten.prepend_axis_num
    global_shape = tuple(sh_ten.global_shape)
    global_offset = tuple(sh_ten.global_offset)
    data = sh_ten.data
    if getattr(sh_ten, "flattened_range", None) is not None:
        raise NotImplementedError(f"'{key}' is a flattened (distributed-optimizer) shard: init the model first")
    if prepend > 1:
        raise NotImplementedError(f"'{key}' has {prepend} prepended axes (experts?): not supported")
    layer_index = global_offset[0] if prepend == 1 else None
    full_shape = global_shape[prepend:]
    local_offset = global_offset[prepend:]
    if tuple(data.shape) != tuple(sh_ten.local_shape):
        raise RuntimeError(f"'{key}': data shape {tuple(data.shape)} != local shape {sh_ten.local_shape}")

    if _is_norm_key(key):
        # --apply-layernorm-1p stores gamma - 1 (megatron.dslm.mcore.specs.ZeroCenteredNorm): gamma = 1 is 0.
        zero_centered = bool(getattr(config, "layernorm_zero_centered_gamma", False))
        data.fill_(0.0 if key.endswith("bias") or zero_centered else 1.0)
        return
    if key.endswith("bias"):
        data.zero_()
        return
    layer_number = None if layer_index is None else layer_index + 1
    std = _role_std(key, table, layer_number, config, full_shape[0])
    full = torch.randn(full_shape, generator=keyed_generator(seed, key, layer_index), dtype=torch.float32)
    if isinstance(std, torch.Tensor):
        full.mul_(std.view(-1, *([1] * (full.dim() - 1))))
    else:
        full.mul_(float(std))
    local = full[tuple(slice(o, o + n) for o, n in zip(local_offset, data.shape))]
    data.copy_(local.to(device=data.device, dtype=data.dtype))


def apply_init_table(model: Union[torch.nn.Module, List[torch.nn.Module]], table: InitTable, seed: int,
                     strict: bool = True) -> None:
    """Re-initialise every parameter of a megatron-core GPTModel/BertModel (or a list of chunks) from ``table``.

    Args:
        model: the built model or model chunks of this rank (DDP/Float16 wrappers are unwrapped).
        table: the scheme's InitTable (std per role and layer).
        seed: the run's seed; the same seed gives the same full weights at any TP/PP layout.
        strict: raise if a parameter is not reached through ``sharded_state_dict()`` (it would keep
            megatron-core's init silently).

    Biases start at 0, LayerNorms at (weight 1, bias 0). Tied embedding/output copies share one checkpoint key
    and so get the same draw on every stage. A gated fc1 (megatron's ``ShardedTensorFactory``, whose build
    splits each rank's ``[gate | linear]`` halves into views at their global offsets) is drawn whole as
    ``[gate; linear]`` and each half copied into its view, so it too is the same at every TP size.
    """
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor, ShardedTensorFactory
    from megatron.core.utils import unwrap_model

    chunks = list(model) if isinstance(model, (list, tuple)) else [model]
    with torch.no_grad():
        for chunk in chunks:
            chunk = unwrap_model(chunk)
            config = chunk.config
            param_ptrs = {p.data_ptr(): name for name, p in chunk.named_parameters()}
            done = set()
            for item in nested_values(chunk.sharded_state_dict()):
                if isinstance(item, ShardedTensorFactory):
                    if item.data.data_ptr() not in param_ptrs:
                        continue
                    for part in nested_values(item.build()):
                        if part.data.data_ptr() < item.data.data_ptr() or part.data.untyped_storage().data_ptr() \
                                != item.data.untyped_storage().data_ptr():
                            raise RuntimeError(f"'{item.key}': the sharded factory did not return views")
                        _init_one(part, table, seed, config)
                    done.add(item.data.data_ptr())
                    continue
                if isinstance(item, ShardedObject) or not isinstance(item, ShardedTensor):
                    continue
                if item.data.data_ptr() not in param_ptrs:
                    continue  # buffers (e.g. rotary inv_freq) are not parameters
                _init_one(item, table, seed, config)
                done.add(item.data.data_ptr())
            missing = [name for ptr, name in param_ptrs.items() if ptr not in done]
            if missing and strict:
                raise RuntimeError(f"apply_init_table: parameters not reached via sharded_state_dict(): {missing}")
