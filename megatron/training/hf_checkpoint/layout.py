"""Tensor layouts that differ between megatron-core and transformers.

megatron-core's fused ``linear_qkv`` stores, for each attention head (one query group per head here), the head's
query rows, then its key rows, then its value rows; transformers keeps three [heads·d, h] matrices (BERT) or one
Conv1D [h, 3·heads·d] with all queries, then all keys, then all values (GPT-2).
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch


def state_filler(ours: Dict[str, torch.Tensor], state: Dict[str, torch.Tensor]) -> Callable:
    """``put(key, tensor)``: store a copy in ``state`` after checking that our model has ``key`` with that shape."""
    from megatron.training.hf_checkpoint import UnmappableModel

    def put(key: str, value: torch.Tensor) -> None:
        if key not in ours:
            raise UnmappableModel(f"our model has no {key} (flags differ from the Hugging Face config)")
        if tuple(ours[key].shape) != tuple(value.shape):
            raise UnmappableModel(f"{key}: shape {tuple(value.shape)} does not match ours {tuple(ours[key].shape)}")
        state[key] = value.to(ours[key].dtype).contiguous().clone()

    return put


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """[heads·d, …] ×3 (rows per head in head order) -> megatron's per-head interleaved [3·heads·d, …]."""
    d = q.shape[0] // heads
    parts = [t.reshape(heads, d, *t.shape[1:]) for t in (q, k, v)]
    return torch.stack(parts, dim=1).reshape(3 * heads * d, *q.shape[1:]).clone()


def split_qkv(qkv: torch.Tensor, heads: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`fuse_qkv`."""
    d = qkv.shape[0] // (3 * heads)
    grouped = qkv.reshape(heads, 3, d, *qkv.shape[1:])
    return tuple(grouped[:, i].reshape(heads * d, *qkv.shape[1:]).clone() for i in range(3))


def pad_rows(table: torch.Tensor, rows: int) -> torch.Tensor:
    """``table`` with zero rows appended up to ``rows`` (megatron pads the vocabulary for TP splits)."""
    if table.shape[0] > rows:
        raise ValueError(f"{table.shape[0]} rows do not fit in {rows}")
    out = table.new_zeros((rows, *table.shape[1:]))
    out[: table.shape[0]] = table
    return out


def finish_import(hf_tensors, ours, state, put, vocab_rows: int) -> list:
    """Common tail of a decoder import: the untied output layer, untouched keys kept, the padding-rows note."""
    from megatron.training.hf_checkpoint import UnmappableModel

    rows = ours["embedding.word_embeddings.weight"].shape[0]
    if "output_layer.weight" in ours:
        head = hf_tensors.get("lm_head.weight")
        if head is None:
            raise UnmappableModel("the config unties the output layer but the checkpoint has no lm_head.weight")
        put("output_layer.weight", pad_rows(head, rows))
    for key, value in ours.items():
        if key not in state and not key.endswith("_extra_state"):
            state[key] = value
    if rows > vocab_rows:
        return [f"(the {rows - vocab_rows} padding rows of the vocabulary have logit 0; import with "
                f"--make-vocab-size-divisible-by 1 to keep the softmax exactly transformers')"]
    return []


def stock_norm_weight(args, weight: torch.Tensor) -> torch.Tensor:
    """--apply-layernorm-1p computes (1 + w)·x̂: the stock (LayerNorm or RMSNorm) weight is 1 + w."""
    return weight + 1.0 if getattr(args, "apply_layernorm_1p", False) else weight


def branch_multipliers(table, post_ln: bool) -> list:
    """Per-sublayer factors that fold λ/β into the branch output projections (Pre-LN or Post-LN rule)."""
    from megatron.dslm import folding
    from megatron.training.hf_checkpoint import UnmappableModel

    fold = folding.post_ln_branch_multipliers if post_ln else folding.pre_ln_branch_multipliers
    try:
        return fold(folding.sublayer_scales(table.layers))
    except ValueError as err:
        raise UnmappableModel(str(err)) from None


def pre_norm_decoder_reasons(args, family: str) -> list:
    """What no Pre-norm transformers decoder (GPT-2, Llama) expresses: a Post-LN model, --qk-layernorm."""
    reasons = []
    if args.apply_residual_connection_post_layernorm:
        reasons.append(f"the model is Post-LN ({family} is Pre-norm)")
    if getattr(args, "qk_layernorm", False):
        reasons.append("--qk-layernorm")
    return reasons


def refuse_if_any(hf_arch: str, reasons: list, hint: str = "") -> None:
    from megatron.training.hf_checkpoint import UnmappableModel

    if reasons:
        raise UnmappableModel(f"{hf_arch} has no exact equivalent of " + ", ".join(reasons) + hint)


def float32_copies(tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Detached contiguous fp32 copies: what the exported safetensors file holds."""
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in tensors.items()}
