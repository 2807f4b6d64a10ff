"""Signal-propagation figures at initialisation, measured on real megatron-core BERT (or GPT) models, theory overlaid.

Regenerates the DeepScaleLM reference's figure set (Kedia et al. 2024) with our stack: for the xavier baseline
and DSLM, (1) Pre-LN forward variance, (2) Pre-LN backward gradient variance, (3) Post-LN backward gradient
variance, plus the Post-LN variance before each LayerNorm (after it, the variance is 1 by construction). Each
model is built by ``megatron.dslm.mcore.models.build_gpt_model`` (local spec, our init/residual specs), fed real
text, run forward+backward once per batch with the MomentObserver attached (dropout on, as in training).

    python scripts/signal_propagation_figures.py                  # CPU: 192 layers x 128 hidden (a few minutes)
    python scripts/signal_propagation_figures.py --gpu-scale      # the reference's 192 x 1024 (needs a GPU)

Input text: ``--data-path`` (loose JSON, "text" key) tokenised with BertWordPieceLowerCase and ``--vocab-file``;
by default ../shared/data's sample corpus. Without text it falls back to random token ids and says so: DSLM's
init assumes the token correlation r0 of real text, which random ids (r0 ≈ 0) violate. r0 is *measured* on the
batches fed (embedding output, no dropout) and given to the scheme and the predictor.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import torch

from megatron.dslm import config as dslm_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEFAULT_DATA = os.path.join(REPO, "..", "shared", "data", "corpus", "wiki-sample.jsonl")
DEFAULT_VOCAB = os.path.join(REPO, "..", "shared", "data", "vocab", "bert-base-uncased-vocab.txt")


def load_text_batches(data_path, vocab_file, batch, seq, num_batches, max_docs=4000):
    """[num_batches] LongTensors [batch, seq+1] of consecutive WordPiece tokens, and the padded vocab size."""
    from megatron.training.tokenizers import build_tokenizer

    tok = build_tokenizer("BertWordPieceLowerCase", vocab_file=vocab_file)
    need = num_batches * batch * (seq + 1)
    ids = []
    with open(data_path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= max_docs or len(ids) >= need:
                break
            text = json.loads(line).get("text", "")
            if text:
                ids.extend(tok.tokenize(text))
                ids.append(tok.sep)
    if len(ids) < need:
        raise SystemExit(f"{data_path}: only {len(ids)} tokens, need {need}")
    flat = torch.tensor(ids[:need], dtype=torch.long).view(num_batches, batch, seq + 1)
    return list(flat), tok.padded_vocab_size


def mock_batches(batch, seq, num_batches, vocab=30592, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (batch, seq + 1), generator=gen) for _ in range(num_batches)], vocab


def make_config(arch, device_is_cpu=True):
    from megatron.core.transformer.transformer_config import TransformerConfig

    act = torch.nn.functional.relu if arch.activation == "relu" else torch.nn.functional.gelu
    return TransformerConfig(
        num_layers=arch.num_layers, hidden_size=arch.hidden_size, num_attention_heads=arch.num_attention_heads,
        ffn_hidden_size=arch.ffn_size, hidden_dropout=arch.hidden_dropout, attention_dropout=arch.attention_dropout,
        activation_func=act, use_cpu_initialization=True, tensor_model_parallel_size=1,
        pipeline_model_parallel_size=1, bias_dropout_fusion=False, masked_softmax_fusion=False,
        gradient_accumulation_fusion=False, apply_residual_connection_post_layernorm=arch.post_ln)


def build_model(arch, table, vocab, seed, device):
    from megatron.dslm.mcore.models import build_bert_model, build_gpt_model

    build = build_bert_model if arch.model_type == "bert" else build_gpt_model
    return build(make_config(arch), table, vocab_size=vocab, max_sequence_length=arch.seq_length,
                 seed=seed).to(device)


def run_model(model, arch, tokens, device):
    """One forward on [b, s+1] tokens: GPT predicts the next token (causal), BERT its own tokens (MLM-like)."""
    tokens = tokens.to(device)
    seq = arch.seq_length
    if arch.model_type == "bert":
        inputs = tokens[:, :-1].contiguous()
        pad = torch.ones_like(inputs)
        loss, _ = model(inputs, pad, tokentype_ids=torch.zeros_like(inputs), lm_labels=inputs)
        return loss
    inputs, labels = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    pos = torch.arange(seq, device=device).unsqueeze(0).expand_as(inputs)
    mask = torch.triu(torch.ones(seq, seq, dtype=torch.bool, device=device), diagonal=1)[None, None]
    return model(inputs, pos, mask, labels=labels)


def measure_embedding_corr(arch, scheme, batches, vocab, seed, device):
    """r0: token correlation of the summed embeddings (before dropout) on the batches, for this scheme's σ.

    The weights are key-seeded, so a 1-layer model with the same seed has exactly the big model's embeddings.
    """
    from megatron.dslm.mcore.observers import forward_sums, moments_from_forward
    from megatron.dslm.schemes.registry import build_init_table

    small = dataclasses.replace(arch, num_layers=1, post_ln=False)
    model = build_model(small, build_init_table(scheme, small), vocab, seed, device).eval()
    acc = None
    with torch.no_grad():
        for tokens in batches:
            tokens = tokens[:, :-1].to(device)
            pos = torch.arange(tokens.shape[1], device=device).unsqueeze(0).expand_as(tokens)
            kwargs = {"tokentype_ids": torch.zeros_like(tokens)} if arch.model_type == "bert" else {}
            emb = model.embedding(input_ids=tokens, position_ids=pos, **kwargs)
            sums = forward_sums(emb)
            acc = sums if acc is None else acc + sums
    return moments_from_forward(acc)["forward_corr"]


def measure_profile(arch, scheme, batches, vocab, seed, device):
    """Per-layer moment records of one model at init (dropout on), pooled over the batches."""
    from megatron.dslm.mcore.observers import MomentObserver
    from megatron.dslm.schemes.registry import build_init_table

    table = build_init_table(scheme, arch)
    model = build_model(arch, table, vocab, seed, device).train()
    obs = MomentObserver(model).attach()
    try:
        for tokens in batches:
            run_model(model, arch, tokens, device).float().mean().backward()
            model.zero_grad(set_to_none=True)
        records = obs.collect()
    finally:
        obs.detach()
    del model
    return records, table


def average_records(runs):
    """Field-wise mean over seeds of per-layer records (each seed is a fresh draw of every weight)."""
    if len(runs) == 1:
        return runs[0]
    out = []
    for per_layer in zip(*runs):
        rec = {"layer": per_layer[0]["layer"]}
        for key in per_layer[0]:
            if key != "layer":
                values = [r[key] for r in per_layer if key in r]
                rec[key] = max(values) if key == "attn_logit_max" else sum(values) / len(values)
        out.append(rec)
    return out


def predicted(arch, table, records):
    from megatron.dslm.plot_moments import predicted_columns

    top = records[-1].get("grad_var")
    return predicted_columns(arch, table.scheme, top)


def rel_errors(records, pred, key, layers_from=1):
    out = []
    for rec, value in zip(records, pred[key]):
        if rec["layer"] >= layers_from and value and key in rec:
            out.append(abs(rec[key] / value - 1.0))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bert", choices=["bert", "gpt"],
                    help="bert (bidirectional, 3 embedding tables: the reference's setting) or gpt (causal)")
    # method flags as training declares them; this script's own defaults: the reference's figure setting (ReLU)
    dslm_config.add_arguments(ap, ["num_layers", "hidden_size", "num_attention_heads", "seq_length",
                                   "hidden_dropout", "attention_dropout", "activation", "dslm_k"])
    ap.set_defaults(num_layers=192, hidden_size=128, num_attention_heads=4, seq_length=128, activation="relu")
    ap.add_argument("--micro-batch-size", type=int, default=4)
    ap.add_argument("--num-batches", type=int, default=2, help="batches pooled per model")
    ap.add_argument("--schemes", default="xavier,dslm", help="comma-separated --init-scheme names")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--seeds", type=int, default=1, help="average the per-layer moments over this many seeds")
    ap.add_argument("--data-path", default=DEFAULT_DATA, help="loose JSON with a 'text' key")
    ap.add_argument("--vocab-file", default=DEFAULT_VOCAB)
    ap.add_argument("--mock-data", action="store_true", help="random token ids (violates DSLM's r0 premise)")
    ap.add_argument("--out-dir", default=os.path.join(REPO, "docs", "figures"))
    ap.add_argument("--gpu-scale", action="store_true", help="192 layers x 1024 hidden, 16 heads, seq 256 on cuda")
    args = ap.parse_args(argv)
    if args.gpu_scale:
        args.num_layers, args.hidden_size, args.num_attention_heads, args.seq_length = 192, 1024, 16, 256
        args.micro_batch_size = max(args.micro_batch_size, 8)

    t0 = time.time()
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    from megatron.training.device import input_device
    from megatron.training.initialize import initialize_distributed, set_random_seed

    initialize_distributed(1, 1)
    set_random_seed(args.seed)
    device = input_device()  # the CPU in CPU mode, even on a GPU host

    from megatron.dslm.plot_moments import plot_profiles

    use_text = not args.mock_data and os.path.exists(args.data_path) and os.path.exists(args.vocab_file)
    if use_text:
        batches, vocab = load_text_batches(args.data_path, args.vocab_file, args.micro_batch_size,
                                           args.seq_length, args.num_batches)
        source = f"text from {os.path.relpath(args.data_path, REPO)}"
    else:
        print("WARNING: no text (--data-path/--vocab-file missing or --mock-data): random token ids. DSLM's "
              "init assumes the token correlation r0 of real text; with random ids r0 ≈ 0 and the attention "
              "branch delivers far less than its intended variance, so DSLM's forward variance sags.")
        batches, vocab = mock_batches(args.micro_batch_size, args.seq_length, args.num_batches)
        source = "random token ids (mock)"
    print(f"model: {args.model.upper()} {args.num_layers} layers x {args.hidden_size} hidden, {args.num_attention_heads} heads, "
          f"seq {args.seq_length}, batch {args.micro_batch_size} x {args.num_batches}, {args.activation}, "
          f"dropout {args.hidden_dropout}; input: {source}; device {device}")

    os.makedirs(args.out_dir, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k != dslm_config.EXPLICIT_ATTR}
    summary = {"config": config, "source": source, "runs": {}}
    for scheme in [s.strip() for s in args.schemes.split(",") if s.strip()]:
        base = dslm_config.model_arch(args, model_type=args.model, vocab_size=vocab)
        r0 = measure_embedding_corr(base, scheme, batches, vocab, args.seed, device)
        print(f"[{scheme}] measured embedding token correlation r0 = {r0:.4f} (before dropout)")
        for post_ln in (False, True):
            arch = dataclasses.replace(base, embedding_corr=max(r0, 1e-4), post_ln=post_ln)
            ln = "postln" if post_ln else "preln"
            t = time.time()
            runs = []
            for k in range(args.seeds):
                records, table = measure_profile(arch, scheme, batches, vocab, args.seed + k, device)
                runs.append(records)
            records = average_records(runs)
            pred = predicted(arch, table, records)
            name = f"{scheme}_{ln}"
            with open(os.path.join(args.out_dir, f"{name}_moments.jsonl"), "w", encoding="utf-8") as fh:
                for rec in records:
                    fh.write(json.dumps({"iteration": 0, **rec}) + "\n")
            fwd = [r["forward_var"] for r in records]
            grad = [r["grad_var"] for r in records if "grad_var" in r]
            info = {"r0": r0, "forward_var_first_layer": fwd[1], "forward_var_last_layer": fwd[-1],
                    "forward_var_min": min(fwd[1:]), "forward_var_max": max(fwd[1:]),
                    "grad_var_max_over_min": max(grad) / min(grad), "grad_var_layer1_over_top": grad[1] / grad[-1],
                    "seconds": round(time.time() - t, 1)}
            if post_ln:
                pre = [r["pre_norm_var"] for r in records if "pre_norm_var" in r and r["layer"] >= 1]
                info.update(pre_norm_var_min=min(pre), pre_norm_var_max=max(pre))
            if pred:
                for key in ("forward_var", "grad_var") + (("pre_norm_var",) if post_ln else ()):
                    errs = rel_errors(records, pred, key)
                    if errs:
                        info[f"{key}_max_rel_err_vs_theory"] = max(errs)
                        info[f"{key}_median_rel_err_vs_theory"] = sorted(errs)[len(errs) // 2]
            summary["runs"][name] = info
            print(f"[{name}] " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in info.items()), flush=True)
            width = f"{args.num_layers}x{args.hidden_size}"
            # forward variance on a linear axis: Pre-LN growth is linear in depth (docs/theory.md, "Blocks and residual merges")
            panels = [("forward_var", "forward variance", False), ("grad_var", "gradient variance", True)]
            if post_ln:
                panels = [("grad_var", "gradient variance", True), ("pre_norm_var", "variance before LN", True)]
            for key, label, log in panels:
                out = os.path.join(args.out_dir, f"{name}_{key}.png")
                plot_profiles(records, out, title=f"{scheme} {'Post' if post_ln else 'Pre'}-LN {width}: {label} "
                              f"({source.split(' from ')[0]})", predicted=pred, panels=[(key, label, log)])
    with open(os.path.join(args.out_dir, "signal_propagation_summary.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=1, default=str)
    print(f"figures in {args.out_dir}; total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
