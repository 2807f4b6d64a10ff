"""Monte-Carlo check of every closed form in ``megatron.dslm.theory`` on CPU.

    python -m megatron.dslm.simulate [--quick] [--component NAME] [--seed 0]

Each component is run on random configurations drawn from a sweep like the reference's (input
mean/std/correlation, weight std, gradient std/correlation, widths, lengths, dropout), scaled to CPU.
For every quantity it prints the 50/90/99th percentile of |predicted - measured| / |measured| beside
the reference's numbers (docs/theory.md, "Monte-Carlo verification"). The measurements live in
``megatron.dslm.montecarlo``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Dict, List

import numpy as np
import torch

from .montecarlo import COMPONENTS, REFERENCE, relative_errors


def format_table(results: Dict[str, Dict[str, List[float]]]) -> str:
    lines = [
        "| component | quantity | configs | ours 50% | ours 90% | ours 99% | reference 50/90/99 % |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, per_quantity in results.items():
        for quantity, errs in per_quantity.items():
            p50, p90, p99 = (100.0 * float(np.percentile(errs, q)) for q in (50, 90, 99))
            ref = REFERENCE.get((name, quantity))
            ref_text = "/".join(f"{v:g}" for v in ref) if ref else "-"
            lines.append(f"| {name} | {quantity} | {len(errs)} | {p50:.2f} | {p90:.2f} | {p99:.2f} | {ref_text} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m megatron.dslm.simulate", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few configurations per component (smoke run)")
    parser.add_argument("--component", choices=sorted(COMPONENTS), help="run one component only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = [args.component] if args.component else list(COMPONENTS)
    start = time.time()
    results = {}
    for name in names:
        _, _, full_count, quick_count = COMPONENTS[name]
        t0 = time.time()
        results[name] = relative_errors(name, quick_count if args.quick else full_count, args.seed)
        print(f"{name}: {time.time() - t0:.1f} s", file=sys.stderr)
    print(format_table(results))
    print(f"\nwall time {time.time() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
