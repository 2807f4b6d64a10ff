"""Cost of moment logging and of DSLM itself, measured on the real training step (same shape, same run).

Three variants share one process and one data batch:
- ``megatron``: default init, lambda = beta = 1 (the stock residual path)
- ``dslm``: DSLM init and lambda/beta residual scaling
- ``dslm +moments@100``: the same DSLM model with --log-moments-interval 100 (hooks attached on the
  100th step of every 100, removed afterwards)

Every step is timed. Runs are interleaved in blocks of ``--interval`` steps, the variant order rotating
from block to block, so slow drifts of a shared CPU (other processes, thermal, page cache) hit every
variant alike. A round is ``--iters`` steps of each variant; the reported per-variant numbers are the
median over ``--rounds`` rounds of the round mean (the average over ``--iters`` steps)
and, as a noise-robust cross-check, the overhead estimated from medians of single steps:
(median hooked step - median plain step) / interval.
Targets: moments@100 <= 3 % over dslm; dslm vs megatron <= 2 % apart.

    python scripts/bench_moments.py [--shape 24x64] [--iters 200] [--rounds 5]
    OMP_NUM_THREADS=1 python scripts/bench_moments.py --clock cpu     # on a VM with noisy neighbours
"""

import argparse
import statistics
import sys
import time

import bench_train  # run as a script: scripts/ is on sys.path


def timed_block(step, hooked, n, clock):
    """n steps; the last one hooked when ``hooked`` is given. Returns the per-step times."""
    times = []
    for i in range(n):
        fn = hooked if (hooked is not None and i == n - 1) else step
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="24x64", help="LAYERSxHIDDEN[:SEQ]")
    p.add_argument("--iters", type=int, default=200, help="steps per variant per round (multiple of --interval)")
    p.add_argument("--interval", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--micro-batch-size", type=int, default=4)
    p.add_argument("--attention-backend", default="auto", choices=["auto", "local", "sdpa"])
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="wall: time.perf_counter; cpu: time.process_time (CPU seconds of this process, blind to "
                        "time the VM or OS gave to others; run with OMP_NUM_THREADS=1 so idle spinning threads "
                        "do not count)")
    a = p.parse_args()
    clock = time.perf_counter if a.clock == "wall" else time.process_time
    if a.iters % a.interval:
        sys.exit(f"error: --iters ({a.iters}) must be a multiple of --interval ({a.interval})")
    dims, _, seq = a.shape.partition(":")
    layers, d = (int(v) for v in dims.split("x"))
    seq = int(seq or 128)
    heads = max(1, d // 32)
    mom_name = f"dslm +moments@{a.interval}"
    variants = {}
    for scheme in ("megatron", "dslm"):
        step, hooked = bench_train.megatron_step_fn(layers, d, heads, seq, a.micro_batch_size, scheme,
                                                    a.attention_backend, gpu=False)
        for _ in range(3):
            step()
        hooked()  # first hooked step allocates the observer's buffers
        variants[scheme] = (step, None)
        if scheme == "dslm":
            variants[mom_name] = (step, hooked)
    names = list(variants)
    round_means = {n: [] for n in names}
    step_times = {n: [] for n in names}
    hooked_times = []
    blocks = a.iters // a.interval
    for r in range(a.rounds):
        acc = {n: [] for n in names}
        for b in range(blocks):
            k = (r * blocks + b) % len(names)
            for name in names[k:] + names[:k]:
                step, hooked = variants[name]
                t = timed_block(step, hooked, a.interval, clock)
                acc[name] += t
                if hooked is not None:
                    hooked_times.append(t[-1])
                    step_times[name] += t[:-1]
                else:
                    step_times[name] += t
        for n in names:
            round_means[n].append(statistics.fmean(acc[n]))
        print(f"round {r + 1}/{a.rounds}: " + ", ".join(f"{n} {1e3 * round_means[n][-1]:.1f} ms/step"
                                                        for n in names), flush=True)
    med = {n: statistics.median(v) for n, v in round_means.items()}
    print(f"\nshape {layers}x{d} seq {seq} heads {heads} micro-batch {a.micro_batch_size}, "
          f"{a.iters} steps per variant per round, {a.rounds} rounds interleaved in blocks of {a.interval}, "
          f"attention {a.attention_backend}, threads {bench_train.torch.get_num_threads()}, clock {a.clock}")
    print("| variant | mean ms/step (median of rounds) | median single step ms | vs dslm |")
    print("|---|---:|---:|---:|")
    for n in names:
        print(f"| {n} | {1e3 * med[n]:.1f} | {1e3 * statistics.median(step_times[n]):.1f} | "
              f"{med[n] / med['dslm']:.3f} |")
    print(f"| one hooked step | | {1e3 * statistics.median(hooked_times):.1f} | |")
    mom = med[mom_name] / med["dslm"] - 1
    plain = statistics.median(step_times["dslm"] + step_times[mom_name])
    mom_robust = (statistics.median(hooked_times) - plain) / (a.interval * plain)
    gap = med["dslm"] / med["megatron"] - 1
    gap_robust = statistics.median(step_times["dslm"]) / statistics.median(step_times["megatron"]) - 1
    print(f"moment logging overhead: {100 * mom:+.2f} % from round means, {100 * mom_robust:+.2f} % from "
          f"step medians (target <= 3 %)")
    print(f"dslm vs megatron: {100 * gap:+.2f} % from round means, {100 * gap_robust:+.2f} % from step medians "
          f"(target within 2 %)")


if __name__ == "__main__":
    main()
