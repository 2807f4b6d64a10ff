"""scripts/gpu_acceptance.sh: its MFU arithmetic, its table and exit status, and (slow) the whole run on CPU."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest

from tests.support import REPO_ROOT, cpu_env, run_python

SCRIPT = REPO_ROOT / "scripts" / "gpu_acceptance.py"
EXPECTED_ROWS = [
    "GPT pretrain megatron Pre-LN", "GPT pretrain megatron Post-LN", "GPT pretrain dslm Pre-LN",
    "GPT pretrain dslm Post-LN", "BERT data (preprocess)", "GPT save -> resume", "GPT moments logged",
    "BERT pretrain megatron Pre-LN", "BERT pretrain megatron Post-LN", "BERT pretrain dslm Pre-LN",
    "BERT pretrain dslm Post-LN", "MNLI finetune TP=1", "speed GPT 4x64 seq 64", "speed GPT 8x32 seq 64",
]


@pytest.fixture(scope="module")
def ga():
    spec = importlib.util.spec_from_file_location("_gpu_acceptance", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_mfu_against_a_hand_computation(ga):
    # L=2, h=4, s=8, V=16: per layer 12*16 + 13*4 = 244; 2*244 + 16*4 + 8*4 + 2*4 = 592 parameters.
    assert ga.gpt_params(2, 4, 8, 16) == 592
    # 6 * 592 + 12 * 2 * 4 * 8 = 3552 + 768 FLOPs per token.
    assert ga.flops_per_token(2, 4, 8, 16) == 4320
    assert ga.mfu(1e6, 2, 4, 8, 16, peak_tflops=2.0) == pytest.approx(1e6 * 4320 / 2e12)
    assert ga.mfu(1e6, 2, 4, 8, 16, peak_tflops=None) is None
    # 24 x 1024, seq 512, vocab 1024 at 100k tokens/s on an A100: N = 303,565,824 + 1,573,888.
    n = 24 * (12 * 1024 ** 2 + 13 * 1024) + 1024 * 1024 + 512 * 1024 + 2 * 1024
    assert ga.gpt_params(24, 1024, 512, 1024) == n
    assert ga.mfu(1e5, 24, 1024, 512, 1024, 312.0) == pytest.approx(1e5 * (6 * n + 12 * 24 * 1024 * 512) / 312e12)


def test_peak_table_prefers_the_specific_name(ga):
    assert ga.peak_tflops_for("NVIDIA H100 PCIe") == 756.0
    assert ga.peak_tflops_for("NVIDIA H100 80GB HBM3") == 989.0
    assert ga.peak_tflops_for("NVIDIA A100-SXM4-80GB") == 312.0
    assert ga.peak_tflops_for("NVIDIA H200") == 989.0
    assert ga.peak_tflops_for("Some Accelerator") is None


@pytest.mark.usefixtures("single_process_megatron")
def test_parameter_count_matches_megatron_core(ga):
    """Tied, as pretrain_gpt.py builds it (an untied output layer adds V h parameters but no FLOPs)."""
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    from tests.support import make_config

    model = GPTModel(make_config(num_layers=3, hidden=32, heads=4), get_gpt_layer_local_spec(), vocab_size=128,
                     max_sequence_length=16, share_embeddings_and_output_weights=True)
    assert sum(p.numel() for p in model.parameters()) == ga.gpt_params(3, 32, 16, 128)


def test_a_failing_row_fails_the_run_and_the_rest_still_runs(ga, tmp_path):
    def ok(row):
        return "42"

    def bad_number(row):
        raise ga.CheckFailed("loss nan")

    def broken(row):
        raise KeyError("lm loss")

    def hangs(row):
        ga.sh(["-c", "import time; time.sleep(30)"], tmp_path / "hang.log", timeout=1)

    def exits_1(row):
        ga.sh(["-c", "import sys; print('boom'); sys.exit(1)"], tmp_path / "exit.log", timeout=60)

    rows = [ga.Row("ok", ok), ga.Row("bad", bad_number), ga.Row("broken", broken, wave=1),
            ga.Row("hangs", hangs, wave=1), ga.Row("exits", exits_1, wave=2), ga.Row("after", ok, wave=3)]
    ga.run_rows(rows, jobs=2)
    assert [r.passed for r in rows] == [True, False, False, False, False, True]
    assert rows[1].measured == "loss nan" and "KeyError" in rows[2].measured
    assert rows[3].measured == "timeout after 1 s" and rows[3].seconds < 20
    assert rows[4].measured == "exit 1: boom"
    assert ga.exit_code(rows) == 1
    table = ga.format_table(rows).splitlines()
    assert table[0] == "| check | result | measured | seconds |" and len(table) == 2 + len(rows)
    assert table[2].startswith("| ok | pass | 42 |") and table[3].startswith("| bad | FAIL | loss nan |")
    assert ga.exit_code([r for r in rows if r.passed]) == 0
    assert ga.exit_code([]) == 1  # nothing checked is not a pass


@pytest.mark.parametrize("argv,message", [
    (["--cpu", "--steps", "0"], "--steps must be positive"),
    (["--cpu", "--perf-shapes", "4by64"], "is not LAYERSxHIDDEN"),
    (["--cpu", "--out", str(REPO_ROOT)], "is not an empty folder"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message):
    proc = run_python([str(SCRIPT), *argv], timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_cpu_run_passes_every_row(tmp_path):
    proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gpu_acceptance.sh"), "--cpu", "--out",
                           str(tmp_path / "run")], cwd=REPO_ROOT, env=cpu_env(), capture_output=True, text=True,
                          timeout=1500)
    rows = dict(re.findall(r"^\| (.+?) \| (pass|FAIL) \|", proc.stdout, re.M))
    assert list(rows) == EXPECTED_ROWS, proc.stdout[-4000:]
    assert all(v == "pass" for v in rows.values()), proc.stdout[-6000:]
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"{len(EXPECTED_ROWS)}/{len(EXPECTED_ROWS)} passed" in proc.stdout


@pytest.mark.parametrize("argv,message", [
    (["--shapes", "48x128,4y3"], "'4y3' is not LAYERSxHIDDEN"),
    (["--recompute", "off,partial"], "is not a subset of off,selective,full"),
    (["--micro-batch-size", "0"], "must be positive"),
])
def test_bench_memory_bad_input_is_one_line_and_exit_2(argv, message):
    proc = run_python([str(REPO_ROOT / "scripts" / "bench_memory.py"), *argv], timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
