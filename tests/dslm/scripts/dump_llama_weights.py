"""Build a Llama-shaped GPT (SwiGLU, GQA, RMSNorm, RoPE, untied, no biases) at a TP/PP layout, gather its FULL
weights to rank 0 and save them; a gated fc1 is gathered through megatron's own sharded factory, so the saved
tensor is the checkpoint's global ``[gate; linear]``.

    torchrun --nproc_per_node 2 tests/dslm/scripts/dump_llama_weights.py --tp 2 --out /tmp/x.pt
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
import torch.nn.functional as F


def shards(model):
    """(key, layer, global shape, global offset, data) of every parameter shard of this rank."""
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

    out = []
    for item in nested_values(model.sharded_state_dict()):
        parts = nested_values(item.build()) if isinstance(item, ShardedTensorFactory) else [item]
        for part in parts:
            if not isinstance(part, ShardedTensor) or part.key.endswith("_extra_state"):
                continue
            p = part.prepend_axis_num
            out.append((part.key, part.global_offset[0] if p else None, tuple(part.global_shape[p:]),
                        tuple(part.global_offset[p:]), part.data.detach().clone()))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--pp", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from megatron.core import parallel_state

    from megatron.training.initialize import initialize_distributed, set_random_seed

    initialize_distributed(args.tp, args.pp)
    set_random_seed(1234)
    from tests.support import hand_table, make_config

    from megatron.dslm.mcore.models import build_gpt_model

    layers = 4
    table = hand_table(layers, per_layer=True, qkv=(0.03, 0.02, 0.05), lam=0.9, beta=0.4)
    table = dataclasses.replace(table, output_layer_std=0.011, layers=tuple(
        dataclasses.replace(l, gate_std=0.07 * l.layer_number) for l in table.layers))
    config = dataclasses.replace(
        make_config(num_layers=layers, hidden=32, heads=4, tp=args.tp, pp=args.pp, pipeline_dtype=torch.float32),
        gated_linear_unit=True, activation_func=F.silu, normalization="RMSNorm", num_query_groups=2,
        add_bias_linear=False, ffn_hidden_size=48, bias_activation_fusion=False)
    model = build_gpt_model(config, table, vocab_size=128, max_sequence_length=16, seed=99,
                            pre_process=parallel_state.is_pipeline_first_stage(),
                            post_process=parallel_state.is_pipeline_last_stage(),
                            share_embeddings_and_output_weights=False, position_embedding_type="rope")
    world = torch.distributed.get_world_size()
    gathered = [None] * world if torch.distributed.get_rank() == 0 else None
    torch.distributed.gather_object(shards(model), gathered, dst=0)
    if gathered is not None:
        full = {}
        for part in gathered:
            for key, layer, shape, offset, data in part:
                name = f"{key}#{layer}"
                full.setdefault(name, torch.full(shape, float("nan")))
                full[name][tuple(slice(o, o + n) for o, n in zip(offset, data.shape))] = data
        torch.save(full, args.out)
    torch.distributed.barrier()


if __name__ == "__main__":
    main()
