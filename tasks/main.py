"""Finetune BERT on MNLI, QQP or RACE (upstream Megatron-LM's ``tasks/main.py`` flags).

    python tasks/main.py --task MNLI \
        --train-data MNLI/train.tsv --valid-data MNLI/dev_matched.tsv MNLI/dev_mismatched.tsv \
        --pretrained-checkpoint checkpoints/bert --save checkpoints/mnli_lr2e-5_s1 --epochs 3 \
        --micro-batch-size 8 --lr 2e-5 --seq-length 128 --num-layers 12 --hidden-size 768 \
        --num-attention-heads 12 --vocab-file vocab.txt

The model flags must match the pretraining run. ``--load DIR`` resumes an interrupted finetuning run
exactly (the checkpoint under DIR written at each epoch end or at ``--exit-interval``); ``<save>/best``
holds the best epoch's weights and ``<save>/predictions/<valid file>.tsv`` its predictions.
"""

from __future__ import annotations

from functools import partial

# `python tasks/main.py` imports the installed package (`pip install -e .`): no sys.path edit needed.
from tasks.finetune import TaskSpec, finetune


def add_task_args(parser):
    group = parser.add_argument_group("tasks")
    group.add_argument("--task", required=True, choices=sorted(TASKS), help="Finetuning task.")
    group.add_argument("--epochs", type=int, default=3, help="Passes over --train-data.")
    group.add_argument("--train-data", nargs="+", required=True,
                       help="Training files (MNLI/QQP: TSV; RACE: directories or files of JSON records).")
    group.add_argument("--valid-data", nargs="*", default=[],
                       help="Validation files, each evaluated and reported separately after every epoch.")
    group.add_argument("--eval-micro-batch-size", type=int, default=None,
                       help="Micro-batch size for evaluation; default --micro-batch-size.")
    group.add_argument("--pretrained-checkpoint", default=None,
                       help="Pretraining checkpoint directory (pretrain_bert.py --save); weights of the BERT "
                            "body only.")
    group.add_argument("--keep-last", action="store_true",
                       help="Keep the last epoch's checkpoint under --save at the end (default: only "
                            "<save>/best is kept; without --valid-data the last checkpoint always stays).")
    group.add_argument("--strict", action="store_true",
                       help="Fail on the first malformed row / unknown label instead of skipping it.")
    return parser


def build_task_dataset(reader, dataset_cls, task: str, paths, tokenizer, seq_length: int, strict: bool):
    """Read files, report skipped rows (file:line), encode; labels must be present (train and validation)."""
    from megatron.training.global_vars import print_rank_0
    from megatron.training.validate import ConfigError

    from tasks.data import ReaderError

    try:
        result = reader(paths, strict=strict)
    except ReaderError as err:
        raise ConfigError(f"{task}: {err} (--strict)") from err
    except FileNotFoundError as err:
        raise ConfigError(f"{task}: {err}") from err
    print_rank_0(f"> {task} {' '.join(map(str, paths))}: {result.summary()}")
    if not result.examples:
        raise ConfigError(f"{task}: no usable examples in {' '.join(map(str, paths))}")
    unlabeled = sum(1 for e in result.examples if e.label is None)
    if unlabeled:
        raise ConfigError(f"{task}: {unlabeled} examples in {' '.join(map(str, paths))} have no label "
                          "(a test file?); training and validation need labelled data")
    return dataset_cls(result.examples, tokenizer, seq_length)


def _spec(name: str) -> TaskSpec:
    from tasks import data

    if name == "RACE":
        build = partial(build_task_dataset, data.read_race, data.MultipleChoiceDataset, name)
        return TaskSpec(name, data.RACE_LABELS, True, build)
    reader, labels = {"MNLI": (data.read_mnli, data.MNLI_LABELS), "QQP": (data.read_qqp, data.QQP_LABELS)}[name]
    return TaskSpec(name, labels, False, partial(build_task_dataset, reader, data.ClassificationDataset, name))


TASKS = ("MNLI", "QQP", "RACE")


def main(argv=None):
    from megatron.training.training import initialize_megatron

    args = initialize_megatron(
        extra_args_provider=add_task_args, argv=argv,
        args_defaults={"tokenizer_type": "BertWordPieceLowerCase", "num_tokentypes": 2,
                       "train_iters": 0,  # set from --epochs once the training data is read
                       "data_optional": True})
    return finetune(_spec(args.task), args)


if __name__ == "__main__":
    from megatron.training.training import run_main

    run_main(main)
