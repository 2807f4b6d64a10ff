"""Peer check of finetuning against transformers (``scripts/peer_finetune.py --probe``): with dropout off, the
same pretrained MiniLM, the same head init, batches and schedule, ``tasks/main.py`` and a plain transformers loop
must train identically — loss, gradient norm and learning rate at every step. Any difference in the model code
(attention mask, pooler, head), the tokenizers, the readers, the optimizer or the schedule shows up here."""

from __future__ import annotations

import json

import pytest

from tests.support import REPO_ROOT, minilm_wheel, require_shared_data, run_python
from tests.training.gpt_cases import assert_ok


@pytest.mark.slow
def test_probe_ours_and_transformers_train_step_for_step(tmp_path):
    data = require_shared_data("finetune")
    wheel = minilm_wheel(tmp_path)
    out = tmp_path / "probe.json"
    proc = run_python([str(REPO_ROOT / "scripts" / "peer_finetune.py"), "--probe", "4", "--tiny", "--tasks", "QQP", "RACE",
                       "--data", str(data), "--work", str(tmp_path / "work"), "--wheel", wheel, "--out", str(out)],
                      timeout=1500)
    assert_ok(proc)
    traces = json.loads(out.read_text())["traces"]
    for task in ("QQP", "RACE"):
        ours, theirs = traces[task]["ours"], traces[task]["transformers"]
        assert [t["step"] for t in ours] == [t["step"] for t in theirs] == [1, 2, 3, 4], task
        for a, b in zip(ours, theirs):
            assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(b["loss"]), (task, a, b)
            assert abs(a["grad_norm"] - b["grad_norm"]) <= 2e-3 + 1e-3 * b["grad_norm"], (task, a, b)  # ours: 3 decimals
            assert abs(a["lr_after"] - b["lr_after"]) <= 1e-9 + 1e-6 * b["lr_after"], (task, a, b)
