"""Pretrain a GPT (megatron-core GPTModel) with any --init-scheme, Pre-LN or Post-LN, on GPUs or CPU.

    torchrun --nproc_per_node 8 pretrain_gpt.py --num-layers 192 --hidden-size 1024 ... --init-scheme dslm
"""

from functools import partial

import torch


def model_provider(pre_process=True, post_process=True, config=None, vp_stage=None):
    """GPTModel built with the scheme's layer spec and initialised from its sigma table (layout-independent).

    ``vp_stage``: the model chunk to build under the interleaved pipeline (None otherwise)."""
    from megatron.dslm.mcore.models import build_gpt_model
    from megatron.training import get_args
    from megatron.training.model_setup import gpt_model_kwargs, init_table_from_args
    from megatron.perf import SpeedOptions

    args = get_args()
    table = init_table_from_args(args, "gpt")
    return build_gpt_model(
        config, table, vocab_size=args.padded_vocab_size, max_sequence_length=args.max_position_embeddings,
        pre_process=pre_process, post_process=post_process,
        seed=args.seed, **gpt_model_kwargs(args),
        speed=SpeedOptions.from_args(args), vp_stage=vp_stage)


def datasets_provider(num_samples):
    """GPTDataset over indexed data (or MockGPTDataset with --mock-data) via BlendedMegatronDatasetBuilder."""
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig, MockGPTDataset
    from megatron.training import get_args, get_tokenizer
    from megatron.training.datasets import blend_from_args, build_datasets, check_data_and_split

    args, tokenizer = get_args(), get_tokenizer()
    if not args.mock_data:
        check_data_and_split(args.data_path, args.split, num_samples, vocab_size=tokenizer.vocab_size)
    config = GPTDatasetConfig(
        random_seed=args.seed, sequence_length=args.seq_length,
        blend=None if args.mock_data else blend_from_args(args.data_path),
        split=args.split, path_to_cache=args.data_cache_path, tokenizer=tokenizer,
        reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False,
        create_attention_mask=False,
    )
    return build_datasets(MockGPTDataset if args.mock_data else GPTDataset, config, num_samples)


def loss_func(loss_mask, output_tensor):
    """Mean next-token loss over unmasked tokens. Logged as a clone: the schedule divides it in place."""
    losses = output_tensor.float()
    loss_mask = loss_mask.view(-1).float()
    loss = torch.sum(losses.view(-1) * loss_mask) / loss_mask.sum().clamp(min=1)
    return loss, {"lm loss": loss.detach().clone()}


def forward_step(data_iterator, model):
    from megatron.training.device import to_input_device

    batch = to_input_device(next(data_iterator))
    tokens, labels = batch["tokens"].long(), batch["labels"].long()
    loss_mask, position_ids = batch["loss_mask"], batch["position_ids"].long()
    attention_mask = batch.get("attention_mask")
    output = model(tokens, position_ids, attention_mask, labels=labels)
    return output, partial(loss_func, loss_mask)


if __name__ == "__main__":  # the checkpoint writer re-imports __main__: keep the body behind this guard
    from megatron.core.enums import ModelType
    from megatron.training import pretrain

    pretrain(datasets_provider, model_provider, ModelType.encoder_or_decoder, forward_step)
