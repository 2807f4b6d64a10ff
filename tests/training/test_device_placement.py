"""Every forward step hands the model its inputs on the model-input device, at TP=1 and TP>1.

On CPU the data and the model share a device, so a forgotten move is invisible; with the target set to
``meta`` (megatron.training.device.input_device_override) any tensor left behind shows up. The model is a
stand-in that checks its arguments and stops the step with a sentinel.

DEVICE_PLACEMENT_SOURCE_DIR=<dir> runs the same checks against other copies of pretrain_gpt.py,
pretrain_bert.py and tasks/finetune.py (e.g. an older revision) laid out as in the repository.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SOURCE_DIR = Path(os.environ.get("DEVICE_PLACEMENT_SOURCE_DIR", REPO))
META = torch.device("meta")


class Reached(Exception):
    """Raised by the stand-in model once it has checked its inputs."""


def load(relpath: str):
    """The module at SOURCE_DIR/relpath, under a private name (the repository's copy stays importable)."""
    name = "_placement_" + relpath.replace("/", "_").removesuffix(".py")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SOURCE_DIR / relpath)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def checking_model(*args, **kwargs):
    """Fail on any tensor argument not on ``meta``; otherwise stop the step (nothing to compute on meta)."""
    off = [f"{key}: {v.device}" for key, v in list(enumerate(args)) + sorted(kwargs.items())
           if isinstance(v, torch.Tensor) and v.device != META]
    assert not off, "model inputs not on the input device (meta): " + ", ".join(off)
    assert any(isinstance(v, torch.Tensor) for v in list(args) + list(kwargs.values()))
    raise Reached


def gpt_batch(b=2, s=8):
    tokens = torch.randint(0, 50, (b, s + 1))
    return {"tokens": tokens[:, :-1], "labels": tokens[:, 1:], "loss_mask": torch.ones(b, s),
            "position_ids": torch.arange(s).expand(b, s)}


def bert_batch(b=2, s=8):
    ints = lambda *shape: torch.randint(0, 2, shape, dtype=torch.int64)  # noqa: E731
    return {"text": torch.randint(0, 50, (b, s)), "types": ints(b, s), "labels": torch.randint(0, 50, (b, s)),
            "loss_mask": ints(b, s), "padding_mask": torch.ones(b, s, dtype=torch.int64), "is_random": ints(b)}


def finetune_batch(b=2, s=8, choices=0):
    shape = (b, choices, s) if choices else (b, s)
    return {"text": torch.randint(0, 50, shape), "types": torch.zeros(shape, dtype=torch.int64),
            "padding_mask": torch.ones(shape, dtype=torch.int64),
            "label": torch.randint(0, max(choices, 2), (b,)), "index": torch.arange(b)}


def steps():
    """(name, forward step taking (iterator, model), batch) for every micro-batch path."""
    gpt, bert, finetune = load("pretrain_gpt.py"), load("pretrain_bert.py"), load("tasks/finetune.py")
    return [
        ("gpt", gpt.forward_step, gpt_batch()),
        ("bert", lambda it, m: bert.forward_step(it, m, True, False), bert_batch()),
        ("bert-masked-positions", lambda it, m: bert.forward_step(it, m, True, True), bert_batch()),
        ("finetune-classification", finetune.forward_step, finetune_batch()),
        ("finetune-multiple-choice", finetune.forward_step, finetune_batch(choices=3)),
        # evaluation (predict) runs the same step with a prediction collector
        ("finetune-evaluation", lambda it, m: finetune.forward_step(it, m, collector=[]), finetune_batch()),
    ]


def check_all_paths(rank: int = 0) -> list:
    """Run every path under the meta override; BERT and finetuning TP ranks > 0 get the broadcast batch."""
    from megatron.training.device import input_device_override

    done = []
    for name, step, batch in steps():
        data = iter([batch] if rank == 0 or name == "gpt" else [])  # GPT reads its data on every rank
        with input_device_override(META), pytest.raises(Reached):
            step(data, checking_model)
        done.append(name)
    return done


PATHS = ["gpt", "bert", "bert-masked-positions", "finetune-classification", "finetune-multiple-choice",
         "finetune-evaluation"]


@pytest.mark.usefixtures("single_process_megatron")
@pytest.mark.parametrize("index", range(len(PATHS)), ids=PATHS)
def test_tp1_inputs_reach_the_model_on_the_input_device(index):
    from megatron.training.device import input_device_override

    name, step, batch = steps()[index]
    assert name == PATHS[index]
    with input_device_override(META), pytest.raises(Reached):
        step(iter([batch]), checking_model)


def test_override_is_scoped_and_default_follows_cpu_mode():
    from megatron.training.device import input_device, input_device_override, to_input_device
    from megatron.perf import cpu_compat

    before = input_device()
    with input_device_override("meta"):
        moved = to_input_device({"a": torch.ones(2, dtype=torch.int32), "n": 3}, torch.int64)
        assert moved["a"].device == META and moved["a"].dtype == torch.int64 and moved["n"] == 3
    assert input_device() == before
    if cpu_compat.is_cpu_mode():
        assert before == torch.device("cpu")


@pytest.mark.dist
def test_tp2_inputs_reach_the_model_on_the_input_device():
    """After megatron's broadcast_data too (2 ranks, TP=2): every rank's model gets meta tensors."""
    from tests.support import run_torchrun

    env = {"DEVICE_PLACEMENT_SOURCE_DIR": str(SOURCE_DIR)}
    proc = run_torchrun(2, [str(Path(__file__)), "--tp2"], timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for rank in (0, 1):
        assert f"rank {rank}: " + ",".join(PATHS) in proc.stdout


if __name__ == "__main__" and sys.argv[1:] == ["--tp2"]:
    # run by run_torchrun: the repo root comes on PYTHONPATH (tests.support.cpu_env), no sys.path edit
    from megatron.training.initialize import initialize_distributed, set_random_seed

    initialize_distributed(2, 1)
    set_random_seed(1)
    rank = torch.distributed.get_rank()
    print(f"rank {rank}: " + ",".join(check_all_paths(rank)), flush=True)
    torch.distributed.destroy_process_group()
