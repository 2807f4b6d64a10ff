"""The reproduction scripts and benchmarks start (``--help``) and read runs from the loop's metrics file."""

import importlib.util
import math
import sys
import types

import pytest

from tests.support import REPO_ROOT, run_python

REPRODUCE = REPO_ROOT / "scripts" / "reproduce"
SCRIPTS = ["reproduce/run_all.py", "reproduce/depth_vs_width.py", "reproduce/depth_stress.py",
           "reproduce/downstream.py", "reproduce/signal_propagation.py", "reproduce/report.py",
           "bench_train.py", "bench_moments.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    proc = run_python([str(REPO_ROOT / "scripts" / script), "--help"], timeout=120, cwd=REPO_ROOT.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout


def test_scripts_import_no_private_training_names():
    for path in [*REPRODUCE.glob("*.py"), REPO_ROOT / "scripts" / "bench_train.py",
                 REPO_ROOT / "scripts" / "bench_moments.py"]:
        text = path.read_text()
        for private in ("_MomentLogging", "_reduce_loss_dicts", "sys.path.insert", "parse_log"):
            assert private not in text, f"{path.name} uses {private}"


@pytest.fixture()
def common(monkeypatch):
    spec = importlib.util.spec_from_file_location("_reproduce_common", REPRODUCE / "common.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def _write_run(tmp_path, train_losses, final_eval):
    """A metrics file written by the training loop's own logger."""
    from megatron.training.metrics import TrainingLogger

    path = tmp_path / "run.metrics.jsonl"
    args = types.SimpleNamespace(log_interval=1, train_iters=len(train_losses), global_batch_size=2,
                                 seq_length=4, fp16=False, tensorboard_dir=None, save=None,
                                 metrics_file=str(path), iteration=0, world_size=1, init_scheme="dslm",
                                 embedding_corr=0.3)
    logger = TrainingLogger(args)
    for it, loss in enumerate(train_losses, 1):
        logger.record(it, {"lm loss": loss}, False, 1.5, 1e-3)
        logger.maybe_print(it, 1e-3, 1.0)
    logger.log_eval(len(train_losses), {"lm loss": final_eval}, end_of_training=True)
    logger.close()
    return path


def test_read_run_and_summarize_a_run_that_trains(tmp_path, common):
    run = common.read_run(_write_run(tmp_path, [5.0, 4.5, 4.0], 4.2))
    assert [i for i, _ in run.train] == [1, 2, 3]
    assert run.train[-1][1]["grad_norm"] == 1.5 and run.embedding_corr == 0.3
    assert common.curve(run) == [[1, 5.0], [2, 4.5], [3, 4.0]]
    row = common.summarize(run)
    assert row["outcome"] == "trains" and row["first_train_loss"] == 5.0 and row["last_train_loss"] == 4.0
    assert row["val_loss"] == 4.2 and row["val_ppl"] == round(math.exp(4.2), 1) and row["nan_iters"] == 0


def test_read_run_reports_divergence_and_the_last_error(tmp_path, common):
    log = tmp_path / "run.log"
    log.write_text("starting\nTraceback (most recent call last):\nRuntimeError: boom\n")
    run = common.read_run(_write_run(tmp_path, [5.0, float("nan")], 4.0), log)
    assert run.nan_iters == 1 and run.error == "RuntimeError: boom"
    assert common.summarize(run)["outcome"] == "diverged"
    assert common.summarize(common.read_run(tmp_path / "missing.jsonl"))["outcome"] == "no log"
