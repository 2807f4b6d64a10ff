"""megatron-core's GPT and BERT datasets accept our tokenizers and our preprocessed data.

They read `eod`, `pad`, `cls`, `sep`, `mask`, `inv_vocab` ('##' continuations) and json-dump
`unique_identifiers` into the cache key; the BERT sample index calls
torch.distributed.get_rank(), so this runs in a child process with a one-rank gloo group.
"""

import json
import subprocess
import sys

from tests.support import REPO_ROOT, TINY_TEXTS
from tests.support import cpu_env, free_port

_CHILD = r"""
import sys, torch
torch.distributed.init_process_group("gloo", init_method="tcp://127.0.0.1:%(port)d", rank=0, world_size=1)
from megatron.training.tokenizers import build_tokenizer
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.bert_dataset import BERTMaskedWordPieceDataset, BERTMaskedWordPieceDatasetConfig
tok = build_tokenizer("BertWordPieceLowerCase", vocab_file=%(vocab)r)
gpt_cfg = GPTDatasetConfig(random_seed=1, sequence_length=16, blend=([%(gpt)r], None), split="1,0,0",
                           tokenizer=tok, reset_position_ids=False, reset_attention_mask=False,
                           eod_mask_loss=False, path_to_cache=%(cache)r)
train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [20, None, None], lambda: True, gpt_cfg).build()
sample = train[0]
assert sample["tokens"].shape == (16,), sample["tokens"].shape
assert (torch.cat([train[i]["tokens"] for i in range(len(train))]) == tok.eod).any()
bert_cfg = BERTMaskedWordPieceDatasetConfig(
    random_seed=1, sequence_length=24, blend=([%(bert)r], None), split="1,0,0", tokenizer=tok,
    path_to_cache=%(cache)r, masking_probability=0.15, short_sequence_probability=0.1,
    masking_max_ngram=3, masking_do_full_word=True, masking_do_permutation=False,
    masking_use_longer_ngrams=False, masking_use_geometric_distribution=False,
    classification_head=True)
train, _, _ = BlendedMegatronDatasetBuilder(BERTMaskedWordPieceDataset, [20, None, None], lambda: True, bert_cfg).build()
s = train[0]
assert s["text"][0] == tok.cls and tok.sep in s["text"].tolist(), s["text"]
assert s["padding_mask"].shape == (24,) and (s["labels"] >= -1).all()
print("CORE-DATASETS-OK", len(train))
"""


def test_gpt_and_bert_datasets_build_on_our_tokenizer_and_data(preprocess, wordpiece_vocab, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": " ".join(TINY_TEXTS[i % 4:] + TINY_TEXTS[:i % 4])}) + "\n"
                              for i in range(40)))
    common = ["--input", str(corpus), "--tokenizer-type", "BertWordPieceLowerCase",
              "--vocab-file", str(wordpiece_vocab)]
    assert preprocess.main(common + ["--output-prefix", str(tmp_path / "gpt"), "--append-eod"]) == 0
    assert preprocess.main(common + ["--output-prefix", str(tmp_path / "bert"), "--split-sentences"]) == 0
    script = _CHILD % {"port": free_port(), "vocab": str(wordpiece_vocab), "cache": str(tmp_path / "cache"),
                       "gpt": str(tmp_path / "gpt_text_document"), "bert": str(tmp_path / "bert_text_sentence")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                          env=cpu_env(), cwd=str(REPO_ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CORE-DATASETS-OK" in proc.stdout
