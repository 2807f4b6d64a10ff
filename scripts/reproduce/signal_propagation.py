"""Signal propagation at init (paper Figs. 1-2): a thin wrapper over scripts/signal_propagation_figures.py.

Runs the figures script (real megatron-core BERT at init, fed the sample corpus, theory overlaid) at a size
the budget allows, then writes a one-row-per-(scheme, LN) CSV from its summary and one overview PNG
(forward and gradient variance per layer, xavier vs DSLM, Pre-LN and Post-LN).

    python scripts/reproduce/signal_propagation.py --budget 6
    python scripts/reproduce/signal_propagation.py --budget 1 --out /tmp/sp     # smoke check
    python scripts/reproduce/signal_propagation.py --gpu-scale                # the reference's 192 x 1024
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import common as C

FIGURES = C.REPO / "scripts" / "signal_propagation_figures.py"


def size_for(budget: float) -> list:
    if budget < 3:
        return ["--num-layers", 24, "--hidden-size", 64, "--num-attention-heads", 2, "--seq-length", 64]
    if budget < 10:
        return ["--num-layers", 96, "--hidden-size", 128, "--num-attention-heads", 4, "--seq-length", 128]
    return ["--num-layers", 192, "--hidden-size", 128, "--num-attention-heads", 4, "--seq-length", 128]


def overview(fig_dir: Path, out: Path) -> None:
    plt = C.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = [("preln", "forward_var", "Pre-LN forward variance"), ("preln", "grad_var", "Pre-LN gradient variance"),
              ("postln", "grad_var", "Post-LN gradient variance")]
    for ax, (ln, key, title) in zip(axes, panels):
        for scheme in ("xavier", "dslm"):
            path = fig_dir / f"{scheme}_{ln}_moments.jsonl"
            if not path.exists():
                continue
            recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            pts = [(r["layer"], r[key]) for r in recs if r.get(key) is not None and r["layer"] >= 1]
            if pts:
                ax.plot(*zip(*pts), label=scheme)
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "signal_propagation.png", dpi=80)
    plt.close(fig)


def main():
    ap = C.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), default_budget=6)
    args = ap.parse_args()
    out = Path(args.out)
    fig_dir = out / "signal_propagation"
    if args.gpu_scale:
        C.write_gpu_scale("signal_propagation", [f"python scripts/signal_propagation_figures.py --gpu-scale "
                                                 f"--seeds 2 --out-dir {os.path.relpath(fig_dir, C.REPO)}"], out)
        return
    t0 = time.time()
    cmd = [FIGURES, *size_for(args.budget), "--seed", args.seed, "--out-dir", fig_dir]
    res = C.run_cmd(cmd, C.WORK / "logs" / "signal_propagation.log")
    summary_path = fig_dir / "signal_propagation_summary.json"
    if res["rc"] != 0 or not summary_path.exists():
        sys.exit(f"signal_propagation_figures.py failed (rc {res['rc']}); see {res['log']}")
    summary = json.loads(summary_path.read_text())
    rows = [{"run": name, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in info.items()}}
            for name, info in summary["runs"].items()]
    C.write_rows(rows, out / "signal_propagation.csv")
    C.write_json({"budget_min": args.budget, "seed": args.seed, "command": res["command"], "wall_s": res["wall_s"],
                  "source": summary.get("source"), "rows": rows}, out / "signal_propagation.json")
    overview(fig_dir, out)
    print(f"wrote {out}/signal_propagation.{{csv,json,png}} and {fig_dir}/ in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
