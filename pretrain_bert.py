"""Pretrain BERT (masked LM + sentence-order head) with megatron-core's BertModel.

Providers only; the loop is ``megatron.training.training.pretrain``. Data is sentence-split indexed data
(``tools/preprocess_data.py --split-sentences`` -> ``{prefix}_text_sentence.{bin,idx}``) read through
megatron-core's ``BERTMaskedWordPieceDataset``. With the binary head the dataset swaps the two segments half
of the time (both come from the same document), so the head learns sentence order: it is logged as
``sop loss`` / ``sop accuracy`` next to ``lm loss``.

    torchrun --nproc_per_node 2 pretrain_bert.py --tensor-model-parallel-size 2 \
        --num-layers 2 --hidden-size 64 --num-attention-heads 4 --seq-length 128 \
        --max-position-embeddings 128 --micro-batch-size 4 --global-batch-size 8 --train-iters 100 \
        --lr 1e-4 --data-path data/wiki_text_sentence --split 98,2,0 \
        --tokenizer-type BertWordPieceLowerCase --vocab-file vocab.txt --mask-prob 0.15

The body sits under ``if __name__ == "__main__":`` because dist_checkpointing's writer re-imports __main__.
"""

from __future__ import annotations

from functools import partial
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# Token types (segment A/B) are embedded by default even without the binary head: finetuning on sentence
# pairs needs them, and the pretrained checkpoint then matches the finetuning model (--num-tokentypes).
BERT_NUM_TOKENTYPES = 2

from megatron.training.bert_args import add_bert_args  # noqa: F401  (the BERT flags; tools and tests use it)

_BATCH_KEYS_INT = ("text", "types", "labels", "loss_mask", "padding_mask", "is_random")


# ----------------------------------------------------------------------------------------------- model

def model_provider(pre_process: bool = True, post_process: bool = True, config=None, vp_stage=None):
    """megatron-core BertModel with tied MLM output and (unless --bert-no-binary-head) the binary head.

    ``vp_stage``: the model chunk to build under the interleaved pipeline (None otherwise)."""
    from megatron.dslm.mcore.models import build_bert_model
    from megatron.training.global_vars import get_args
    from megatron.training.model_setup import init_table_from_args, transformer_config_from_args
    from megatron.perf import SpeedOptions

    args = get_args()
    if config is None:
        config = transformer_config_from_args(args)
    return build_bert_model(
        config, init_table_from_args(args, "bert"),
        vocab_size=args.padded_vocab_size,  # set by initialize_megatron from the tokenizer
        max_sequence_length=args.max_position_embeddings,
        num_tokentypes=num_tokentypes_from_args(args),
        add_binary_head=binary_head_from_args(args),
        pre_process=pre_process, post_process=post_process,
        speed=SpeedOptions.from_args(args),
        seed=args.seed,
        vp_stage=vp_stage,
    )


def binary_head_from_args(args) -> bool:
    return not getattr(args, "bert_no_binary_head", False)


def masked_positions_from_args(args) -> bool:
    return getattr(args, "mlm_head_positions", "masked") == "masked"


def num_tokentypes_from_args(args) -> int:
    value = getattr(args, "num_tokentypes", None)
    return BERT_NUM_TOKENTYPES if value is None else int(value)


# ----------------------------------------------------------------------------------------------- data

def check_sentence_coverage(prefix: str, split: str, num_samples: Sequence[int], binary_head: bool) -> None:
    """Fail early where megatron-core would loop forever building the BERT sample index.

    ``helpers.build_mapping`` cycles epochs until it has ``num_samples`` samples; documents with fewer
    sentences than a sample needs (2 with the binary head) are skipped, so a split made only of them never
    gets there. (Splits with no documents at all are caught by ``check_data_and_split``.)
    """
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from megatron.training.datasets import SPLIT_NAMES, split_document_counts
    from megatron.training.validate import ConfigError

    dataset = IndexedDataset(prefix)
    # Copy while the dataset (and its memory map) is alive: a view outliving it segfaults.
    sentences_per_doc = np.diff(np.array(dataset.document_indices, dtype=np.int64))
    del dataset
    min_sentences = 2 if binary_head else 1
    start = 0
    for name, docs, wanted in zip(SPLIT_NAMES, split_document_counts(len(sentences_per_doc), split), num_samples):
        usable = int((sentences_per_doc[start:start + docs] >= min_sentences).sum())
        start += docs
        if wanted and docs and not usable:
            raise ConfigError(
                f"the {name} split of {prefix} has {docs} documents but none with >= {min_sentences} "
                f"sentences{' (the binary head needs two segments)' if binary_head else ''}, and {wanted} "
                f"{name} samples are needed (megatron-core would loop forever): preprocess with "
                f"--split-sentences, add documents, or pass --bert-no-binary-head")


def build_bert_datasets(train_val_test_num_samples, *, data_path: List[str], split: Optional[str],
                        seq_length: int, seed: int, tokenizer, mask_prob: float, short_seq_prob: float,
                        binary_head: bool, masking_max_ngram: int = 3, masking_do_full_word: bool = True,
                        path_to_cache: Optional[str] = None):
    """Train/valid/test ``BERTMaskedWordPieceDataset`` (blended when --data-path lists several prefixes)."""
    from megatron.core.datasets.bert_dataset import BERTMaskedWordPieceDataset, BERTMaskedWordPieceDatasetConfig
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.training.datasets import blend_from_args, check_data_and_split, data_prefixes
    from megatron.training.validate import ConfigError

    split = split or "1,0,0"
    if not data_path:
        raise ConfigError("BERT pretraining needs --data-path (sentence-split indexed data, "
                          "tools/preprocess_data.py --split-sentences)")
    check_data_and_split(data_path, split, train_val_test_num_samples, vocab_size=tokenizer.vocab_size)
    for prefix in data_prefixes(data_path):
        check_sentence_coverage(prefix, split, train_val_test_num_samples, binary_head)

    config = BERTMaskedWordPieceDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        blend=blend_from_args(data_path),
        split=split,
        path_to_cache=path_to_cache,
        tokenizer=tokenizer,
        masking_probability=mask_prob,
        short_sequence_probability=short_seq_prob,
        masking_max_ngram=masking_max_ngram,
        masking_do_full_word=masking_do_full_word,
        masking_do_permutation=False,
        masking_use_longer_ngrams=False,
        masking_use_geometric_distribution=False,
        classification_head=binary_head,
    )
    # Sizes stay integers: megatron-core's masked datasets crash on a None ("one epoch") size, while 0 gives
    # an empty split (returned as None).
    datasets = BlendedMegatronDatasetBuilder(
        BERTMaskedWordPieceDataset, [int(n) for n in train_val_test_num_samples], lambda: True, config).build()
    return tuple(d if d is not None and len(d) > 0 else None for d in datasets)


def datasets_provider(train_val_test_num_samples):
    from megatron.training.global_vars import get_args, get_tokenizer, print_rank_0

    args = get_args()
    print_rank_0("> building BERT train, validation and test datasets ...")
    return build_bert_datasets(
        train_val_test_num_samples,
        data_path=args.data_path, split=args.split, seq_length=args.seq_length, seed=args.seed,
        tokenizer=get_tokenizer(), mask_prob=args.mask_prob, short_seq_prob=args.short_seq_prob,
        binary_head=binary_head_from_args(args),
        masking_max_ngram=getattr(args, "masking_max_ngram", 3),
        masking_do_full_word=getattr(args, "masking_do_full_word", True),
        path_to_cache=getattr(args, "data_cache_path", None),
    )


# ---------------------------------------------------------------------------------------- forward step

def get_batch(data_iterator):
    """Next micro-batch on the model's device; TP ranks read it from TP rank 0 so every rank sees the same one."""
    from megatron.core import parallel_state, tensor_parallel
    from megatron.training.device import to_input_device

    if parallel_state.get_tensor_model_parallel_world_size() > 1:
        data = next(data_iterator) if parallel_state.get_tensor_model_parallel_rank() == 0 else None
        batch = tensor_parallel.broadcast_data(list(_BATCH_KEYS_INT), data, torch.int64)
    else:
        batch = {k: torch.as_tensor(v) for k, v in next(data_iterator).items() if k in _BATCH_KEYS_INT}
    return to_input_device(batch, torch.int64)


def loss_func(loss_mask: torch.Tensor, is_random: torch.Tensor, output_tensor):
    """Masked-LM loss over masked positions, plus the sentence-order loss when the head exists."""
    lm_loss_per_token, binary_logits = output_tensor
    mask = loss_mask.float()
    lm_loss = (lm_loss_per_token.float() * mask).sum() / mask.sum().clamp(min=1.0)
    # The schedule divides the returned loss in place: log clones, never views of it.
    stats = {"lm loss": lm_loss.detach().clone()}
    if binary_logits is None:
        return lm_loss, stats
    sop_loss = F.cross_entropy(binary_logits.float(), is_random.view(-1))
    accuracy = (binary_logits.argmax(dim=-1) == is_random.view(-1)).float().mean()
    stats["sop loss"] = sop_loss.detach().clone()
    stats["sop accuracy"] = accuracy.detach().clone()
    return lm_loss + sop_loss, stats


def forward_step(data_iterator, model, use_tokentypes: bool = True, masked_positions: bool = False):
    batch = get_batch(data_iterator)
    # megatron-core's BERT attention mask: 1 = real token, 0 = padding.
    extra = {"mlm_positions": batch["loss_mask"]} if masked_positions else {}
    output = model(batch["text"], batch["padding_mask"],
                   tokentype_ids=batch["types"] if use_tokentypes else None, lm_labels=batch["labels"], **extra)
    return output, partial(loss_func, batch["loss_mask"], batch["is_random"])


if __name__ == "__main__":
    from megatron.core.enums import ModelType
    from megatron.training import pretrain

    def _forward_step(data_iterator, model):
        from megatron.training.global_vars import get_args

        args = get_args()
        return forward_step(data_iterator, model, num_tokentypes_from_args(args) > 0,
                            masked_positions_from_args(args))

    pretrain(datasets_provider, model_provider, ModelType.encoder_or_decoder, _forward_step,
             extra_args_provider=add_bert_args,
             args_defaults={"tokenizer_type": "BertWordPieceLowerCase", "num_tokentypes": BERT_NUM_TOKENTYPES})
