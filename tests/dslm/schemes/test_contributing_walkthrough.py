"""CONTRIBUTING.md's "A new init scheme" walk-through, followed literally, gives a working scheme.

It copies ``megatron/dslm`` to a scratch folder, writes the walk-through's file, adds its one registry line, and
runs ``python -m megatron.dslm.predict --init-scheme small-init`` against the copy. Nothing else is edited, so
the test fails if the walk-through stops being true (a second line needed, a renamed helper, ...).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import REPO_ROOT, cpu_env


def test_add_a_scheme_walkthrough(tmp_path):
    text = (REPO_ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    match = re.search(r"as `megatron/dslm/schemes/(\w+)\.py`:\n\n   ```python\n(.*?)   ```", text, re.S)
    assert match, "CONTRIBUTING.md lost its example scheme file"
    module, code = match.group(1), "\n".join(line[3:] for line in match.group(2).splitlines()) + "\n"
    line = re.search(r"`_SCHEME_MODULES`:\n\n   ```python\n   (.*?)\n   ```", text, re.S)
    assert line, "CONTRIBUTING.md lost its registry line"

    copy = tmp_path / "megatron" / "dslm"
    shutil.copytree(REPO_ROOT / "megatron" / "dslm", copy, ignore=shutil.ignore_patterns("__pycache__", "mcore"))
    (copy / "schemes" / f"{module}.py").write_text(code, encoding="utf-8")
    registry = copy / "schemes" / "registry.py"
    source = registry.read_text(encoding="utf-8")
    anchor = "_SCHEME_MODULES = (\n"
    assert anchor in source
    registry.write_text(source.replace(anchor, anchor + line.group(1) + "\n", 1), encoding="utf-8")

    env = cpu_env()
    env["PYTHONPATH"] = str(tmp_path) + ":" + env.get("PYTHONPATH", "")
    run = subprocess.run([sys.executable, "-m", "megatron.dslm.predict", "--num-layers", "8", "--hidden-size", "64",
                          "--num-attention-heads", "4", "--seq-length", "32",
                          "--init-scheme", module.replace("_", "-"), "--json", str(tmp_path / "p.json")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "p.json").exists()
    # the copy, not the installed package, answered
    probe = subprocess.run([sys.executable, "-c", "import megatron.dslm.schemes.registry as r; print(r.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert Path(probe.stdout.strip()).resolve().is_relative_to(tmp_path.resolve()), probe.stdout
