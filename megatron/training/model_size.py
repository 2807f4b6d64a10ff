"""Parameter counts per pipeline stage and model FLOPs, by arithmetic on the model's shape (no model is built).

``--dry-run`` prints the counts before any process group exists; ``--log-throughput`` turns tokens/s into TFLOP/s
per device with :func:`flops_per_token`. Both follow megatron-core's local-spec GPT and BERT module for module
(tests compare them with the ``numel`` of real models and with torch's FLOP counter).
"""

from __future__ import annotations

from typing import List

from megatron.dslm.contract import ModelArch


def _norm_params(arch: ModelArch, width: int) -> int:
    return width if arch.normalization == "RMSNorm" else 2 * width  # RMSNorm has no bias


def _widths(arch: ModelArch):
    """(query width, key/value width per projection, FC1 output width: both halves of a gated FFN)."""
    fc1_out = 2 * arch.ffn_size if arch.gated_linear_unit else arch.ffn_size
    return arch.num_attention_heads * arch.head_dim, arch.query_groups * arch.head_dim, fc1_out


def layer_params(arch: ModelArch) -> int:
    """One transformer layer: two norms, QKV (grouped), output projection, FC1 (gate and up halves), FC2."""
    h, ffn = arch.hidden_size, arch.ffn_size
    q, kv, fc1_out = _widths(arch)
    bias = int(arch.add_bias_linear)
    n = 2 * _norm_params(arch, h)
    n += h * (q + 2 * kv) + bias * (q + 2 * kv) + q * h + bias * h
    n += h * fc1_out + bias * fc1_out + ffn * h + bias * h
    if arch.qk_layernorm:
        n += 2 * _norm_params(arch, arch.head_dim)
    return n


def embedding_params(arch: ModelArch, max_position_embeddings: int) -> int:
    """Word, learned-position (not with RoPE) and token-type tables; Post-LN BERT's embedding LayerNorm."""
    h = arch.hidden_size
    n = arch.vocab_size * h + arch.num_tokentypes * h
    if arch.position_embedding_type == "learned_absolute":
        n += max_position_embeddings * h
    if arch.model_type == "bert" and arch.post_ln:
        n += _norm_params(arch, h)  # Post-LN BERT normalises the embedding sum
    return n


def head_params(arch: ModelArch, bert_binary_head: bool = True) -> int:
    """What follows the last layer: the final norm (GPT) or BERT's pooler, LM head and binary head; an untied
    output layer."""
    h, v = arch.hidden_size, arch.vocab_size
    if arch.model_type == "bert":
        n = h * h + h + _norm_params(arch, h) + v  # LM head dense + LN, output-layer bias
        if not arch.post_ln:
            n += _norm_params(arch, h)  # Pre-LN BERT: a final LayerNorm too
        if bert_binary_head:
            n += (h * h + h) + (2 * h + 2)  # pooler and sentence-order head
    else:
        n = _norm_params(arch, h)
    if arch.untie_embeddings_and_output_weights:
        n += v * h
    return n


def stage_params(arch: ModelArch, pipeline_size: int, max_position_embeddings: int,
                 bert_binary_head: bool = True) -> List[int]:
    """Parameters held by each pipeline stage (layers split evenly; with tied embeddings and more than one stage,
    the last stage keeps its own copy of the word embeddings for the output layer, as megatron-core does)."""
    per_stage = arch.num_layers // pipeline_size
    counts = [per_stage * layer_params(arch) for _ in range(pipeline_size)]
    counts[0] += embedding_params(arch, max_position_embeddings)
    counts[-1] += head_params(arch, bert_binary_head)
    if pipeline_size > 1 and not arch.untie_embeddings_and_output_weights:
        counts[-1] += arch.vocab_size * arch.hidden_size
    return counts


def flops_per_token(arch: ModelArch) -> float:
    """Matmul FLOPs of one trained token, forward and backward (3x forward), attention over the full sequence
    (no causal discount), output layer included: upstream Megatron-LM's count for dense models."""
    h, s, ffn = arch.hidden_size, arch.seq_length, arch.ffn_size
    q, kv, fc1_out = _widths(arch)
    forward_layer = 2 * h * (q + 2 * kv) + 2 * q * h + 4 * s * q + 2 * h * fc1_out + 2 * ffn * h
    return 3.0 * (arch.num_layers * forward_layer + 2 * h * arch.vocab_size)
