"""Per-file checksums of a checkpoint: ``<iter_dir>/checksums.json``, written before the checkpoint is published
and verified before it is loaded.

The manifest maps each file's path relative to the checkpoint folder to its size and SHA-256:
``{"format": 1, "algorithm": "sha256", "files": {"__0_0.distcp": {"size": 1469512, "sha256": "…"}, …}}``.
SHA-256: in Python's standard library, hardware-accelerated on current x86 (SHA-NI) and ARM CPUs, the algorithm of
upstream Megatron-LM's integrity manifest, and checkable by hand with ``sha256sum``; zlib's CRC-32 was at most
twice as fast where measured (docs/reliability.md). Sizes are compared first, so a truncated or missing file is
found without reading anything. Under torch.distributed every rank hashes its share
of the files (file i on rank i mod world size), so the cost per rank shrinks with the number of ranks.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Callable, List, Optional

from megatron.training import durable

MANIFEST = "checksums.json"
ALGORITHM = "sha256"
_FORMAT = 1
_CHUNK = 8 << 20


def file_digest(path: str) -> str:
    """Hex SHA-256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(ckpt_dir: str) -> List[str]:
    """Every file under ``ckpt_dir`` but the manifest, as sorted '/'-separated relative paths."""
    found = []
    for folder, _subdirs, names in os.walk(ckpt_dir):
        for name in names:
            rel = os.path.relpath(os.path.join(folder, name), ckpt_dir).replace(os.sep, "/")
            if rel != MANIFEST:
                found.append(rel)
    return sorted(found)


def _shared_map(fn: Callable, items: List) -> List:
    """``[fn(x) for x in items]``, each rank computing every world-size-th item; every rank gets all results."""
    import torch

    if not (torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1):
        return [fn(x) for x in items]
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    mine = [(i, fn(items[i])) for i in range(rank, len(items), world)]
    gathered: List = [None] * world
    torch.distributed.all_gather_object(gathered, mine)
    results: List = [None] * len(items)
    for part in gathered:
        for i, value in part:
            results[i] = value
    return results


def seal(ckpt_dir: str) -> dict:
    """Sync every file of ``ckpt_dir`` to disk, hash it and write the manifest (synced too), then sync the folders.

    Collective under torch.distributed (call on every rank once all ranks finished writing); rank 0 writes."""
    import torch

    def entry(rel: str):
        path = os.path.join(ckpt_dir, rel)
        durable.fsync_file(path)
        return {"size": os.path.getsize(path), ALGORITHM: file_digest(path)}

    files = _files(ckpt_dir)
    manifest = {"format": _FORMAT, "algorithm": ALGORITHM, "files": dict(zip(files, _shared_map(entry, files)))}
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        with open(os.path.join(ckpt_dir, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        durable.fsync_dirs(ckpt_dir)
    return manifest


def has_manifest(ckpt_dir: str) -> bool:
    return os.path.isfile(os.path.join(ckpt_dir, MANIFEST))


def _read_manifest(ckpt_dir: str):
    """(files entries, None) or (None, the problem)."""
    try:
        with open(os.path.join(ckpt_dir, MANIFEST)) as f:
            manifest = json.load(f)
        files = manifest["files"]
        if manifest.get("algorithm") != ALGORITHM:
            return None, f"{MANIFEST}: algorithm {manifest.get('algorithm')!r} is not {ALGORITHM!r}"
        bad = next((rel for rel, e in files.items() if not (isinstance(e, dict) and isinstance(e.get("size"), int)
                                                             and isinstance(e.get(ALGORITHM), str))), None)
        if bad is not None:
            return None, f"{MANIFEST}: unreadable (the entry of {bad} lacks its size or {ALGORITHM})"
        return files, None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, f"{MANIFEST}: unreadable ({exc.__class__.__name__}: {exc})"


def _size_problem(ckpt_dir: str, rel: str, entry: dict) -> Optional[str]:
    path = os.path.join(ckpt_dir, rel)
    if not os.path.isfile(path):
        return f"{rel}: missing ({MANIFEST} lists {entry.get('size')} bytes)"
    size = os.path.getsize(path)
    if size != entry.get("size"):
        return f"{rel}: {size} bytes but {MANIFEST} lists {entry.get('size')} (truncated or overwritten)"
    return None


def verify(ckpt_dir: str) -> Optional[str]:
    """None if every file listed in the manifest is there with its size and hash, else '<file>: <what is wrong>'
    for the first bad file. Collective under torch.distributed (every rank gets the same verdict)."""
    files, problem = _read_manifest(ckpt_dir)
    if problem is None:
        problem = next((p for p in (_size_problem(ckpt_dir, rel, files[rel]) for rel in sorted(files)) if p), None)

    def hash_problem(rel: str) -> Optional[str]:
        try:
            if file_digest(os.path.join(ckpt_dir, rel)) == files[rel].get(ALGORITHM):
                return None
        except OSError as exc:
            return f"{rel}: unreadable ({exc})"
        return f"{rel}: {ALGORITHM} differs from {MANIFEST}, the file changed since the save"

    hashed = _shared_map(hash_problem, [] if problem else sorted(files))
    return problem or next((p for p in hashed if p), None)

