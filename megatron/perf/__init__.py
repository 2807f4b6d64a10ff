"""Opt-in speed paths, all in this package and all applied from here.

Each path replaces one piece of stock megatron-core / torch behaviour with a faster one that computes the same
thing. :data:`SPEED_PATHS` lists them with the flag that controls each, what it replaces and the exactness it
guarantees; ``docs/performance.md`` has the measurements. The rest of the code asks this module for a layer spec,
a model class, a DDP wrapper or an optimizer and never imports a path directly, so turning every flag to its
stock value (``--attention-backend local --linear-impl megatron --grad-buffer-impl megatron
--mlm-head-positions all``) gives stock megatron-core code.

Model paths go in at construction: through the layer spec (:func:`layer_spec`)
or as the model class (:func:`bert_model_class`). The one exception is the ``F.linear`` class of the output
layer, which megatron-core builds inline (:func:`apply_to_model`).

The CPU shim (:mod:`.cpu_compat`) also lives here: it is not a speed path but the other thing that swaps
megatron-core behaviour, and it is applied only in CPU mode.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import List, Tuple


@dataclass(frozen=True)
class SpeedPath:
    """One row of the table: what a path is, who switches it, what it replaces and how exact it is.

    ``name`` is the module of this package that implements it (``megatron.perf.<name>``).
    """

    name: str
    flag: str
    replaces: str
    exactness: str
    applies_when: str


SPEED_PATHS: Tuple[SpeedPath, ...] = (
    SpeedPath("cpu_compat", "--cpu (or no CUDA device)",
              "torch.cuda device/RNG/synchronize calls and CUDA tensor-type checks inside megatron-core; "
              "its torch LayerNorm's refusal of --sequence-parallel",
              "bitwise (only device placement and type names change)", "CPU mode only; never on a GPU"),
    SpeedPath("apex_fallbacks", "always (where apex/TE are missing)",
              "megatron.core.utils.local_multi_tensor_l2_norm / local_multi_tensor_scale Python loops",
              "norm <= 1e-6 relative; scale bitwise", "only where megatron fell back to its local loops"),
    SpeedPath("sdpa_attention", "--attention-backend {auto,sdpa} (local = stock)",
              "megatron-core's unfused DotProductAttention core",
              "<= 1e-6 relative (fp32)", "local layer spec (GPT and BERT); causal and padding masks"),
    SpeedPath("torch_linear", "--linear-impl torch (megatron = stock)",
              "ColumnParallelLinear/RowParallelLinear autograd Function and separate bias add at TP=1",
              "<= 1e-6 relative (bias added inside the GEMM)",
              "linears with nothing to communicate (TP=1, no SP, no fused grad accumulation)"),
    SpeedPath("sparse_mlm", "--mlm-head-positions masked (all = stock)",
              "BertModel's LM head and vocabulary projection on every token",
              "<= 1e-6 relative at every masked position; same loss", "BERT without sequence parallelism"),
    SpeedPath("grad_buffer", "--grad-buffer-impl direct (megatron = stock)",
              "megatron DDP's per-parameter grad hooks and list-based grad norm/clip",
              "bitwise grads; grad norm <= 1e-7 relative",
              "fp32 grads in an fp32 buffer, no overlapped reduction; norm at TP=PP=1"),
    SpeedPath("fused_adam", "always in CPU mode (--cpu or no CUDA device)",
              "torch AdamW's per-parameter Python loop (megatron's no-apex fallback)",
              "<= 1e-6 relative (same AdamW arithmetic in one C++ kernel)", "CPU mode only"),
    SpeedPath("fused_merge", "bias-dropout fusion (on by default on CUDA; --no-bias-dropout-fusion = off)",
              "DSLM's scaled merge as extra scaling passes before megatron-core's fused bias-dropout-add",
              "bitwise where nothing is fused (CPU); <= 1e-6 relative fp32, 1 ulp bf16 where the fuser fuses",
              "layers with λ or β != 1, or Post-LN, while megatron-core's bias_dropout_fusion is on"),
)


@dataclass(frozen=True)
class SpeedOptions:
    """Which model-level paths a build uses (process-wide and optimizer paths are decided from ``args``)."""

    sdpa_attention: bool = False
    torch_linear: bool = False
    masked_positions_mlm: bool = False

    @classmethod
    def from_args(cls, args) -> "SpeedOptions":
        return cls(sdpa_attention=args.attention_backend != "local",
                   torch_linear=args.linear_impl == "torch",
                   masked_positions_mlm=getattr(args, "mlm_head_positions", "all") == "masked")


STOCK = SpeedOptions()


def install_process_wide(force_cpu: bool = False) -> List[str]:
    """CPU shim (CPU mode only) and the foreach multi-tensor fallbacks; call before building megatron objects."""
    from megatron.perf import apex_fallbacks, cpu_compat

    applied = []
    if cpu_compat.cpu_mode_wanted(force_cpu):
        cpu_compat.enable_cpu_mode()
        applied.append("cpu_compat")
    applied += apex_fallbacks.install()
    return applied


def layer_spec(spec, options: SpeedOptions = STOCK):
    """A local GPT or BERT layer spec with the SDPA core and the ``F.linear`` qkv/proj/fc1/fc2 put in where asked.

    ``spec`` itself is never modified; with :data:`STOCK` it is returned as it is. A BERT spec with the SDPA
    core must be built with :func:`bert_model_class` of the same ``options`` (``BertModel`` accepts that core
    only through :class:`~.sdpa_attention.SDPABertModel`).
    """
    if options.sdpa_attention:
        from megatron.perf.sdpa_attention import with_sdpa_core_attention

        spec = with_sdpa_core_attention(spec)
    if options.torch_linear:
        from megatron.perf.torch_linear import with_torch_linears

        spec = with_torch_linears(spec)
    return spec


def bert_model_class(options: SpeedOptions = STOCK) -> type:
    """megatron-core's ``BertModel``, or the subclass that the BERT-level paths in ``options`` need.

    ``masked_positions_mlm``: :class:`~.sparse_mlm.MaskedPositionsBertModel`; ``sdpa_attention``:
    :class:`~.sdpa_attention.SDPABertModel` (its mask-layout check accepts the SDPA core); both: one class with
    both (the same class object whenever those two flags agree, so callers may cache on it).
    """
    return _bert_model_class(options.sdpa_attention, options.masked_positions_mlm)


@functools.lru_cache(maxsize=None)
def _bert_model_class(sdpa_attention: bool, masked_positions_mlm: bool) -> type:
    bases = []
    if sdpa_attention:
        from megatron.perf.sdpa_attention import SDPABertModel

        bases.append(SDPABertModel)
    if masked_positions_mlm:
        from megatron.perf.sparse_mlm import MaskedPositionsBertModel

        bases.append(MaskedPositionsBertModel)
    if not bases:
        from megatron.core.models.bert.bert_model import BertModel

        return BertModel
    if len(bases) == 1:
        return bases[0]
    return type("MaskedPositionsSDPABertModel", tuple(bases),
                {"__doc__": "``BertModel`` with the SDPA core's mask check and the masked-positions LM head.",
                 "__module__": __name__})


def apply_to_model(model, options: SpeedOptions = STOCK):
    """The one path that acts on a built model: ``F.linear`` for the TP linears no spec reaches.

    megatron-core's ``GPTModel`` and ``BertModel`` build their ``output_layer`` inline, so
    :func:`~.torch_linear.use_torch_linears` changes its class after construction; every other path goes in
    at construction (:func:`layer_spec`, :func:`bert_model_class`).
    """
    if options.torch_linear:
        from megatron.perf.torch_linear import use_torch_linears

        use_torch_linears(model)
    return model


def fused_scaled_bda(training: bool, residual_scale: float, branch_scale: float, post_norm=None):
    """DSLM's λ/β merge as one TorchScript function: what its bda factory returns when megatron asks ``fused``."""
    from megatron.perf.fused_merge import fused_scaled_bda as build

    return build(training, residual_scale, branch_scale, post_norm)


def wrap_ddp(config, ddp_config, module, grad_buffer_impl: str = "direct"):
    """megatron-core DDP, with grads as views of its buffer where that is exact (``--grad-buffer-impl``)."""
    from megatron.perf.grad_buffer import GradBufferDDP

    return GradBufferDDP(config, ddp_config, module, grads_in_buffer=grad_buffer_impl == "direct")


def apply_to_optimizer(optimizer, model_chunks, grad_buffer_impl: str = "direct"):
    """Fused CPU AdamW (CPU mode) and the flat-buffer grad norm; returns the optimizer to use."""
    from megatron.perf import cpu_compat
    from megatron.perf.fused_adam import use_fused_cpu_adam
    from megatron.perf.grad_buffer import with_flat_grad_norm

    if cpu_compat.is_cpu_mode():
        use_fused_cpu_adam(optimizer)
    if grad_buffer_impl == "direct":
        optimizer = with_flat_grad_norm(optimizer, model_chunks)
    return optimizer


def after_optimizer_load(optimizer) -> None:
    """A loaded optimizer state dict brings its own param-group flags: re-apply the CPU fused kernel."""
    from megatron.perf import cpu_compat
    from megatron.perf.fused_adam import use_fused_cpu_adam

    if cpu_compat.is_cpu_mode():
        use_fused_cpu_adam(optimizer)
