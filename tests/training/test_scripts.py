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
           "bench_train.py", "bench_moments.py", "bench_memory.py", "gpu_acceptance.py"]


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


@pytest.mark.parametrize("script,names", [
    ("e2e_bert_finetune.py", ["init_scheme", "dslm_k"]),
    ("signal_propagation_figures.py", ["num_layers", "hidden_dropout", "activation", "dslm_k"]),
])
def test_method_flags_come_from_dslm_config(script, names):
    """Help of the method flags is training's own (megatron.dslm.config), not a copy that can drift."""
    from megatron.dslm.config import FIELDS

    proc = run_python([str(REPO_ROOT / "scripts" / script), "--help"], timeout=120, cwd=REPO_ROOT.parent,
                      env={"COLUMNS": "100000"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = " ".join(proc.stdout.split())
    for name in names:
        assert " ".join(FIELDS[name].metadata["help"].split()) in text, (script, name)


def test_bench_train_runs_our_stack_on_the_baselines_device(monkeypatch):
    """Without --gpu the plain-PyTorch baseline runs on the CPU: our stack is forced there too."""
    spec = importlib.util.spec_from_file_location("_bench_train", REPO_ROOT / "scripts" / "bench_train.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    cpu = module._argv(2, 32, 4, 16, 2, "dslm", "local", gpu=False)
    gpu = module._argv(2, 32, 4, 16, 2, "dslm", "local", gpu=True)
    assert "--cpu" in cpu and "--bf16" not in cpu
    assert "--cpu" not in gpu and "--bf16" in gpu


def test_depth_stress_gpu_recipes_use_full_recompute(tmp_path, monkeypatch):
    """Deep recipes recompute whole layers (--recompute-activations is selective), validate at 8 ranks, and the
    committed docs/results copy is what the script writes."""
    import contextlib
    import io
    import shlex

    from megatron.training.training import parse_args
    from megatron.training.validate import validate_args

    monkeypatch.syspath_prepend(str(REPRODUCE))
    spec = importlib.util.spec_from_file_location("_depth_stress", REPRODUCE / "depth_stress.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    with contextlib.redirect_stdout(io.StringIO()):
        module.gpu_scale(tmp_path)
    text = (tmp_path / "depth_stress_gpu_scale.sh").read_text()
    assert text == (REPO_ROOT / "docs" / "results" / "depth_stress_gpu_scale.sh").read_text()
    monkeypatch.chdir(tmp_path)  # the recipes name their data and vocabulary relative to the working folder
    for name in ("bert-base-uncased-vocab.txt", "my-corpus_text_document.bin", "my-corpus_text_document.idx"):
        (tmp_path / name).write_text("")
    commands = [shlex.split(line) for line in text.splitlines() if line.startswith("torchrun")]
    assert len(commands) == 10
    for argv in commands:
        args = parse_args(argv=argv[argv.index("pretrain_gpt.py") + 1:])
        validate_args(args, world_size=8)
        assert (args.recompute_granularity, args.recompute_method, args.recompute_num_layers) == ("full", "uniform", 1)


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
