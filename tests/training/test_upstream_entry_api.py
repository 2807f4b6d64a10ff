"""A custom entry script written against upstream Megatron-LM's documented API runs here unchanged.

The script below has the shape of upstream's pretrain_gpt.py: ``pretrain(datasets_provider, model_provider,
ModelType.encoder_or_decoder, forward_step)``, a model provider with upstream's signature (no ``config``), a
``get_batch_on_this_tp_rank`` batch, megatron-core's BlendedMegatronDatasetBuilder with upstream's
``is_dataset_built_on_rank``, and loss functions in both of upstream's forms: the 3-tuple ``(loss sum, tokens,
{"lm loss": [sum, count]})`` and the older 2-tuple ``(mean, {"lm loss": mean})``. Both must log the losses of
our pretrain_gpt.py with the same flags: same seed, same data, same weights, hence the same losses.
"""

from __future__ import annotations

import math

import pytest

from tests.support import REPO_ROOT, run_python, run_torchrun, stderr_without_warnings
from tests.training.gpt_cases import NO_DROPOUT, TINY_GPT, assert_ok, metric_records

ENTRY = '''"""GPT pretraining in the style of upstream Megatron-LM's pretrain_gpt.py (a test's custom entry script)."""

from functools import partial

import torch

from megatron.core import parallel_state
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig, MockGPTDataset
from megatron.core.enums import ModelType
from megatron.training import get_args, get_timers, get_tokenizer, pretrain, print_rank_0
from megatron.training.arguments import core_transformer_config_from_args
from megatron.training.utils import (average_losses_across_data_parallel_group, get_batch_on_this_cp_rank,
                                     get_batch_on_this_tp_rank, get_blend_and_blend_per_split,
                                     is_first_or_last_pipeline_stage)


def add_entry_args(parser):
    group = parser.add_argument_group(title="entry script")
    group.add_argument("--loss-form", choices=["sum-count", "mean"], default="sum-count")
    group.add_argument("--model-source", choices=["dslm", "mcore"], default="dslm")
    group.add_argument("--non-loss-log", default=None)
    return parser


def model_provider(pre_process=True, post_process=True, vp_stage=None):
    """Our builder, as pretrain_gpt.py builds it, from the config of the flags."""
    from megatron.dslm.mcore.models import build_gpt_model
    from megatron.perf import SpeedOptions
    from megatron.training.model_setup import gpt_model_kwargs, init_table_from_args

    args = get_args()
    if args.model_source == "mcore":
        return mcore_model_provider(pre_process, post_process, vp_stage)
    config = core_transformer_config_from_args(args)
    return build_gpt_model(config, init_table_from_args(args, "gpt"), vocab_size=args.padded_vocab_size,
                           max_sequence_length=args.max_position_embeddings, pre_process=pre_process,
                           post_process=post_process, seed=args.seed, speed=SpeedOptions.from_args(args),
                           vp_stage=vp_stage, **gpt_model_kwargs(args))


def mcore_model_provider(pre_process=True, post_process=True, vp_stage=None, config=None, pg_collection=None):
    """megatron-core's GPTModel with its local layer spec, nothing of this stack's."""
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    args = get_args()
    return GPTModel(config=config or core_transformer_config_from_args(args),
                    transformer_layer_spec=get_gpt_layer_local_spec(), vocab_size=args.padded_vocab_size,
                    max_sequence_length=args.max_position_embeddings, pre_process=pre_process,
                    post_process=post_process, share_embeddings_and_output_weights=True, vp_stage=vp_stage,
                    pg_collection=pg_collection)


def get_batch(data_iterator, vp_stage=None):
    if not is_first_or_last_pipeline_stage(vp_stage):
        return None, None, None, None, None
    batch = get_batch_on_this_cp_rank(get_batch_on_this_tp_rank(data_iterator))
    return batch["tokens"], batch["labels"], batch["loss_mask"], batch["attention_mask"], batch["position_ids"]


def loss_func(loss_mask, output_tensor, non_loss_data=False):
    losses = output_tensor.view(-1).float()
    if non_loss_data:
        return losses.detach()
    loss_mask = loss_mask.view(-1).float()
    loss = torch.sum(losses * loss_mask)
    if get_args().loss_form == "mean":
        loss = loss / loss_mask.sum()
        return loss, {"lm loss": average_losses_across_data_parallel_group([loss])[0]}
    num_tokens = loss_mask.sum().clone().detach().to(torch.int)
    return loss, num_tokens, {"lm loss": torch.cat([loss.clone().detach().view(1), num_tokens.view(1)])}


def forward_step(data_iterator, model):
    timers = get_timers()
    timers("batch-generator", log_level=2).start()
    tokens, labels, loss_mask, attention_mask, position_ids = get_batch(data_iterator)
    timers("batch-generator").stop()
    output_tensor = model(tokens, position_ids, attention_mask, labels=labels)
    return output_tensor, partial(loss_func, loss_mask)


def is_dataset_built_on_rank():
    return is_first_or_last_pipeline_stage() and parallel_state.get_tensor_model_parallel_rank() == 0


def train_valid_test_datasets_provider(train_val_test_num_samples):
    args = get_args()
    blend, blend_per_split = get_blend_and_blend_per_split(args)
    config = GPTDatasetConfig(
        random_seed=args.seed, sequence_length=args.seq_length, blend=blend, blend_per_split=blend_per_split,
        split=args.split, path_to_cache=args.data_cache_path, tokenizer=get_tokenizer(),
        reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False, create_attention_mask=False)
    print_rank_0("> building train, validation, and test datasets for GPT ...")
    return BlendedMegatronDatasetBuilder(MockGPTDataset if args.mock_data else GPTDataset,
                                         train_val_test_num_samples, is_dataset_built_on_rank, config).build()


def process_non_loss_data(data, iteration, writer):
    path = get_args().non_loss_log
    if path:
        with open(path, "a") as f:
            f.write(f"{iteration} {len(data)} {tuple(data[0].shape)}\\n")


if __name__ == "__main__":
    train_valid_test_datasets_provider.is_distributed = True
    pretrain(train_valid_test_datasets_provider, model_provider, ModelType.encoder_or_decoder, forward_step,
             process_non_loss_data_func=process_non_loss_data, extra_args_provider=add_entry_args,
             args_defaults={"tokenizer_type": "NullTokenizer"})
'''

FLAGS = [*TINY_GPT[1:], *NO_DROPOUT, "--train-iters", "3", "--eval-interval", "2", "--eval-iters", "1"]


@pytest.fixture(scope="module")
def entry_script(tmp_path_factory):
    path = tmp_path_factory.mktemp("entry") / "pretrain_custom_gpt.py"
    path.write_text(ENTRY)
    return path


def _train(argv, folder, nproc=1):
    """(train, validation) metric records of one run: {iteration: {"lm loss": ...}}."""
    folder.mkdir(parents=True, exist_ok=True)
    metrics = folder / "metrics.jsonl"
    argv = [*argv, *FLAGS, "--metrics-file", str(metrics), "--tensorboard-dir", str(folder / "tb")]
    proc = run_python(argv, timeout=600) if nproc == 1 else run_torchrun(nproc, argv, timeout=900)
    assert_ok(proc)
    validation = {}
    for record in metric_records(metrics, split="validation").values():
        validation[(record["iteration"], record["end_of_training"])] = record["lm loss"]
    return {it: r["lm loss"] for it, r in metric_records(metrics).items()}, validation


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    train, validation = _train([str(REPO_ROOT / "pretrain_gpt.py")], tmp_path_factory.mktemp("reference"))
    assert sorted(train) == [1, 2, 3] and sorted(validation) == [(2, False), (3, True)]
    assert train[3] < train[1]  # the losses move: equal constant curves would prove nothing
    return train, validation


def _assert_same(got, want):
    """Same losses: the gradients are bit-identical, so only the order of the logged average's sums may differ."""
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-6, abs=0), f"{key}: {got[key]} vs {want[key]}"


def test_three_tuple_loss_func_logs_the_losses_of_pretrain_gpt(reference, entry_script, tmp_path):
    log = tmp_path / "non_loss.txt"
    train, validation = _train([str(entry_script), "--loss-form", "sum-count", "--non-loss-log", str(log)],
                               tmp_path / "run")
    _assert_same(train, reference[0])
    _assert_same(validation, reference[1])
    # process_non_loss_data_func: after each evaluation, one collected tensor per micro-batch (4: 8 / 2)
    assert log.read_text().split("\n")[:-1] == ["2 4 (64,)", "3 4 (64,)"]


def test_two_tuple_loss_func_logs_the_same_losses(reference, entry_script, tmp_path):
    train, validation = _train([str(entry_script), "--loss-form", "mean"], tmp_path / "run")
    _assert_same(train, reference[0])
    _assert_same(validation, reference[1])


def test_a_megatron_core_model_provider_with_upstreams_signature_trains(entry_script, tmp_path):
    train, validation = _train([str(entry_script), "--model-source", "mcore"], tmp_path / "run")
    assert sorted(train) == [1, 2, 3] and sorted(validation) == [(2, False), (3, True)]
    assert all(math.isfinite(v) for v in [*train.values(), *validation.values()])
    assert abs(train[1] - math.log(256)) < 0.5  # an untrained model over 256 tokens


@pytest.mark.dist
def test_datasets_only_on_tensor_parallel_rank_0(reference, entry_script, tmp_path):
    """Upstream's is_dataset_built_on_rank leaves TP rank 1 without datasets: it still runs every step and
    evaluation, taking its batches by broadcast, and the losses are the one-process ones."""
    train, validation = _train([str(entry_script), "--tensor-model-parallel-size", "2"], tmp_path / "run", nproc=2)
    for got, want in ((train, reference[0]), (validation, reference[1])):
        assert sorted(got) == sorted(want)
        for key in want:
            assert got[key] == pytest.approx(want[key], abs=1e-5), f"{key}: {got[key]} vs {want[key]}"


BAD_CALLS = '''import enum, sys
from megatron.training import pretrain

class ModelType(enum.Enum):  # the legacy encoder-decoder type of older Megatron-LM
    encoder_and_decoder = 2

def provider(*args, **kwargs):
    raise AssertionError("not reached")

mode = sys.argv[1]
if mode == "old-order":
    pretrain(provider, provider, provider)
elif mode == "encoder-decoder":
    pretrain(provider, provider, ModelType.encoder_and_decoder, provider)
else:
    pretrain(provider, provider, "gpt", provider)
'''


@pytest.mark.parametrize("mode, message", [
    ("old-order", "error: pretrain(): the third argument is model_type, got the function 'provider': upstream's "
                  "order is pretrain(train_valid_test_dataset_provider, model_provider, "
                  "ModelType.encoder_or_decoder, forward_step_func)"),
    ("encoder-decoder", "error: pretrain(): model_type ModelType.encoder_and_decoder is not supported: only "
                        "ModelType.encoder_or_decoder"),
    ("string", "error: pretrain(): model_type must be megatron.core.enums.ModelType.encoder_or_decoder, got str "
               "'gpt'"),
])
def test_a_bad_model_type_is_one_line_and_exit_2(mode, message, tmp_path):
    script = tmp_path / "bad.py"
    script.write_text(BAD_CALLS)
    proc = run_python([str(script), mode], timeout=300)
    lines = stderr_without_warnings(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(message), proc.stderr[-2000:]


@pytest.mark.usefixtures("single_process_megatron")
def test_logged_values_reduce_as_upstreams_training_log():
    """A scalar per micro-batch is averaged over micro-batches; [sum, count] is token-weighted."""
    import torch

    from megatron.training.training import _loss_sums, _reduce_loss_dicts

    dicts = [{"lm loss": torch.tensor([6.0, 3.0]), "acc": torch.tensor(0.5)},
             {"lm loss": torch.tensor([1.0, 1.0]), "acc": torch.tensor(1.0)}]
    assert _reduce_loss_dicts(dicts) == {"lm loss": 7.0 / 4.0, "acc": 0.75}  # not (2 + 1) / 2 for lm loss
    assert _loss_sums(dicts) == {"lm loss": (7.0, 4.0), "acc": (1.5, 2.0)}
    assert _reduce_loss_dicts([{"lm loss": torch.tensor([0.0, 0.0])}]) == {"lm loss": 0.0}  # all masked


@pytest.mark.usefixtures("single_process_megatron")
def test_model_providers_get_the_keywords_they_name():
    from megatron.training.training import call_model_provider
    from megatron.training.validate import ConfigError

    def upstream_old(pre_process=True, post_process=True):
        return ("old", pre_process, post_process)

    def upstream_vp(pre_process=True, post_process=True, vp_stage=None):
        return ("vp", vp_stage)

    def ours(pre_process=True, post_process=True, config=None, vp_stage=None):
        return ("ours", config, vp_stage)

    def upstream_new(pre_process=True, post_process=True, vp_stage=None, config=None, pg_collection=None):
        return ("new", config, pg_collection is not None)

    def any_keywords(**kwargs):
        return sorted(kwargs)

    assert call_model_provider(upstream_old, True, False, "cfg") == ("old", True, False)
    assert call_model_provider(upstream_vp, True, True, "cfg", 1) == ("vp", 1)
    assert call_model_provider(ours, True, True, "cfg") == ("ours", "cfg", None)
    assert call_model_provider(upstream_new, True, True, "cfg") == ("new", "cfg", True)
    assert call_model_provider(any_keywords, True, True, "cfg") == [
        "config", "pg_collection", "post_process", "pre_process", "vp_stage"]
    with pytest.raises(ConfigError, match="takes no vp_stage argument"):
        call_model_provider(upstream_old, True, True, "cfg", 0)
