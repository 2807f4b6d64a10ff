"""Bad configurations fail at start-up with one clear message, exit status 2, and nothing written."""

import pytest

from tests.training.gpt_cases import TINY_GPT
from tests.support import run_python

BASE = TINY_GPT + ["--train-iters", "2"]


def _replace(argv, flag, value):
    out = list(argv)
    out[out.index(flag) + 1] = value
    return out


CASES = {
    "layers-not-divisible-by-pp": (BASE + ["--pipeline-model-parallel-size", "3"], "world size"),
    "micro-global-mismatch": (_replace(BASE, "--global-batch-size", "7"), "--global-batch-size 7 is not divisible"),
    "lambda-beta-not-normalised": (BASE + ["--residual-lambda-sq", "0.9", "--residual-beta-sq", "0.2"],
                                   "!= 1"),
    "unknown-scheme": (BASE + ["--init-scheme", "nope"], "--init-scheme 'nope' is unknown"),
    "knob-ignored-by-scheme": (BASE + ["--init-scheme", "xavier", "--dslm-k", "2"],
                               "--dslm-k has no effect with --init-scheme xavier"),
    "missing-vocab": (BASE + ["--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", "/nonexistent/v.txt"],
                      "does not exist"),
    "missing-data": ([a for a in BASE if a != "--mock-data"] + ["--data-path", "/nonexistent/prefix",
                                                                "--tokenizer-type", "NullTokenizer"],
                     "not found"),
    "no-data-at-all": ([a for a in BASE if a != "--mock-data"], "--data-path"),
    "heads-not-dividing-hidden": (_replace(BASE, "--num-attention-heads", "5"), "not divisible"),
    "seq-longer-than-positions": (_replace(BASE, "--seq-length", "64"), "exceeds --max-position-embeddings"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_is_rejected_by_validation(case):
    """In-process: parse + validate raise ConfigError with the message (fast; one subprocess check below)."""
    from megatron.training.training import parse_args
    from megatron.training.validate import ConfigError, validate_args

    argv, needle = CASES[case]
    args = parse_args(argv=argv[1:])
    with pytest.raises(ConfigError) as err:
        validate_args(args, world_size=1)
    assert needle in str(err.value)


@pytest.mark.parametrize("case", ["micro-global-mismatch", "missing-data", "lambda-beta-not-normalised"])
def test_bad_config_cli_exits_2_without_writing(case, tmp_path):
    argv, needle = CASES[case]
    save = tmp_path / "ck"
    proc = run_python(argv + ["--save", str(save)], timeout=180)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not save.exists()


def test_layers_not_divisible_by_pp_message(tmp_path):
    """With a world size that fits, the layer-count check itself must fire."""
    from tests.support import run_torchrun

    proc = run_torchrun(2, _replace(BASE, "--num-layers", "3") + ["--pipeline-model-parallel-size", "2"],
                        timeout=300)
    assert proc.returncode != 0
    assert "--num-layers 3 is not divisible by --pipeline-model-parallel-size 2" in proc.stderr


def test_split_without_documents_is_rejected(tmp_path):
    """A split that gets 0 documents but needs samples would make megatron-core loop forever."""
    from megatron.training.datasets import check_data_and_split
    from megatron.training.validate import ConfigError
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
    import numpy as np
    import torch

    prefix = str(tmp_path / "tiny")
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.int32)
    for doc in range(5):
        builder.add_document(torch.tensor([1, 2, 3, doc]), [4])
    builder.finalize(prefix + ".idx")
    check_data_and_split([prefix], "60,40,0", [10, 2, 0])  # fine
    with pytest.raises(ConfigError, match="valid split 0 of the 5 documents"):
        check_data_and_split([prefix], "949,50,1", [10, 2, 0])
