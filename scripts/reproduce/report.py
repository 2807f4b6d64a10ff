"""Markdown tables from the experiments' JSON outputs (what docs/results.md quotes), printed to stdout.

    python scripts/reproduce/report.py [--out docs/results]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import common as C


def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def depth_vs_width(d) -> str:
    out = []
    for model in ("gpt", "bert"):
        rows = [r for r in d["rows"] if r["model"] == model]
        if not rows:
            continue
        p = d["plan"].get(model, {})
        out.append(f"**{model.upper()}** ({p.get('iters')} iterations × batch {p.get('mbs')} × seq {p.get('seq')}, "
                   f"lr {p.get('lr')}, seed {d['seed']})\n")
        out.append(table(["shape", "non-emb params", "scheme", "LN", "first→last train loss", "val loss", "val PPL",
                          "outcome", "wall s"],
                         [[f"{r['layers']}×{r['hidden']}", r["non_embedding_params"], r["scheme"], r["ln"],
                           f"{r.get('first_train_loss')}→{r.get('last_train_loss')}" if r.get("first_train_loss") else "",
                           r.get("val_loss"), r.get("val_ppl"), r.get("outcome"), r.get("wall_s")] for r in rows]))
        out.append("")
    return "\n".join(out)


def depth_stress(d) -> str:
    rows = d["rows"]
    out = [table(["layers", "scheme", "LN", "iters", "first→last train loss", "val loss", "last grad norm",
                  "outcome", "wall s"],
                 [[r["layers"], r["scheme"], r["ln"], r["iters"],
                   f"{r.get('first_train_loss')}→{r.get('last_train_loss')}" if r.get("first_train_loss") else "",
                   r.get("val_loss"), r.get("last_grad_norm"), r.get("outcome"), r.get("wall_s")] for r in rows])]
    for scheme, prof in d.get("init_profile", {}).items():
        if "measured" not in prof:
            out.append(f"\ninit profile {scheme}: {prof.get('error')}")
            continue
        meas = {m["layer"]: m for m in prof["measured"]}
        pred = {m["layer"]: m for m in prof["predicted"]}
        layers = sorted(set(meas) & set(pred))
        pick = sorted({layers[0], layers[len(layers) // 4], layers[len(layers) // 2], layers[3 * len(layers) // 4],
                       layers[-1]}) if layers else []
        top_m = meas[layers[-1]].get("grad_var") if layers else None
        out.append(f"\nInit profile, {scheme} Pre-LN GPT {prof['layers']}×{prof['hidden']}, seq {prof['seq']}, "
                   f"r0 = {prof['embedding_corr']} (measured on the corpus):\n")
        out.append(table(["layer", "fwd var measured", "fwd var predicted", "corr measured", "corr predicted",
                          "grad var / top measured", "grad var / top predicted"],
                         [[k, _f(meas[k].get("forward_var")), _f(pred[k].get("forward_var")),
                           _f(meas[k].get("forward_corr")), _f(pred[k].get("forward_corr")),
                           _f(meas[k]["grad_var"] / top_m) if meas[k].get("grad_var") and top_m else "",
                           _f(pred[k].get("grad_var"))] for k in pick]))
    return "\n".join(out)


def downstream(d) -> str:
    return table(["task", "checkpoint", "pretrain val loss", "train ex.", "epochs", "best dev accuracy (per file)",
                  "majority / chance", "wall s"],
                 [[r["task"], f"{r['layers']}×{r['hidden']} {r['scheme']} {r['ln']}", r.get("pretrain_val_loss"),
                   r.get("train_examples"), r.get("epochs"), r.get("accuracy") or r.get("outcome"), r.get("baseline"),
                   r.get("wall_s")] for r in d["rows"]])


def signal(d) -> str:
    keys = ["r0", "forward_var_first_layer", "forward_var_last_layer", "grad_var_max_over_min",
            "grad_var_layer1_over_top", "pre_norm_var_min", "pre_norm_var_max"]
    return table(["run"] + keys, [[r["run"]] + [r.get(k) for k in keys] for r in d["rows"]])


def _f(x):
    return f"{x:.3g}" if isinstance(x, (int, float)) else x


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(C.DEFAULT_OUT))
    out = Path(ap.parse_args().out)
    for name, fn in (("signal_propagation", signal), ("depth_vs_width", depth_vs_width),
                     ("depth_stress", depth_stress), ("downstream", downstream)):
        path = out / f"{name}.json"
        if path.exists():
            d = json.loads(path.read_text())
            print(f"### {name} (wall {d.get('wall_s')} s, budget {d.get('budget_min')} min)\n")
            print(fn(d) + "\n")


if __name__ == "__main__":
    main()
