"""Generate text from, or score text with, a GPT checkpoint written by pretrain_gpt.py (any TP/PP layout).

    python tools/generate.py --load runs/x/checkpoints --prompt "Once upon a time" --max-new-tokens 32 --greedy
    python tools/generate.py --load runs/x/checkpoints --prompts-file prompts.txt --temperature 0.8 --top-p 0.9
    python tools/generate.py --load runs/x/checkpoints --score held_out.jsonl

The model is rebuilt in this process at TP1·PP1 from the checkpoint's own flags (shape, norms, positions,
tokenizer), on CPU. Generation prints one continuation per prompt (--output-format jsonl: one JSON object per
prompt, with the token ids and their log-probabilities). --score reads loose JSON ({"text": ...} per line) or plain text (one document), tokenizes
each document on its own, cuts it into consecutive windows of --seq-length tokens (the last may be shorter),
scores each window on its own and prints one line:

    score: nll=<mean NLL per predicted token> ppl=<exp(nll)> tokens=<predicted tokens> windows=<windows>

Bad input (no checkpoint, an empty file, a BERT checkpoint, a prompt too long for the model) prints one
``error: ...`` line on stderr and exits with status 2.
"""

import argparse
import contextlib
import json
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TOKENIZER_FLAGS = ("tokenizer_type", "vocab_file", "merge_file", "tokenizer_model")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, as every other bad input
        raise SystemExit(_fail(message))


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 2


def parse(argv=None):
    p = _Parser(description=__doc__.split("\n")[0])
    p.add_argument("--load", required=True, help="checkpoint directory (holding latest_checkpointed_iteration.txt)")
    g = p.add_argument_group("generation")
    g.add_argument("--prompt", action="append", default=[], help="a prompt (repeat for several)")
    g.add_argument("--prompts-file", default=None, help="one prompt per line")
    g.add_argument("--max-new-tokens", type=int, default=32)
    g.add_argument("--greedy", action="store_true", help="argmax decoding (no sampling flags with it)")
    g.add_argument("--temperature", type=float, default=None, help="sampling temperature (default 1.0)")
    g.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens (0: all)")
    g.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (1.0: all)")
    g.add_argument("--seed", type=int, default=1234, help="sampling seed")
    g.add_argument("--ignore-eod", action="store_true",
                   help="keep generating past the end-of-document token (default: stop there)")
    g.add_argument("--no-kv-cache", action="store_true",
                   help="re-run the whole sequence every step (the reference the KV cache must equal)")
    g.add_argument("--output-format", choices=("text", "jsonl"), default="text")
    g = p.add_argument_group("scoring")
    g.add_argument("--score", default=None, metavar="FILE", help="score FILE instead of generating")
    g.add_argument("--seq-length", type=int, default=None, help="window length (default: the checkpoint's)")
    g.add_argument("--batch-size", type=int, default=8, help="windows per forward")
    g = p.add_argument_group("tokenizer (default: the checkpoint's own)")
    g.add_argument("--tokenizer-type", default=None)
    g.add_argument("--vocab-file", default=None)
    g.add_argument("--merge-file", default=None)
    g.add_argument("--tokenizer-model", default=None)
    args = p.parse_args(argv)
    generating = bool(args.prompt or args.prompts_file)
    if generating == (args.score is not None):
        p.error("give --prompt / --prompts-file to generate, or --score FILE, not both")
    if args.greedy and any(getattr(args, k) is not None for k in ("temperature", "top_k", "top_p")):
        p.error("--greedy takes no --temperature / --top-k / --top-p")
    if args.max_new_tokens < 0:
        p.error("--max-new-tokens must be >= 0")
    if args.batch_size < 1:
        p.error("--batch-size must be >= 1")
    return args


def _quiet_imports():
    """megatron-core and torch's checkpoint reader warn about optional kernels and deprecations; not the user's."""
    for module in (r"megatron\.core.*", r"torch\.distributed\.checkpoint.*"):
        warnings.filterwarnings("ignore", module=module)


def run(args) -> int:
    import torch

    from megatron.training import generation as gen

    sampling = gen.Sampling(greedy=args.greedy, temperature=1.0 if args.temperature is None else args.temperature,
                            top_k=args.top_k or 0, top_p=1.0 if args.top_p is None else args.top_p).check()
    if not os.path.isdir(args.load):
        raise FileNotFoundError(f"--load {args.load}: no such directory")
    docs = gen.read_documents(args.score) if args.score is not None else None
    prompts = list(args.prompt) + (gen.read_prompts(args.prompts_file) if args.prompts_file else [])
    overrides = {k: getattr(args, k) for k in TOKENIZER_FLAGS if getattr(args, k) is not None}
    with contextlib.redirect_stdout(sys.stderr):  # loading logs (fusions, ...) stay off stdout
        model_args, model, tok = gen.load_gpt_checkpoint(args.load, overrides)
    limit = gen.position_limit(model_args)
    if docs is not None:
        seq_length = args.seq_length or model_args.seq_length
        if limit is not None and seq_length > limit:
            raise gen.InputError(f"--seq-length {seq_length} exceeds the model's {limit} learned positions")
        score = gen.score_documents(model, tok, docs, seq_length, args.batch_size)
        print(score.line(), flush=True)
        return 0
    eod = None if args.ignore_eod else getattr(tok, "eod", None)
    encoded = []
    for prompt in prompts:
        ids = tok.tokenize(prompt)
        if not ids:
            raise gen.InputError(f"prompt {prompt!r} has no tokens")
        if limit is not None and len(ids) + args.max_new_tokens - 1 > limit:
            raise gen.InputError(f"prompt of {len(ids)} tokens + --max-new-tokens {args.max_new_tokens} exceeds "
                                 f"the model's {limit} learned positions")
        encoded.append(ids)
    generator = torch.Generator().manual_seed(args.seed)
    for prompt, ids in zip(prompts, encoded):
        logprobs = []
        new = gen.generate(model, ids, args.max_new_tokens, tok.vocab_size, sampling, generator, eod=eod,
                           use_cache=not args.no_kv_cache, logprobs=logprobs)
        text = tok.detokenize(new) if new else ""
        if args.output_format == "jsonl":
            print(json.dumps({"prompt": prompt, "continuation": text, "prompt_tokens": ids, "tokens": new,
                              "logprobs": logprobs}), flush=True)
        else:
            print(text, flush=True)
    return 0


def _known_errors() -> tuple:
    """The exception types that mean bad input, from the modules imported so far (an error cannot come from a
    module never imported, and importing megatron-core only to name its exception costs seconds)."""
    kinds = [FileNotFoundError]
    for module, name in (("megatron.training.generation", "InputError"), ("megatron.training.validate", "ConfigError"),
                         ("megatron.training.tokenizers.base", "TokenizerError"),
                         ("megatron.core.dist_checkpointing.core", "CheckpointingException")):
        if module in sys.modules:
            kinds.append(getattr(sys.modules[module], name))
    return tuple(kinds)


def main(argv=None) -> int:
    try:
        args = parse(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _quiet_imports()
    try:
        return run(args)
    except Exception as err:
        if isinstance(err, _known_errors()):
            return _fail(str(err))
        raise
    finally:
        if "megatron.training.initialize" in sys.modules:
            sys.modules["megatron.training.initialize"].destroy_distributed()


if __name__ == "__main__":  # dist_checkpointing's reader may re-import __main__: keep the body behind this guard
    sys.exit(main())
