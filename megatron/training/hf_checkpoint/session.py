"""A TP1·PP1 model in this process: from a checkpoint's own flags, or from flags derived from a Hugging Face config.

Both converters and ``tools/generate.py`` run single-process (world size 1, gloo on CPU). A checkpoint saved at
any TP/PP layout loads here because megatron-core's dist_checkpointing stores every tensor under its global key.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional

import torch

from megatron.training import checkpointing, global_vars
from megatron.training.validate import ConfigError

# Saved flags that describe the run's layout or files, not the model: the in-process model is TP1·PP1, world 1.
_LAYOUT_FLAGS = {
    "tensor_model_parallel_size": 1, "pipeline_model_parallel_size": 1, "virtual_pipeline_model_parallel_size": None,
    "num_layers_per_virtual_pipeline_stage": None, "num_virtual_stages_per_pipeline_rank": None,
    "sequence_parallel": False, "use_distributed_optimizer": False, "overlap_grad_reduce": False,
    "overlap_param_gather": False, "load": None, "save": None, "save_interval": None, "pretrained_checkpoint": None,
    "tensorboard_dir": None, "metrics_file": None, "moments_file": None, "log_moments_interval": 0,
    "recompute_granularity": None, "recompute_method": None, "recompute_num_layers": None,
    "recompute_activations": False, "world_size": None, "data_parallel_size": None, "rank": None,
    "local_rank": None, "data_path": [], "mock_data": False, "train_iters": 0, "global_batch_size": None,
    "micro_batch_size": 1,
}
TOKENIZER_FLAGS = ("tokenizer_type", "vocab_file", "merge_file", "tokenizer_model")


def _extra_args_provider(model_type: str):
    if model_type != "bert":
        return None
    from megatron.training.bert_args import add_bert_args

    return add_bert_args


def parse_model_args(model_type: str, argv: List[str], values: Optional[Dict] = None):
    """Parsed flags as training would hold them: ``argv`` parsed, then ``values`` (a checkpoint's saved flags)
    laid over, then the single-process layout; validated like a training run of zero iterations."""
    from megatron.training.training import parse_args
    from megatron.training.validate import validate_args

    args = parse_args(_extra_args_provider(model_type), {"data_optional": True}, argv)
    for key, value in (values or {}).items():
        if key in _LAYOUT_FLAGS or key.startswith("_"):
            continue
        setattr(args, key, list(value) if isinstance(value, tuple) else value)
    for key, value in _LAYOUT_FLAGS.items():
        setattr(args, key, value)
    args.data_optional = True
    args.model_family = model_type  # saved with the checkpoint, as the entry points record it
    if args.lr is None:
        args.lr = 0.0
    validate_args(args, 1)
    return args


def start(args):
    """World size 1 process group, megatron's parallel state, tokenizer, global args; returns the tokenizer."""
    from megatron.training.initialize import initialize_distributed, set_random_seed
    from megatron.training.tokenizers import build_tokenizer_from_args

    initialize_distributed(1, 1, force_cpu=True)
    from megatron.core import parallel_state as ps

    ps.set_virtual_pipeline_model_parallel_world_size(None)
    tokenizer = build_tokenizer_from_args(args)
    saved_padded = getattr(args, "padded_vocab_size", None)
    if saved_padded is not None and saved_padded != tokenizer.padded_vocab_size:
        raise ConfigError(f"the tokenizer pads its vocabulary to {tokenizer.padded_vocab_size} rows but the "
                          f"checkpoint has {saved_padded}: give the tokenizer files it was trained with")
    args.padded_vocab_size = tokenizer.padded_vocab_size
    if getattr(args, "embedding_corr", None) is None:
        from megatron.dslm.config import DEFAULT_EMBEDDING_CORR

        args.embedding_corr = DEFAULT_EMBEDDING_CORR  # only the init reads it; weights are loaded over it
    global_vars.set_args(args)
    global_vars.set_tokenizer(tokenizer)
    set_random_seed(args.seed)
    return tokenizer


def build_model(args, model_type: str, add_binary_head: Optional[bool] = None):
    """The whole model (TP1·PP1, stock megatron-core paths, fp32), built as the pretraining entry point does."""
    from megatron.dslm.mcore.models import build_bert_model, build_gpt_model
    from megatron.training.model_setup import gpt_model_kwargs, init_table_from_args, transformer_config_from_args
    from megatron import perf

    config = transformer_config_from_args(args)
    config.params_dtype = config.pipeline_dtype = torch.float32
    config.bf16 = config.fp16 = False
    table = init_table_from_args(args, model_type)
    if model_type == "gpt":
        model = build_gpt_model(config, table, vocab_size=args.padded_vocab_size,
                                max_sequence_length=args.max_position_embeddings, seed=args.seed,
                                speed=perf.STOCK, **gpt_model_kwargs(args))
    else:
        if add_binary_head is None:
            add_binary_head = not getattr(args, "bert_no_binary_head", False)
        model = build_bert_model(config, table, vocab_size=args.padded_vocab_size,
                                 max_sequence_length=args.max_position_embeddings,
                                 num_tokentypes=args.num_tokentypes, add_binary_head=add_binary_head,
                                 seed=args.seed, speed=perf.STOCK)
    model.eval()
    return model, table


def checkpoint_model_type(saved_keys) -> str:
    """'bert' or 'gpt' from a checkpoint's tensor names (megatron-core's BertModel has an ``encoder``, GPTModel a
    ``decoder``): true for any checkpoint, whatever flags it saved."""
    names = {k[len("model."):] if k.startswith("model.") else k for k in saved_keys}
    return "bert" if any(k.startswith("encoder.") for k in names) else "gpt"


def _latest_checkpoint(load_dir: str) -> str:
    """The folder of the checkpoint the tracker under ``load_dir`` names."""
    iteration = checkpointing.read_tracker(load_dir)
    if iteration is None:
        raise FileNotFoundError(f"no checkpoint under {load_dir} ({checkpointing.TRACKER_FILE} missing)")
    return checkpointing.checkpoint_dir(load_dir, iteration)


def saved_model_type(load_dir: str) -> str:
    """:func:`checkpoint_model_type` of the latest checkpoint under ``load_dir``."""
    from megatron.core import dist_checkpointing

    return checkpoint_model_type(dist_checkpointing.load_tensors_metadata(_latest_checkpoint(load_dir)).keys())


def load_checkpoint_model(load_dir: str, model_type: str, tokenizer_overrides: Optional[Dict] = None):
    """(args, model, table, tokenizer, extra_state) of the latest checkpoint under ``load_dir`` at TP1·PP1."""
    from megatron.core import dist_checkpointing

    path = _latest_checkpoint(load_dir)
    common = dist_checkpointing.load_common_state_dict(path)
    saved = common.get("args") or {}
    if not saved:
        raise ConfigError(f"{load_dir}: the checkpoint stores no flags (not written by this stack's training)")
    saved_keys = set(dist_checkpointing.load_tensors_metadata(path).keys())
    found = checkpoint_model_type(saved_keys)
    if found != model_type:
        raise ConfigError(f"{load_dir} holds a {found.upper()} checkpoint, not --model-type {model_type}")
    values = dict(saved)
    # The vocabulary was padded to a multiple of divisor x TP at save time; at TP1 that multiple gives the same rows.
    values["make_vocab_size_divisible_by"] = (int(saved.get("make_vocab_size_divisible_by", 128) or 128)
                                              * int(saved.get("tensor_model_parallel_size", 1) or 1))
    for key, value in (tokenizer_overrides or {}).items():
        if value is not None:
            values[key] = value
    argv = [f"--num-layers={saved['num_layers']}", f"--hidden-size={saved['hidden_size']}",
            f"--num-attention-heads={saved['num_attention_heads']}", f"--seq-length={saved['seq_length']}",
            "--micro-batch-size=1", "--train-iters=0"]
    args = parse_model_args(model_type, argv, values)
    tokenizer = start(args)
    binary = any(k.startswith("model.binary_head.") or k.startswith("binary_head.") for k in saved_keys)
    model, table = build_model(args, model_type, add_binary_head=binary if model_type == "bert" else None)
    request = {k: v for k, v in model.sharded_state_dict().items()}
    with torch.no_grad():
        loaded = dist_checkpointing.load({"model": request}, path)["model"]
    model.load_state_dict(loaded, strict=False)
    missing = [k for k in model.state_dict() if not k.endswith("_extra_state") and k not in loaded]
    if missing:
        raise ConfigError(f"{path} lacks {missing[:3]}")
    return args, model, table, tokenizer, common.get("extra", {}) or {}


def save_model_checkpoint(model, args, save_dir: str, extra_state: Optional[Dict] = None) -> str:
    """Write ``model`` as iteration 0 of a training checkpoint (global keys: loads at any TP/PP)."""
    return checkpointing.save_checkpoint(0, [model], None, None, save_dir, args=args, extra_state=extra_state)
