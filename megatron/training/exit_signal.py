"""Upstream's ``--exit-signal-handler``: a signal (SIGTERM by default, ``--exit-signal``) asks the run to stop.

Cluster schedulers send SIGTERM before they preempt a job. The handler only records the signal; the training loop
asks after every iteration (max-reduced over ranks, so every rank stops at the same iteration), then saves a
checkpoint and exits with status 0, skipping the end-of-training evaluation. Without the flag the signal keeps its
default meaning.
"""

from __future__ import annotations

import signal
from typing import Optional

import torch

SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2")


class ExitSignal:
    """Records ``signame`` once installed; :meth:`received` is True on every rank once any rank got it."""

    def __init__(self, signame: str = "SIGTERM"):
        self.signame = signame
        self._got = False
        self._previous = None

    def __enter__(self) -> "ExitSignal":
        self._previous = signal.signal(getattr(signal, self.signame), self._handle)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(getattr(signal, self.signame), self._previous)

    def _handle(self, signum, frame) -> None:
        self._got = True

    def received(self) -> bool:
        got = torch.tensor([float(self._got)])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            from megatron.perf import cpu_compat

            if not cpu_compat.is_cpu_mode():
                got = got.cuda()
            torch.distributed.all_reduce(got, op=torch.distributed.ReduceOp.MAX)
        return bool(got.item())


def from_args(args) -> Optional[ExitSignal]:
    """An :class:`ExitSignal` for ``--exit-signal-handler`` runs, else None."""
    if not getattr(args, "exit_signal_handler", False):
        return None
    return ExitSignal(getattr(args, "exit_signal", "SIGTERM"))
