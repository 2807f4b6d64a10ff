"""Run tools/generate.py in-process on a trained GPT checkpoint and compute the references by hand; dump JSON.

    python tests/tools/scripts/generate_checks.py gpt --load CK --vocab-file V --merge-file M --docs D.jsonl \
        --text T.txt --work DIR --out results.json
    python tests/tools/scripts/generate_checks.py bert --bert-vocab vocab.txt --docs D.jsonl --work DIR --out r.json

A process of its own: loading a checkpoint turns this process into megatron's CPU mode for good, which the pytest
process must not inherit. The references use only the model's forward (tokens, positions, no mask), the
tokenizer built from the files, manual windows and ``F.cross_entropy`` / ``argmax`` / ``multinomial``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

from tests.support import load_tool

PROMPTS = ["The quick brown", "Dr. Smith went to"]
NEW_TOKENS = 12
SEED = 5
TEMPERATURE = 0.7


def call_tool(tool, argv):
    out, err = io.StringIO(), io.StringIO()
    t = time.time()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = tool.main(argv)
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue(), "seconds": time.time() - t}


def manual_score(model, tok, docs, seq_length):
    total, count, wins = 0.0, 0, 0
    for doc in docs:
        ids = tok.tokenize(doc)
        for start in range(0, len(ids), seq_length):
            w = torch.tensor(ids[start:start + seq_length])
            if len(w) < 2:
                continue
            with torch.no_grad():
                logits = model(w[None], torch.arange(len(w))[None], None)[0].float()
            total += F.cross_entropy(logits[:-1], w[1:], reduction="sum").item()
            count += len(w) - 1
            wins += 1
    return {"nll": total / count, "tokens": count, "windows": wins}


def manual_generate(model, ids, vocab_size, steps, generator=None, temperature=None):
    """(new tokens, their log-probabilities): a full forward of the whole sequence at every step."""
    seq, logps = list(ids), []
    for _ in range(steps):
        t = torch.tensor([seq])
        with torch.no_grad():
            logits = model(t, torch.arange(len(seq))[None], None)[0, -1].float()
        if generator is None:
            token = int(torch.argmax(logits[:vocab_size]))
        else:
            probs = torch.softmax(logits[:vocab_size] / temperature, -1)
            token = int(torch.multinomial(probs, 1, generator=generator))
        seq.append(token)
        logps.append(float(torch.log_softmax(logits, -1)[token]))
    return seq[len(ids):], logps


def bert_checkpoint(vocab: str, folder: str) -> str:
    """A BERT checkpoint written the way the checkpoint converter writes one (iteration 0)."""
    from megatron.training.hf_checkpoint import session
    from megatron.training.initialize import destroy_distributed

    args = session.parse_model_args("bert", [
        "--num-layers=2", "--hidden-size=32", "--num-attention-heads=4", "--seq-length=16",
        "--max-position-embeddings=16", "--micro-batch-size=1", "--train-iters=0",
        "--tokenizer-type=BertWordPieceLowerCase", f"--vocab-file={vocab}", "--bert-no-binary-head"])
    session.start(args)
    model, _ = session.build_model(args, "bert")
    session.save_model_checkpoint(model, args, folder)
    destroy_distributed()
    return folder


def bert_checks(a) -> dict:
    """The tool on a BERT checkpoint: refused with one line."""
    tool = load_tool("generate")
    t = time.time()
    bert = bert_checkpoint(a.bert_vocab, os.path.join(a.work, "bert_ck"))
    return {"bert_save_seconds": time.time() - t, "bert": call_tool(tool, ["--load", bert, "--score", a.docs])}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("gpt", "bert"))
    for flag in ("--load", "--vocab-file", "--merge-file", "--text", "--bert-vocab"):
        p.add_argument(flag)
    for flag in ("--docs", "--out", "--work"):
        p.add_argument(flag, required=True)
    a = p.parse_args()
    res = bert_checks(a) if a.mode == "bert" else gpt_checks(a)
    with open(a.out + ".tmp", "w") as f:
        json.dump(res, f)
    os.replace(a.out + ".tmp", a.out)


def gpt_checks(a) -> dict:
    """The tool's outputs on the trained GPT checkpoint, and the references computed here."""
    tool = load_tool("generate")
    res = {}
    prompt_flags = sum((["--prompt", x] for x in PROMPTS), [])
    greedy = prompt_flags + ["--max-new-tokens", str(NEW_TOKENS), "--greedy", "--ignore-eod",
                             "--output-format", "jsonl"]
    runs = {
        "score_docs": ["--load", a.load, "--score", a.docs, "--seq-length", "16", "--batch-size", "3"],
        "score_text": ["--load", a.load, "--score", a.text],
        "greedy_cache": ["--load", a.load] + greedy,
        "greedy_no_cache": ["--load", a.load] + greedy + ["--no-kv-cache"],
        "sample": ["--load", a.load, "--prompt", PROMPTS[0], "--max-new-tokens", str(NEW_TOKENS), "--ignore-eod",
                   "--temperature", str(TEMPERATURE), "--seed", str(SEED), "--output-format", "jsonl"],
        "sample_top_k1": ["--load", a.load, "--prompt", PROMPTS[0], "--max-new-tokens", str(NEW_TOKENS),
                          "--ignore-eod", "--top-k", "1", "--seed", str(SEED), "--output-format", "jsonl"],
        "too_long": ["--load", a.load, "--prompt", PROMPTS[0], "--max-new-tokens", "1000"],
    }
    empty = os.path.join(a.work, "empty.jsonl")
    open(empty, "w").close()
    no_tracker = os.path.join(a.work, "not_a_checkpoint")
    os.makedirs(no_tracker, exist_ok=True)
    runs["empty_file"] = ["--load", a.load, "--score", empty]
    runs["no_tracker"] = ["--load", no_tracker, "--score", a.docs]
    for name, argv in runs.items():
        res[name] = call_tool(tool, argv)

    # References: the same checkpoint through session directly, the model's own forward.
    from megatron.core import dist_checkpointing
    from megatron.training import checkpointing
    from megatron.training.hf_checkpoint import session
    from megatron.training.tokenizers import build_tokenizer

    args, model, _table, _tok, _extra = session.load_checkpoint_model(a.load, "gpt")
    model.eval()
    tok = build_tokenizer("GPT2BPETokenizer", vocab_file=a.vocab_file, merge_file=a.merge_file)
    res["vocab_size"] = tok.vocab_size
    res["padded_vocab_size"] = args.padded_vocab_size
    res["seq_length"] = args.seq_length
    path = checkpointing.checkpoint_dir(a.load, checkpointing.read_tracker(a.load))
    stored = dist_checkpointing.load_plain_tensors(path)["embedding.word_embeddings.weight"]
    fresh, _ = session.build_model(args, "gpt")
    emb = model.embedding.word_embeddings.weight.detach()
    res["embedding_vs_stored"] = (emb - stored).abs().max().item()
    res["embedding_vs_fresh_init"] = (emb - fresh.embedding.word_embeddings.weight.detach()).abs().max().item()
    probe = torch.tensor(tok.tokenize(open(a.text).read())[:16])
    with torch.no_grad():
        whole = model(probe[None], torch.arange(16)[None], None)[0]
        head = model(probe[None, :7], torch.arange(7)[None], None)[0]
    res["causal_prefix_diff"] = (whole[:7] - head).abs().max().item()

    docs = [json.loads(line)["text"] for line in open(a.docs) if line.strip()]
    res["manual_docs"] = manual_score(model, tok, docs, 16)
    res["manual_text"] = manual_score(model, tok, [open(a.text).read()], args.seq_length)
    res["prompt_ids"] = [tok.tokenize(x) for x in PROMPTS]
    greedy = [manual_generate(model, ids, tok.vocab_size, NEW_TOKENS) for ids in res["prompt_ids"]]
    res["manual_greedy"] = [tokens for tokens, _ in greedy]
    res["manual_greedy_logprobs"] = [logps for _, logps in greedy]
    g = torch.Generator().manual_seed(SEED)
    res["manual_sample"], res["manual_sample_logprobs"] = manual_generate(
        model, res["prompt_ids"][0], tok.vocab_size, NEW_TOKENS, g, TEMPERATURE)
    res["decoded_greedy"] = [tok.detokenize(x) for x in res["manual_greedy"]]

    # Three training steps leave a next-token distribution close to uniform that barely follows the context;
    # weights with noise added give a peaked one that does, so a cache that mixed up positions or keys would
    # change the log-probabilities (and the draws).
    from megatron.training import generation as gen

    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.3)
    ids = res["prompt_ids"][1]
    res["noisy_manual"] = manual_generate(model, ids, tok.vocab_size, 20, torch.Generator().manual_seed(1), 1.0)
    sampling = gen.Sampling(temperature=1.0)
    for name, cache in (("noisy_cache", True), ("noisy_no_cache", False)):
        logps = []
        tokens = gen.generate(model, ids, 20, tok.vocab_size, sampling, torch.Generator().manual_seed(1),
                              use_cache=cache, logprobs=logps)
        res[name] = [tokens, logps]
    return res


if __name__ == "__main__":
    main()
