"""Train a small lowercase WordPiece vocabulary (vocab.txt) on a loose-JSON corpus with the `tokenizers` library.

A 30k-token BERT vocabulary makes the embedding and the LM head dominate the compute of a 32-128-wide model;
an ~8k vocabulary trained on the training text keeps the transformer body in charge. The output is a BERT-style
vocab.txt (the five BERT special tokens first), read by ``--tokenizer-type BertWordPieceLowerCase --vocab-file``
and by tools/preprocess_data.py.

    python tools/train_tokenizer.py --input train.jsonl --vocab-size 8192 --output runs/tok/vocab.txt

Only the documents given are read (pass the training split, never the held-out text). The vocabulary is written
under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def iter_texts(path: str, key: str):
    """The ``key`` strings of a loose-JSON file; lines that are not an object holding a string there are skipped."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get(key), str):
                yield record[key]


def train_wordpiece(texts, vocab_size: int, min_frequency: int = 2) -> list:
    """Tokens of a lowercase, accent-stripped WordPiece vocabulary (BERT uncased normalisation), in id order."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True,
                                                handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=SPECIAL_TOKENS, continuing_subword_prefix="##",
                                        show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    vocab = tok.get_vocab()
    return [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]


def write_vocab(tokens: list, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(tokens) + "\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True, help="loose JSON, one document per line (the training split)")
    ap.add_argument("--json-key", default="text")
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--min-frequency", type=int, default=2)
    ap.add_argument("--output", required=True, help="vocab.txt to write")
    args = ap.parse_args(argv)
    if not os.path.isfile(args.input):
        print(f"error: --input {args.input} does not exist", file=sys.stderr)
        return 2
    if args.vocab_size < len(SPECIAL_TOKENS) + 100:
        print(f"error: --vocab-size {args.vocab_size} is too small (at least {len(SPECIAL_TOKENS) + 100})",
              file=sys.stderr)
        return 2
    texts = list(iter_texts(args.input, args.json_key))
    if not texts:
        print(f"error: no documents with a string '{args.json_key}' in {args.input}", file=sys.stderr)
        return 2
    tokens = train_wordpiece(texts, args.vocab_size, args.min_frequency)
    write_vocab(tokens, args.output)
    print(f"wrote {args.output}: {len(tokens)} tokens from {len(texts)} documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
