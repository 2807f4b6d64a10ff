"""Child process for tests/tools/test_hf_checkpoint.py: our side of the comparisons with transformers.

    hf_checks.py forward --model-type gpt --load CK --tokens T.json --out O.pt   # logits (+ BERT hidden states)
    hf_checks.py save --model-type bert --out CK -- <model flags>               # a fresh checkpoint, iteration 0
    hf_checks.py hf --arch BertForPreTraining --load DIR --tokens T.json --out O.pt  # transformers' side

Loading a checkpoint puts a process into megatron's CPU mode for good (its CPU shim patches torch), so neither
side runs inside pytest: transformers' outputs come from a child that never imports megatron.
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))


def forward(a) -> None:
    from megatron.training.hf_checkpoint import session

    _args, model, _table, _tok, _extra = session.load_checkpoint_model(a.load, a.model_type)
    tokens = torch.tensor(json.load(open(a.tokens)), dtype=torch.long)
    out = {}
    with torch.no_grad():
        if a.model_type == "gpt":
            positions = torch.arange(tokens.shape[1])[None].expand_as(tokens)
            out["logits"] = model(tokens, positions, None).float()
        else:
            captured = {}
            hook = model.encoder.register_forward_hook(lambda m, i, o: captured.update(hidden=o))
            result = model(tokens, torch.ones_like(tokens), tokentype_ids=torch.zeros_like(tokens))
            hook.remove()
            logits, binary = result if isinstance(result, tuple) else (result, None)
            out["logits"] = logits.float()
            out["hidden"] = captured["hidden"].transpose(0, 1).float()  # [s, b, h] -> [b, s, h]
            if binary is not None:
                out["binary"] = binary.float()
    torch.save(out, a.out + ".tmp")
    os.replace(a.out + ".tmp", a.out)


def hf(a) -> None:
    """transformers' logits / hidden states of ``--arch`` loaded with plain from_pretrained (no megatron here)."""
    import transformers

    model = getattr(transformers, a.arch).from_pretrained(a.load).eval()
    rows = json.load(open(a.tokens))
    out = {}
    with torch.no_grad():
        if a.arch.startswith(("GPT2", "Llama")):
            if len({len(r) for r in rows}) == 1:
                out["logits"] = model(torch.tensor(rows)).logits
            nll = []  # summed next-token NLL of each row (rows may differ in length)
            for row in rows:
                ids = torch.tensor(row)[None]
                logits = model(ids).logits[0, :-1]
                nll.append(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item())
            out["nll"] = nll
        else:
            ids = torch.tensor(rows)
            res = model(ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids))
            for key in ("prediction_logits", "seq_relationship_logits", "last_hidden_state"):
                if getattr(res, key, None) is not None:
                    out[key] = getattr(res, key)
    torch.save(out, a.out + ".tmp")
    os.replace(a.out + ".tmp", a.out)


def save(a, flags) -> None:
    from megatron.training.hf_checkpoint import session

    args = session.parse_model_args(a.model_type, flags)
    session.start(args)
    model, _ = session.build_model(args, a.model_type)
    session.save_model_checkpoint(model, args, a.out)


def main():
    argv = sys.argv[1:]
    flags = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("forward", "save", "hf"))
    p.add_argument("--model-type", choices=("gpt", "bert"))
    p.add_argument("--arch")
    p.add_argument("--load")
    p.add_argument("--tokens")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.mode == "hf":
        return hf(a)
    try:
        forward(a) if a.mode == "forward" else save(a, flags)
    finally:
        from megatron.training.initialize import destroy_distributed

        destroy_distributed()


if __name__ == "__main__":  # dist_checkpointing's writer re-imports __main__
    main()
