"""Draw per-layer moment profiles from a ``--moments-file`` JSONL, with the theory predictor overlaid.

    python -m megatron.dslm.plot_moments --moments-file runs/x/moments.jsonl --iteration 1 --out runs/x/moments.png \
        --num-layers 48 --hidden-size 128 --num-attention-heads 4 --seq-length 128 --init-scheme dslm

One panel per quantity (forward_var, forward_corr, grad_var, pre_norm_var for Post-LN). The predicted line is
drawn when the model flags are given (training's flags, ``megatron.dslm.config``; or
``--overlay-config`` names a JSON file with ModelArch fields plus ``"init_scheme"``); the predicted gradient
variance is scaled to the measured one at the top layer (the predictor's profile is linear in it).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List, Optional

from megatron.dslm import config as dslm_config

PANELS = (("forward_var", "forward variance", True), ("forward_corr", "token correlation", False),
          ("grad_var", "gradient variance", True), ("pre_norm_var", "variance before LayerNorm (Post-LN)", True))


def read_records(path: str, iteration: Optional[int] = None) -> List[dict]:
    """Records of one iteration (the last one in the file when ``iteration`` is None), sorted by layer."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    if not rows:
        raise SystemExit(f"{path}: no moment records")
    if iteration is None:
        iteration = max(r["iteration"] for r in rows)
    chosen = {r["layer"]: r for r in rows if r["iteration"] == iteration}  # last write wins
    if not chosen:
        have = sorted({r["iteration"] for r in rows})
        raise SystemExit(f"{path}: no records for iteration {iteration}; iterations present: {have}")
    return [chosen[k] for k in sorted(chosen)]


def predicted_columns(arch, scheme: str, top_grad_var: Optional[float]) -> Optional[Dict[str, list]]:
    """{"layer": [...], field: [...]} from the theory predictor (layer 0 = embedding output), or None."""
    try:
        from megatron.dslm.schemes.registry import build_init_table
        from megatron.dslm.theory.predictor import predict_profile
    except ImportError:
        return None
    try:
        table = build_init_table(scheme, arch)
        profile = predict_profile(arch, table)
    except Exception as exc:  # the overlay is optional: never lose the measured plot over it
        print(f"note: theory predictor failed ({type(exc).__name__}: {exc}); no overlay")
        return None
    scale = 1.0
    if top_grad_var is not None and profile.final.grad_var > 0:
        scale = top_grad_var / profile.final.grad_var
    cols = {"layer": [0] + [l.layer_number for l in profile.layers],
            "forward_var": [profile.embedding.var] + list(profile.column("forward_var")),
            "forward_corr": [profile.embedding.corr] + list(profile.column("forward_corr")),
            "grad_var": [profile.embedding_grad_var * scale] + [v * scale for v in profile.column("grad_var")]}
    if arch.post_ln:
        cols["pre_norm_var"] = [None] + list(profile.column("pre_norm_var"))
    return cols


def plot_profiles(records: List[dict], out: str, title: str = "", predicted: Optional[Dict[str, list]] = None,
                  panels=PANELS) -> str:
    """One PNG with a panel per quantity present in ``records``; returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [(k, label, log) for k, label, log in panels if any(k in r for r in records)]
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.4), squeeze=False)
    for ax, (key, label, log) in zip(axes[0], present):
        xs = [r["layer"] for r in records if key in r]
        ys = [r[key] for r in records if key in r]
        ax.plot(xs, ys, "o", ms=2.5, label="measured")
        if predicted and key in predicted:
            pts = [(l, v) for l, v in zip(predicted["layer"], predicted[key]) if v is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", lw=1.2, label="theory")
        if log and all(y > 0 for y in ys):
            ax.set_yscale("log")
        ax.set_xlabel("layer (0 = embedding)")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _arch_from_args(args):
    """(ModelArch, scheme) for the overlay, or (None, None) without model flags; bad flags exit with one line."""
    from megatron.dslm.config import explicit_fields, model_arch
    from megatron.dslm.contract import ModelArch
    from megatron.dslm.schemes.registry import check_config

    if args.overlay_config:
        with open(args.overlay_config, encoding="utf-8") as fh:
            cfg = json.load(fh)
        scheme = cfg.pop("init_scheme", args.init_scheme)
        arch, explicit = ModelArch(**cfg), ()
    elif args.num_layers and args.hidden_size and args.num_attention_heads and args.seq_length:
        arch, scheme, explicit = model_arch(args), args.init_scheme, explicit_fields(args)
    else:
        return None, None
    try:
        check_config(scheme, arch, explicit, read_elsewhere={"embedding_corr"})  # the predictor reads r0
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    return arch, scheme


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moments-file", required=True)
    ap.add_argument("--iteration", type=int, default=None, help="default: the last one in the file")
    ap.add_argument("--out", required=True, help="PNG path")
    ap.add_argument("--overlay-config", default=None, help="JSON with ModelArch fields and init_scheme")
    # Model flags for the theory overlay: training's names, defaults and help.
    dslm_config.add_arguments(ap.add_argument_group("model (theory overlay)"), aliases=True)
    args = ap.parse_args(argv)

    records = read_records(args.moments_file, args.iteration)
    arch, scheme = _arch_from_args(args)
    predicted = None
    if arch is not None:
        top = next((r.get("grad_var") for r in reversed(records) if r.get("grad_var")), None)
        predicted = predicted_columns(arch, scheme, top)
        if predicted is None:
            print("note: megatron.dslm.theory.predictor not importable: no theory overlay")
    it = records[0]["iteration"]
    plot_profiles(records, args.out, title=f"{os.path.basename(args.moments_file)} iteration {it}"
                  + (f" ({scheme})" if scheme and arch is not None else ""), predicted=predicted)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
