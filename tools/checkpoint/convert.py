"""Convert checkpoints between this stack and Hugging Face transformers, exactly.

    python tools/checkpoint/convert.py --direction import --model-type bert --load <HF folder or wheel> --save ckpt
    python tools/checkpoint/convert.py --direction export --model-type gpt --load runs/x/checkpoints --save hf

Import writes a training checkpoint (iteration 0) that ``--load`` / ``--pretrained-checkpoint`` read at any TP/PP;
export loads any TP/PP checkpoint in-process at TP1·PP1 and writes safetensors + config.json + tokenizer files,
DSLM's λ/β and logit scale folded into the weights (docs/export.md). A model with no exact equivalent is refused
with one line and exit status 2, and nothing is written.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--direction", choices=("import", "export"), required=True)
    p.add_argument("--model-type", choices=("gpt", "bert"), required=True)
    p.add_argument("--load", required=True, help="source: a Hugging Face folder/wheel (import) or checkpoint dir")
    p.add_argument("--save", required=True, help="destination folder (must not exist or be empty)")
    p.add_argument("--tokenizer-type", default=None, help="as in training; default: the source's own")
    p.add_argument("--vocab-file", default=None)
    p.add_argument("--merge-file", default=None)
    p.add_argument("--tokenizer-model", default=None)
    p.add_argument("--make-vocab-size-divisible-by", type=int, default=None,
                   help="import: pad the vocabulary to a multiple of this (training's flag; default 128). GPT-2 has "
                        "no output bias, so padding rows get logit 0: 1 keeps transformers' softmax exactly")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from megatron.training.hf_checkpoint import UnmappableModel, convert
    from megatron.training.tokenizers import TokenizerError
    from megatron.training.validate import ConfigError

    tokenizer = {k: getattr(args, k) for k in ("tokenizer_type", "vocab_file", "merge_file", "tokenizer_model")
                 if getattr(args, k) is not None}
    try:
        if args.direction == "import":
            convert.import_hf(args.model_type, args.load, args.save, tokenizer,
                              vocab_divisible_by=args.make_vocab_size_divisible_by)
        else:
            if args.make_vocab_size_divisible_by is not None:
                print("error: --make-vocab-size-divisible-by is an import flag (export keeps the checkpoint's rows)",
                      file=sys.stderr)
                return 2
            convert.export_hf(args.model_type, args.load, args.save, tokenizer)
    except (UnmappableModel, ConfigError, TokenizerError, FileNotFoundError, FileExistsError) as err:
        what = "cannot convert" if isinstance(err, UnmappableModel) else "error"
        print(f"error: {what}: {err}" if what != "error" else f"error: {err}", file=sys.stderr, flush=True)
        return 2
    finally:
        from megatron.training.initialize import destroy_distributed

        destroy_distributed()
    return 0


if __name__ == "__main__":  # dist_checkpointing's writer re-imports __main__: keep the body behind this guard
    sys.exit(main())
