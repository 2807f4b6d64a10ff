"""Build GPT and BERT at a given TP/PP layout, gather the FULL weights and one step's moments to rank 0, save.

Run under torchrun (or as one plain process for TP=PP=1):
    python tests/dslm/scripts/dump_full_weights.py --tp 2 --pp 1 --out /tmp/x.pt
The tests compare the saved full tensors and moment records across layouts.
"""

from __future__ import annotations

import argparse

import torch


def gather_full_weights(model) -> dict:
    """{f"{key}#{layer}": full tensor} on rank 0 (None elsewhere), assembled from every rank's shards."""
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    from megatron.core.dist_checkpointing.dict_utils import nested_values

    pieces = []
    for item in nested_values(model.sharded_state_dict()):
        if not isinstance(item, ShardedTensor) or item.key.endswith("_extra_state"):
            continue
        p = item.prepend_axis_num
        layer = item.global_offset[0] if p else None
        pieces.append((item.key, layer, tuple(item.global_shape[p:]), tuple(item.global_offset[p:]),
                       item.data.detach().clone()))
    world = torch.distributed.get_world_size()
    gathered = [None] * world if torch.distributed.get_rank() == 0 else None
    torch.distributed.gather_object(pieces, gathered, dst=0)
    if gathered is None:
        return None
    full = {}
    for part in gathered:
        for key, layer, shape, offset, data in part:
            name = f"{key}#{layer}"
            if name not in full:
                full[name] = torch.full(shape, float("nan"))
            full[name][tuple(slice(o, o + n) for o, n in zip(offset, data.shape))] = data
    return full


def run_step_with_observer(model, config, kind: str, vocab: int, seq: int, micro_batch: int, num_micro: int):
    """One forward+backward through megatron's schedule with the MomentObserver attached; records on rank 0."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron.dslm.mcore.observers import MomentObserver

    gen = torch.Generator().manual_seed(7)
    batches = []
    for _ in range(num_micro):
        tokens = torch.randint(0, vocab, (micro_batch, seq), generator=gen)
        labels = torch.randint(0, vocab, (micro_batch, seq), generator=gen)
        batches.append((tokens, labels))

    position_ids = torch.arange(seq).unsqueeze(0).expand(micro_batch, -1).contiguous()
    causal = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)[None, None]

    def forward_step(data_iterator, model_chunk):
        tokens, labels = next(data_iterator)
        if kind == "gpt":
            out = model_chunk(tokens, position_ids, causal, labels=labels)
        else:
            pad = torch.ones(micro_batch, seq, dtype=torch.long)
            out = model_chunk(tokens, pad, tokentype_ids=torch.zeros_like(tokens), lm_labels=labels)
            if isinstance(out, tuple):
                out = out[0]

        def loss_func(output):
            loss = output.float().mean()
            return loss, {"loss": loss.detach().clone()}

        return out, loss_func

    obs = MomentObserver([model]).attach()
    get_forward_backward_func()(forward_step_func=forward_step, data_iterator=iter(batches), model=[model],
                                num_microbatches=num_micro, seq_length=seq, micro_batch_size=micro_batch,
                                forward_only=False)
    records = obs.collect()
    obs.detach()
    return records


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--pp", type=int, default=1)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--post-ln", action="store_true")
    args = ap.parse_args()

    from megatron.core import parallel_state

    from megatron.training.initialize import initialize_distributed, set_random_seed

    initialize_distributed(args.tp, args.pp)
    set_random_seed(1234)
    from tests.support import hand_table, make_config  # the repo root comes on PYTHONPATH (cpu_env)

    from megatron.dslm.mcore.models import build_bert_model, build_gpt_model

    pre = parallel_state.is_pipeline_first_stage()
    post = parallel_state.is_pipeline_last_stage()
    vocab, seq = 128, 16
    table = hand_table(args.layers, per_layer=True, qkv=(0.03, 0.02, 0.05), lam=0.9, beta=0.4,
                       logit_scale=0.7)
    result = {}
    for kind in ("gpt", "bert"):
        config = make_config(num_layers=args.layers, hidden=32, heads=4, tp=args.tp, pp=args.pp,
                             pipeline_dtype=torch.float32, apply_residual_connection_post_layernorm=args.post_ln)
        common = dict(vocab_size=vocab, max_sequence_length=seq, pre_process=pre, post_process=post, seed=99)
        if kind == "gpt":
            model = build_gpt_model(config, table, **common)
        else:
            model = build_bert_model(config, table, **common)
        result[f"{kind}_weights"] = gather_full_weights(model)
        result[f"{kind}_moments"] = run_step_with_observer(model, config, kind, vocab, seq, 2, 2)
    if torch.distributed.get_rank() == 0:
        torch.save(result, args.out)
        print("saved", args.out, flush=True)
    torch.distributed.barrier()


if __name__ == "__main__":
    main()
