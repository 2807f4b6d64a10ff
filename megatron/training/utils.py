"""Helpers upstream entry scripts import from ``megatron.training.utils``, with upstream's names and meanings.

Only what a GPT/BERT entry script reaches for: loss averaging, batch hand-out over tensor-parallel ranks, the
left-to-right masks, pipeline-stage tests, blends from flags. Context parallelism is refused at start-up, so
``get_batch_on_this_cp_rank`` returns the batch unchanged.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

from megatron.training.global_vars import get_args, is_last_rank, print_rank_0, print_rank_last  # noqa: F401

_INT_KEYS = ("tokens", "labels", "position_ids")


def average_losses_across_data_parallel_group(losses):
    """Mean of each (detached) loss over the data-parallel ranks, as one tensor."""
    from megatron.core import parallel_state as ps

    averaged = torch.cat([loss.clone().detach().view(1) for loss in losses])
    torch.distributed.all_reduce(averaged, group=ps.get_data_parallel_group())
    return averaged / ps.get_data_parallel_world_size()


def unwrap_model(model):
    """The module inside DDP / Float16Module wrappers (a list is unwrapped element-wise)."""
    from megatron.training.checkpointing import unwrap_model as unwrap

    return [unwrap(m) for m in model] if isinstance(model, list) else unwrap(model)


def is_first_or_last_pipeline_stage(vp_stage: Optional[int] = None) -> bool:
    """Whether this rank (model chunk ``vp_stage``) embeds tokens or computes the loss."""
    from megatron.core import parallel_state as ps

    if ps.get_pipeline_model_parallel_world_size() == 1:
        return True
    ignore_virtual = vp_stage is None
    return (ps.is_pipeline_first_stage(ignore_virtual=ignore_virtual, vp_stage=vp_stage)
            or ps.is_pipeline_last_stage(ignore_virtual=ignore_virtual, vp_stage=vp_stage))


def get_batch_on_this_cp_rank(batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The batch itself: context parallelism (the only case that slices it) is refused at start-up."""
    return batch


def get_batch_on_this_tp_rank(data_iterator, mtp_on_this_rank: bool = False) -> Dict[str, torch.Tensor]:
    """One micro-batch on the model's device: tensor-parallel rank 0 reads it, the others receive it.

    Keys as upstream's GPT batch: tokens, labels, loss_mask, attention_mask (None unless the dataset builds
    one), position_ids. Ranks other than TP rank 0 may pass ``data_iterator=None``."""
    from megatron.core import parallel_state as ps
    from megatron.training.device import input_device, to_input_device

    if ps.get_tensor_model_parallel_world_size() == 1:
        batch = to_input_device(next(data_iterator))
        return {key: batch.get(key) for key in ("tokens", "labels", "loss_mask", "attention_mask", "position_ids")}
    args = get_args()
    group, src = ps.get_tensor_model_parallel_group(), ps.get_tensor_model_parallel_src_rank()
    device = input_device()
    shape = (args.micro_batch_size, args.seq_length)
    batch = to_input_device(next(data_iterator)) if ps.get_tensor_model_parallel_rank() == 0 else None
    has_mask = torch.tensor([int(batch is not None and batch.get("attention_mask") is not None)], device=device)
    torch.distributed.broadcast(has_mask, src, group=group)
    out = {}
    for key in _INT_KEYS + ("loss_mask",):
        dtype = torch.int64 if key in _INT_KEYS else torch.float32
        tensor = batch[key].to(dtype) if batch is not None else torch.empty(shape, dtype=dtype, device=device)
        torch.distributed.broadcast(tensor, src, group=group)
        out[key] = tensor
    out["attention_mask"] = None
    if has_mask.item():
        mask_shape = (args.micro_batch_size, 1, args.seq_length, args.seq_length)
        mask = batch["attention_mask"].to(torch.bool) if batch is not None else torch.empty(
            mask_shape, dtype=torch.bool, device=device)
        torch.distributed.broadcast(mask, src, group=group)
        out["attention_mask"] = mask
    return out


def get_ltor_masks_and_position_ids(data: torch.Tensor, eod_token: int, reset_position_ids: bool,
                                    reset_attention_mask: bool, eod_mask_loss: bool):
    """Causal attention mask (True = masked), loss mask and position ids for a [batch, seq] token tensor.

    ``reset_*``: positions and attention restart after every end-of-document token; ``eod_mask_loss``:
    no loss on end-of-document tokens. Same conventions as upstream (and megatron-core's GPTDataset)."""
    batch, seq = data.shape
    causal = torch.tril(torch.ones((seq, seq), dtype=torch.bool, device=data.device))
    attention = causal.unsqueeze(0).repeat(batch if reset_attention_mask else 1, 1, 1)
    loss_mask = torch.ones(data.shape, dtype=torch.float, device=data.device)
    if eod_mask_loss:
        loss_mask[data == eod_token] = 0.0
    position_ids = torch.arange(seq, dtype=torch.long, device=data.device).unsqueeze(0).repeat(batch, 1)
    if reset_position_ids or reset_attention_mask:
        for b in range(batch):
            previous = 0
            for i in (data[b] == eod_token).nonzero(as_tuple=True)[0].tolist():
                if reset_attention_mask:
                    attention[b, i + 1:, :i + 1] = False
                if reset_position_ids:
                    position_ids[b, i + 1:] -= i + 1 - previous
                    previous = i + 1
    return (~attention).unsqueeze(1), loss_mask, position_ids


def get_blend_and_blend_per_split(args):
    """(blend, blend_per_split) for megatron-core's dataset configs from --data-path (no per-split paths)."""
    from megatron.training.datasets import blend_from_args

    if args.mock_data:
        return None, None
    return blend_from_args(args.data_path), None
