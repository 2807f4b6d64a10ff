"""Predict a model's signal-propagation profile before training.

    python -m megatron.dslm.predict --num-layers 192 --hidden-size 1024 --num-attention-heads 16 \\
        --seq-length 256 --init-scheme dslm [--post-ln] [--hidden-dropout 0.1] [--json out.json] [--plot out.png]

Prints per-layer forward variance, token correlation and gradient variance (the gradient scaled so the
last layer's is 1) and warns when the profile predicts trouble: forward or gradient variance changing by
more than 10x across depth, or attention logits large enough to saturate the softmax. The model flags,
their defaults and help are training's (``megatron.dslm.config``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from typing import List, Optional

from . import config
from .contract import ModelArch
from .schemes.registry import check_config
from .theory.predictor import Profile, predict_profile

# exp((1 - corr) * logit_var) above ~e^4 means a few keys take most of the probability mass.
SATURATING_LOGIT_SPREAD = 4.0
MAX_CHANGE_ACROSS_DEPTH = 10.0


# The architecture flags this command reads (all of DSLMConfig; the first four are required here).
REQUIRED = ("num_layers", "hidden_size", "num_attention_heads", "seq_length")
# Besides the scheme, the predictor itself reads r0 (the embedding output's correlation).
READ_BY_PREDICTOR = frozenset({"embedding_corr"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m megatron.dslm.predict", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    config.add_arguments(parser, required=REQUIRED, aliases=True)
    shape = parser.add_argument_group("decoder shape (upstream Megatron-LM flag names)")
    shape.add_argument("--swiglu", action="store_true", help="gated FFN with a SiLU gate (ffn size 2/3 of 4h)")
    shape.add_argument("--normalization", choices=("LayerNorm", "RMSNorm"), default=None)
    shape.add_argument("--position-embedding-type", choices=("learned_absolute", "rope", "none"), default=None)
    shape.add_argument("--rotary-base", type=float, default=None)
    shape.add_argument("--rotary-percent", type=float, default=None)
    shape.add_argument("--group-query-attention", action="store_true")
    shape.add_argument("--num-query-groups", type=int, default=None)
    shape.add_argument("--disable-bias-linear", dest="add_bias_linear", action="store_false", default=None)
    shape.add_argument("--untie-embeddings-and-output-weights", action="store_true")
    shape.add_argument("--qk-layernorm", action="store_true")
    parser.add_argument("--top-grad-corr", type=float, default=0.0,
                        help="token correlation of the gradient at the last layer (0: unstructured loss)")
    parser.add_argument("--every", type=int, default=None, help="print every k-th layer (default: ~24 rows)")
    parser.add_argument("--json", dest="json_path", default=None, help="write the profile as JSON")
    parser.add_argument("--plot", dest="plot_path", default=None, help="write a PNG (needs matplotlib)")
    return parser


def arch_from_args(args) -> ModelArch:
    """Checks of this command's own flags; the method's settings are checked by the scheme registry."""
    checks = [
        (args.hidden_size >= 2, "--hidden-size must be >= 2"),
        (args.seq_length >= 2, "--seq-length must be >= 2"),
        (args.num_attention_heads < 1 or args.kv_channels is not None
         or args.hidden_size % args.num_attention_heads == 0,
         "--hidden-size must be divisible by --num-attention-heads (or give --kv-channels)"),
        (-1.0 <= args.top_grad_corr <= 1.0, "--top-grad-corr must be in [-1, 1]"),
        (args.every is None or args.every >= 1, "--every must be >= 1"),
        (not args.group_query_attention or (args.num_query_groups or 0) >= 1,
         "--group-query-attention needs --num-query-groups >= 1"),
        (not args.group_query_attention or args.num_attention_heads % max(args.num_query_groups or 1, 1) == 0,
         "--num-attention-heads must be divisible by --num-query-groups"),
        (args.rotary_percent is None or 0.0 < args.rotary_percent <= 1.0, "--rotary-percent must be in (0, 1]"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    return config.model_arch(args)


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
    """{"config": {ModelArch fields, "init_scheme"},
    "layers": [{"layer", "forward_var", "forward_corr", "grad_var"}]}."""
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
        table = check_config(args.init_scheme, arch, config.explicit_fields(args), READ_BY_PREDICTOR).build(arch)
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
