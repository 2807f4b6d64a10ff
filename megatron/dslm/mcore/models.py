"""Build megatron-core GPT/BERT models with a scheme's InitTable: block spec, model, weight init.

These are what ``model_provider`` calls. The megatron scheme with λ = β = 1 and Pre-LN gives the stock
megatron-core model (stock layer callables, megatron's σ = 0.02 and 0.02/√(2N) on output projections), only
initialised layout-independently (see :mod:`megatron.dslm.mcore.weight_init`).

The norm placement is ``config.apply_residual_connection_post_layernorm`` (megatron-core's own field) and
nothing else: it selects the layer spec, the block spec (no final LayerNorm for Post-LN) and the embedding
LayerNorm, and the InitTable must have been built for the same placement.

What the specs cannot express is built by the model classes' constructors (:class:`DSLMGPTModel`,
:class:`DSLMBertModel`): megatron-core's ``GPTModel`` and ``BertModel`` create their ``LanguageModelEmbedding``
and output layer inline, taking neither an embedding class nor an output-layer spec, and BertModel calls the
output layer inside its monolithic ``forward``. So the constructor specialises the built embedding to
:class:`NormedLanguageModelEmbedding` (Post-LN) and registers the DSLM logit scale on the output layer's input.
"""

from __future__ import annotations

import copy
import functools
from typing import Optional

import torch

from megatron.core.models.bert.bert_model import BertModel
from megatron.core.models.common.embeddings.language_model_embedding import LanguageModelEmbedding
from megatron.core.models.gpt.gpt_model import GPTModel
from megatron.core.transformer.spec_utils import build_module
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron.dslm.contract import InitTable
from megatron.dslm.mcore.specs import get_dslm_bert_layer_spec, get_dslm_block_spec, get_dslm_gpt_layer_spec
from megatron.dslm.mcore.weight_init import apply_init_table
from megatron import perf
from megatron.perf import SpeedOptions


class _NormThenDropout(torch.nn.Module):
    """Stands in for the stock ``embedding_dropout``: the owner's ``embedding_layernorm``, then the dropout.

    The norm stays registered on the embedding only (a list hides it from this module), so its checkpoint key is
    unchanged; the stock forward calls this where it would call the dropout, inside the sequence-parallel RNG fork.
    """

    def __init__(self, owner: torch.nn.Module, dropout: torch.nn.Module):
        super().__init__()
        self.dropout = dropout
        self._owner = [owner]

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.dropout(self._owner[0].embedding_layernorm(embeddings))


class NormedLanguageModelEmbedding(LanguageModelEmbedding):
    """``LanguageModelEmbedding`` with original BERT's embedding LayerNorm (Post-LN): word + position + token
    type -> LayerNorm -> dropout, as Google's BERT and transformers' ``BertEmbeddings`` order them (a LayerNorm
    after the dropout would renormalise the dropout noise and train on other statistics than it evaluates on).

    The norm is the child ``embedding_layernorm`` (checkpoint key ``embedding.embedding_layernorm.*``).
    """

    @classmethod
    def specialise(cls, embedding: LanguageModelEmbedding, config: TransformerConfig) -> "NormedLanguageModelEmbedding":
        """Turn a built stock embedding into this class in place (its parameters and keys stay as they are)."""
        if type(embedding) is not LanguageModelEmbedding:
            raise TypeError(f"expected megatron-core's LanguageModelEmbedding, got {type(embedding).__name__}")
        from megatron.core.models.backends import LocalSpecProvider
        from megatron.dslm.mcore.specs import norm_module

        norm_spec = norm_module(config) or LocalSpecProvider().layer_norm(rms_norm=False, for_qk=False)
        embedding.__class__ = cls
        embedding.embedding_layernorm = build_module(norm_spec, config=config, hidden_size=config.hidden_size,
                                                     eps=config.layernorm_epsilon)
        embedding.embedding_dropout = _NormThenDropout(embedding, embedding.embedding_dropout)
        return embedding


class LogitScale:
    """Output-layer forward pre-hook: multiply its input (the final hidden state) by the DSLM LM logit scale.

    On the output layer itself, so it follows that layer to whichever pipeline stage owns it and serves the tied
    and the untied head alike.
    """

    def __init__(self, scale: float):
        self.scale = float(scale)

    def __call__(self, module, args):
        return (args[0] * self.scale,) + tuple(args[1:])


class _DSLMModelMixin:
    """Constructor additions shared by the GPT and BERT classes: embedding LayerNorm (Post-LN), logit scale."""

    def __init__(self, *args, lm_logit_scale: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        if self.pre_process and self.config.apply_residual_connection_post_layernorm:
            NormedLanguageModelEmbedding.specialise(self.embedding, self.config)
        self.lm_logit_scale = float(lm_logit_scale)
        if self.post_process and self.lm_logit_scale != 1.0:
            if self.config.mtp_num_layers:
                raise NotImplementedError("the DSLM LM logit scale with multi-token prediction")
            self.output_layer.register_forward_pre_hook(LogitScale(self.lm_logit_scale))


class DSLMGPTModel(_DSLMModelMixin, GPTModel):
    """megatron-core ``GPTModel`` with the DSLM LM logit scale and, for Post-LN, the embedding LayerNorm.

    ``transformer_layer_spec`` is the block spec of :func:`~megatron.dslm.mcore.specs.get_dslm_block_spec`.
    """


class _DSLMBertMixin(_DSLMModelMixin):
    def _sanity_check_attention_and_get_attn_mask_dimension(self) -> str:
        """BertModel picks its mask layout from ``transformer_layer_spec.submodules.self_attention``, a *layer*
        spec's field; ours is a block spec of identical layers, so the stock check reads its first layer."""
        block = self.transformer_layer_spec
        if not isinstance(block, TransformerBlockSubmodules):
            return super()._sanity_check_attention_and_get_attn_mask_dimension()
        if block.layer_specs:
            layer = block.layer_specs[0]
        else:  # a stage without layers: the mask is unused, ask about the stock local layer
            from megatron.core.models.bert.bert_layer_specs import bert_layer_local_spec

            layer = bert_layer_local_spec
        self.transformer_layer_spec = layer
        try:
            return super()._sanity_check_attention_and_get_attn_mask_dimension()
        finally:
            self.transformer_layer_spec = block


class DSLMBertModel(_DSLMBertMixin, BertModel):
    """megatron-core ``BertModel`` built from a DSLM block spec, with the logit scale and (Post-LN) embedding LN."""


@functools.lru_cache(maxsize=None)
def dslm_bert_model_class(base: type = BertModel) -> type:
    """:class:`DSLMBertModel`, or the same additions on a BertModel subclass (the speed paths' MLM head)."""
    if base is BertModel:
        return DSLMBertModel
    if not issubclass(base, BertModel):
        raise TypeError(f"{base.__name__} is not a BertModel")
    return type(f"DSLM{base.__name__}", (_DSLMBertMixin, base), {"__doc__": DSLMBertModel.__doc__,
                                                                 "__module__": __name__})


def resolve_post_ln(config: TransformerConfig, table: InitTable, post_ln: Optional[bool] = None) -> TransformerConfig:
    """The config to build with, after checking that ``table`` (and a legacy ``post_ln=``) agree with it.

    ``config.apply_residual_connection_post_layernorm`` decides. ``post_ln=True`` on a Pre-LN config returns a
    copy with the flag set (callers that still pass the keyword); ``post_ln=False`` on a Post-LN config, or a
    table built for the other placement, raises ValueError.
    """
    if len(table.layers) != config.num_layers:
        raise ValueError(f"InitTable '{table.scheme}' has {len(table.layers)} layers but the model has "
                         f"--num-layers {config.num_layers}")
    for i, layer in enumerate(table.layers):
        if layer.layer_number != i + 1:
            raise ValueError(f"InitTable '{table.scheme}': layers[{i}].layer_number is {layer.layer_number}")
    configured = bool(config.apply_residual_connection_post_layernorm)
    if post_ln is not None and bool(post_ln) != configured:
        if not post_ln:
            raise ValueError("post_ln=False but config.apply_residual_connection_post_layernorm is True: the config "
                             "alone decides the norm placement, drop the keyword")
        config = copy.copy(config)
        config.apply_residual_connection_post_layernorm = True
        configured = True
    built_for = table.post_ln
    if built_for is None and table.embedding_layernorm:
        built_for = True  # only Post-LN tables ask for the embedding LayerNorm
    if built_for is not None and bool(built_for) != configured:
        have, want = ("Post-LN", "Pre-LN") if built_for else ("Pre-LN", "Post-LN")
        raise ValueError(f"InitTable '{table.scheme}' was built for {have} but the model is {want} "
                         f"(--apply-residual-connection-post-layernorm {'set' if configured else 'unset'}): "
                         f"build the table from the same flags as the model")
    return config


def _build(model_cls, layer_spec_fn, config: TransformerConfig, table: InitTable, post_ln: Optional[bool],
           seed: int, speed: SpeedOptions, vp_stage: Optional[int] = None, **model_kwargs):
    """Config check -> block spec -> model (embedding LN, logit scale) -> speed paths -> layout-independent init.

    ``vp_stage``: the virtual pipeline stage (model chunk) to build under the interleaved pipeline; its layers
    carry global layer numbers, so λ/β and the keyed init come from the right layers."""
    config = resolve_post_ln(config, table, post_ln)
    layer_spec = layer_spec_fn(table, post_ln=config.apply_residual_connection_post_layernorm, speed=speed,
                               config=config)
    if vp_stage is not None:
        model_kwargs["vp_stage"] = vp_stage
    model = model_cls(config=config, transformer_layer_spec=get_dslm_block_spec(config, layer_spec, vp_stage),
                      lm_logit_scale=table.lm_logit_scale, **model_kwargs)
    perf.apply_to_model(model, speed)
    apply_init_table(model, table, seed)
    return model


def build_gpt_model(config: TransformerConfig, table: InitTable, *, vocab_size: int, max_sequence_length: int,
                    pre_process: bool = True, post_process: bool = True, post_ln: Optional[bool] = None,
                    seed: int = 1234, share_embeddings_and_output_weights: bool = True,
                    position_embedding_type: str = "learned_absolute", rotary_percent: float = 1.0,
                    rotary_base: int = 10000, seq_len_interpolation_factor: Optional[float] = None,
                    speed: SpeedOptions = perf.STOCK, vp_stage: Optional[int] = None) -> GPTModel:
    """A :class:`DSLMGPTModel` with λ/β residual scaling, optional Post-LN, initialised from ``table``.

    Args:
        config: megatron-core config (pass TP/PP sizes in it too; ``num_layers`` must equal the table's).
            ``apply_residual_connection_post_layernorm`` selects Post-LN (``LN(λx + βF(x))``, embedding LN, no
            final LN).
        table: the init scheme's table (std per role/layer, λ/β per layer, LM logit scale), built for the same
            norm placement.
        vocab_size: the *padded* vocabulary size (keep it TP-independent for layout-invariant init).
        post_ln: kept for older callers; ``True`` sets the config flag, ``False`` must agree with it.
        seed: weight seed; the same seed gives the same full weights at every TP/PP layout.
        share_embeddings_and_output_weights: False for an untied output layer (``table.output_layer_std``).
        position_embedding_type, rotary_percent, rotary_base, seq_len_interpolation_factor: GPTModel's own
            (``"rope"``: megatron-core's RotaryEmbedding, no position table).
        speed: the opt-in speed paths to build with (:mod:`megatron.perf`; stock by default).
        vp_stage: this model chunk's virtual pipeline stage (interleaved pipeline only).

    Gated FFNs (SwiGLU), grouped-query attention, bias-free linears, RMSNorm and q/k norms come from ``config``
    (``gated_linear_unit`` + ``activation_func``, ``num_query_groups``, ``add_bias_linear``, ``normalization``,
    ``qk_layernorm``, ``layernorm_zero_centered_gamma``).
    """
    return _build(DSLMGPTModel, get_dslm_gpt_layer_spec, config, table, post_ln, seed, speed, vp_stage,
                  vocab_size=vocab_size, max_sequence_length=max_sequence_length, pre_process=pre_process,
                  post_process=post_process, position_embedding_type=position_embedding_type,
                  rotary_percent=rotary_percent, rotary_base=rotary_base,
                  seq_len_interpolation_factor=seq_len_interpolation_factor,
                  share_embeddings_and_output_weights=share_embeddings_and_output_weights)


def build_bert_model(config: TransformerConfig, table: InitTable, *, vocab_size: int, max_sequence_length: int,
                     num_tokentypes: int = 2, add_binary_head: bool = True, pre_process: bool = True,
                     post_process: bool = True, post_ln: Optional[bool] = None, seed: int = 1234,
                     share_embeddings_and_output_weights: bool = True,
                     speed: SpeedOptions = perf.STOCK, vp_stage: Optional[int] = None) -> BertModel:
    """A :class:`DSLMBertModel` (padding-mask attention) built and initialised like :func:`build_gpt_model`.

    Post-LN here is original BERT's layout (embedding LN, a LN after every merge). Unlike BertModel's own
    default, the output layer is tied to the word embedding (as in BERT). ``speed.masked_positions_mlm`` builds
    on the masked-positions LM-head subclass (LM head on the loss positions only when the forward gets
    ``mlm_positions``).
    """
    return _build(dslm_bert_model_class(perf.bert_model_class(speed)), get_dslm_bert_layer_spec, config, table,
                  post_ln, seed, speed, vp_stage, num_tokentypes=num_tokentypes, vocab_size=vocab_size,
                  max_sequence_length=max_sequence_length, pre_process=pre_process, post_process=post_process,
                  add_binary_head=add_binary_head,
                  share_embeddings_and_output_weights=share_embeddings_and_output_weights)
