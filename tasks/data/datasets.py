"""BERT inputs for sentence-pair classification and multiple choice.

Items are dicts of int64 arrays `text`, `types`, `padding_mask` (1 = token, 0 = pad, as
megatron-core's BertModel expects its attention mask) of shape [seq_length], or
[num_choices, seq_length] for multiple choice, plus an int `label` (-1 when the file has none)
and the example's string `uid`.
"""

from typing import List, Optional, Sequence, Tuple, Union

import numpy
import torch

Text = Union[str, Sequence[int]]


def _ids(tokenizer, text: Optional[Text]) -> List[int]:
    if text is None:
        return []
    return list(tokenizer.tokenize(text)) if isinstance(text, str) else list(text)


def _truncate_longest_first(a: List[int], b: List[int], budget: int) -> None:
    """Cut the ends so both fit, the longer first: the shorter keeps min(its length, budget // 2), the longer the
    rest, so the one that was longer (``b`` on a tie) keeps the odd token — transformers' (fast tokenizers')
    ``truncation="longest_first"``, so a pair is encoded here as a transformers model was finetuned on it."""
    if len(a) + len(b) <= budget:
        return
    if len(a) > len(b):
        keep_b = min(len(b), budget // 2)
        keep_a = budget - keep_b
    else:
        keep_a = min(len(a), budget // 2)
        keep_b = budget - keep_a
    del a[keep_a:]
    del b[keep_b:]


def encode_pair(tokenizer, a: Text, b: Optional[Text], seq_length: int
                ) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """[CLS] a [SEP] b [SEP] -> (ids, types, padding_mask), each int64 of length seq_length.

    a and b are strings (tokenized here) or token ids; b may be None ([CLS] a [SEP]). Token
    types are 0 up to the first [SEP], 1 for b and its [SEP], 0 on padding.
    """
    a_ids, b_ids = _ids(tokenizer, a), _ids(tokenizer, b)
    specials = 3 if b is not None else 2
    if seq_length < specials + 2:
        raise ValueError(f"seq_length {seq_length} leaves no room for text")
    _truncate_longest_first(a_ids, b_ids, seq_length - specials)
    ids = [tokenizer.cls, *a_ids, tokenizer.sep]
    types = [0] * len(ids)
    if b is not None:
        ids += [*b_ids, tokenizer.sep]
        types += [1] * (len(b_ids) + 1)
    n = len(ids)
    pad = seq_length - n
    out_ids = numpy.array(ids + [tokenizer.pad] * pad, dtype=numpy.int64)
    out_types = numpy.array(types + [0] * pad, dtype=numpy.int64)
    mask = numpy.zeros(seq_length, dtype=numpy.int64)
    mask[:n] = 1
    return out_ids, out_types, mask


def _tokenize_all(tokenizer, texts) -> dict:
    """text -> ids for every distinct text (a RACE article is shared by all its questions' options:
    tokenized once). Not `encode_batch`: its thread pool was slower on our busy 2-core machines."""
    unique = dict.fromkeys(t for t in texts if t is not None)
    return {t: tokenizer.tokenize(t) for t in unique}


def _labels(examples) -> numpy.ndarray:
    return numpy.array([-1 if e.label is None else e.label for e in examples], dtype=numpy.int64)


class ClassificationDataset(torch.utils.data.Dataset):
    """Sentence pairs (ClassificationExample) encoded once, up front."""

    def __init__(self, examples, tokenizer, seq_length: int):
        self.uids = [e.uid for e in examples]
        self.labels = _labels(examples)
        ids = _tokenize_all(tokenizer, [t for e in examples for t in (e.text_a, e.text_b)])
        enc = [encode_pair(tokenizer, ids[e.text_a], None if e.text_b is None else ids[e.text_b],
                           seq_length) for e in examples]
        shape = (len(enc), seq_length)
        self.text, self.types, self.padding_mask = (
            numpy.stack([x[k] for x in enc]) if enc else numpy.zeros(shape, numpy.int64) for k in range(3))

    def __len__(self) -> int:
        return len(self.uids)

    def __getitem__(self, i: int) -> dict:
        return {"text": self.text[i], "types": self.types[i], "padding_mask": self.padding_mask[i],
                "label": int(self.labels[i]), "uid": self.uids[i]}


class MultipleChoiceDataset(ClassificationDataset):
    """MultipleChoiceExample -> arrays [num_choices, seq_length]; the model scores each row."""

    def __init__(self, examples, tokenizer, seq_length: int):
        self.uids = [e.uid for e in examples]
        self.labels = _labels(examples)
        ids = _tokenize_all(tokenizer, [t for e in examples for pair in e.choices for t in pair])
        n_choices = {len(e.choices) for e in examples}
        if len(n_choices) > 1:
            raise ValueError(f"examples have different numbers of choices: {sorted(n_choices)}")
        k = n_choices.pop() if n_choices else 4
        arrays = [[], [], []]
        for e in examples:
            enc = [encode_pair(tokenizer, ids[a], ids[b], seq_length) for a, b in e.choices]
            for j in range(3):
                arrays[j].append(numpy.stack([x[j] for x in enc]))
        shape = (0, k, seq_length)
        self.text, self.types, self.padding_mask = (
            numpy.stack(arr) if arr else numpy.zeros(shape, numpy.int64) for arr in arrays)
