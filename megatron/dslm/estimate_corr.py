"""Estimate the embedding-output token correlation r0 from a corpus or from Zipf's law.

    python -m megatron.dslm.estimate_corr --data-path PREFIX --seq-length 256 [--num-tables 2]
    python -m megatron.dslm.estimate_corr --zipf-vocab-size 50257 [--num-tables 2]

Prints r0 for ``--embedding-corr`` (docs/theory.md, "Embedding correlation r0"). The estimate itself is
``megatron.dslm.embedding_corr``; reading an indexed dataset needs megatron-core.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import config
from .embedding_corr import corr_from_probs, estimate_embedding_corr, zipf_same_token_prob


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m megatron.dslm.estimate_corr",
                                     description=__doc__.splitlines()[0], allow_abbrev=False)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-path", help="megatron indexed dataset prefix (PREFIX.bin / PREFIX.idx)")
    source.add_argument("--zipf-vocab-size", type=int, help="no data: Zipf's-law estimate for this vocabulary")
    config.add_arguments(parser, ["seq_length"])
    parser.add_argument("--num-tables", type=int, choices=[2, 3], default=2, help="3 for BERT (token types)")
    parser.add_argument("--max-sequences", type=int, default=20000)
    return parser


def _from_data(args) -> float:
    from megatron.dslm.mcore.data import indexed_dataset_windows  # megatron-core's reader

    for suffix in (".idx", ".bin"):
        if not os.path.exists(args.data_path + suffix):
            raise FileNotFoundError(f"no indexed dataset at {args.data_path!r} ({args.data_path + suffix} missing)")
    if args.seq_length is None or args.seq_length < 2:
        raise ValueError("--data-path needs --seq-length >= 2 (the model's attention window)")
    windows = list(indexed_dataset_windows(args.data_path, args.seq_length, args.max_sequences))
    estimate = estimate_embedding_corr(windows, args.num_tables)
    print(f"sequences {estimate.num_sequences}, tokens {estimate.num_tokens}")
    print(f"P(same token) within a window = {estimate.same_token_prob:.5f}; "
          f"unigram sum p_i^2 = {estimate.unigram_same_prob:.5f}")
    return estimate.embedding_corr


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.max_sequences < 1:
            raise ValueError("--max-sequences must be >= 1")
        if args.zipf_vocab_size is not None:
            if args.zipf_vocab_size < 2:
                raise ValueError("--zipf-vocab-size must be >= 2")
            prob = zipf_same_token_prob(args.zipf_vocab_size)
            corr = corr_from_probs(prob, args.num_tables)
            print(f"zipf sum p_i^2 = {prob:.5f} (V={args.zipf_vocab_size})")
        else:
            corr = _from_data(args)
    except (ValueError, OSError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    print(f"embedding_corr r0 = {corr:.5f}   (use {config.flag('embedding_corr')} {corr:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
