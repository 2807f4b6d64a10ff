"""Draw per-layer moment profiles from a ``--moments-file`` JSONL, with the theory predictor overlaid.

    python -m megatron.dslm.plot_moments --moments-file runs/x/moments.jsonl --iterations 0,100,200 \
        --out runs/x/moments.png --num-layers 48 --hidden-size 128 --num-attention-heads 4 --seq-length 128 \
        --init-scheme dslm

One panel per quantity (forward_var, forward_corr, grad_var, pre_norm_var for Post-LN), one line per iteration
(default: iteration 0, the init profile, and the last one in the file). The theory predicts the init profile, so
its line is the prediction for iteration 0; it is drawn when the model flags are given (training's flags,
``megatron.dslm.config``; or ``--overlay-config`` names a JSON file with ModelArch fields plus
``"init_scheme"``). The predicted gradient variance is scaled to the measured one at the top layer of the
earliest iteration shown (the predictor's profile is linear in it).
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


def read_iterations(path: str, iterations: Optional[List[int]] = None) -> Dict[int, List[dict]]:
    """{iteration: records sorted by layer}; default iteration 0 (when logged) and the last one."""
    if iterations is None:
        last = read_records(path)
        present = _iterations_present(path)
        iterations = sorted({min(present), last[0]["iteration"]}) if 0 in present else [last[0]["iteration"]]
    return {it: read_records(path, it) for it in iterations}


def _iterations_present(path: str) -> List[int]:
    with open(path, encoding="utf-8") as fh:
        return sorted({json.loads(line)["iteration"] for line in fh if line.strip()})


def parse_iterations(text: Optional[str]) -> Optional[List[int]]:
    """'0,100,200' -> [0, 100, 200]; None stays None; anything else is one clear error."""
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"error: --iterations takes comma-separated integers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise SystemExit(f"error: --iterations takes non-negative integers, got {text!r}")
    return sorted(set(values))


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


def plot_profiles(records, out: str, title: str = "", predicted: Optional[Dict[str, list]] = None,
                  panels=PANELS) -> str:
    """One PNG with a panel per quantity present; ``records`` is one iteration's list or {iteration: list}
    (one line per iteration). Returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_iteration = records if isinstance(records, dict) else {None: records}
    every = [r for recs in by_iteration.values() for r in recs]
    present = [(k, label, log) for k, label, log in panels if any(k in r for r in every)]
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.4), squeeze=False)
    single = len(by_iteration) == 1
    for ax, (key, label, log) in zip(axes[0], present):
        positive = True
        for it, recs in by_iteration.items():
            xs = [r["layer"] for r in recs if key in r]
            ys = [r[key] for r in recs if key in r]
            positive = positive and all(y > 0 for y in ys)
            ax.plot(xs, ys, "o" if single else "o-", ms=2.5, lw=0.8,
                    label="measured" if single or it is None else f"iteration {it}")
        if predicted and key in predicted:
            pts = [(l, v) for l, v in zip(predicted["layer"], predicted[key]) if v is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "k--", lw=1.2, label="theory (init)")
        if log and positive:
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
    ap.add_argument("--iteration", type=int, default=None, help="one iteration (same as --iterations N)")
    ap.add_argument("--iterations", default=None,
                    help="comma list drawn in one figure, e.g. 0,100,200 (default: 0 and the last one)")
    ap.add_argument("--out", required=True, help="PNG path")
    ap.add_argument("--overlay-config", default=None, help="JSON with ModelArch fields and init_scheme")
    # Model flags for the theory overlay: training's names, defaults and help.
    dslm_config.add_arguments(ap.add_argument_group("model (theory overlay)"), aliases=True)
    args = ap.parse_args(argv)
    if args.iteration is not None and args.iterations is not None:
        raise SystemExit("error: give --iteration or --iterations, not both")
    iterations = [args.iteration] if args.iteration is not None else parse_iterations(args.iterations)

    by_iteration = read_iterations(args.moments_file, iterations)
    arch, scheme = _arch_from_args(args)
    predicted = None
    if arch is not None:
        first = by_iteration[min(by_iteration)]
        top = next((r.get("grad_var") for r in reversed(first) if r.get("grad_var")), None)
        predicted = predicted_columns(arch, scheme, top)
        if predicted is None:
            print("note: megatron.dslm.theory.predictor not importable: no theory overlay")
    shown = ",".join(str(it) for it in by_iteration)
    plot_profiles(by_iteration, args.out, title=f"{os.path.basename(args.moments_file)} iteration {shown}"
                  + (f" ({scheme})" if scheme and arch is not None else ""), predicted=predicted)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
