"""Signal propagation at init in real megatron-core Llama-shaped GPTs, measured vs the theory predictor.

The model is today's decoder: RMSNorm, SwiGLU (``--swiglu`` sizing), RoPE, grouped-query attention, no biases,
untied output layer, no dropout -- built by ``megatron.dslm.mcore.models.build_gpt_model`` from a scheme's
table, fed real text (the sample corpus, WordPiece), one forward+backward per batch with the MomentObserver.
The token correlation r0 of the embedding output is measured on the same batches and given to the scheme
and the predictor. Writes per-scheme moments (JSONL), figures and a measured-vs-predicted markdown table.

    OMP_NUM_THREADS=1 nice python scripts/llama_signal_propagation.py                       # 192 x 128
    OMP_NUM_THREADS=1 nice python scripts/llama_signal_propagation.py --num-layers 1000 --hidden-size 64 \\
        --schemes dslm --seq-length 64
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))

from signal_propagation_figures import DEFAULT_DATA, DEFAULT_VOCAB, load_text_batches  # noqa: E402

from megatron.dslm.contract import ModelArch  # noqa: E402


def llama_arch(args, vocab: int, r0: float) -> ModelArch:
    return ModelArch(
        num_layers=args.num_layers, hidden_size=args.hidden_size, num_attention_heads=args.num_attention_heads,
        seq_length=args.seq_length, vocab_size=vocab, num_query_groups=args.num_query_groups,
        gated_linear_unit=True, activation="silu", normalization="RMSNorm", position_embedding_type="rope",
        rotary_base=args.rotary_base, add_bias_linear=False, untie_embeddings_and_output_weights=True,
        hidden_dropout=0.0, attention_dropout=0.0, embedding_corr=r0)


def build_llama(arch: ModelArch, table, seed: int):
    from megatron.core.transformer.transformer_config import TransformerConfig
    from megatron.dslm.mcore.models import build_gpt_model

    config = TransformerConfig(
        num_layers=arch.num_layers, hidden_size=arch.hidden_size, num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.query_groups, ffn_hidden_size=arch.ffn_size, hidden_dropout=0.0,
        attention_dropout=0.0, gated_linear_unit=True, activation_func=torch.nn.functional.silu,
        normalization="RMSNorm", add_bias_linear=False, use_cpu_initialization=True,
        tensor_model_parallel_size=1, pipeline_model_parallel_size=1, bias_dropout_fusion=False,
        masked_softmax_fusion=False, gradient_accumulation_fusion=False, apply_rope_fusion=False,
        bias_activation_fusion=False)
    return build_gpt_model(config, table, vocab_size=arch.vocab_size, max_sequence_length=arch.seq_length,
                           seed=seed, share_embeddings_and_output_weights=False, position_embedding_type="rope",
                           rotary_base=int(arch.rotary_base))


def forward_loss(model, tokens, seq):
    inputs, labels = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    pos = torch.arange(seq).unsqueeze(0).expand_as(inputs)
    mask = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)[None, None]
    return model(inputs, pos, mask, labels=labels)


def measure_r0(arch, scheme, batches, seed):
    """Token correlation of the embedding output on the batches (a 1-layer model has the same embeddings)."""
    from megatron.dslm.mcore.observers import forward_sums, moments_from_forward
    from megatron.dslm.schemes.registry import build_init_table

    small = dataclasses.replace(arch, num_layers=1)
    model = build_llama(small, build_init_table(scheme, small), seed).eval()
    acc = None
    with torch.no_grad():
        for tokens in batches:
            inputs = tokens[:, :-1]
            pos = torch.arange(inputs.shape[1]).unsqueeze(0).expand_as(inputs)
            sums = forward_sums(model.embedding(input_ids=inputs, position_ids=pos))
            acc = sums if acc is None else acc + sums
    return moments_from_forward(acc)["forward_corr"]


def measure(arch, scheme, batches, seed):
    from megatron.dslm.mcore.observers import MomentObserver
    from megatron.dslm.schemes.registry import build_init_table

    table = build_init_table(scheme, arch)
    model = build_llama(arch, table, seed).train()
    observer = MomentObserver(model).attach()
    try:
        for tokens in batches:
            forward_loss(model, tokens, arch.seq_length).float().mean().backward()
            model.zero_grad(set_to_none=True)
        records = observer.collect()
    finally:
        observer.detach()
    return records, table


def comparison_rows(records, predicted, layers):
    rows = []
    by_layer = {r["layer"]: r for r in records}
    for layer in layers:
        rec, idx = by_layer[layer], predicted["layer"].index(layer)
        row = {"layer": layer}
        for key in ("forward_var", "forward_corr", "grad_var"):
            row[key] = (rec.get(key), predicted[key][idx])
        rows.append(row)
    return rows


def markdown(scheme, arch, rows):
    lines = [f"**{scheme}**, {arch.num_layers} x {arch.hidden_size}, r0 = {arch.embedding_corr:.3f}", "",
             "| layer | fwd var measured | predicted | err % | fwd corr measured | predicted | grad var measured "
             "| predicted | err % |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        (fm, fp), (cm, cp), (gm, gp) = row["forward_var"], row["forward_corr"], row["grad_var"]
        lines.append(f"| {row['layer']} | {fm:.4g} | {fp:.4g} | {100 * abs(fm / fp - 1):.1f} | {cm:.3f} | {cp:.3f} "
                     f"| {gm:.4g} | {gp:.4g} | {100 * abs(gm / gp - 1):.1f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-layers", type=int, default=192)
    ap.add_argument("--hidden-size", type=int, default=128)
    ap.add_argument("--num-attention-heads", type=int, default=8)
    ap.add_argument("--num-query-groups", type=int, default=4)
    ap.add_argument("--seq-length", type=int, default=128)
    ap.add_argument("--rotary-base", type=float, default=10000.0)
    ap.add_argument("--micro-batch-size", type=int, default=4)
    ap.add_argument("--num-batches", type=int, default=2)
    ap.add_argument("--schemes", default="dslm,megatron,xavier")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--data-path", default=DEFAULT_DATA)
    ap.add_argument("--vocab-file", default=DEFAULT_VOCAB)
    ap.add_argument("--out-dir", default=os.path.join(REPO, "runs", "llama_signal_propagation"))
    args = ap.parse_args(argv)
    if not (os.path.exists(args.data_path) and os.path.exists(args.vocab_file)):
        print(f"error: no sample corpus at {args.data_path} / {args.vocab_file}", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    from megatron.training.initialize import initialize_distributed, set_random_seed
    from megatron.dslm.plot_moments import plot_profiles, predicted_columns

    initialize_distributed(1, 1)
    set_random_seed(args.seed)
    batches, vocab = load_text_batches(args.data_path, args.vocab_file, args.micro_batch_size, args.seq_length,
                                       args.num_batches)
    os.makedirs(args.out_dir, exist_ok=True)
    n = args.num_layers
    layers = sorted({1, max(1, n // 4), max(1, n // 2), max(1, 3 * n // 4), n})
    tables, summary = [], {}
    for scheme in [s.strip() for s in args.schemes.split(",") if s.strip()]:
        t0 = time.time()
        base = llama_arch(args, vocab, 0.2)
        r0 = measure_r0(base, scheme, batches, args.seed)
        arch = dataclasses.replace(base, embedding_corr=min(max(r0, 1e-4), 1.0))
        records, table = measure(arch, scheme, batches, args.seed)
        predicted = predicted_columns(arch, scheme, records[-1].get("grad_var"))
        name = f"llama_{scheme}_{n}x{args.hidden_size}"
        with open(os.path.join(args.out_dir, f"{name}_moments.jsonl"), "w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps({"iteration": 0, **rec}) + "\n")
        fwd = [r["forward_var"] for r in records if r["layer"] >= 1]
        grad = [r["grad_var"] for r in records if r["layer"] >= 1 and "grad_var" in r]
        fwd_err = [abs(r["forward_var"] / predicted["forward_var"][predicted["layer"].index(r["layer"])] - 1)
                   for r in records if r["layer"] >= 1]
        summary[name] = dict(r0=r0, forward_var_min=min(fwd), forward_var_max=max(fwd),
                             grad_var_max_over_min=max(grad) / min(grad), forward_var_max_rel_err=max(fwd_err),
                             seconds=round(time.time() - t0, 1))
        print(f"[{name}] " + ", ".join(f"{k}={v:.4g}" for k, v in summary[name].items()), flush=True)
        tables.append(markdown(scheme, arch, comparison_rows(records, predicted, layers)))
        for key, label, log in (("forward_var", "forward variance", scheme != "dslm"), ("grad_var", "gradient variance", True)):
            plot_profiles(records, os.path.join(args.out_dir, f"{name}_{key}.png"), predicted=predicted,
                          title=f"Llama-shaped {scheme} {n}x{args.hidden_size}: {label} (real text)",
                          panels=[(key, label, log)])
    text = "\n\n".join(tables) + "\n"
    fd, tmp = tempfile.mkstemp(dir=args.out_dir, suffix=".md")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, os.path.join(args.out_dir, f"llama_{n}x{args.hidden_size}_table.md"))
    with open(os.path.join(args.out_dir, f"llama_{n}x{args.hidden_size}_summary.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=1)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
