"""What differs between the megatron-core releases this project supports (>=0.16.1,<0.20), in one place.

0.16.1 runs on Python 3.10/3.11; 0.17 and later declare Python >= 3.12. Tested: 0.16.1 and 0.19.2; 0.17 and 0.18
are inside the range but untested (their sources were read for the differences below). Every version-dependent
lookup of the training stack is made here; the rest of the code imports the answer and does not look at the
version itself. What differs (docs/compatibility.md has the full table):

* dist_checkpointing's common state: 0.16 (and 0.17, 0.18) writes the non-sharded part of a checkpoint (args,
  iteration, RNG, scheduler) to ``common.pt`` beside the torch_dist files; 0.19 stores it inside the torch_dist
  files as the ``common_state`` object and writes no ``common.pt``. 0.19 still reads a ``common.pt`` when one is
  present, so a checkpoint saved with 0.16 loads with 0.19; one saved with 0.19 does not load with 0.16.
  :data:`CHECKPOINT_REQUIRED_FILES` is what a checkpoint cannot load without under the installed release.

The CPU shim that 0.19 needs beyond 0.16 (its DDP asks for ``torch.cuda.current_stream()`` on every grad sync;
0.17 and 0.18 only with several distributed-optimizer instances) is patch 6 of :mod:`megatron.perf.cpu_compat`;
that patch changes nothing under 0.16, so it is applied for both.
"""

from __future__ import annotations

from importlib import metadata
from typing import Tuple


def _release(text: str) -> Tuple[int, ...]:
    """``"0.19.2"`` -> ``(0, 19, 2)``; a suffix such as ``rc1`` or ``+local`` ends the number."""
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) < len(piece):
            break
    return tuple(parts)


def _installed_version() -> str:
    try:
        return metadata.version("megatron-core")
    except metadata.PackageNotFoundError:  # a source checkout on sys.path: ask the package itself
        from megatron.core.package_info import __version__

        return __version__


MCORE_VERSION: str = _installed_version()
MCORE_RELEASE: Tuple[int, ...] = _release(MCORE_VERSION)

# True from 0.19 on: the common state lives inside the torch_dist files, not in common.pt.
COMMON_STATE_IN_SHARDS: bool = MCORE_RELEASE >= (0, 19)

# What a torch_dist checkpoint cannot load without (checked when it has no checksums.json to say so).
CHECKPOINT_REQUIRED_FILES: Tuple[str, ...] = (
    ("metadata.json", ".metadata") if COMMON_STATE_IN_SHARDS else ("metadata.json", ".metadata", "common.pt"))
