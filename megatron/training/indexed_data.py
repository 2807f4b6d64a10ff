"""Open megatron-core indexed datasets (`prefix.bin` + `prefix.idx`) after checking them.

megatron-core's `_IndexReader` asserts on the header and then trusts the counts: a truncated or
overwritten `.idx` shows up later as a numpy buffer error or as garbage samples deep inside
training. `open_indexed_dataset` checks the layout against the file sizes first and raises one
`IndexedDataError` naming the file and the inconsistency.
"""

import os
import struct
from typing import Optional

import numpy

from megatron.core.datasets.indexed_dataset import DType, IndexedDataset

_MAGIC = b"MMIDIDX\x00\x00"
_HEADER_BYTES = 9 + 8 + 1 + 8 + 8  # magic, version, dtype code, sequence count, document count


class IndexedDataError(ValueError):
    """An indexed dataset is missing, truncated, corrupt, or does not fit the tokenizer."""


# Enough to catch data made with another tokenizer (its ids overflow everywhere) while keeping
# the check well under a second on multi-hundred-GB corpora.
MAX_SCANNED_TOKENS = 1 << 26


def validate_indexed_dataset(prefix: str, vocab_size: Optional[int] = None,
                             multimodal: bool = False,
                             max_scanned_tokens: int = MAX_SCANNED_TOKENS) -> dict:
    """Check `prefix.idx`/`prefix.bin`; return {'sequences', 'documents', 'tokens', 'dtype'}.

    With `vocab_size`, also scan the first `max_scanned_tokens` tokens and reject ids >=
    vocab_size (data preprocessed with another tokenizer than the one training uses).
    """
    idx_path, bin_path = prefix + ".idx", prefix + ".bin"
    for path in (idx_path, bin_path):
        if not os.path.isfile(path):
            raise IndexedDataError(f"indexed dataset file not found: {path} "
                                   "(--data-path takes the prefix without .bin/.idx)")
    idx_size = os.path.getsize(idx_path)
    if idx_size < _HEADER_BYTES:
        raise IndexedDataError(f"{idx_path}: truncated ({idx_size} bytes, header needs "
                               f"{_HEADER_BYTES})")
    with open(idx_path, "rb") as f:
        magic = f.read(9)
        version, = struct.unpack("<Q", f.read(8))
        code, = struct.unpack("<B", f.read(1))
        n_seq, = struct.unpack("<Q", f.read(8))
        n_doc, = struct.unpack("<Q", f.read(8))
    if magic != _MAGIC:
        raise IndexedDataError(f"{idx_path}: not a megatron indexed-dataset index (bad magic "
                               f"{magic!r})")
    if version != 1:
        raise IndexedDataError(f"{idx_path}: unsupported index version {version}")
    try:
        dtype = DType.dtype_from_code(code)
    except Exception:
        raise IndexedDataError(f"{idx_path}: unknown token dtype code {code}") from None
    expected = _HEADER_BYTES + n_seq * (4 + 8) + n_doc * 8 + (n_seq if multimodal else 0)
    if idx_size != expected:
        raise IndexedDataError(
            f"{idx_path}: size {idx_size} bytes does not match its header ({n_seq} sequences, "
            f"{n_doc} document indices -> {expected} bytes); the file is truncated or corrupt")
    raw = numpy.memmap(idx_path, mode="r", dtype=numpy.uint8)
    off = _HEADER_BYTES
    lengths = numpy.frombuffer(raw, dtype=numpy.int32, count=n_seq, offset=off)
    pointers = numpy.frombuffer(raw, dtype=numpy.int64, count=n_seq, offset=off + 4 * n_seq)
    doc_idx = numpy.frombuffer(raw, dtype=numpy.int64, count=n_doc, offset=off + 12 * n_seq)
    itemsize = DType.size(dtype)
    bin_size = os.path.getsize(bin_path)
    if n_doc == 0 or doc_idx[0] != 0 or doc_idx[-1] != n_seq or numpy.any(numpy.diff(doc_idx) < 0):
        raise IndexedDataError(f"{idx_path}: document indices are inconsistent (must rise from "
                               f"0 to the sequence count {n_seq})")
    if n_seq and (numpy.any(lengths < 0) or pointers[0] != 0
                  or numpy.any(pointers[1:] != pointers[:-1] + lengths[:-1].astype(numpy.int64) * itemsize)):
        raise IndexedDataError(f"{idx_path}: sequence lengths and pointers disagree; corrupt index")
    tokens = int(lengths.astype(numpy.int64).sum())
    if tokens * itemsize != bin_size:
        raise IndexedDataError(
            f"{bin_path}: {bin_size} bytes, but {idx_path} describes {tokens} tokens of "
            f"{itemsize} bytes ({tokens * itemsize}); .bin and .idx do not belong together")
    if vocab_size is not None and tokens:
        scanned = numpy.memmap(bin_path, mode="r", dtype=dtype)[:max_scanned_tokens]
        top, low = int(scanned.max()), int(scanned.min())
        if low < 0:  # signed token dtypes (vocabularies over 65500): garbage bytes read as negative ids
            raise IndexedDataError(f"{bin_path}: negative token id {low}; the file is corrupt")
        if top >= vocab_size:
            raise IndexedDataError(
                f"{bin_path}: token id {top} >= vocabulary size {vocab_size}; the data was "
                "preprocessed with a different tokenizer than the one configured (or the file is corrupt)")
        del scanned
    del raw
    return {"sequences": int(n_seq), "documents": int(n_doc) - 1, "tokens": tokens,
            "dtype": numpy.dtype(dtype).name}


def open_indexed_dataset(prefix: str, vocab_size: Optional[int] = None,
                         mmap: bool = True) -> IndexedDataset:
    """Validate (see `validate_indexed_dataset`) and open with megatron-core's IndexedDataset."""
    validate_indexed_dataset(prefix, vocab_size=vocab_size)
    return IndexedDataset(prefix, multimodal=False, mmap=mmap)
