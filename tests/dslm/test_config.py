"""The method's configuration is declared once (megatron.dslm.config) and validated once (the scheme registry).

Covers: the pure-Python layers load neither torch nor megatron-core; theory and schemes import in either
order and theory never imports schemes; training and every CLI expose the same DSLM flags with the same
defaults; each scheme's declared reads match what changes its table; a knob the chosen scheme ignores is
refused; training start-up reports the registry's own message as one ConfigError line.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from megatron.dslm import config as dslm_config
from megatron.dslm.config import DEFAULT_EMBEDDING_CORR, DSLMConfig, explicit_fields, model_arch
from megatron.dslm.contract import ModelArch
from megatron.dslm.schemes.registry import SCHEME_NAMES, SCHEMES, build_init_table, check_config

from tests.training.gpt_cases import TINY_GPT

REPO = Path(__file__).resolve().parents[2]
DSLM = REPO / "megatron" / "dslm"


def _modules(package: str) -> list:
    folder = REPO / Path(*package.split("."))
    return [package] + [f"{package}.{m.name}" for m in pkgutil.iter_modules([str(folder)])]


THEORY = _modules("megatron.dslm.theory")
SCHEME_MODULES = _modules("megatron.dslm.schemes")
PURE = THEORY + SCHEME_MODULES + ["megatron.dslm.contract", "megatron.dslm.config", "megatron.dslm.embedding_corr"]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)


# ---------------------------------------------------------------------------------------------- imports


def test_pure_modules_load_neither_torch_nor_megatron_core():
    assert len(THEORY) > 3 and len(SCHEME_MODULES) > 5
    proc = _python(
        "import importlib, json, sys\n"
        f"for name in {PURE!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'megatron.core')))))"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


@pytest.mark.parametrize("first,second", [(THEORY, SCHEME_MODULES), (SCHEME_MODULES, THEORY)])
def test_theory_and_schemes_import_in_either_order(first, second):
    proc = _python(f"import importlib\nfor name in {first + second!r}: importlib.import_module(name)\nprint('ok')")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def _imported_names(path: Path) -> list:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return names


def test_theory_never_imports_schemes_and_training_never_imports_a_cli():
    for path in sorted((DSLM / "theory").glob("*.py")):
        offending = [n for n in _imported_names(path) if "schemes" in n.split(".")]
        assert not offending, (path.name, offending)
    clis = {"predict", "simulate", "estimate_corr", "plot_moments"}
    for path in sorted((REPO / "megatron" / "training").rglob("*.py")):
        offending = [n for n in _imported_names(path) if n.startswith("megatron.dslm.") and clis & set(n.split("."))]
        assert not offending, (path.name, offending)


def test_reference_r0_is_written_once():
    hits = [p.relative_to(REPO) for p in sorted((REPO / "megatron").rglob("*.py")) if "0.221" in p.read_text()]
    assert hits == [Path("megatron/dslm/contract.py")]
    assert ModelArch(1, 2, 1, 2).embedding_corr == DEFAULT_EMBEDDING_CORR == 0.221


# ------------------------------------------------------------------------------------- one declaration


def _training_parser():
    from megatron.training.config import build_parser

    return build_parser()


def _cli_parsers():
    from megatron.dslm import estimate_corr, predict

    return {"predict": predict.build_parser(), "estimate_corr": estimate_corr.build_parser()}


def _dslm_actions(parser) -> dict:
    return {a.dest: a for a in parser._actions if a.dest in dslm_config.FIELDS}


def _signature(action) -> tuple:
    return (type(action).__mro__[1].__name__, action.default, action.type, action.choices, action.help, action.nargs)


@pytest.mark.parametrize("cli", ["predict", "estimate_corr"])
def test_cli_and_training_flags_are_the_same(cli):
    training = _dslm_actions(_training_parser())
    other = _dslm_actions(_cli_parsers()[cli])
    assert set(training) == set(dslm_config.FIELDS) - {"model_type"}
    shared = set(training) & set(other)
    assert shared, cli
    for dest in sorted(shared):
        assert _signature(training[dest]) == _signature(other[dest]), dest
        assert set(training[dest].option_strings) <= set(other[dest].option_strings), dest
    if cli == "predict":
        assert shared == set(training)
        assert "--post-ln" in other["apply_residual_connection_post_layernorm"].option_strings
    # Training's historical defaults, now every CLI's.
    assert training["attention_dropout"].default == 0.1 and training["hidden_dropout"].default == 0.1
    assert training["init_scheme"].default == "megatron" and training["embedding_corr"].default is None


def test_predict_help_lists_every_training_flag():
    proc = subprocess.run([sys.executable, "-m", "megatron.dslm.predict", "--help"], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for dest, action in _dslm_actions(_training_parser()).items():
        assert action.option_strings[0] in proc.stdout, dest


def test_plot_moments_flags_and_arch_come_from_the_config(tmp_path):
    pytest.importorskip("matplotlib")
    from megatron.dslm import plot_moments

    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"iteration": 1, "layer": k, "forward_var": 1.0, "grad_var": 1.0}) + "\n"
                            for k in range(3)))
    base = ["--moments-file", str(path), "--out", str(tmp_path / "m.png"), "--num-layers", "2", "--hidden-size",
            "32", "--num-attention-heads", "4", "--seq-length", "8"]
    plot_moments.main(base + ["--init-scheme", "dslm", "--post-ln"])
    assert (tmp_path / "m.png").exists()
    with pytest.raises(SystemExit, match="--dslm-k has no effect with --init-scheme xavier"):
        plot_moments.main(base + ["--init-scheme", "xavier", "--dslm-k", "2"])


def test_model_arch_defaults_match_the_config():
    dims = dict(num_layers=4, hidden_size=64, num_attention_heads=4, seq_length=16)
    assert model_arch(DSLMConfig(**dims)) == ModelArch(**dims)
    assert model_arch(argparse.Namespace(**dims)) == ModelArch(**dims)  # missing attributes: the defaults
    bert = model_arch(DSLMConfig(**dims, model_type="bert", apply_residual_connection_post_layernorm=True))
    assert (bert.num_tokentypes, bert.num_embedding_tables, bert.post_ln) == (2, 3, True)
    assert model_arch(DSLMConfig(**dims), vocab_size=512, embedding_corr=0.01).vocab_size == 512


def test_explicit_fields_count_only_the_command_line():
    parser = _training_parser()
    parser.set_defaults(num_tokentypes=2, dslm_k=3.0)  # what entry scripts' args_defaults do
    args = parser.parse_args(["--num-layers", "4", "--apply-residual-connection-post-layernorm",
                              "--embedding-corr", "0.1"])
    assert explicit_fields(args) == {"num_layers", "apply_residual_connection_post_layernorm", "embedding_corr"}
    assert args.dslm_k == 3.0 and args.num_tokentypes == 2


# ------------------------------------------------------------------------------- the registry decides

BASE = DSLMConfig(num_layers=4, hidden_size=64, num_attention_heads=4, seq_length=16)
PERTURB = dict(
    num_layers=6, hidden_size=128, ffn_hidden_size=96, num_attention_heads=8, kv_channels=8, seq_length=24,
    vocab_size=1000, hidden_dropout=0.2, attention_dropout=0.2, activation="relu",
    apply_residual_connection_post_layernorm=True, model_type="bert", num_tokentypes=2, init_method_std=0.05,
    dslm_k=2.0, residual_lambda_sq=0.9, residual_beta_sq=0.2, allow_unnormalized_residual=True,
    embedding_corr=0.05,
)


def test_perturbations_cover_every_field():
    assert set(PERTURB) == set(dslm_config.FIELDS) - {"init_scheme"}
    for scheme in SCHEMES.values():
        assert scheme.reads <= set(PERTURB), scheme.name


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_declared_reads_are_what_changes_the_table(name):
    """A field outside ``reads`` never changes the table; one inside does (so refusing it is never wrong)."""
    reads = SCHEMES[name].reads
    base = build_init_table(name, model_arch(BASE))
    for field_name, value in PERTURB.items():
        changed = build_init_table(name, model_arch(dataclasses.replace(BASE, **{field_name: value})))
        if field_name not in reads:
            assert changed == base, f"{name} reads {field_name} but does not declare it"
        elif field_name != "allow_unnormalized_residual":  # a permission: no effect on a normalised pair
            assert changed != base, f"{name} declares {field_name} but ignores it"


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_an_explicit_knob_the_scheme_ignores_is_refused(name):
    arch = model_arch(BASE)
    for knob in sorted(dslm_config.SCHEME_KNOBS):
        if knob in SCHEMES[name].reads:
            assert check_config(name, arch, {knob}).name == name
        else:
            with pytest.raises(ValueError, match=f"{dslm_config.flag(knob)} has no effect with --init-scheme "
                                                 f"{name.replace('_', '-')}"):
                check_config(name, arch, {knob})
    assert check_config(name, arch, dslm_config.SCHEME_KNOBS, read_elsewhere=dslm_config.SCHEME_KNOBS).name == name


def _validate(argv):
    from megatron.training.training import parse_args
    from megatron.training.validate import validate_args

    args = parse_args(argv=argv)
    validate_args(args, world_size=1)
    return args


def test_training_refuses_a_knob_the_scheme_ignores():
    from megatron.training.validate import ConfigError

    base = TINY_GPT[1:] + ["--train-iters", "3"]  # longer than the warmup: a run that could start
    with pytest.raises(ConfigError, match="--dslm-k has no effect with --init-scheme megatron"):
        _validate(base + ["--dslm-k", "2"])
    with pytest.raises(ConfigError, match="--embedding-corr has no effect with --init-scheme xavier"):
        _validate(base + ["--init-scheme", "xavier", "--embedding-corr", "0.01"])
    with pytest.raises(ConfigError, match="--init-method-std has no effect with --init-scheme dslm"):
        _validate(base + ["--init-scheme", "dslm", "--init-method-std", "0.01"])
    assert _validate(base + ["--init-scheme", "dslm", "--dslm-k", "2", "--embedding-corr", "0.01"]).dslm_k == 2.0
    assert _validate(base + ["--init-method-std", "0.01"]).init_scheme == "megatron"


def test_predict_refuses_a_knob_the_scheme_ignores_in_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "megatron.dslm.predict", "--num-layers", "4", "--hidden-size", "64",
         "--num-attention-heads", "4", "--seq-length", "16", "--init-scheme", "megatron", "--dslm-k", "2"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "python -m megatron.dslm.predict: error: --dslm-k has no effect with --init-scheme megatron "
        "(read by: dslm, dslm-simplified); drop it or choose a scheme that reads it"]


@pytest.mark.parametrize("extra", [
    ["--init-scheme", "dslm", "--residual-lambda-sq", "0.9", "--residual-beta-sq", "0.2"],
    ["--init-scheme", "dslm-simplified", "--residual-beta-sq", "1.5"],
    ["--init-scheme", "dslm", "--dslm-k", "8"],  # beta^2 = 8/4 > 1
    ["--init-scheme", "dslm", "--dslm-k", "0"],
    ["--init-scheme", "fixup"],
])
def test_training_reports_the_registry_message_in_one_line(extra):
    from megatron.training.validate import ConfigError

    argv = TINY_GPT[1:] + ["--train-iters", "1"] + extra
    with pytest.raises(ConfigError) as err:
        _validate(argv)
    from megatron.training.training import parse_args

    args = parse_args(argv=argv)
    with pytest.raises(ValueError) as registry:
        check_config(args.init_scheme, model_arch(args))
    assert str(err.value) == str(registry.value)
    assert "\n" not in str(err.value) and str(err.value).startswith("--")


def test_allowed_unnormalised_residual_passes_training_and_predict():
    from megatron.dslm import predict

    extra = ["--init-scheme", "dslm", "--residual-lambda-sq", "1.0", "--residual-beta-sq", "0.1",
             "--allow-unnormalized-residual"]
    args = _validate(TINY_GPT[1:] + ["--train-iters", "3"] + extra)
    table = build_init_table(args.init_scheme, model_arch(args))
    assert table.layers[0].attn_lambda == 1.0 and table.layers[0].attn_beta == pytest.approx(0.1 ** 0.5)
    assert predict.main(["--num-layers", "4", "--hidden-size", "64", "--num-attention-heads", "4",
                         "--seq-length", "16", *extra]) == 0
