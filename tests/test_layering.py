"""The package layers, checked statically: each room imports only the rooms below it.

    megatron.dslm (method: contract, config, theory, schemes, library halves, CLIs)
    megatron.perf (speed paths over megatron-core)      megatron.dslm.mcore (adapter over megatron-core)
    megatron.training (flags, loop, checkpoints)        entry points, tasks/, tools/, scripts/

The method never imports torch or megatron-core (its own test checks the loaded modules too); the adapter and the
speed paths never import the training package; nothing in ``megatron/`` imports the entry points or ``tasks``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

MEGATRON = REPO_ROOT / "megatron"
METHOD_MODULES = ("contract.py", "config.py", "embedding_corr.py", "theory", "schemes")


def _imports(path: Path):
    """(line, module) of every import in ``path``, relative imports resolved to absolute names."""
    package = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:  # `from megatron import perf` names a package too
                yield node.lineno, f"{module}.{alias.name}"


def _files(*parts):
    root = MEGATRON.joinpath(*parts)
    return sorted(root.rglob("*.py")) if root.is_dir() else [root]


def _violations(files, forbidden):
    out = []
    for path in files:
        for line, module in _imports(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {module}")
    return out


def test_there_is_no_megatron_init():
    assert not (MEGATRON / "__init__.py").exists(), "megatron/ is a namespace shared with megatron.core"


@pytest.mark.parametrize("name", METHOD_MODULES)
def test_method_imports_neither_torch_nor_megatron_core(name):
    assert _violations(_files("dslm", name), ("torch", "megatron.core", "megatron.training", "megatron.perf",
                                              "megatron.dslm.mcore")) == []


def test_theory_never_imports_schemes():
    assert _violations(_files("dslm", "theory"), ("megatron.dslm.schemes",)) == []


def test_adapter_and_speed_paths_sit_below_training():
    files = _files("dslm", "mcore") + _files("perf")
    assert _violations(files, ("megatron.training", "tasks", "tools", "pretrain_gpt", "pretrain_bert")) == []


def test_speed_paths_do_not_import_dslm():
    assert _violations(_files("perf"), ("megatron.dslm",)) == []


def test_nothing_in_megatron_imports_entry_points_or_tasks():
    assert _violations(_files(), ("tasks", "tools", "pretrain_gpt", "pretrain_bert", "scripts")) == []


def test_the_checker_sees_a_violation(tmp_path):
    """The checker itself can fail: a module importing the training package is reported."""
    bad = REPO_ROOT / "megatron" / "perf" / "_layering_probe.py"
    try:
        bad.write_text("from megatron.training import checkpointing\n", encoding="utf-8")
        assert _violations([bad], ("megatron.training",))
    finally:
        bad.unlink()
