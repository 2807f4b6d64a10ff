"""plot_moments: several iterations in one figure, iteration 0 (and the last) by default, theory overlaid."""

from __future__ import annotations

import json

import pytest

from megatron.dslm import plot_moments

FLAGS = ["--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", "8",
         "--init-scheme", "dslm"]


def _write(path, iterations):
    with open(path, "w") as fh:
        for it in iterations:
            for layer in range(3):
                fh.write(json.dumps({"iteration": it, "layer": layer, "forward_var": 1.0 + it + layer,
                                     "forward_corr": 0.1 * layer, "grad_var": 0.5 + layer}) + "\n")


def _capture(monkeypatch):
    seen = {}

    def fake(records, out, title="", predicted=None, panels=plot_moments.PANELS):
        seen.update(records=records, predicted=predicted, title=title)
        return out

    monkeypatch.setattr(plot_moments, "plot_profiles", fake)
    return seen


def test_default_is_iteration_zero_and_the_last_with_the_init_prediction(tmp_path, monkeypatch):
    path = tmp_path / "m.jsonl"
    _write(path, [0, 5, 9])
    seen = _capture(monkeypatch)
    plot_moments.main(["--moments-file", str(path), "--out", str(tmp_path / "x.png"), *FLAGS])
    assert sorted(seen["records"]) == [0, 9]
    assert [r["forward_var"] for r in seen["records"][9]] == [10.0, 11.0, 12.0]
    import argparse

    from megatron.dslm.config import model_arch

    ap = argparse.ArgumentParser()
    plot_moments.dslm_config.add_arguments(ap, aliases=True)
    ns = ap.parse_args(FLAGS)
    # the overlay is the predictor's init profile, its grad scale taken from iteration 0's top layer (2.5)
    assert seen["predicted"] == plot_moments.predicted_columns(model_arch(ns), "dslm", 2.5)
    assert seen["predicted"]["layer"] == [0, 1, 2]


def test_iterations_list_draws_each_into_one_png(tmp_path):
    path = tmp_path / "m.jsonl"
    _write(path, [0, 5, 9])
    out = tmp_path / "three.png"
    plot_moments.main(["--moments-file", str(path), "--iterations", "9,0,5", "--out", str(out), *FLAGS])
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert sorted(plot_moments.read_iterations(str(path), [0, 5, 9])) == [0, 5, 9]


def test_bad_iterations_are_one_error(tmp_path):
    path = tmp_path / "m.jsonl"
    _write(path, [0, 5])
    with pytest.raises(SystemExit, match="error: --iterations takes comma-separated integers"):
        plot_moments.main(["--moments-file", str(path), "--iterations", "0,x", "--out", str(tmp_path / "a.png")])
    with pytest.raises(SystemExit, match="iterations present: \\[0, 5\\]"):
        plot_moments.main(["--moments-file", str(path), "--iterations", "0,7", "--out", str(tmp_path / "a.png")])
    with pytest.raises(SystemExit, match="not both"):
        plot_moments.main(["--moments-file", str(path), "--iteration", "0", "--iterations", "0",
                           "--out", str(tmp_path / "a.png")])
