"""``--dry-run``: validate a launch command and print what it would run, before any GPU, process group or data.

A user sizing a 1000-layer job on 8 GPUs wants to know that the flags agree (layout, batch, schedule), how the
layers and parameters split over the pipeline stages, what the bubble costs and which λ/β DSLM will use — in a
second, on a laptop. The world size comes from ``WORLD_SIZE`` (torchrun's) or defaults to TP x PP.
"""

from __future__ import annotations

import os
import sys

from megatron.training.validate import ConfigError, pipeline_bubble_fraction, scheduler_steps, validate_args


def _vocab_size(args):
    """Padded vocabulary size and where it came from; tokenizer files are read only if present."""
    from megatron.training.tokenizers import TokenizerError, build_tokenizer_from_args, padded_vocab_size

    files = [getattr(args, k, None) for k in ("vocab_file", "merge_file", "tokenizer_model")]
    if args.tokenizer_type == "NullTokenizer" or any(f and os.path.exists(f) for f in files):
        try:
            tok = build_tokenizer_from_args(args)
            return tok.padded_vocab_size, f"{args.tokenizer_type}, {tok.vocab_size} tokens"
        except TokenizerError as err:
            raise ConfigError(str(err)) from None
    if args.vocab_size:
        padded = padded_vocab_size(args.vocab_size, args.make_vocab_size_divisible_by,
                                   args.tensor_model_parallel_size)
        return padded, f"--vocab-size {args.vocab_size}"
    return None, "unknown (no tokenizer files here; give --vocab-size to count the embeddings)"


def describe(args, world_size: int) -> list:
    """The lines ``--dry-run`` prints (``args`` already validated)."""
    from megatron.training.model_setup import init_table_from_args, model_arch_from_args
    from megatron.training.model_size import flops_per_token, layer_params, stage_params

    family = getattr(args, "model_family", "gpt")
    vocab, vocab_note = _vocab_size(args)
    args.padded_vocab_size = vocab or args.hidden_size  # a placeholder row count when the vocabulary is unknown
    r0_note = "--embedding-corr"
    if args.embedding_corr is None:  # a real run measures r0 on the data at start-up
        from megatron.dslm.contract import DEFAULT_EMBEDDING_CORR

        args.embedding_corr, r0_note = DEFAULT_EMBEDDING_CORR, "the reference's default; measured on the data at start-up"

    arch = model_arch_from_args(args, family)
    tp, pp, dp = args.tensor_model_parallel_size, args.pipeline_model_parallel_size, args.data_parallel_size
    vp = getattr(args, "virtual_pipeline_model_parallel_size", None)
    lines = [f"dry run of {os.path.basename(sys.argv[0]) or 'pretrain'}: world size {world_size} = TP {tp} x PP {pp}"
             f"{f' (x VP {vp})' if vp else ''} x DP {dp}; no process group, model or data"]
    lines.append(
        f"model: {family.upper()} {arch.num_layers} layers, hidden {arch.hidden_size}, {arch.num_attention_heads} "
        f"heads ({arch.query_groups} query groups), FFN {arch.ffn_size}"
        f"{' gated' if arch.gated_linear_unit else ''} {arch.activation}, {arch.normalization}, "
        f"{'Post-LN' if arch.post_ln else 'Pre-LN'}, positions {arch.position_embedding_type}, seq {arch.seq_length}, "
        f"vocabulary {vocab if vocab else '?'} ({vocab_note})")
    steps = scheduler_steps(args)
    samples = args.train_iters * args.global_batch_size
    lines.append(
        f"schedule: {args.train_iters} iterations x global batch {args.global_batch_size} (micro {args.micro_batch_size}"
        f" x DP {dp} x {args.num_microbatches} micro-batches) = {samples} samples, {samples * args.seq_length} tokens;"
        f" lr {args.lr} {args.lr_decay_style} to {args.min_lr}, warmup {steps['lr_warmup_steps']:g} samples from "
        f"{getattr(args, 'lr_warmup_init', 0.0)}, decay over {steps['lr_decay_steps']:g} samples")
    table = init_table_from_args(args, family)
    first, last = table.layers[0], table.layers[-1]
    lines.append(
        f"init: --init-scheme {args.init_scheme}; residual x' = λ·x + β·F(x): layer 1 attention λ={first.attn_lambda:.4g}"
        f" β={first.attn_beta:.4g}, MLP λ={first.mlp_lambda:.4g} β={first.mlp_beta:.4g}; layer {len(table.layers)} "
        f"attention λ={last.attn_lambda:.4g} β={last.attn_beta:.4g}; r0 {args.embedding_corr:.4g} ({r0_note})")
    if vocab:
        per_stage = stage_params(arch, pp, args.max_position_embeddings,
                                 bert_binary_head=not getattr(args, "bert_no_binary_head", False))
        lines.append(f"parameters per pipeline stage (before TP sharding): "
                     f"{', '.join(f'{n:,}' for n in per_stage)}; total {sum(per_stage):,}; per layer "
                     f"{layer_params(arch):,}")
        lines.append(f"model FLOPs per iteration: {flops_per_token(arch) * args.global_batch_size * args.seq_length / 1e12:.4g}"
                     f" TFLOP ({flops_per_token(arch):.4g} per token, forward + backward)")
    else:
        lines.append(f"parameters per layer: {layer_params(arch):,} ({arch.num_layers // pp} layers per stage)")
    if pp > 1:
        lines.append(f"pipeline: {arch.num_layers // pp // (vp or 1)} layers per model chunk, expected bubble "
                     f"{100 * pipeline_bubble_fraction(pp, args.num_microbatches, vp):.1f}%")
    return lines


def dry_run(args) -> None:
    """Validate against the world size the launcher would give, print the description, exit 0."""
    world_size = int(os.environ.get("WORLD_SIZE", args.tensor_model_parallel_size * args.pipeline_model_parallel_size))
    validate_args(args, world_size)
    for line in describe(args, world_size):
        print(line, flush=True)
    sys.exit(0)
