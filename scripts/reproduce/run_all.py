"""Run every miniature reproduction within one total budget (minutes on a 2-core CPU).

    python scripts/reproduce/run_all.py --budget 60            # the committed docs/results/
    python scripts/reproduce/run_all.py --budget 4 --out /tmp/r  # smoke check of the whole suite
    python scripts/reproduce/run_all.py --gpu-scale            # write every paper-scale argument set

The budget is split in fixed shares (signal propagation 10%, depth vs width 50%, depth stress 25%,
downstream 15%); downstream reuses depth_vs_width's BERT checkpoints, so it runs last.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import common as C

SHARES = [("signal_propagation", 0.10), ("depth_vs_width", 0.50), ("depth_stress", 0.25), ("downstream", 0.15)]


def main():
    ap = C.add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), default_budget=60)
    ap.add_argument("--only", default=None, help="comma list of experiments to run")
    args = ap.parse_args()
    here = Path(__file__).resolve().parent
    t0 = time.time()
    walls = {}
    for name, share in SHARES:
        if args.only and name not in args.only.split(","):
            continue
        cmd = [sys.executable, str(here / f"{name}.py"), "--out", args.out, "--seed", str(args.seed)]
        cmd += ["--gpu-scale"] if args.gpu_scale else ["--budget", f"{max(args.budget * share, 1):g}"]
        print("$ " + " ".join(cmd[1:]), flush=True)
        t = time.time()
        rc = subprocess.run(cmd, cwd=C.REPO).returncode
        walls[name] = round(time.time() - t, 1)
        if rc != 0:
            print(f"{name} failed (rc {rc}); continuing", flush=True)
    print(f"wall times (s): {walls}; total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
