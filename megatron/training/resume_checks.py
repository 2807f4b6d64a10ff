"""What ``--load`` checks before it restores anything: the same model, and a schedule the user chose.

A checkpoint stores the flags it was trained with. Loading it into a model of another shape either trains
silently (megatron-core happily loads a checkpoint with other attention heads: the fused QKV has the same size)
or fails deep inside dist_checkpointing; a changed ``--lr``/``--train-iters`` meets megatron-core's scheduler,
which asserts. Both become one line naming the field, the checkpoint's value and the flag's.
"""

from __future__ import annotations

from megatron.training.validate import ConfigError

# (flag dest, the flag a user changes, default for checkpoints that predate the field)
MODEL_SHAPE = (
    ("num_layers", "--num-layers", None), ("hidden_size", "--hidden-size", None),
    ("ffn_hidden_size", "--ffn-hidden-size", None), ("num_attention_heads", "--num-attention-heads", None),
    ("kv_channels", "--kv-channels", None), ("group_query_attention", "--group-query-attention", False),
    ("apply_residual_connection_post_layernorm", "--apply-residual-connection-post-layernorm", False),
    ("untie_embeddings_and_output_weights", "--untie-embeddings-and-output-weights", False),
    ("position_embedding_type", "--position-embedding-type", "learned_absolute"),
    ("max_position_embeddings", "--max-position-embeddings", None),
    ("normalization", "--normalization", "LayerNorm"), ("swiglu", "--swiglu", False),
    ("add_bias_linear", "--disable-bias-linear", True), ("qk_layernorm", "--qk-layernorm", False),
    ("activation", "--activation", "gelu"), ("openai_gelu", "--openai-gelu", False),
    ("num_tokentypes", "--num-tokentypes", None), ("model_family", "the entry point", "gpt"),
)

# megatron-core scheduler state -> (what it is, the flags that set it)
SCHEDULE = (
    ("max_lr", "--lr"), ("min_lr", "--min-lr"), ("lr_decay_style", "--lr-decay-style"),
    ("lr_warmup_steps", "--lr-warmup-iters/--lr-warmup-samples/--lr-warmup-fraction"),
    ("lr_decay_steps", "--lr-decay-iters/--lr-decay-samples/--train-iters"),
    ("start_wd", "--weight-decay"), ("end_wd", "--weight-decay"),
)


def check_model_shape(saved: dict, args, where: str) -> None:
    """ConfigError naming the first shape field where the checkpoint's flags and this run's differ."""
    if not saved:
        return
    for dest, flag, default in MODEL_SHAPE:
        if dest not in saved and default is None:
            continue
        theirs, ours = saved.get(dest, default), getattr(args, dest, default)
        if theirs != ours:
            raise ConfigError(f"--load {where}: {dest} is {theirs!r} in the checkpoint but {ours!r} here ({flag}); "
                              "a checkpoint loads into the model it was trained as")
    if saved.get("group_query_attention") and saved.get("num_query_groups") != getattr(args, "num_query_groups", None):
        raise ConfigError(f"--load {where}: num_query_groups is {saved.get('num_query_groups')!r} in the checkpoint "
                          f"but {getattr(args, 'num_query_groups', None)!r} here (--num-query-groups)")
    same_tp = saved.get("tensor_model_parallel_size") == getattr(args, "tensor_model_parallel_size", None)
    vocab_here = getattr(args, "padded_vocab_size", None)
    if same_tp and vocab_here is not None and saved.get("padded_vocab_size") not in (None, vocab_here):
        raise ConfigError(f"--load {where}: the vocabulary has {saved['padded_vocab_size']} (padded) rows in the "
                          f"checkpoint but {vocab_here} here (--tokenizer-type/--vocab-file/"
                          "--make-vocab-size-divisible-by)")


def check_schedule(saved: dict, scheduler, args, where: str) -> None:
    """Upstream's rule: a changed schedule needs --override-opt_param-scheduler (use the flags) or
    --use-checkpoint-opt_param-scheduler (keep the checkpoint's); without either it is an error naming both."""
    if getattr(args, "override_opt_param_scheduler", False) or getattr(args, "use_checkpoint_opt_param_scheduler",
                                                                       False):
        return
    for key, flag in SCHEDULE:
        if key not in saved or not hasattr(scheduler, key):
            continue
        theirs, ours = saved[key], getattr(scheduler, key)
        if theirs != ours:
            raise ConfigError(f"--load {where}: the learning-rate schedule differs: {key} is {theirs!r} in the "
                              f"checkpoint but {ours!r} from {flag}; pass --override-opt_param-scheduler to use the "
                              "flags or --use-checkpoint-opt_param-scheduler to keep the checkpoint's")
