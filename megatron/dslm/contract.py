"""The contract between init schemes, the theory predictor and the model-init code.

A scheme is a function ``ModelArch -> InitTable``. The predictor (``megatron.dslm.theory.predictor``) reads
an ``InitTable`` to predict moments; ``megatron.dslm.mcore.weight_init.apply_init_table`` reads the *same* table to
initialise a megatron-core model; ``megatron.dslm.mcore.specs`` reads its residual λ/β. No scheme's σ lives in two
places.

Conventions: every value is an absolute standard deviation (``*_std``), never a gain; biases start at 0 and
LayerNorm at (γ=1, β=0) for every scheme; ``layer_number`` is 1-based and global.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

# The reference's token correlation r0 of the embedding output (docs/theory.md, "Embedding correlation r0");
# used only when nothing was measured. ``megatron.dslm.config`` re-exports it.
DEFAULT_EMBEDDING_CORR = 0.221


@dataclass(frozen=True)
class ModelArch:
    """What a scheme and the predictor need to know about a GPT or BERT model (no parallel layout).

    Build it from flags with ``megatron.dslm.config.model_arch``; the defaults match ``DSLMConfig``'s.
    """

    num_layers: int
    hidden_size: int
    num_attention_heads: int
    seq_length: int
    vocab_size: int = 30522
    ffn_hidden_size: Optional[int] = None  # None -> 4 * hidden_size
    kv_channels: Optional[int] = None  # None -> hidden_size // num_attention_heads
    model_type: str = "gpt"  # "gpt" | "bert"
    num_tokentypes: int = 0  # 2 for BERT
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    post_ln: bool = False
    activation: str = "gelu"  # "gelu" | "relu" | "silu" (silu only as the gate of a GLU)
    # Today's decoder shape (upstream flag in brackets). A gated FFN computes act(x W_gate) * (x W_up) W_down;
    # SwiGLU is gated + silu [--swiglu], GeGLU gated + gelu.
    gated_linear_unit: bool = False
    normalization: str = "LayerNorm"  # "LayerNorm" | "RMSNorm" [--normalization]
    position_embedding_type: str = "learned_absolute"  # "learned_absolute" | "rope" | "none"
    rotary_base: float = 10000.0  # [--rotary-base]
    rotary_percent: float = 1.0  # [--rotary-percent]
    num_query_groups: Optional[int] = None  # None -> num_attention_heads (no GQA) [--num-query-groups]
    add_bias_linear: bool = True  # False with [--disable-bias-linear]
    untie_embeddings_and_output_weights: bool = False  # [--untie-embeddings-and-output-weights]
    qk_layernorm: bool = False  # [--qk-layernorm]
    # Token correlation r0 of the summed embedding output *before* dropout; measure it on your corpus with
    # `python -m megatron.dslm.estimate_corr` (docs/theory.md, "Embedding correlation r0").
    embedding_corr: float = DEFAULT_EMBEDDING_CORR
    # Residual scaling: beta^2 = dslm_k / N unless residual_beta_sq is given explicitly.
    dslm_k: float = 1.0
    residual_lambda_sq: Optional[float] = None
    residual_beta_sq: Optional[float] = None
    allow_unnormalized_residual: bool = False
    init_method_std: float = 0.02  # megatron scheme's sigma

    @property
    def ffn_size(self) -> int:
        """Width of the FFN's hidden layer (one half of fc1 for a gated FFN), sized as upstream sizes it."""
        if self.ffn_hidden_size:
            return self.ffn_hidden_size
        if self.gated_linear_unit:  # upstream --swiglu: 2/3 of 4h, rounded down to a multiple of 64
            return max(64, int(4 * self.hidden_size * 2 / 3) // 64 * 64)
        return 4 * self.hidden_size

    @property
    def query_groups(self) -> int:
        return self.num_query_groups or self.num_attention_heads

    @property
    def head_dim(self) -> int:
        return self.kv_channels or self.hidden_size // self.num_attention_heads

    @property
    def num_embedding_tables(self) -> int:
        """word + learned position (+ token type for BERT); RoPE and "none" have no position table."""
        positions = 1 if self.position_embedding_type == "learned_absolute" else 0
        return 1 + positions + (1 if self.num_tokentypes > 0 else 0)


@dataclass(frozen=True)
class LayerInit:
    """Per-layer stds and residual scalars; the sub-layer output is ``lambda_ * x + beta * F(x)``.

    For Post-LN the merge is followed by a LayerNorm: ``LN(lambda_ * x + beta * F(x))``.
    ``attn_*`` and ``mlp_*`` residual scalars are separate because schemes (DeepNet, DSInit) may differ.
    """

    layer_number: int
    query_std: float
    key_std: float
    value_std: float
    attn_proj_std: float  # attention output projection (linear_proj)
    fc1_std: float  # fc1, or for a gated FFN its linear ("up") half
    fc2_std: float
    attn_lambda: float = 1.0
    attn_beta: float = 1.0
    mlp_lambda: float = 1.0
    mlp_beta: float = 1.0
    gate_std: Optional[float] = None  # gated FFNs only: the gate half of fc1 (None -> fc1_std)


@dataclass(frozen=True)
class InitTable:
    """Everything a scheme decides. ``layers[i].layer_number == i + 1``."""

    scheme: str
    word_embedding_std: float
    position_embedding_std: float
    tokentype_embedding_std: float
    layers: Tuple[LayerInit, ...]
    pooler_std: float  # BERT pooler dense
    lm_head_dense_std: float  # BERT LM-head transform dense
    binary_head_std: float  # BERT NSP/SOP head (and task classification heads)
    # The final hidden state is multiplied by this before the tied-embedding logits (DSLM: 1/sqrt(sigma_e^2 d)).
    lm_logit_scale: float = 1.0
    # Post-LN only: LayerNorm on the embedding output (original BERT); Pre-LN models never use it.
    embedding_layernorm: bool = False
    notes: Tuple[str, ...] = field(default_factory=tuple)
    # The norm placement the table was built for (None: unknown, e.g. hand-built); the model builders check it.
    post_ln: Optional[bool] = None
    # Untied models only: the output layer's std (None -> word_embedding_std).
    output_layer_std: Optional[float] = None

    def layer(self, layer_number: int) -> LayerInit:
        return self.layers[layer_number - 1]

    @property
    def is_identity_residual(self) -> bool:
        """True when every merge is the stock ``x + F(x)`` (so the stock megatron-core layer can be used)."""
        return all(
            l.attn_lambda == 1.0 and l.attn_beta == 1.0 and l.mlp_lambda == 1.0 and l.mlp_beta == 1.0
            for l in self.layers
        )
