"""megatron-core's fusions: upstream ``--no-*`` flags, on where CUDA and the kernels allow, off in CPU mode, each
refusal printed once at start-up; decided by ``fusion_settings`` alone."""

from __future__ import annotations

import pytest

from megatron.training import model_setup
from megatron.training.config import build_parser
from megatron.training.model_setup import FUSION_KERNELS, FUSIONS, fusion_settings

FIELDS = [field for field, *_ in FUSIONS]
TORCH_ONLY = {"bias_activation_fusion", "bias_dropout_fusion"}  # torch-compiled in megatron-core
ALL_KERNELS = {key: True for key in FUSION_KERNELS}
NO_KERNELS = {key: False for key in FUSION_KERNELS}
UPSTREAM = {"--no-bias-gelu-fusion": "bias_gelu_fusion", "--no-bias-dropout-fusion": "bias_dropout_fusion",
            "--no-masked-softmax-fusion": "masked_softmax_fusion",
            "--no-gradient-accumulation-fusion": "gradient_accumulation_fusion",
            "--no-persist-layer-norm": "persist_layer_norm"}


def _args(*flags):
    return build_parser().parse_args(list(flags))


def test_upstream_flags_dests_and_defaults():
    parser = build_parser()
    defaults = parser.parse_args([])
    assert {flag: dest for flag, dest in UPSTREAM.items()} == {flag: dest for _, dest, flag, _ in FUSIONS}
    for flag, dest in UPSTREAM.items():
        assert parser._option_string_actions[flag].dest == dest
        assert getattr(defaults, dest) is True
        parsed = parser.parse_args([flag])
        assert getattr(parsed, dest) is False
        assert all(getattr(parsed, other) is True for other in UPSTREAM.values() if other != dest)
    from megatron.training.upstream_flags import refused_flags

    assert "--no-bias-swiglu-fusion" in refused_flags(parser)  # not defined here: refused by name
    assert defaults.cpu is False and parser.parse_args(["--cpu"]).cpu is True  # store_true flags unchanged


def test_cpu_mode_turns_every_fusion_off_whatever_the_kernels():
    for kernels in (ALL_KERNELS, NO_KERNELS):
        settings, lines = fusion_settings(_args(), cuda=False, kernels=kernels)
        assert settings == {field: False for field in FIELDS}
        assert lines == ["> fusions: none (CPU mode)"]


def test_cuda_with_every_kernel_turns_every_fusion_on():
    settings, lines = fusion_settings(_args(), cuda=True, kernels=ALL_KERNELS)
    assert settings == {field: True for field in FIELDS}
    assert lines == ["> fusions on: " + ", ".join(FIELDS)]


def test_missing_kernels_turn_their_fusions_off_with_one_line_each():
    settings, lines = fusion_settings(_args(), cuda=True, kernels=NO_KERNELS)
    assert settings == {field: field in TORCH_ONLY for field in FIELDS}
    off = [line for line in lines if " off: " in line]
    assert [line.split()[1] for line in off] == [f for f in FIELDS if f not in TORCH_ONLY]
    for line, key in zip(off, ("fused_softmax", "fused_weight_gradient", "fast_layer_norm")):
        modules, source = FUSION_KERNELS[key]
        assert all(m in line for m in modules) and source in line
    assert lines[-1] == "> fusions on: bias_activation_fusion, bias_dropout_fusion"


@pytest.mark.parametrize("missing", sorted(FUSION_KERNELS))
def test_each_kernel_gates_exactly_its_fusion(missing):
    kernels = {**ALL_KERNELS, missing: False}
    settings, lines = fusion_settings(_args(), cuda=True, kernels=kernels)
    gated = {key: field for field, _, _, key in FUSIONS if key is not None}
    assert settings == {field: field != gated[missing] for field in FIELDS}
    assert len(lines) == 2 and lines[0].startswith(f"> {gated[missing]} off: ")


@pytest.mark.parametrize("flag", sorted(UPSTREAM))
def test_a_no_flag_turns_its_fusion_off_silently(flag):
    field = next(f for f, _, fl, _ in FUSIONS if fl == flag)
    for kernels in (ALL_KERNELS, NO_KERNELS):
        settings, lines = fusion_settings(_args(flag), cuda=True, kernels=kernels)
        assert settings[field] is False
        assert not any(line.startswith(f"> {field} off") for line in lines)  # asked for: nothing to explain
        with_fusion, _ = fusion_settings(_args(), cuda=True, kernels=kernels)
        assert {f: v for f, v in settings.items() if f != field} == {f: v for f, v in with_fusion.items()
                                                                       if f != field}


def test_bias_activation_fusion_needs_gelu():
    settings, lines = fusion_settings(_args("--activation", "relu"), cuda=True, kernels=ALL_KERNELS)
    assert settings["bias_activation_fusion"] is False and settings["bias_dropout_fusion"] is True
    assert lines[0] == "> bias_activation_fusion off: megatron-core fuses the bias with GeLU only (--activation relu)"


def test_h100_matrix():
    """What an H100 gets: apex decides the kernel-backed fusions; Transformer Engine adds none (local layers)."""
    assert not any("transformer_engine" in modules[0][0] for modules in FUSION_KERNELS.values())
    for has_apex, kernels in ((False, NO_KERNELS), (True, ALL_KERNELS)):
        settings, _ = fusion_settings(_args(), cuda=True, kernels=kernels)
        on = {field for field, value in settings.items() if value}
        assert on == (set(FIELDS) if has_apex else TORCH_ONLY)


def _validated_args(*flags):
    from megatron.training.validate import validate_args

    args = _args("--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", "16",
                 "--micro-batch-size", "2", "--train-iters", "1", "--lr", "1e-3", "--mock-data", "--vocab-size",
                 "64", *flags)
    validate_args(args, 1)
    return args


def test_transformer_config_on_this_cpu_machine_has_no_fusion(capsys):
    config = model_setup.transformer_config_from_args(_validated_args("--cpu"))
    assert all(getattr(config, field) is False for field in FIELDS)
    assert "> fusions: none (CPU mode)" in capsys.readouterr().out.splitlines()


def test_transformer_config_on_a_faked_gpu_carries_the_decision(monkeypatch, capsys):
    from megatron.perf import cpu_compat

    monkeypatch.setattr(cpu_compat, "is_cpu_mode", lambda: False)
    monkeypatch.setattr(cpu_compat, "cpu_mode_wanted", lambda force_cpu=False: bool(force_cpu))
    monkeypatch.setattr(model_setup, "fusion_kernels", lambda: {**ALL_KERNELS, "fused_weight_gradient": False})
    config = model_setup.transformer_config_from_args(_validated_args("--no-persist-layer-norm"))
    want = {field: field not in ("gradient_accumulation_fusion", "persist_layer_norm") for field in FIELDS}
    assert {field: getattr(config, field) for field in FIELDS} == want
    out = capsys.readouterr().out.splitlines()
    assert sum(" off: " in line for line in out) == 1 and out[0].startswith("> gradient_accumulation_fusion off:")
    assert out[-1] == "> fusions on: bias_activation_fusion, bias_dropout_fusion, masked_softmax_fusion"


def test_the_kernel_probe_reports_nothing_here():
    """No apex on this CPU machine: every kernel-backed fusion would be refused (and the probe does not raise)."""
    kernels = model_setup.fusion_kernels()
    assert set(kernels) == set(FUSION_KERNELS)
    try:
        import apex  # noqa: F401
    except ImportError:
        assert kernels == NO_KERNELS
