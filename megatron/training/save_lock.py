"""One writer per checkpoint directory.

Two runs saving into one ``--save`` overwrite each other's iterations and move the tracker backwards. Rank 0
takes ``<save>/writer.lock`` at start-up (created exclusively; it holds host, pid and start time) and removes it at
exit. A second run refuses at once with one line naming the holder. A lock left by a dead process on this host
is taken over with a warning; one from another host cannot be checked from here, so the message says how to
remove it. A run that does not resume from ``--save`` also refuses to write into a folder whose tracker names a
checkpoint, so the tracker never moves backwards by accident.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import time

from megatron.training.validate import ConfigError

LOCK_FILE = "writer.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("start", 0)))
    return f"host {holder.get('host')} pid {holder.get('pid')} since {started}"


def acquire(save_dir: str, warn=print) -> str:
    """Take the lock of ``save_dir`` for this process (released at exit); returns the lock's path."""
    os.makedirs(save_dir, exist_ok=True)
    path = os.path.join(save_dir, LOCK_FILE)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "start": time.time()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(open(path).read() or "{}")
            except (OSError, ValueError):
                holder = {}
            if holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
                warn(f"> warning: taking over the lock of --save {save_dir} left by a dead run ({_describe(holder)})")
                os.unlink(path)
                continue
            where = (f"{_describe(holder)}" if holder else "an unreadable lock")
            raise ConfigError(f"--save {save_dir} is in use by another run ({where}): one writer per checkpoint "
                              f"directory; if that run is gone, delete {path}")
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
            f.flush()
            os.fsync(f.fileno())
        atexit.register(release, path, me["pid"])
        return path
    raise ConfigError(f"--save {save_dir}: could not take {path}")


def release(path: str, pid: int) -> None:
    """Remove the lock if this process still holds it."""
    try:
        if json.loads(open(path).read()).get("pid") == pid:
            os.unlink(path)
    except (OSError, ValueError):
        pass


def check_tracker_direction(args, read_tracker) -> None:
    """A run that does not resume from --save must not write into a folder that already has checkpoints."""
    saved = read_tracker(args.save)
    if not saved:
        return
    resumes_here = args.load is not None and os.path.abspath(args.load) == os.path.abspath(args.save)
    if not resumes_here or getattr(args, "finetune", False):
        raise ConfigError(f"--save {args.save} already holds checkpoints up to iteration {saved} and this run does "
                          f"not resume from it (--load {args.load}): its saves would move the tracker backwards; "
                          "resume with --load pointing there, or choose another --save")
