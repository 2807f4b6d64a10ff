"""Activation recompute with upstream Megatron-LM meanings, exact under dropout, and bad combinations refused.

--recompute-activations = --recompute-granularity selective (core attention); full needs --recompute-method
(uniform | block) and --recompute-num-layers. megatron's RNG tracker replays dropout in the recomputed
forward, so training losses equal the run without recompute.
"""

from __future__ import annotations

import pytest

from tests.support import hand_table, run_python
from tests.training.gpt_cases import assert_ok, losses

TINY = [
    "pretrain_gpt.py", "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4",
    "--seq-length", "16", "--max-position-embeddings", "16", "--micro-batch-size", "2",
    "--global-batch-size", "2", "--lr", "1e-2", "--mock-data", "--vocab-size", "127", "--log-interval", "1",
    "--eval-iters", "0", "--use-cpu-initialization", "--seed", "7", "--train-iters", "3",
    "--hidden-dropout", "0.2", "--attention-dropout", "0.2",
]
MODES = {
    "none": [],
    "selective": ["--recompute-activations"],
    "full-uniform": ["--recompute-granularity", "full", "--recompute-method", "uniform",
                     "--recompute-num-layers", "1"],
    "full-block": ["--recompute-granularity", "full", "--recompute-method", "block", "--recompute-num-layers", "1"],
}


def _args(extra):
    from megatron.training.training import parse_args
    from megatron.training.validate import validate_args

    args = parse_args(argv=TINY[1:] + extra)
    validate_args(args, world_size=1)
    args.padded_vocab_size = 128
    return args


@pytest.mark.parametrize("mode,expected", [
    ("none", (None, None, None)),
    ("selective", ("selective", None, None)),
    ("full-uniform", ("full", "uniform", 1)),
    ("full-block", ("full", "block", 1)),
])
def test_flags_reach_the_transformer_config(mode, expected):
    from megatron.training.model_setup import transformer_config_from_args

    config = transformer_config_from_args(_args(MODES[mode]))
    assert (config.recompute_granularity, config.recompute_method, config.recompute_num_layers) == expected


@pytest.mark.usefixtures("single_process_megatron")
@pytest.mark.parametrize("mode,layer_calls,attention_calls", [
    ("none", 2, 2), ("selective", 2, 4), ("full-uniform", 4, 4), ("full-block", 3, 3)])
def test_recompute_reruns_what_its_granularity_says(mode, layer_calls, attention_calls):
    """Forward calls in one forward+backward: selective reruns core attention, full whole layers."""
    import torch

    from megatron.dslm.mcore.models import build_gpt_model
    from megatron.training.model_setup import transformer_config_from_args

    config = transformer_config_from_args(_args(MODES[mode]))
    model = build_gpt_model(config, hand_table(2), vocab_size=128, max_sequence_length=16, seed=3)
    calls = {"layer": 0, "attention": 0}
    for layer in model.decoder.layers:
        layer.register_forward_hook(lambda *_: calls.__setitem__("layer", calls["layer"] + 1))
        layer.self_attention.core_attention.register_forward_hook(
            lambda *_: calls.__setitem__("attention", calls["attention"] + 1))
    tokens = torch.randint(0, 127, (2, 16))
    position_ids = torch.arange(16).expand(2, 16)
    mask = torch.triu(torch.ones(16, 16, dtype=torch.bool), diagonal=1)[None, None]
    model(tokens, position_ids, mask, labels=tokens).sum().backward()
    assert (calls["layer"], calls["attention"]) == (layer_calls, attention_calls)


def test_losses_equal_no_recompute_with_dropout():
    runs = {}
    for mode, flags in MODES.items():
        proc = run_python(TINY + flags, timeout=300)
        assert_ok(proc)
        runs[mode] = losses(proc.stdout)
        assert sorted(runs[mode]) == [1, 2, 3], proc.stdout[-2000:]
    ref = runs["none"]
    assert len(set(ref.values())) > 1  # the losses move: equal constant curves would prove nothing
    for mode, got in runs.items():
        for it in ref:
            assert got[it] == pytest.approx(ref[it], abs=1e-5), f"{mode} iteration {it}: {got[it]} vs {ref[it]}"


BAD = {
    "full-without-method": (["--recompute-granularity", "full", "--recompute-num-layers", "1"],
                            "--recompute-granularity full needs --recompute-method"),
    "full-without-num-layers": (["--recompute-granularity", "full", "--recompute-method", "block"],
                                "--recompute-granularity full needs --recompute-num-layers"),
    "num-layers-too-many": (["--recompute-granularity", "full", "--recompute-method", "block",
                             "--recompute-num-layers", "3"], "--recompute-num-layers 3 must be between 1 and"),
    "uniform-not-dividing": (["--num-layers", "3", "--recompute-granularity", "full", "--recompute-method",
                              "uniform", "--recompute-num-layers", "2"], "must divide the 3 layers"),
    "selective-with-method": (["--recompute-activations", "--recompute-method", "uniform"],
                              "--recompute-method applies to --recompute-granularity full only"),
    "selective-with-num-layers": (["--recompute-granularity", "selective", "--recompute-num-layers", "1"],
                                  "--recompute-num-layers applies to --recompute-granularity full only"),
    "method-without-granularity": (["--recompute-method", "block"],
                                   "--recompute-method applies to --recompute-granularity full only"),
    "activations-vs-full": (["--recompute-activations", "--recompute-granularity", "full", "--recompute-method",
                             "uniform", "--recompute-num-layers", "1"],
                            "--recompute-activations means --recompute-granularity selective"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_combination_is_one_config_error(case):
    from megatron.training.validate import ConfigError

    flags, needle = BAD[case]
    with pytest.raises(ConfigError) as err:
        _args(flags)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_megatron_core_rejection_becomes_a_config_error():
    """Checks megatron-core makes itself (here: full without a method on an unvalidated namespace)."""
    from megatron.training.model_setup import transformer_config_from_args
    from megatron.training.validate import ConfigError

    args = _args([])
    args.recompute_granularity = "full"
    with pytest.raises(ConfigError, match="invalid transformer configuration: .*recompute_method"):
        transformer_config_from_args(args)


def test_bad_combination_exits_2_with_one_line():
    flags, needle = BAD["full-without-method"]
    proc = run_python(TINY + flags, timeout=180)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
