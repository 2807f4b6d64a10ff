"""The predict CLI: JSON layout, warnings, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

from megatron.dslm import predict

BASE = ["--num-layers", "24", "--hidden-size", "256", "--num-attention-heads", "4", "--seq-length", "64"]


def test_json_layout(tmp_path, capsys):
    out = tmp_path / "sub" / "profile.json"
    assert predict.main(BASE + ["--init-scheme", "dslm", "--post-ln", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["config"]["num_layers"] == 24 and payload["config"]["post_ln"] is True
    layers = payload["layers"]
    assert [row["layer"] for row in layers] == list(range(1, 25))
    assert set(payload) == {"config", "layers"}
    assert set(layers[0]) == {"layer", "forward_var", "forward_corr", "grad_var"}
    assert layers[-1]["grad_var"] == 1.0
    assert not list(out.parent.glob(".tmp-*"))


def test_warns_on_pre_ln_growth_and_saturating_logits(capsys):
    assert predict.main(BASE + ["--init-scheme", "xavier", "--num-layers", "64"]) == 0
    assert "forward variance changes" in capsys.readouterr().err
    assert predict.main(BASE + ["--init-scheme", "megatron", "--init-method-std", "0.3"]) == 0
    assert "attention logits saturate" in capsys.readouterr().err


def test_bad_arguments_exit_nonzero_with_one_line():
    for extra in (["--init-scheme", "nope"], ["--hidden-dropout", "1.5"], ["--num-attention-heads", "3"]):
        proc = subprocess.run(
            [sys.executable, "-m", "megatron.dslm.predict", *BASE, *extra], capture_output=True, text=True
        )
        assert proc.returncode != 0
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
