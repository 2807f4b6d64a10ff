"""Interleaved (virtual) pipeline: PP=2 x VP=2 trains the TP1·PP1 model, observes the same layers and its
checkpoints load at TP1·PP1 and back; bad VP flags fail with one line.

fp32, CPU/gloo, no dropout (RNG streams are per layout); losses must agree within 1e-5.
"""

import json

import pytest

from tests.bert.conftest import bert_corpus  # noqa: F401  (the BERT corpus fixture)
from tests.support import free_port, run_python, run_torchrun
from tests.training.gpt_cases import assert_ok, losses

GPT = [
    "pretrain_gpt.py", "--num-layers", "4", "--hidden-size", "32", "--num-attention-heads", "4",
    "--seq-length", "16", "--max-position-embeddings", "16", "--micro-batch-size", "2",
    "--global-batch-size", "8", "--lr", "1e-3", "--lr-warmup-iters", "1", "--mock-data", "--vocab-size", "255",
    "--log-interval", "1", "--eval-iters", "0", "--use-cpu-initialization", "--seed", "7",
    "--hidden-dropout", "0", "--attention-dropout", "0", "--init-scheme", "dslm", "--train-iters", "6",
]
VP2 = ["--pipeline-model-parallel-size", "2", "--num-virtual-stages-per-pipeline-rank", "2"]


def _moments(path):
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    return {(r["iteration"], r["layer"]): r for r in rows}


def _assert_losses(got, ref, iterations):
    assert sorted(got) == list(iterations), got
    for it in iterations:
        assert got[it] == pytest.approx(ref[it], abs=1e-5), f"iteration {it}: {got[it]} vs {ref[it]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """TP1·PP1 for 6 iterations; PP2xVP2 for 3 of them, saving there; moments every iteration in both."""
    tmp = tmp_path_factory.mktemp("vp")
    ref = run_torchrun(1, GPT + ["--log-moments-interval", "1", "--moments-file", str(tmp / "ref.jsonl")])
    assert_ok(ref)
    vp = run_torchrun(2, GPT + VP2 + ["--log-moments-interval", "1", "--moments-file", str(tmp / "vp.jsonl"),
                                      "--save", str(tmp / "ck_vp"), "--save-interval", "3", "--exit-interval", "3"])
    assert_ok(vp)
    return {"tmp": tmp, "ref": losses(ref.stdout), "vp": losses(vp.stdout), "vp_stdout": vp.stdout}


@pytest.mark.dist
def test_pp2_vp2_gpt_matches_single_process(runs):
    _assert_losses(runs["vp"], runs["ref"], range(1, 4))
    assert len(set(runs["ref"].values())) == 6  # the steps change the model: equal flat curves would prove nothing
    assert "2 model chunks per stage" in runs["vp_stdout"]
    assert "expected bubble 11.1%" in runs["vp_stdout"]  # (2-1)/(2*4 + 2-1)


@pytest.mark.dist
def test_observers_see_the_global_layers_once(runs):
    ref, vp = _moments(runs["tmp"] / "ref.jsonl"), _moments(runs["tmp"] / "vp.jsonl")
    ref = {k: v for k, v in ref.items() if k[0] < 3}  # 3 steps taken: moments at iterations 0, 1, 2
    assert sorted(vp) == sorted(ref) and sorted({layer for _, layer in vp}) == [0, 1, 2, 3, 4]
    for key, rec in ref.items():
        assert sorted(vp[key]) == sorted(rec), key
        assert "grad_var" in rec and (key[1] == 0 or "attn_logit_var" in rec), key
        for field in set(rec) - {"iteration", "layer"}:
            assert vp[key][field] == pytest.approx(rec[field], rel=1e-5, abs=1e-9), (key, field)


@pytest.mark.dist
@pytest.mark.slow
def test_checkpoint_between_vp_and_single_process(runs):
    """PP2xVP2 checkpoint -> TP1·PP1 (iterations 4, 5, saved at 5) -> PP2xVP2 (iteration 6): the straight curve."""
    tmp = runs["tmp"]
    tp1 = run_torchrun(1, GPT + ["--load", str(tmp / "ck_vp"), "--save", str(tmp / "ck_tp1"),
                                 "--save-interval", "5", "--exit-interval", "5"])
    assert_ok(tp1)
    assert "resumed from" in tp1.stdout
    _assert_losses(losses(tp1.stdout), runs["ref"], range(4, 6))
    back = run_torchrun(2, GPT + VP2 + ["--load", str(tmp / "ck_tp1")])
    assert_ok(back)
    _assert_losses(losses(back.stdout), runs["ref"], [6])


@pytest.mark.dist
def test_pp2_vp2_bert_matches_single_process(bert_corpus, tmp_path):
    """BERT with the masked-positions MLM head and the default (SDPA where available) attention core."""
    prefix, vocab = bert_corpus
    common = [
        "pretrain_bert.py", "--num-layers", "4", "--hidden-size", "32", "--num-attention-heads", "4",
        "--seq-length", "32", "--max-position-embeddings", "32", "--micro-batch-size", "2",
        "--global-batch-size", "8", "--train-iters", "3", "--lr", "1e-3", "--lr-warmup-iters", "1",
        "--data-path", prefix, "--split", "1,0,0", "--eval-iters", "0", "--vocab-file", vocab,
        "--tokenizer-type", "BertWordPieceLowerCase", "--use-cpu-initialization", "--log-interval", "1",
        "--hidden-dropout", "0", "--attention-dropout", "0", "--data-cache-path", str(tmp_path / "cache"),
        "--seed", "7", "--init-scheme", "dslm", "--mlm-head-positions", "masked",
    ]
    ref = run_torchrun(1, common)
    assert_ok(ref)
    vp = run_torchrun(2, common + VP2)
    assert_ok(vp)
    for key in ("lm loss", "sop loss"):
        a, b = _bert_losses(ref.stdout, key), _bert_losses(vp.stdout, key)
        _assert_losses(b, a, range(1, 4))


def _bert_losses(stdout, key):
    import re

    out = {}
    for line in stdout.splitlines():
        m = re.search(r"iteration\s+(\d+)/.*?" + key + r": ([0-9.E+-]+)", line)
        if m:
            out[int(m.group(1))] = float(m.group(2))
    return out


BAD = [
    (["--num-virtual-stages-per-pipeline-rank", "2"], "needs --pipeline-model-parallel-size >= 2"),
    (VP2[:2] + ["--num-layers-per-virtual-pipeline-stage", "3"], "does not divide the 2 layers"),
    (VP2[:2] + ["--num-virtual-stages-per-pipeline-rank", "2", "--global-batch-size", "6"],
     "a multiple of --pipeline-model-parallel-size 2"),
    (VP2 + ["--num-layers-per-virtual-pipeline-stage", "1"], "not both"),
]


@pytest.mark.parametrize("flags,message", BAD, ids=["pp1", "layers", "microbatches", "both"])
def test_bad_vp_config_is_one_line(flags, message):
    """Refused in argument validation, before any process group: exit 2 and one ``error:`` line."""
    from megatron.training.training import parse_args
    from megatron.training.validate import ConfigError, validate_args

    args = parse_args(argv=GPT[1:] + flags)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_args(args, world_size=2)


def test_bad_vp_config_exits_with_one_line():
    proc = run_python(GPT + ["--num-virtual-stages-per-pipeline-rank", "2"], timeout=300,
                      env={"MASTER_PORT": str(free_port()), "RANK": "0", "WORLD_SIZE": "1"})
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["error: --num-virtual-stages-per-pipeline-rank (interleaved pipeline) needs "
                     "--pipeline-model-parallel-size >= 2, got 1"], proc.stderr[-2000:]


def test_bubble_fraction():
    from megatron.training.validate import pipeline_bubble_fraction

    assert pipeline_bubble_fraction(8, 8) == pytest.approx(7 / 15)
    assert pipeline_bubble_fraction(8, 16, 5) == pytest.approx(7 / 87)
    assert pipeline_bubble_fraction(2, 4, 2) == pytest.approx(1 / 9)
