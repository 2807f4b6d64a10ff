"""The depth-vs-width protocol's pieces: the 8k vocabulary tool, the CPU-time plan, and the tiny end-to-end runs
of scripts/reproduce/{depth_vs_width.py, training_dynamics.py, gpu_quick.sh} (slow)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest

from tests.support import REPO_ROOT, TINY_TEXTS, cpu_env, run_python

TOOL = REPO_ROOT / "tools" / "train_tokenizer.py"
SCRIPTS = REPO_ROOT / "scripts" / "reproduce"
WORDS = ("the history of music in the twentieth century shows many styles composers wrote symphonies operas "
         "and songs while others explored electronic sound recording changed how people listened").split()


def _corpus(path, docs=60):
    import random

    rng = random.Random(0)
    with open(path, "w") as fh:
        for i in range(docs):
            text = " ".join(rng.choice(WORDS) for _ in range(40)) + " " + TINY_TEXTS[i % len(TINY_TEXTS)]
            fh.write(json.dumps({"title": f"doc {i}", "text": text}) + "\n")
        fh.write("not json\n")
    return path


def test_vocab_is_read_by_our_tokenizer_as_by_the_tokenizers_library(tmp_path):
    """The vocab.txt from tools/train_tokenizer.py: BERT specials, requested size bound, and our
    BertWordPieceLowerCase gives the same ids as the `tokenizers` library's own BERT WordPiece pipeline."""
    from tokenizers import BertWordPieceTokenizer as Peer
    vocab = tmp_path / "vocab.txt"
    proc = run_python([str(TOOL), "--input", str(_corpus(tmp_path / "c.jsonl")), "--vocab-size", "300",
                       "--output", str(vocab)], timeout=120)
    assert proc.returncode == 0, proc.stderr
    tokens = vocab.read_text().splitlines()
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(tokens) == len(set(tokens)) and 100 < len(tokens) <= 300
    from megatron.training.tokenizers.text import BertWordPieceTokenizer

    ours = BertWordPieceTokenizer(str(vocab), lower_case=True)
    peer = Peer(str(vocab), lowercase=True, strip_accents=True)
    text = "The Composers explored électronic recording; symphonies changed!"
    ids = ours.tokenize(text)
    assert ids == peer.encode(text, add_special_tokens=False).ids
    assert tokens.index("[UNK]") not in ids  # every word of the text is covered by the trained pieces
    words = " ".join(tokens[i] for i in ids).replace(" ##", "")
    assert words == "the composers explored electronic recording ; symphonies changed !"
    assert ours.vocab_size == len(tokens)


@pytest.mark.parametrize("case,needle", [("missing-input", "does not exist"), ("tiny-vocab", "too small")])
def test_tokenizer_tool_bad_input_is_one_error(tmp_path, case, needle):
    corpus = str(_corpus(tmp_path / "c.jsonl", docs=3))
    args = {"missing-input": ["--input", str(tmp_path / "absent.jsonl")],
            "tiny-vocab": ["--input", corpus, "--vocab-size", "10"]}[case]
    proc = run_python([str(TOOL), *args, "--output", str(tmp_path / "v.txt")], timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "v.txt").exists()


def _load(name):
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(SCRIPTS))


def test_cpu_time_plan_is_runs_times_tokens_over_speed():
    dvw = _load("depth_vs_width")
    cfg = dict(dvw.FULL, shapes=[(4, 128), (16, 64)], schemes=[("dslm", False)], lrs=(1e-3, 3e-3),
               grid_tokens=1000, final_tokens=4000)
    speeds = {"4x128": {"tokens_per_s": 100.0, "start_s": 10.0}, "16x64": {"tokens_per_s": 50.0, "start_s": 20.0}}
    hours = dvw.plan_cpu_hours(cfg, speeds)
    grid = 2 * (1000 / 100 * 1.1 + 10) + 2 * (1000 / 50 * 1.1 + 20)
    final = (4000 / 100 * 1.1 + 10 + 60) + (4000 / 50 * 1.1 + 20 + 60)
    seeds = 2 * (4000 / 50 * 1.1 + 60)
    assert hours["grid"] == round(grid / 3600, 2) and hours["final"] == round(final / 3600, 2)
    assert hours["seeds"] == round(seeds / 3600, 2)


def test_lr_grid_grows_outward_while_its_best_is_at_an_edge():
    dvw = _load("depth_vs_width")
    rows = lambda losses: [{"lr": lr, "val_loss": v} for lr, v in losses.items()]  # noqa: E731
    assert dvw.extension_lr(rows({1e-3: 7.2, 3e-3: 6.9, 1e-2: 6.8})) == 3e-2   # best at the top: go up
    assert dvw.extension_lr(rows({1e-3: 6.5, 3e-3: 6.6, 1e-2: 6.8})) == 3e-4   # best at the bottom: go down
    assert dvw.extension_lr(rows({1e-3: 7.0, 3e-3: 6.6, 1e-2: 6.8})) is None   # inside: done
    assert dvw.extension_lr(rows({1e-4: 6.1, 3e-4: 6.2, 1e-3: 6.3})) is None   # the ladder ends
    assert dvw.extension_lr(rows({1e-3: 7.0, 3e-3: float("nan"), 1e-2: None})) == 3e-4  # diverged runs lose
    assert dvw.extension_lr(rows({1e-3: 6.8, 3e-3: 6.7, 1e-2: 6.6, 3e-2: 6.9})) is None  # the extension bracketed it


def test_kept_runs_resume_a_fresh_checkout_on_their_own_vocabulary(tmp_path, monkeypatch):
    """A finished run's row kept in the tracked folder is returned without training; a kept row trained on
    another vocabulary stops the sweep with one line instead of mixing two data preparations."""
    dvw = _load("depth_vs_width")
    keep, vocab = tmp_path / "keep", tmp_path / "vocab.txt"
    keep.mkdir()
    vocab.write_text("[PAD]\n[UNK]\nthe\n")
    monkeypatch.setattr(dvw, "KEEP", keep)
    monkeypatch.setattr(dvw, "KEEP_DISABLED", False)
    flags = ["pretrain_gpt.py", "--vocab-file", str(vocab)]
    row = {"name": "grid_x", "val_loss": 6.5, "vocab_sha1": dvw._vocab_digest(flags)}
    (keep / "grid_x.json").write_text(json.dumps(row))
    assert dvw._finished(tmp_path / "work", "grid_x") and not dvw._finished(tmp_path / "work", "grid_y")
    assert dvw.run_one(tmp_path / "work", "grid_x", flags, {}) == row  # no training launched
    vocab.write_text("[PAD]\n[UNK]\nother\n")
    with pytest.raises(SystemExit, match="trained with vocabulary"):
        dvw.run_one(tmp_path / "work", "grid_x", flags, {})


@pytest.mark.slow
def test_depth_vs_width_tiny_end_to_end_and_resume(tmp_path):
    """Grid -> best lr -> final runs with held-out perplexity -> a second seed for the best shallow and deep;
    a rerun launches nothing."""
    argv = [str(SCRIPTS / "depth_vs_width.py"), "--tiny", "--work", str(tmp_path / "w"), "--out", str(tmp_path)]
    proc = run_python(argv, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((tmp_path / "depth_vs_width.json").read_text())
    rows = record["rows"]
    assert (tmp_path / "depth_vs_width.png").stat().st_size > 1000
    for r in rows:
        for key in ("shape", "scheme", "non_embedding_params", "train_tokens", "lr", "seed", "val_loss",
                    "heldout_ppl", "wall_s", "command"):
            assert r.get(key) is not None, (r["shape"], key)
        assert math.isfinite(r["val_loss"]) and r["heldout_ppl"] > 1
        grid = record["lr_grid_val_loss"][f"{r['shape']} {r['scheme']}_pre"]
        assert float(min(grid, key=grid.get)) == r["lr"]  # the final run uses the grid's best lr
    assert sorted((r["shape"], r["seed"]) for r in rows) == [("2x32", 1234), ("2x32", 1235),
                                                             ("8x16", 1234), ("8x16", 1235)]
    assert {r["non_embedding_params"] for r in rows} == {12 * 2 * 32 ** 2} == {12 * 8 * 16 ** 2}
    again = run_python(argv, timeout=300)
    assert again.returncode == 0 and "pretrain_gpt.py" not in again.stdout  # every run finished: all skipped


@pytest.mark.slow
def test_training_dynamics_tiny_records_iterations(tmp_path):
    proc = run_python([str(SCRIPTS / "training_dynamics.py"), "--tiny", "--work", str(tmp_path / "w"),
                       "--out", str(tmp_path)], timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((tmp_path / "training_dynamics.json").read_text())
    assert sorted(r["arch"] for r in record["rows"]) == ["classic", "llama"]  # the Llama shape beside the classic
    for row in record["rows"]:
        assert sorted(int(k) for k in row["iterations"]) == [0, 5, 10]
        prof = record["profiles"][row["name"]]["0"]
        assert [p["layer"] for p in prof] == [0, 1, 2, 3, 4]
        top = max(p["forward_var"] for p in prof[1:])
        assert row["iterations"]["0"]["max_forward_var"] == top
    llama = next(r for r in record["rows"] if r["arch"] == "llama")
    assert "--swiglu" in llama["command"] and "RMSNorm" in llama["command"]


@pytest.mark.slow
def test_gpu_quick_cpu_smoke_prints_one_table(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPTS / "gpu_quick.sh"), "--cpu", "--out", str(tmp_path)], cwd=REPO_ROOT,
                          env=cpu_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = [ln for ln in proc.stdout.splitlines() if ln.startswith("| ") and "shape" not in ln]
    assert [ln.split("|")[1].strip() for ln in table] == ["2x32", "8x16", "32x8"]
    rows = json.loads((tmp_path / "gpu_quick.json").read_text())
    assert all(math.isfinite(r["val_loss"]) and r["tokens_per_s"] > 0 for r in rows)
    assert {r["non_embedding_params"] for r in rows} == {12 * 2 * 32 ** 2}
    bad = subprocess.run(["bash", str(SCRIPTS / "gpu_quick.sh"), "--bogus"], cwd=REPO_ROOT, env=cpu_env(),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown argument --bogus")
