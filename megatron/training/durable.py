"""Durable writes: what is on disk before a checkpoint is named survives a power loss, not only a crash.

A rename is atomic for other processes at once, but the kernel may write it (and the data of the files it
moves) to disk in any order later: after a power cut the tracker can name a folder whose files are empty.
Syncing each file, then its folder, then renaming and syncing the folder that holds the new name, fixes the
order. Small files (the tracker) are replaced by writing a temporary file, syncing it, renaming it over the old
one and syncing the folder.
"""

from __future__ import annotations

import os


def fsync_file(path: str) -> None:
    """Flush the data of ``path`` (written by any process) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """Flush the entries of folder ``path`` (created, renamed or removed names) to disk."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dirs(root: str) -> None:
    """Sync every folder under ``root``, deepest first, ``root`` last (the files are synced separately)."""
    for folder, _subdirs, _files in os.walk(root, topdown=False):
        fsync_dir(folder)


def replace(src: str, dst: str) -> None:
    """``os.replace(src, dst)``, then sync the folder that now holds ``dst`` (and ``src``'s, if another)."""
    os.replace(src, dst)
    parent = os.path.dirname(os.path.abspath(dst))
    fsync_dir(parent)
    src_parent = os.path.dirname(os.path.abspath(src))
    if src_parent != parent:
        fsync_dir(src_parent)


def write_text(path: str, text: str) -> None:
    """Replace ``path`` with ``text``: write ``path.tmp``, sync it, rename it over ``path``, sync the folder."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    replace(tmp, path)
