"""Loose JSON (one object per line) -> megatron-core indexed datasets (.bin/.idx).

For each --json-keys KEY writes `{output_prefix}_{KEY}_{document|sentence}.bin/.idx`, the
`sentence` level when --split-sentences is given (one sequence per sentence, as BERT's dataset
expects). Lines that are not a JSON object with string values for every key, or whose text is
not valid Unicode (a lone surrogate such as the JSON escape "\\ud800", which no tokenizer can
encode), are skipped, counted and reported as `file:line: why` in one warning at the end;
--strict stops at the first one with one `error: file:line: why` line. Outputs are
written under temporary names and renamed only when everything succeeded, so a failure never
leaves a half-written dataset behind.

    python tools/preprocess_data.py --input wiki.jsonl --output-prefix data/wiki \
        --tokenizer-type GPT2BPETokenizer --vocab-file vocab.json --merge-file merges.txt \
        --append-eod --workers 2
"""

import argparse
import json
import multiprocessing
import os
import sys
import time
import warnings

import numpy

# megatron-core warns once per optional GPU library at import; irrelevant to preprocessing.
warnings.filterwarnings("ignore", message="Transformer Engine and Apex are not installed")

MAX_REPORTED_BAD_LINES = 20


class PreprocessError(Exception):
    """A condition that ends preprocessing with one message and exit status 1."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_argument_group("input data")
    g.add_argument("--input", required=True, help="loose JSON file, one object per line")
    g.add_argument("--json-keys", nargs="+", default=["text"], help="keys to extract")
    g.add_argument("--split-sentences", action="store_true",
                   help="one sequence per sentence (Punkt, offline model)")
    g.add_argument("--keep-newlines", action="store_true",
                   help="keep newlines between sentences when splitting")
    g = p.add_argument_group("tokenizer")
    from megatron.training.tokenizers.build import (DEFAULT_TOKENIZER_TYPE, REFUSED_TOKENIZER_TYPES,
                                                    TOKENIZER_TYPES)
    g.add_argument("--tokenizer-type", default=DEFAULT_TOKENIZER_TYPE,
                   choices=list(TOKENIZER_TYPES) + sorted(REFUSED_TOKENIZER_TYPES),
                   help=f"default {DEFAULT_TOKENIZER_TYPE} (as upstream)")
    g.add_argument("--vocab-file", default=None)
    g.add_argument("--merge-file", default=None)
    g.add_argument("--tokenizer-model", default=None,
                   help="tokenizer.json or its directory (HuggingFaceTokenizer), SentencePiece tokenizer.model, "
                        "tiktoken JSON vocabulary (TikTokenizer)")
    g.add_argument("--vocab-size", type=int, default=None, help="NullTokenizer, TikTokenizer")
    g.add_argument("--vocab-extra-ids", type=int, default=0, help="SentencePieceTokenizer: <extra_id_k> tokens")
    g.add_argument("--tiktoken-pattern", default="v2", choices=["v1", "v2"], help="TikTokenizer")
    g.add_argument("--tiktoken-num-special-tokens", type=int, default=1000, help="TikTokenizer")
    g.add_argument("--tokenizer-special-tokens", nargs="+", default=None, help="TikTokenizer")
    g.add_argument("--append-eod", action="store_true", help="end each document with EOD")
    g.add_argument("--lang", default="english", help="Punkt model for --split-sentences")
    g = p.add_argument_group("output data")
    g.add_argument("--output-prefix", required=True)
    g = p.add_argument_group("runtime")
    g.add_argument("--workers", type=int, default=1, help="tokenizer processes per partition")
    g.add_argument("--partitions", type=int, default=1,
                   help="encode the input in this many consecutive parts, merged at the end")
    g.add_argument("--log-interval", type=int, default=1000, help="documents between progress lines")
    g.add_argument("--strict", action="store_true", help="fail on the first malformed line")
    args = p.parse_args(argv)
    if args.workers < 1 or args.partitions < 1 or args.log_interval < 1:
        p.error("--workers, --partitions and --log-interval must be >= 1")
    if args.keep_newlines and not args.split_sentences:
        print("note: --keep-newlines only matters with --split-sentences", file=sys.stderr)
    return args


# ---- worker side --------------------------------------------------------------------------
_worker = {}


def _init_worker(args):
    from megatron.core.datasets.indexed_dataset import DType
    from megatron.training.tokenizers import build_tokenizer_from_args
    from megatron.training.tokenizers.sentences import build_sentence_splitter

    _worker["tokenizer"] = build_tokenizer_from_args(args)
    _worker["split"] = (build_sentence_splitter(args.lang, args.keep_newlines)
                        if args.split_sentences else None)
    _worker["keys"] = args.json_keys
    _worker["append_eod"] = args.append_eod
    _worker["dtype"] = DType.optimal_dtype(_worker["tokenizer"].vocab_size)


def _encode_line(item):
    """(line number, raw bytes) -> (line number, bytes, {key: [sentence ids]} or None, error)."""
    lineno, raw = item
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        return lineno, len(raw), None, f"invalid JSON ({exc.__class__.__name__}: {exc})"
    if not isinstance(obj, dict):
        return lineno, len(raw), None, f"expected a JSON object, got {type(obj).__name__}"
    tok, split = _worker["tokenizer"], _worker["split"]
    out = {}
    for key in _worker["keys"]:
        text = obj.get(key)
        if not isinstance(text, str):
            why = "missing" if key not in obj else f"a {type(text).__name__}, not a string"
            return lineno, len(raw), None, f"key {key!r} is {why}"
        surrogate = _lone_surrogate(text)
        if surrogate:
            return lineno, len(raw), None, f"key {key!r} holds a lone surrogate {surrogate} (not valid Unicode)"
        try:
            pieces = split(text) if split is not None else [text]
            sentences = [ids for ids in (tok.tokenize(s) for s in pieces) if ids]
        except ValueError as exc:  # e.g. NullTokenizer given words, not ids
            return lineno, len(raw), None, f"key {key!r} could not be tokenized: {exc}"
        if sentences and _worker["append_eod"]:
            sentences[-1].append(tok.eod)
        # one flat array per document pickles far faster than nested lists
        flat = numpy.fromiter((i for ids in sentences for i in ids), dtype=_worker["dtype"])
        out[key] = (flat, [len(ids) for ids in sentences])
    return lineno, len(raw), out, None


def _lone_surrogate(text):
    """'U+D800 at character 4' for the first unpaired surrogate in `text` (JSON allows "\\ud800"), else None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"U+{ord(text[exc.start]):04X} at character {exc.start}"
    return None


def _numbered_lines(path, first, last):
    """Yield (1-based line number, bytes) for non-blank lines first..last-1 (0-based)."""
    with open(path, "rb") as f:
        for i, raw in enumerate(f):
            if i < first:
                continue
            if i >= last:
                break
            if raw.strip():
                yield i + 1, raw


# ---- main side ----------------------------------------------------------------------------
class _Stats:
    def __init__(self):
        self.docs = self.sentences = self.tokens = self.bytes = self.empty = 0
        self.bad = []
        self.start = time.time()

    def rates(self):
        dt = max(time.time() - self.start, 1e-9)
        return self.docs / dt, self.bytes / dt / 1024 ** 2


def _encode_partition(args, first, last, builders, stats, pool):
    items = _numbered_lines(args.input, first, last)
    results = pool.imap(_encode_line, items, chunksize=64) if pool else map(_encode_line, items)
    for lineno, nbytes, encoded, error in results:
        stats.bytes += nbytes
        if error is not None:
            if args.strict:
                raise PreprocessError(f"{args.input}:{lineno}: {error} (--strict)")
            stats.bad.append((lineno, error))
            continue
        if all(not lengths for _, lengths in encoded.values()):
            stats.empty += 1
            continue
        for key, (flat, lengths) in encoded.items():
            # an empty field still ends a document, keeping the keys' documents aligned
            builders[key].add_document(flat, lengths)
            stats.tokens += len(flat)
            stats.sentences += len(lengths)
        stats.docs += 1
        if stats.docs % args.log_interval == 0:
            docs_s, mb_s = stats.rates()
            print(f"Processed {stats.docs} documents ({docs_s:.1f} docs/s, {mb_s:.2f} MB/s).",
                  file=sys.stderr, flush=True)


def _scan_lines(path):
    """(number of lines, whether any is non-blank) in one pass."""
    n, content = 0, False
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            content = content or bool(raw.strip())
    return n, content


def run(args):
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder
    from megatron.training.tokenizers import TokenizerError, build_tokenizer_from_args

    if not os.path.isfile(args.input):
        raise PreprocessError(f"input file not found: {args.input}")
    n_lines, has_content = _scan_lines(args.input)
    if not has_content:
        raise PreprocessError(f"input file {args.input} is empty: no documents to preprocess")
    try:
        tokenizer = build_tokenizer_from_args(args)
        _init_worker(args)  # also builds the sentence splitter: fail here, not in a worker
        if args.append_eod:
            tokenizer.eod
    except (TokenizerError, ValueError, RuntimeError, AttributeError) as exc:
        raise PreprocessError(str(exc)) from None

    level = "sentence" if args.split_sentences else "document"
    out_dir = os.path.dirname(os.path.abspath(args.output_prefix))
    os.makedirs(out_dir, exist_ok=True)
    dtype = DType.optimal_dtype(tokenizer.vocab_size)
    finals = {k: f"{args.output_prefix}_{k}_{level}" for k in args.json_keys}
    tmp_tag = f".tmp-{os.getpid()}"
    temps = []  # every temporary prefix we create, removed in `finally`
    stats = _Stats()
    print(f"Preprocessing {args.input} ({os.path.getsize(args.input) / 1024 ** 2:.1f} MB, "
          f"{n_lines} lines) with {args.tokenizer_type}, {args.workers} worker(s), "
          f"{args.partitions} partition(s) -> {level} level", file=sys.stderr, flush=True)
    ctx = multiprocessing.get_context("fork")
    pool = ctx.Pool(args.workers, initializer=_init_worker, initargs=(args,)) if args.workers > 1 else None
    try:
        bounds = [n_lines * i // args.partitions for i in range(args.partitions + 1)]
        part_prefixes = []
        for p in range(args.partitions):
            prefixes = {k: f"{finals[k]}{tmp_tag}.part{p}" for k in args.json_keys}
            temps.extend(prefixes.values())
            builders = {k: IndexedDatasetBuilder(prefixes[k] + ".bin", dtype=dtype)
                        for k in args.json_keys}
            _encode_partition(args, bounds[p], bounds[p + 1], builders, stats, pool)
            for k in args.json_keys:
                builders[k].finalize(prefixes[k] + ".idx")
            part_prefixes.append(prefixes)
        if stats.docs == 0:
            raise PreprocessError(f"{args.input}: no valid documents ({len(stats.bad)} malformed, "
                                  f"{stats.empty} empty lines)" + _bad_summary(stats, args.input))
        for k in args.json_keys:
            merged = f"{finals[k]}{tmp_tag}"
            if len(part_prefixes) == 1:
                src = part_prefixes[0][k]
                os.replace(src + ".bin", merged + ".bin")
                os.replace(src + ".idx", merged + ".idx")
            else:
                builder = IndexedDatasetBuilder(merged + ".bin", dtype=dtype)
                for prefixes in part_prefixes:
                    builder.add_index(prefixes[k])
                builder.finalize(merged + ".idx")
            temps.append(merged)
        for k in args.json_keys:  # publish only after every key is complete
            os.replace(f"{finals[k]}{tmp_tag}.bin", finals[k] + ".bin")
            os.replace(f"{finals[k]}{tmp_tag}.idx", finals[k] + ".idx")
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        for prefix in temps:
            for ext in (".bin", ".idx"):
                if os.path.exists(prefix + ext):
                    os.remove(prefix + ext)

    docs_s, mb_s = stats.rates()
    elapsed = time.time() - stats.start
    print(f"Done: {stats.docs} documents, {stats.sentences} sequences, {stats.tokens} tokens "
          f"({numpy.dtype(dtype).name}) in {elapsed:.1f} s ({docs_s:.1f} docs/s, {mb_s:.2f} MB/s); "
          f"{len(stats.bad)} malformed and {stats.empty} empty lines skipped", file=sys.stderr)
    if stats.bad:
        print(f"warning: {len(stats.bad)} malformed line(s) skipped in {args.input}:"
              + _bad_summary(stats, args.input), file=sys.stderr)
    for k in args.json_keys:
        print(f"Wrote {finals[k]}.bin / .idx")
    return stats


def _bad_summary(stats, path):
    lines = [f"\n  {path}:{n}: {why}" for n, why in stats.bad[:MAX_REPORTED_BAD_LINES]]
    if len(stats.bad) > MAX_REPORTED_BAD_LINES:
        lines.append(f"\n  ... and {len(stats.bad) - MAX_REPORTED_BAD_LINES} more")
    return "".join(lines)


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except PreprocessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
