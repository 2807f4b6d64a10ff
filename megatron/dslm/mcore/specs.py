"""Layer specs for residual scaling ``x' = λ·x + β·F(x)`` and a true Post-LN, on megatron-core's local layers.

megatron-core's ``TransformerLayer`` merges each sub-layer with a bias-dropout-add callable
(``self_attn_bda`` / ``mlp_bda``): ``residual + dropout(out + bias)``. :class:`ScaledResidualTransformerLayer`
keeps the stock forward (recompute, offload and sequence-parallel paths untouched) and only replaces those two
callables by ``λ·residual + dropout(β·out + β·bias)`` (β on the branch output *and* its bias, before dropout and
the add; DeepScaleLM, Kedia et al. 2024, Sec. 4), optionally followed by a LayerNorm. With λ = β = 1 and no
post-norm the stock callables are kept as they are, so the layer is bit-for-bit the stock one.

Norm placement (what ``--apply-residual-connection-post-layernorm`` selects; megatron-core 0.16 declares that
flag but reads it nowhere):

* Pre-LN (default, megatron-core's layout)::

      h   = λ_a·x + β_a·Attn(LN_in(x))
      x'  = λ_m·h + β_m·MLP(LN_pre_mlp(h))
      ... final LayerNorm after the last layer, before the LM head.

* Post-LN (original BERT / Transformer)::

      x_0 = LN_emb(embedding)                      # embedding LayerNorm (megatron.dslm.mcore.models)
      h   = LN_post_attn(λ_a·x + β_a·Attn(x))
      x'  = LN_post_mlp(λ_m·h + β_m·MLP(h))
      ... no final LayerNorm (the last layer already ends in one): the block spec has ``layer_norm=None``.

λ/β are read per layer from an :class:`~megatron.dslm.contract.InitTable` with the layer's global 1-based
``layer_number`` (pipeline offset included), passed through ``ModuleSpec.params``. The norm placement comes from
``config.apply_residual_connection_post_layernorm`` alone (:func:`get_dslm_block_spec`).
"""

from __future__ import annotations

import copy
from typing import Callable, Optional

import torch

from megatron.core.transformer.identity_op import IdentityOp
from megatron.core.transformer.spec_utils import ModuleSpec, build_module
from megatron.core.transformer.transformer_block import (
    LayerNormImpl,
    TransformerBlockSubmodules,
    get_num_layers_to_build,
)
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.transformer.transformer_layer import TransformerLayer

from megatron.dslm.contract import InitTable


class ZeroCenteredNorm:
    """``--apply-layernorm-1p`` on megatron-core's torch norms: the weight holds γ − 1 (it starts at 0) and the
    forward uses ``1 + weight``.

    megatron-core's local norm (``WrappedTorchNorm``, its LayerNorm/RMSNorm without apex or Transformer Engine)
    refuses ``layernorm_zero_centered_gamma``; only TE's and apex's kernels implement it. This builds the same
    torch norm through ``WrappedTorchNorm`` (so what the CPU shim adds to it still applies) and re-parameterises
    its scale; the output is the plain norm's with γ = 1 + weight.
    """

    def __new__(cls, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **kwargs):
        from megatron.core.transformer.torch_norm import WrappedTorchNorm

        plain = copy.copy(config)
        plain.layernorm_zero_centered_gamma = False
        norm = WrappedTorchNorm(plain, hidden_size, eps=eps)
        norm.__class__ = _ZERO_CENTERED[type(norm)]
        with torch.no_grad():
            norm.weight.zero_()
        return norm


class _ZeroCenteredLayerNorm(torch.nn.LayerNorm):
    def forward(self, x):
        return torch.nn.functional.layer_norm(x, self.normalized_shape, self.weight + 1, self.bias, self.eps)


class _ZeroCenteredRMSNorm(torch.nn.RMSNorm):
    def forward(self, x):
        return torch.nn.functional.rms_norm(x, self.normalized_shape, self.weight + 1, self.eps)


_ZERO_CENTERED = {torch.nn.LayerNorm: _ZeroCenteredLayerNorm, torch.nn.RMSNorm: _ZeroCenteredRMSNorm}


def norm_module(config: Optional[TransformerConfig]):
    """The module for every norm of the model (input, pre-MLP, q/k, Post-LN, embedding, final), or None for the
    local spec's own choice (LayerNorm: apex's FusedLayerNorm where installed, else the torch one).

    RMSNorm is megatron-core's ``WrappedTorchNorm`` (torch.nn.RMSNorm), as megatron-core's local spec picks it;
    ``apply_layernorm_1p`` (``layernorm_zero_centered_gamma``) is :class:`ZeroCenteredNorm`.
    """
    if config is None:
        return None
    if config.layernorm_zero_centered_gamma:
        return ZeroCenteredNorm
    if config.normalization != "LayerNorm":
        from megatron.core.transformer.torch_norm import WrappedTorchNorm

        return WrappedTorchNorm
    return None


def _with_norms(base: ModuleSpec, config: Optional[TransformerConfig]) -> ModuleSpec:
    """``base`` with the config's norm (:func:`norm_module`) in every norm slot of the layer and its attention."""
    norm = norm_module(config)
    if norm is None:
        return base
    spec = copy.copy(base)
    spec.submodules = copy.copy(base.submodules)
    for slot in ("input_layernorm", "pre_mlp_layernorm"):
        if getattr(spec.submodules, slot) is not IdentityOp:
            setattr(spec.submodules, slot, norm)
    attention = spec.submodules.self_attention
    if isinstance(attention, ModuleSpec) and attention.submodules is not None:
        attention = copy.copy(attention)
        attention.submodules = copy.copy(attention.submodules)
        for slot in ("q_layernorm", "k_layernorm"):
            if getattr(attention.submodules, slot, IdentityOp) is not IdentityOp:
                setattr(attention.submodules, slot, norm)
        spec.submodules.self_attention = attention
    return spec


def scaled_bda(stock_bda: Callable, residual_scale: float, branch_scale: float,
                post_norm: Optional[torch.nn.Module]) -> Callable:
    """Replace a megatron bda factory ``(training, fused) -> fn(x_with_bias, residual, prob)`` by the λ/β merge.

    megatron asks for ``fused`` when ``bias_dropout_fusion`` is on (GPUs): the merge is then one TorchScript
    function from the speed paths (:func:`megatron.perf.fused_scaled_bda`); otherwise it is
    :func:`unfused_scaled_bda`. Both compute the same ops in the same order; ``stock_bda`` (the layer's own
    factory) is not called, since a merge with λ = β = 1 and no norm keeps it instead of this wrapper.
    """

    # Built once per layer, not at each forward (megatron calls the factory in every layer forward).
    unfused = {mode: unfused_scaled_bda(mode, residual_scale, branch_scale, post_norm) for mode in (False, True)}
    fused_by_mode = {}

    def factory(training: bool, fused: bool):
        if not fused:
            return unfused[bool(training)]
        if bool(training) not in fused_by_mode:
            from megatron import perf

            fused_by_mode[bool(training)] = perf.fused_scaled_bda(bool(training), residual_scale, branch_scale,
                                                                  post_norm)
        return fused_by_mode[bool(training)]

    return factory


def unfused_scaled_bda(training: bool, residual_scale: float, branch_scale: float,
                        post_norm: Optional[torch.nn.Module]) -> Callable:
    """``λ·residual + β·dropout(out + bias)`` in three ops (dropout, λ multiply, add with alpha=β).

    Same value as scaling before the stock unfused function (dropout is linear: β·dropout(y) = dropout(β·y)
    with the same mask, up to fp32 rounding) but one elementwise pass fewer forward and backward per merge,
    which is measurable on deep, narrow models (CPU, 96x64). With bias-dropout fusion (GPUs) the same ops run
    as one TorchScript function (:mod:`megatron.perf.fused_merge`).
    """

    # λ as a 0-dim tensor of the computation's dtype, not a Python float: the same product bit for bit (fp32,
    # bf16 and fp16 multiply by float32(λ) either way), but no scalar-to-tensor conversion forward and backward
    # (~1 % of a 384x32 CPU step). A 0-dim CPU tensor is a valid operand for CUDA tensors and promotes nothing.
    scale_by_dtype = {torch.float64: torch.tensor(residual_scale, dtype=torch.float64)}
    scale_fp32 = torch.tensor(residual_scale, dtype=torch.float32)

    def bias_dropout_scaled_add(x_with_bias, residual, prob):
        out, bias = x_with_bias
        residual = residual if residual.dtype == out.dtype else residual.to(out.dtype)
        if bias is not None:
            out = out + bias
        out = torch.nn.functional.dropout(out, p=prob, training=training)
        if residual_scale != 1.0:
            residual = residual * scale_by_dtype.get(residual.dtype, scale_fp32)
        merged = residual + out if branch_scale == 1.0 else torch.add(residual, out, alpha=branch_scale)
        return merged if post_norm is None else post_norm(merged)

    return bias_dropout_scaled_add


class ScaledResidualTransformerLayer(TransformerLayer):
    """A ``TransformerLayer`` whose two merges are ``λ·x + β·F(x)``, optionally followed by a LayerNorm.

    Args (beyond ``TransformerLayer``'s; they arrive through ``ModuleSpec.params``):
        init_table: the scheme's table; λ/β come from ``init_table.layer(self.layer_number)``.
        post_layernorm: norm module/spec to put after each merge (Post-LN), or None for Pre-LN.
    """

    def __init__(self, config: TransformerConfig, submodules, layer_number: int = 1,
                 hidden_dropout: Optional[float] = None, pg_collection=None, vp_stage: Optional[int] = None,
                 *, init_table: Optional[InitTable] = None, post_layernorm=None):
        super().__init__(config=config, submodules=submodules, layer_number=layer_number,
                         hidden_dropout=hidden_dropout, pg_collection=pg_collection, vp_stage=vp_stage)
        if init_table is not None:
            if len(init_table.layers) < self.layer_number:
                raise ValueError(
                    f"InitTable '{init_table.scheme}' has {len(init_table.layers)} layers but this is layer "
                    f"{self.layer_number} of {config.num_layers}: build the table for the same --num-layers"
                )
            scales = init_table.layer(self.layer_number)
            self.attn_residual_scale = float(scales.attn_lambda)
            self.attn_branch_scale = float(scales.attn_beta)
            self.mlp_residual_scale = float(scales.mlp_lambda)
            self.mlp_branch_scale = float(scales.mlp_beta)
        else:
            self.attn_residual_scale = self.attn_branch_scale = 1.0
            self.mlp_residual_scale = self.mlp_branch_scale = 1.0

        if post_layernorm is not None:
            norm_kwargs = dict(config=config, hidden_size=config.hidden_size, eps=config.layernorm_epsilon)
            self.post_attn_layernorm = build_module(post_layernorm, **norm_kwargs)
            self.post_mlp_layernorm = build_module(post_layernorm, **norm_kwargs)
        else:
            self.post_attn_layernorm = None
            self.post_mlp_layernorm = None

        # Keep the stock callables when nothing changes: λ = β = 1 must be the stock layer, bit for bit.
        if (self.attn_residual_scale, self.attn_branch_scale) != (1.0, 1.0) or post_layernorm is not None:
            self.self_attn_bda = scaled_bda(self.self_attn_bda, self.attn_residual_scale,
                                             self.attn_branch_scale, self.post_attn_layernorm)
        if (self.mlp_residual_scale, self.mlp_branch_scale) != (1.0, 1.0) or post_layernorm is not None:
            self.mlp_bda = scaled_bda(self.mlp_bda, self.mlp_residual_scale, self.mlp_branch_scale,
                                       self.post_mlp_layernorm)

    @property
    def is_post_ln(self) -> bool:
        return self.post_mlp_layernorm is not None


def _dslm_layer_spec(base: ModuleSpec, table: InitTable, post_ln: bool) -> ModuleSpec:
    """Turn a stock local layer spec into a ScaledResidualTransformerLayer spec (Post-LN if asked)."""
    if not (isinstance(base, ModuleSpec) and issubclass(base.module, TransformerLayer)):
        raise TypeError(f"expected a TransformerLayer ModuleSpec, got {base!r}")
    submodules = copy.copy(base.submodules)
    params = dict(base.params or {})
    params["init_table"] = table
    if post_ln:
        norm = submodules.input_layernorm
        if norm is IdentityOp:
            raise ValueError("the base spec has no input LayerNorm to reuse for Post-LN")
        params["post_layernorm"] = norm
        submodules.input_layernorm = IdentityOp
        submodules.pre_mlp_layernorm = IdentityOp
    return ModuleSpec(module=ScaledResidualTransformerLayer, params=params, submodules=submodules)


def get_dslm_gpt_layer_spec(table: InitTable, post_ln: bool = False, speed=None,
                            config: Optional[TransformerConfig] = None) -> ModuleSpec:
    """GPT layer spec with λ/β residual scaling from ``table`` (Post-LN if ``post_ln``).

    Base: megatron-core's local spec (Transformer Engine's spec is not used), with q/k norms when
    ``config.qk_layernorm`` and the config's norm (RMSNorm, zero-centred) in every norm slot
    (:func:`norm_module`); gated FFNs, query groups and bias-free linears are the config's own fields. ``speed``
    may put the speed paths' core attention and linears in (:func:`megatron.perf.layer_spec`).
    """
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron import perf

    qk_layernorm = bool(config is not None and config.qk_layernorm)
    base = _with_norms(get_gpt_layer_local_spec(qk_layernorm=qk_layernorm), config)
    return _dslm_layer_spec(perf.layer_spec(base, speed or perf.STOCK), table, post_ln)


def get_dslm_bert_layer_spec(table: InitTable, post_ln: bool = False, speed=None,
                             config: Optional[TransformerConfig] = None) -> ModuleSpec:
    """BERT (padding-mask) layer spec with λ/β residual scaling from ``table`` (Post-LN if ``post_ln``).

    ``speed`` may put the speed paths' core attention and linears in (:func:`megatron.perf.layer_spec`;
    the model class must then come from :func:`megatron.perf.bert_model_class`). ``config`` puts its norm in
    (:func:`norm_module`).
    """
    from megatron.core.models.bert.bert_layer_specs import bert_layer_local_spec
    from megatron import perf

    base = _with_norms(bert_layer_local_spec, config)
    return _dslm_layer_spec(perf.layer_spec(base, speed or perf.STOCK), table, post_ln)


def get_dslm_block_spec(config: TransformerConfig, layer_spec: ModuleSpec,
                        vp_stage: Optional[int] = None) -> TransformerBlockSubmodules:
    """This stage's block spec: ``layer_spec`` for each of its layers, then megatron's final LayerNorm (Pre-LN)
    or none (Post-LN: every layer already ends in one).

    The norm placement is ``config.apply_residual_connection_post_layernorm``; ``layer_spec`` must have been built
    for the same placement (:func:`get_dslm_gpt_layer_spec` / :func:`get_dslm_bert_layer_spec`).
    """
    post_ln = bool(config.apply_residual_connection_post_layernorm)
    if ((layer_spec.params or {}).get("post_layernorm") is not None) != post_ln:
        raise ValueError(f"the layer spec's norm placement differs from the config's "
                         f"(apply_residual_connection_post_layernorm={post_ln})")
    # The same list megatron-core builds from a layer spec, with LayerNormImpl as the final norm (Pre-LN).
    final_norm = norm_module(config) or LayerNormImpl
    return TransformerBlockSubmodules(layer_specs=[layer_spec] * get_num_layers_to_build(config, vp_stage),
                                      layer_norm=None if post_ln else final_norm)
