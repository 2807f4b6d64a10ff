"""Shared test helpers: locating the optional shared data folder and running torchrun jobs on CPU."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """The real-data folder (../shared/data next to the repo, or $DSLM_SHARED_DATA); None if absent."""
    path = Path(os.environ.get("DSLM_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    return path if path.is_dir() else None


def require_shared_data(*parts: str) -> Path:
    """Return shared-data path or skip the test with the reason."""
    root = shared_data_dir()
    if root is None:
        pytest.skip("real data folder not found: set DSLM_SHARED_DATA to a folder like ../shared/data")
    path = root.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found in the shared data folder")
    return path


def cpu_env(extra: dict | None = None) -> dict:
    """Environment for subprocesses: CPU mode, one thread per rank, offline hubs, repo on the path."""
    # Drop launcher/process-group variables: a pytest process that initialised a group in-process would
    # otherwise hand its MASTER_PORT/RANK to the child (EADDRINUSE or a hang).
    launcher = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT"}
    env = {k: v for k, v in os.environ.items() if k not in launcher and not k.startswith(("TORCHELASTIC_", "ROLE_"))}
    env.update(
        OMP_NUM_THREADS="1",
        HF_DATASETS_OFFLINE="1",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONWARNINGS="ignore",
    )
    if extra:
        env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torchrun(nproc: int, argv: list[str], timeout: float = 600, env: dict | None = None,
                 cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``torchrun --nproc_per_node nproc <argv>`` on CPU; returns the completed process (text output)."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *argv,
    ]
    return subprocess.run(cmd, cwd=cwd or REPO_ROOT, env=cpu_env(env), capture_output=True, text=True,
                          timeout=timeout)


def run_python(argv: list[str], timeout: float = 600, env: dict | None = None,
               cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python <argv>`` with the CPU test environment."""
    return subprocess.run([sys.executable, *argv], cwd=cwd or REPO_ROOT, env=cpu_env(env),
                          capture_output=True, text=True, timeout=timeout)
