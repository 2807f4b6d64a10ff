"""Pretraining data order: deterministic sequential batches per data-parallel rank that resume mid-epoch."""

from __future__ import annotations

import torch


class PretrainingSampler:
    """Deterministic sequential batches that resume at ``consumed_samples`` (each DP rank takes its slice)."""

    def __init__(self, total_samples: int, consumed_samples: int, micro_batch_size: int, dp_rank: int,
                 dp_size: int):
        self.total, self.consumed = total_samples, consumed_samples
        self.mbs, self.dp_rank, self.dp_size = micro_batch_size, dp_rank, dp_size

    def __len__(self):
        return (self.total - self.consumed) // (self.mbs * self.dp_size)

    def __iter__(self):
        step = self.mbs * self.dp_size
        for start in range(self.consumed, self.total - step + 1, step):
            first = start + self.dp_rank * self.mbs
            yield list(range(first, first + self.mbs))


def build_data_iterator(dataset, consumed_samples: int, args, cyclic: bool = False):
    """An iterator of micro-batches (dicts of tensors) for this data-parallel rank; None for no dataset."""
    from megatron.core import parallel_state as ps
    from megatron.perf import cpu_compat

    if dataset is None or len(dataset) == 0:
        return None
    # CPU mode on a GPU host: pinning would open a CUDA context for nothing
    pin_memory = torch.cuda.is_available() and not cpu_compat.is_cpu_mode()

    def batches():
        consumed = consumed_samples % len(dataset) if cyclic else consumed_samples
        while True:
            sampler = PretrainingSampler(len(dataset), consumed, args.micro_batch_size,
                                         ps.get_data_parallel_rank(), ps.get_data_parallel_world_size())
            # Own generator: a DataLoader otherwise draws its base seed from the global RNG, which shifts
            # the dropout stream and breaks exact resume.
            loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=args.num_workers,
                                                 pin_memory=pin_memory,
                                                 generator=torch.Generator().manual_seed(args.seed))
            yield from loader
            if not cyclic:
                return
            consumed = 0

    return batches()


def num_samples_per_split(args):
    """[train, valid, test] sample counts the dataset providers must supply for this run."""
    gbs = args.global_batch_size
    evals = (args.train_iters // args.eval_interval + 1) * args.eval_iters if args.eval_iters else 0
    return [args.train_iters * gbs, evals * gbs, 0]  # the test split is never evaluated during pretraining
