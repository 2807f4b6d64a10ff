"""Which checkpoints ``--save-keep-last N`` removes once a new one is published.

The N newest checkpoints up to the one the tracker names are kept (that one included); older ones go. Never
removed: the checkpoint the tracker names, any folder still being written (``iter_*.tmp`` is not a checkpoint
yet), and checkpoints newer than the tracker: those are left by an earlier run this one fell back from
(``--ckpt-fallback-to-verified``), kept for inspection and replaced when this run saves that iteration.
"""

from __future__ import annotations

from typing import Iterable, List


def to_remove(published: Iterable[int], tracker_iteration: int, keep_last: int) -> List[int]:
    """The iterations of ``published`` (complete checkpoint folders) to delete, oldest first."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    older = sorted(i for i in set(published) if i < tracker_iteration)
    return older[:max(len(older) - (keep_last - 1), 0)]
