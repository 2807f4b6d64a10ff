"""``--help`` of every entry point renders (argparse %-formats help strings: a bare '%' used to crash it)."""

import pytest

from tests.support import run_python


def _extra_args(entry):
    if entry == "gpt":
        return None
    if entry == "bert":
        import pretrain_bert
        return pretrain_bert.add_bert_args
    from tasks.main import add_task_args
    return add_task_args


@pytest.mark.parametrize("entry", ["gpt", "bert", "tasks"])
def test_help_text_renders_in_process(entry):
    from megatron.training.config import build_parser

    text = build_parser(_extra_args(entry)).format_help()
    assert "--init-scheme" in text and "--mlm-head-positions" in text
    assert "85% of the largest matmul" in text  # the help string that used to raise TypeError


def test_help_exits_zero_from_the_command_line():
    proc = run_python(["pretrain_bert.py", "--help"], timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--masking-max-ngram" in proc.stdout
