"""Building megatron-core datasets from flags, with the checks megatron-core lacks.

megatron-core's GPTDataset loops forever when a split receives 0 documents but is asked for >0 samples (a
tiny corpus with ``--split 949,50,1``), and a truncated or overwritten ``.bin``/``.idx`` surfaces as an assertion
in megatron-core's reader or deep inside training. Both are caught here first with one message naming the file.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

from megatron.training.validate import ConfigError, data_prefixes

SPLIT_NAMES = ("train", "valid", "test")


def parse_split(split: str) -> List[float]:
    """'969,30,1' -> normalised [0.969, 0.03, 0.001] (missing parts are 0, like megatron-core)."""
    parts = [float(s) for s in split.split(",")]
    parts += [0.0] * (3 - len(parts))
    total = sum(parts)
    if total <= 0:
        raise ConfigError(f"--split {split!r} sums to 0")
    return [p / total for p in parts]


def split_document_counts(num_documents: int, split: str) -> List[int]:
    """Documents each split receives (megatron-core rounds cumulative boundaries the same way)."""
    bounds = [0]
    for frac in parse_split(split):
        bounds.append(bounds[-1] + int(round(frac * num_documents)))
    bounds[-1] = num_documents
    return [bounds[i + 1] - bounds[i] for i in range(3)]


def checked_dataset(prefix: str, vocab_size: Optional[int] = None) -> dict:
    """:func:`~megatron.training.indexed_data.validate_indexed_dataset`, its error a ConfigError (one line naming
    the file): call before anything opens ``prefix`` with megatron-core, whose reader asserts or reads garbage."""
    from megatron.training.indexed_data import IndexedDataError, validate_indexed_dataset

    try:
        return validate_indexed_dataset(prefix, vocab_size=vocab_size)
    except IndexedDataError as err:
        raise ConfigError(str(err)) from err


def check_data_and_split(data_path: Sequence[str], split: str, num_samples: Sequence[int],
                         vocab_size: Optional[int] = None) -> None:
    """Open every prefix (validating .idx/.bin) and reject splits that get no documents but need samples."""
    for prefix in data_prefixes(data_path):
        info = checked_dataset(prefix, vocab_size=vocab_size)
        counts = split_document_counts(info["documents"], split)
        for name, docs, samples in zip(SPLIT_NAMES, counts, num_samples):
            if samples and docs == 0:
                raise ConfigError(
                    f"--split {split} gives the {name} split 0 of the {info['documents']} documents in {prefix} "
                    f"but {samples} samples are needed: raise that split's share or use --eval-iters 0")


def blend_from_args(data_path: Sequence[str]):
    from megatron.core.datasets.utils import get_blend_from_list

    return get_blend_from_list(list(data_path)) if data_path else None


def build_datasets(dataset_cls, config, num_samples: Sequence[int]):
    """(train, valid, test) through BlendedMegatronDatasetBuilder; splits with 0 samples come back None."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder

    sizes = [n if n else None for n in num_samples]
    datasets = BlendedMegatronDatasetBuilder(dataset_cls, sizes, lambda: True, config).build()
    return tuple(datasets)
