"""Upstream Megatron-LM's command lines: every upstream flag is honoured, accepted as obsolete with a note, or
refused by name with the reason (exit 2, one line); sample-based schedules equal their iteration-based twins;
--dry-run describes a run without starting it; a launch script's argument list in upstream's shape trains."""

from __future__ import annotations

import json

import pytest

from megatron.training.config import build_parser
from megatron.training.upstream_flags import DEPRECATED, UPSTREAM_FLAGS, refused_flags
from tests.support import REPO_ROOT, run_python, run_torchrun, stderr_without_warnings
from tests.training.gpt_cases import assert_ok, losses

TINY = ["--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", "16",
        "--max-position-embeddings", "16", "--micro-batch-size", "2", "--lr", "1e-3", "--mock-data",
        "--vocab-size", "255", "--use-cpu-initialization", "--seed", "3", "--num-workers", "0"]


def _parse(argv, capsys):
    """(namespace or None, exit status, stderr) of parsing ``argv`` with the training parser."""
    try:
        ns = build_parser().parse_args(argv)
        status = 0
    except SystemExit as exc:
        ns, status = None, exc.code
    return ns, status, capsys.readouterr().err


def test_every_upstream_flag_is_defined_deprecated_or_refused():
    parser = build_parser()
    refused = refused_flags(parser)
    defined = set(parser._option_string_actions) - set(refused)
    deprecated = {flag for flag, _, _ in DEPRECATED}
    assert len(UPSTREAM_FLAGS) > 800
    for flag in UPSTREAM_FLAGS:
        assert (flag in defined) + (flag in refused) == 1 or flag in deprecated, flag
    honoured = [f for f in UPSTREAM_FLAGS if f in defined and f not in deprecated]
    assert len(honoured) >= 110, len(honoured)  # a guard: honoured flags only ever grow


@pytest.mark.parametrize("argv, names, reason", [
    (["--context-parallel-size", "2"], ["--context-parallel-size"], "not supported: context parallelism"),
    (["--num-experts", "8", "--moe-router-topk", "2"], ["--num-experts", "--moe-router-topk"],
     "not supported: mixture-of-experts"),
    (["--checkpoint-activations"], ["--checkpoint-activations"], "renamed upstream, use --recompute-activations"),
    (["--fp8-format", "hybrid"], ["--fp8-format"], "needs Transformer Engine"),
    (["--decoupled-lr", "1e-4"], ["--decoupled-lr"], "not implemented yet: one learning rate"),
])
def test_refused_flags_name_themselves_and_the_reason(argv, names, reason, capsys):
    ns, status, err = _parse(TINY + argv, capsys)
    assert status == 2 and ns is None
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unsupported upstream Megatron-LM flag"), err
    assert reason in lines[0] and all(name in lines[0] for name in names), lines[0]


def test_obsolete_flags_are_accepted_with_a_note(capsys):
    ns, status, err = _parse(TINY + ["--use-mcore-models", "--data-impl", "mmap", "--train-iters", "2"], capsys)
    assert status == 0 and ns.train_iters == 2
    assert "--use-mcore-models is obsolete and ignored" in err and "--data-impl is obsolete and ignored" in err


def test_upstream_defaults(capsys):
    ns, _, _ = _parse(["--train-iters", "1"], capsys)
    assert (ns.eval_iters, ns.num_workers, ns.distributed_backend, ns.ckpt_format) == (100, 2, "nccl", "torch_dist")


def _scheduler_lrs(argv, steps):
    """The learning rate after each of ``steps`` optimizer steps, from the real megatron-core scheduler."""
    import torch

    from megatron.training.training import get_scheduler, parse_args
    from megatron.training.validate import validate_args

    args = parse_args(None, None, TINY + argv)
    validate_args(args, 1)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.0)
    optimizer.param_groups[0].update(max_lr=args.lr, min_lr=args.min_lr)
    scheduler = get_scheduler(args, optimizer)
    out = []
    for _ in range(steps):
        scheduler.step(increment=args.global_batch_size)
        out.append(optimizer.param_groups[0]["lr"])
    return args, out


def test_sample_based_schedule_equals_the_iteration_based_one():
    gbs = ["--global-batch-size", "8"]
    it_args, by_iters = _scheduler_lrs(gbs + ["--train-iters", "12", "--lr-warmup-iters", "3",
                                              "--lr-decay-iters", "10", "--lr-decay-style", "cosine"], 12)
    sa_args, by_samples = _scheduler_lrs(gbs + ["--train-samples", "96", "--lr-warmup-samples", "24",
                                                "--lr-decay-samples", "80", "--lr-decay-style", "cosine"], 12)
    assert sa_args.train_iters == it_args.train_iters == 12
    assert by_samples == pytest.approx(by_iters, rel=1e-12) and len(set(by_iters)) > 6
    _, warm = _scheduler_lrs(gbs + ["--train-samples", "96", "--lr-warmup-samples", "32", "--lr-warmup-init",
                                    "1e-4"], 1)
    assert warm[0] == pytest.approx(1e-4 + (1e-3 - 1e-4) * 8 / 32)  # linear from --lr-warmup-init


@pytest.mark.parametrize("argv, message", [
    (["--train-samples", "64", "--train-iters", "8"], "--train-iters: iteration-based flags cannot be combined"),
    (["--train-iters", "8", "--lr-warmup-samples", "8"], "--lr-warmup-samples: sample-based schedule flags need"),
    (["--train-iters", "8", "--transformer-impl", "transformer_engine"], "--transformer-impl transformer_engine is"),
    (["--train-iters", "8", "--attention-backend", "fused"], "--attention-backend fused is not supported"),
    (["--train-iters", "8", "--optimizer", "muon"], "--optimizer muon is not supported"),
    (["--train-iters", "8", "--ckpt-format", "torch"], "--ckpt-format torch is not supported"),
])
def test_bad_values_are_refused_at_start_up(argv, message):
    import re

    from megatron.training.training import parse_args
    from megatron.training.validate import ConfigError, validate_args

    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_args(parse_args(None, None, TINY + argv), 1)


def test_a_bad_value_is_one_line_and_exit_2():
    out = run_python(["pretrain_gpt.py", *TINY, "--train-iters", "8", "--ckpt-format", "torch"])
    assert out.returncode == 2
    lines = stderr_without_warnings(out.stderr)
    assert lines == [l for l in lines if l.startswith("error: --ckpt-format torch is not supported")], out.stderr


def test_dry_run_describes_the_layout_and_starts_nothing(tmp_path):
    argv = [str(REPO_ROOT / "pretrain_gpt.py"), *TINY, "--num-layers", "8", "--train-samples", "640", "--lr-warmup-samples", "64",
            "--global-batch-size", "16", "--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size",
            "2", "--init-scheme", "dslm", "--save", str(tmp_path / "ck"), "--dry-run"]
    out = run_python(argv, env={"WORLD_SIZE": "8"}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "world size 8 = TP 2 x PP 2 x DP 2" in out.stdout
    assert "40 iterations x global batch 16 (micro 2 x DP 2 x 4 micro-batches) = 640 samples" in out.stdout
    assert "parameters per pipeline stage" in out.stdout and "expected bubble 20.0%" in out.stdout  # 1/(4+1)
    assert "--init-scheme dslm" in out.stdout
    assert list(tmp_path.iterdir()) == []  # no checkpoint folder, no log, nothing
    bad = run_python([*argv[:-1], "--global-batch-size", "10", "--dry-run"], env={"WORLD_SIZE": "8"})
    assert bad.returncode == 2 and "not divisible" in bad.stderr


# Upstream's examples/gpt3/train_gpt3_175b_distributed.sh argument groups, shrunk to CPU size (same flags).
GPT3_STYLE = [
    "pretrain_gpt.py",
    "--num-layers", "4", "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", "16",
    "--max-position-embeddings", "16", "--attention-backend", "auto",
    "--micro-batch-size", "2", "--global-batch-size", "8", "--train-samples", "48", "--weight-decay", "0.1",
    "--adam-beta1", "0.9", "--adam-beta2", "0.95", "--init-method-std", "0.006", "--clip-grad", "1.0",
    "--lr", "6.0e-4", "--lr-decay-style", "cosine", "--min-lr", "6.0e-5", "--lr-warmup-fraction", ".1",
    "--lr-decay-samples", "40",
    "--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "1",
    "--mock-data", "--vocab-size", "255", "--split", "'949,50,1'",
    "--log-interval", "1", "--eval-interval", "3", "--eval-iters", "1", "--log-throughput",
    "--log-timers-to-tensorboard", "--log-validation-ppl-to-tensorboard", "--tensorboard-log-interval", "2",
    "--use-mcore-models", "--data-impl", "mmap", "--distributed-backend", "nccl", "--transformer-impl", "local",
    "--exit-duration-in-mins", "30", "--use-cpu-initialization", "--seed", "5",
]


@pytest.mark.dist
def test_a_gpt3_style_launch_script_trains(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = tmp_path / "tb"
    out = run_torchrun(2, GPT3_STYLE + ["--tensorboard-dir", str(tb)])
    assert_ok(out)
    got = losses(out.stdout)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]  # 48 samples / global batch 8
    assert "throughput per GPU (TFLOP/s/GPU):" in out.stdout
    events = EventAccumulator(str(tb)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"lm loss", "learning-rate", "iteration-time", "throughput", "validation/lm loss ppl"} <= tags, tags
    assert [e.step for e in events.Scalars("lm loss")] == [2, 4, 6]  # --tensorboard-log-interval 2
    ppl = events.Scalars("validation/lm loss ppl")[0].value
    loss = events.Scalars("validation/lm loss")[0].value
    assert ppl == pytest.approx(__import__("math").exp(loss), rel=1e-5)


def test_exit_duration_and_skip_train(tmp_path):
    out = run_python(["pretrain_gpt.py", *TINY, "--train-iters", "50", "--exit-duration-in-mins", "0",
                      "--log-interval", "1", "--eval-iters", "0"])
    assert_ok(out)
    assert sorted(losses(out.stdout)) == [1] and "exiting at iteration 1 (--exit-duration-in-mins 0" in out.stdout
    skip = run_python(["pretrain_gpt.py", *TINY, "--train-iters", "50", "--skip-train", "--eval-iters", "2",
                       "--metrics-file", str(tmp_path / "m.jsonl")])
    assert_ok(skip)
    records = [json.loads(line) for line in open(tmp_path / "m.jsonl")]
    assert not losses(skip.stdout) and [r["iteration"] for r in records if r.get("split") == "validation"] == [0]


def test_wandb_offline_gets_the_same_scalars_as_tensorboard(tmp_path, monkeypatch, single_process_megatron):
    wandb = pytest.importorskip("wandb")
    from megatron.training.metrics import TrainingLogger
    from megatron.training.training import parse_args
    from megatron.training.validate import validate_args

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    args = parse_args(None, None, TINY + ["--train-iters", "4", "--wandb-project", "dslm-test", "--wandb-exp-name",
                                          "tiny", "--wandb-save-dir", str(tmp_path / "wb")])
    validate_args(args, 1)
    logged = []
    real_init = wandb.init

    def init(**kwargs):
        run = real_init(**kwargs)
        real_log = run.log
        run.log = lambda values, step=None: (logged.append((step, dict(values))), real_log(values, step=step))
        return run

    monkeypatch.setattr(wandb, "init", init)
    logger = TrainingLogger(args)
    for it in range(1, 3):
        logger.record(it, {"lm loss": 5.0 - it}, False, 0.5, 1e-3)
    logger.log_eval(2, {"lm loss": 2.5})
    logger.close()
    assert [s for s, _ in logged] == [1, 2, 2]
    assert logged[1][1]["lm loss"] == 3.0 and logged[1][1]["grad-norm"] == 0.5
    assert logged[2][1] == {"validation/lm loss": 2.5}
    assert list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
