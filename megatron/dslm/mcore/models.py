"""Build megatron-core GPT/BERT models with a scheme's InitTable: layer spec, Post-LN fix-ups, weight init.

These are what ``model_provider`` calls. The megatron scheme with λ = β = 1 and Pre-LN gives the stock
megatron-core model (stock layer callables, megatron's σ = 0.02 and 0.02/√(2N) on output projections), only
initialised layout-independently (see :mod:`megatron.dslm.mcore.weight_init`).
"""

from __future__ import annotations

from megatron.core.models.bert.bert_model import BertModel
from megatron.core.models.gpt.gpt_model import GPTModel
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron.dslm.contract import InitTable
from megatron.dslm.mcore.specs import (
    add_embedding_layernorm,
    add_lm_logit_scale,
    get_dslm_bert_layer_spec,
    get_dslm_gpt_layer_spec,
    remove_final_layernorm,
)
from megatron.dslm.mcore.weight_init import apply_init_table
from megatron.training import perf
from megatron.training.perf import SpeedOptions


def _check_table(config: TransformerConfig, table: InitTable) -> None:
    if len(table.layers) != config.num_layers:
        raise ValueError(f"InitTable '{table.scheme}' has {len(table.layers)} layers but the model has "
                         f"--num-layers {config.num_layers}")
    for i, layer in enumerate(table.layers):
        if layer.layer_number != i + 1:
            raise ValueError(f"InitTable '{table.scheme}': layers[{i}].layer_number is {layer.layer_number}")


def _build(model_cls, block_name: str, spec_fn, config: TransformerConfig, table: InitTable, post_ln: bool,
           seed: int, speed: SpeedOptions, **model_kwargs):
    """Spec -> model -> Post-LN fix-ups -> LM logit scale -> speed paths -> layout-independent init."""
    post_ln = bool(post_ln or config.apply_residual_connection_post_layernorm)
    _check_table(config, table)
    spec = spec_fn(table, post_ln=post_ln, speed=speed)
    model = model_cls(config=config, transformer_layer_spec=spec, **model_kwargs)
    if post_ln:
        remove_final_layernorm(getattr(model, block_name))
    if (post_ln or table.embedding_layernorm) and model.pre_process:
        add_embedding_layernorm(model.embedding, config)
    if model.post_process:
        add_lm_logit_scale(model.output_layer, table.lm_logit_scale)
    perf.apply_to_model(model, speed, bert=block_name == "encoder")
    apply_init_table(model, table, seed)
    return model


def build_gpt_model(config: TransformerConfig, table: InitTable, *, vocab_size: int, max_sequence_length: int,
                    pre_process: bool = True, post_process: bool = True, post_ln: bool = False, seed: int = 1234,
                    share_embeddings_and_output_weights: bool = True,
                    position_embedding_type: str = "learned_absolute",
                    speed: SpeedOptions = perf.STOCK) -> GPTModel:
    """A megatron-core ``GPTModel`` with λ/β residual scaling, optional Post-LN, initialised from ``table``.

    Args:
        config: megatron-core config (pass TP/PP sizes in it too; ``num_layers`` must equal the table's).
        table: the init scheme's table (std per role/layer, λ/β per layer, LM logit scale).
        vocab_size: the *padded* vocabulary size (keep it TP-independent for layout-invariant init).
        post_ln: Post-LN (``LN(λx + βF(x))``, embedding LN, no final LN); also selected by
            ``config.apply_residual_connection_post_layernorm``.
        seed: weight seed; the same seed gives the same full weights at every TP/PP layout.
        speed: the opt-in speed paths to build with (:mod:`megatron.training.perf`; stock by default).
    """
    return _build(GPTModel, "decoder", get_dslm_gpt_layer_spec, config, table, post_ln, seed, speed,
                  vocab_size=vocab_size, max_sequence_length=max_sequence_length, pre_process=pre_process,
                  post_process=post_process, position_embedding_type=position_embedding_type,
                  share_embeddings_and_output_weights=share_embeddings_and_output_weights)


def build_bert_model(config: TransformerConfig, table: InitTable, *, vocab_size: int, max_sequence_length: int,
                     num_tokentypes: int = 2, add_binary_head: bool = True, pre_process: bool = True,
                     post_process: bool = True, post_ln: bool = False, seed: int = 1234,
                     share_embeddings_and_output_weights: bool = True,
                     speed: SpeedOptions = perf.STOCK) -> BertModel:
    """A megatron-core ``BertModel`` (padding-mask attention) built and initialised like :func:`build_gpt_model`.

    Post-LN here is original BERT's layout (embedding LN, a LN after every merge). Unlike BertModel's own
    default, the output layer is tied to the word embedding (as in BERT). ``speed.masked_positions_mlm`` builds
    the masked-positions LM-head subclass (LM head on the loss positions only when the forward gets
    ``mlm_positions``).
    """
    return _build(perf.bert_model_class(speed), "encoder", get_dslm_bert_layer_spec, config, table, post_ln, seed,
                  speed, num_tokentypes=num_tokentypes, vocab_size=vocab_size,
                  max_sequence_length=max_sequence_length, pre_process=pre_process, post_process=post_process,
                  add_binary_head=add_binary_head,
                  share_embeddings_and_output_weights=share_embeddings_and_output_weights)
