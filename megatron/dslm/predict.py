"""Predict a model's signal-propagation profile before training (issue 3, item 3).

    python -m megatron.dslm.predict --num-layers 192 --hidden-size 1024 --num-attention-heads 16 \\
        --seq-length 256 --init-scheme dslm [--post-ln] [--hidden-dropout 0.1] [--json out.json] [--plot out.png]

Prints per-layer forward variance, token correlation and gradient variance (the gradient scaled so the
last layer's is 1) and warns when the profile predicts trouble: forward or gradient variance changing by
more than 10x across depth, or attention logits large enough to saturate the softmax.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from typing import List, Optional

from .schemes.registry import SCHEME_NAMES, build_init_table
from .contract import ModelArch
from .theory.predictor import Profile, predict_profile

# exp((1 - corr) * logit_var) above ~e^4 means a few keys take most of the probability mass.
SATURATING_LOGIT_SPREAD = 4.0
MAX_CHANGE_ACROSS_DEPTH = 10.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m megatron.dslm.predict", description=__doc__.splitlines()[0])
    parser.add_argument("--num-layers", type=int, required=True)
    parser.add_argument("--hidden-size", type=int, required=True)
    parser.add_argument("--num-attention-heads", type=int, required=True)
    parser.add_argument("--seq-length", type=int, required=True)
    parser.add_argument("--init-scheme", default="dslm", help=f"one of {', '.join(SCHEME_NAMES)}")
    parser.add_argument("--ffn-hidden-size", type=int, default=None, help="default 4 * hidden size")
    parser.add_argument("--kv-channels", type=int, default=None, help="default hidden size / heads")
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument("--model-type", choices=["gpt", "bert"], default="gpt", help="gpt: causal attention")
    parser.add_argument("--num-tokentypes", type=int, default=0, help="2 for BERT (adds a third embedding table)")
    parser.add_argument("--post-ln", action="store_true", help="Post-LN layers (default Pre-LN)")
    parser.add_argument("--hidden-dropout", type=float, default=0.1)
    parser.add_argument("--attention-dropout", type=float, nargs="?", const=0.1, default=0.0,
                        help="attention-probability dropout (flag alone: 0.1; default 0)")
    parser.add_argument("--activation", choices=["gelu", "relu"], default="gelu")
    parser.add_argument("--embedding-corr", type=float, default=0.221,
                        help="token correlation r0 of the summed embeddings (python -m megatron.dslm.estimate_corr)")
    parser.add_argument("--dslm-k", type=float, default=1.0, help="DSLM residual beta^2 = k / N")
    parser.add_argument("--residual-lambda-sq", type=float, default=None)
    parser.add_argument("--residual-beta-sq", type=float, default=None)
    parser.add_argument("--allow-unnormalized-residual", action="store_true")
    parser.add_argument("--init-method-std", type=float, default=0.02, help="the megatron scheme's sigma")
    parser.add_argument("--top-grad-corr", type=float, default=0.0,
                        help="token correlation of the gradient at the last layer (0: unstructured loss)")
    parser.add_argument("--every", type=int, default=None, help="print every k-th layer (default: ~24 rows)")
    parser.add_argument("--json", dest="json_path", default=None, help="write the profile as JSON")
    parser.add_argument("--plot", dest="plot_path", default=None, help="write a PNG (needs matplotlib)")
    return parser


def arch_from_args(args) -> ModelArch:
    checks = [
        (args.num_layers >= 1, "--num-layers must be >= 1"),
        (args.hidden_size >= 2, "--hidden-size must be >= 2"),
        (args.num_attention_heads >= 1, "--num-attention-heads must be >= 1"),
        (args.seq_length >= 2, "--seq-length must be >= 2"),
        (args.kv_channels is not None or args.hidden_size % args.num_attention_heads == 0,
         "--hidden-size must be divisible by --num-attention-heads (or give --kv-channels)"),
        (0.0 <= args.hidden_dropout < 1.0, "--hidden-dropout must be in [0, 1)"),
        (0.0 <= args.attention_dropout < 1.0, "--attention-dropout must be in [0, 1)"),
        (0.0 <= args.embedding_corr <= 1.0, "--embedding-corr must be in [0, 1]"),
        (-1.0 <= args.top_grad_corr <= 1.0, "--top-grad-corr must be in [-1, 1]"),
        (args.dslm_k > 0.0, "--dslm-k must be > 0"),
        (args.every is None or args.every >= 1, "--every must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    return ModelArch(
        num_layers=args.num_layers, hidden_size=args.hidden_size, num_attention_heads=args.num_attention_heads,
        seq_length=args.seq_length, vocab_size=args.vocab_size, ffn_hidden_size=args.ffn_hidden_size,
        kv_channels=args.kv_channels, model_type=args.model_type, num_tokentypes=args.num_tokentypes,
        hidden_dropout=args.hidden_dropout, attention_dropout=args.attention_dropout, post_ln=args.post_ln,
        activation=args.activation, embedding_corr=args.embedding_corr, dslm_k=args.dslm_k,
        residual_lambda_sq=args.residual_lambda_sq, residual_beta_sq=args.residual_beta_sq,
        allow_unnormalized_residual=args.allow_unnormalized_residual, init_method_std=args.init_method_std,
    )


def profile_warnings(profile: Profile) -> List[str]:
    """Trouble the profile predicts, one sentence each."""
    warnings = []
    arch = profile.arch
    quantities = [("forward variance", "pre_norm_var" if arch.post_ln else "forward_var"), ("gradient variance", "grad_var")]
    for label, column in quantities:
        values = [v for v in profile.column(column) if v > 0]
        if values and max(values) / min(values) > MAX_CHANGE_ACROSS_DEPTH:
            warnings.append(
                f"{label} changes {max(values) / min(values):.3g}x across depth "
                f"(min {min(values):.3g}, max {max(values):.3g}): expect unstable or slow training"
            )
    for layer in profile.layers:
        spread = (1.0 - layer.forward_corr) * layer.attention_logit_var
        if spread > SATURATING_LOGIT_SPREAD:
            warnings.append(
                f"attention logits saturate from layer {layer.layer_number} (logit variance "
                f"{layer.attention_logit_var:.3g}): softmax near one-hot, large attention gradients"
            )
            break
    return warnings


def profile_to_json(profile: Profile, scheme: str) -> dict:
    """The issue's layout exactly: {"config": {...}, "layers": [{"layer", "forward_var", "forward_corr", "grad_var"}]}."""
    config = asdict(profile.arch)
    config["init_scheme"] = scheme
    return {
        "config": config,
        "layers": [
            {
                "layer": layer.layer_number,
                "forward_var": layer.forward_var,
                "forward_corr": layer.forward_corr,
                "grad_var": layer.grad_var,
            }
            for layer in profile.layers
        ],
    }


def format_table(profile: Profile, every: Optional[int]) -> str:
    n = len(profile.layers)
    step = every or max(1, n // 24)
    rows = sorted(set(range(0, n, step)) | {n - 1})
    header = f"{'layer':>6} {'fwd_var':>10} {'fwd_corr':>9} {'grad_var':>10}"
    if profile.arch.post_ln:
        header += f" {'pre_LN_var':>10}"
    header += f" {'logit_var':>10}"
    lines = [header]
    emb = profile.embedding
    lines.append(f"{'emb':>6} {emb.var:10.4g} {emb.corr:9.3f} {profile.embedding_grad_var:10.4g}")
    for idx in rows:
        layer = profile.layers[idx]
        line = f"{layer.layer_number:6d} {layer.forward_var:10.4g} {layer.forward_corr:9.3f} {layer.grad_var:10.4g}"
        if profile.arch.post_ln:
            line += f" {layer.pre_norm_var:10.4g}"
        line += f" {layer.attention_logit_var:10.4g}"
        lines.append(line)
    return "\n".join(lines)


def _atomic_write(path: str, write) -> None:
    """Write via a temp file in the same folder, then os.replace: no half-written outputs."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_plot(profile: Profile, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depth = [layer.layer_number for layer in profile.layers]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    forward = "pre_norm_var" if profile.arch.post_ln else "forward_var"
    for ax, column, title in (
        (axes[0], forward, "forward variance" + (" (before LN)" if profile.arch.post_ln else "")),
        (axes[1], "grad_var", "gradient variance (top = 1)"),
        (axes[2], "forward_corr", "token correlation"),
    ):
        ax.plot(depth, profile.column(column))
        ax.set_title(title)
        ax.set_xlabel("layer")
        if column != "forward_corr":
            ax.set_yscale("log")
    fig.suptitle(f"{profile.scheme}, {'Post' if profile.arch.post_ln else 'Pre'}-LN, N={len(depth)}, d={profile.arch.hidden_size}")
    fig.tight_layout()
    _atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    plt.close(fig)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        arch = arch_from_args(args)
        table = build_init_table(args.init_scheme, arch)
    except ValueError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)  # one line, no usage dump
        return 2
    profile = predict_profile(arch, table, top_grad_corr=args.top_grad_corr)
    print(f"# {table.scheme} init, {'Post' if arch.post_ln else 'Pre'}-LN, {arch.num_layers} layers, "
          f"d={arch.hidden_size}, L={arch.seq_length}, r0={arch.embedding_corr}")
    print(format_table(profile, args.every))
    for warning in profile_warnings(profile):
        print(f"WARNING: {warning}", file=sys.stderr)
    if args.json_path:
        payload = json.dumps(profile_to_json(profile, table.scheme), indent=1).encode()
        _atomic_write(args.json_path, lambda handle: handle.write(payload))
    if args.plot_path:
        write_plot(profile, args.plot_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
