"""Per-layer moment logging (``--log-moments-interval``): forward mean/variance/token correlation, backward
gradient variance, attention-logit variance and max, and (Post-LN) the variance before each LayerNorm.

Hooks exist only between :meth:`MomentObserver.attach` and :meth:`MomentObserver.detach`, so steps that do not
log pay nothing. Inside hooks everything stays a detached on-device float64 tensor (no ``.item()``, no sync);
:meth:`MomentObserver.collect` reduces once per logged step.

Definitions (docs/theory.md, "Notation": moments over the init randomness, which is the same for every feature,
so we pool over tokens, sequences and features with one scalar mean ``m``):

* ``forward_mean`` = mean of all elements of the layer output ``x`` [s, b, h]; ``forward_var`` = mean of
  ``(x - m)²``;
* ``forward_corr`` = covariance between two *different* tokens of the same sequence and feature, divided by
  ``forward_var``: ``Σ_{b,f} Σ_{i≠j} (x_ibf - m)(x_jbf - m) / (B·H·s(s-1)) / forward_var`` (the theory's r).
  Centering by a per-feature sample mean instead would remove exactly the shared component r measures;
* ``grad_var`` = variance of ∂loss/∂x (all elements) as it arrives at the layer output;
* ``attn_logit_var`` / ``attn_logit_max`` = variance and max of the scaled scores ``QKᵀ/√d_k`` over the
  unmasked (query, key) pairs of all heads (heads are split over TP ranks: reduced across the TP group);
* ``pre_norm_var`` (Post-LN) = variance of ``λx + βF(x)`` before the layer's last LayerNorm (layer 0: before
  the embedding LayerNorm); ``pre_norm_var_attn`` the same before the post-attention LayerNorm.

Layer 0 is the embedding output (after dropout, and after the embedding LayerNorm when there is one), layers
1..N the global, 1-based ``layer_number``. Without sequence parallelism hidden states are replicated across TP
ranks, so TP rank 0's are used (under it, each rank's [s/TP, b, h] slice is first gathered over the TP group);
each pipeline stage observes its own layers and :meth:`collect` gathers them to global rank 0 (data-parallel
rank 0's values; other DP replicas see other data). Micro-batches of the logged step are pooled. Activation
recompute (full or selective) reruns forwards inside backward: those reruns add no forward statistics (each
forward counts once), and under full recompute the gradient hook is registered on the rerun's output, the only
one autograd differentiates.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Dict, List

import torch


def _in_backward() -> bool:
    """True while the autograd engine runs a backward: a module forward there is a recompute (megatron-core's
    CheckpointFunction, torch.utils.checkpoint), whatever the grad mode of the first pass."""
    task_id = getattr(torch._C, "_current_graph_task_id", None)
    return task_id is not None and task_id() != -1


def _sequence_gather(chunks):
    """Under sequence parallelism layer outputs, LayerNorm inputs and their grads are [s/TP, b, h] slices: gather
    the whole sequence over the TP group (logged steps only), so token pairs span it. Identity otherwise."""
    if not any(getattr(getattr(c, "config", None), "sequence_parallel", False) for c in chunks):
        return lambda x: x
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel.mappings import _gather_along_first_dim

    group = parallel_state.get_tensor_model_parallel_group()
    return lambda x: _gather_along_first_dim(x.detach().contiguous(), group)


class _Stats:
    """Running sums for one layer (float64 tensors on the activations' device)."""

    def __init__(self):
        self.fwd = None  # [n, Σx, Σx², Σ pair products, Σ 2(s-1)·Σx, n_pairs]
        self.grad = None  # [n, Σg, Σg²]
        self.logit = None  # [n, Σz, Σz²]
        self.logit_max = None
        self.pre_norm = None  # [n, Σx, Σx²]
        self.pre_norm_attn = None

    @staticmethod
    def _add(acc, new):
        return new if acc is None else acc + new


def forward_sums(x: torch.Tensor) -> torch.Tensor:
    """Sufficient sums of an [s, b, h] activation for :func:`moments_from_forward`; add them to pool batches."""
    x = x.detach().to(torch.float64)
    s = x.shape[0]
    tok_sum = x.sum(dim=0)  # [b, h]: Σ_i x_i per (sequence, feature)
    total = tok_sum.sum()
    sq = (x * x).sum()
    pairs = (tok_sum * tok_sum).sum() - sq  # Σ_{b,f} Σ_{i≠j} x_i x_j
    n = torch.tensor(float(x.numel()), dtype=torch.float64, device=x.device)
    n_pairs = torch.tensor(float(x.shape[1] * x.shape[2] * s * (s - 1)), dtype=torch.float64, device=x.device)
    return torch.stack([n, total, sq, pairs, 2.0 * (s - 1) * total, n_pairs])


def _var_sums(x: torch.Tensor) -> torch.Tensor:
    x = x.detach().to(torch.float64)
    n = torch.tensor(float(x.numel()), dtype=torch.float64, device=x.device)
    return torch.stack([n, x.sum(), (x * x).sum()])


def moments_from_forward(acc: torch.Tensor) -> Dict[str, float]:
    """``forward_mean``, ``forward_var`` and ``forward_corr`` (definitions above) from pooled :func:`forward_sums`."""
    n, total, sq, pairs, lin, n_pairs = acc.tolist()
    mean = total / n
    var = sq / n - mean * mean
    cov = (pairs - mean * lin + n_pairs * mean * mean) / n_pairs if n_pairs > 0 else float("nan")
    return {"forward_mean": mean, "forward_var": var, "forward_corr": cov / var if var > 0 else float("nan")}


def _var_from_sums(acc: torch.Tensor) -> float:
    n, total, sq = acc.tolist()
    mean = total / n
    return sq / n - mean * mean


class MomentObserver:
    """Forward/backward hooks on every TransformerLayer (and the embedding) of this rank's model chunks.

    Usage (every rank)::

        obs = MomentObserver(model_chunks)
        obs.attach()                 # before the logged step's forward
        ... forward + backward ...
        records = obs.collect()      # collective over all ranks; list of dicts on global rank 0, [] elsewhere
        obs.detach()                 # removes every hook
    """

    def __init__(self, model_chunks):
        from megatron.core.utils import unwrap_model

        self.chunks = [unwrap_model(m) for m in (model_chunks if isinstance(model_chunks, (list, tuple))
                                            else [model_chunks])]
        self._gather = _sequence_gather(self.chunks)
        self._handles: List = []
        self._stats: Dict[int, _Stats] = defaultdict(_Stats)

    # ----------------------------------------------------------------------------------------- hooks
    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def _record_output(self, layer_number: int, hidden: torch.Tensor) -> None:
        st = self._stats[layer_number]
        if not _in_backward():
            st.fwd = _Stats._add(st.fwd, forward_sums(self._gather(hidden)))
        if hidden.requires_grad:
            def grad_hook(grad, _st=st):
                _st.grad = _Stats._add(_st.grad, _var_sums(self._gather(grad)))
            hidden.register_hook(grad_hook)  # tensor hooks die with the graph: nothing to remove

    def _layer_hook(self, layer_number: int):
        def hook(module, inputs, output):
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            self._record_output(layer_number, hidden)
        return hook

    def _embedding_hook(self):
        def hook(module, inputs, output):
            self._record_output(0, output)
        return hook

    def _pre_norm_hook(self, layer_number: int, attn: bool):
        def hook(module, args):
            if _in_backward():
                return
            st = self._stats[layer_number]
            sums = _var_sums(self._gather(args[0]))
            if attn:
                st.pre_norm_attn = _Stats._add(st.pre_norm_attn, sums)
            else:
                st.pre_norm = _Stats._add(st.pre_norm, sums)
        return hook

    def _accumulate_logits(self, layer_number: int, scores: torch.Tensor, mask) -> None:
        """Add scaled scores [.., sq, sk] (mask: True = masked out) to this layer's logit statistics."""
        sq, sk = scores.shape[-2], scores.shape[-1]
        scores = scores.to(torch.float64)
        z = scores[(~mask.bool()).expand_as(scores)] if mask is not None else scores.reshape(-1)
        st = self._stats[layer_number]
        st.logit = _Stats._add(st.logit, _var_sums(z))
        zmax = z.max() if z.numel() else torch.tensor(float("-inf"), dtype=torch.float64, device=z.device)
        st.logit_max = zmax if st.logit_max is None else torch.maximum(st.logit_max, zmax)

    @staticmethod
    def _default_mask(mask, mask_type, sq: int, sk: int, device):
        if mask is None and getattr(mask_type, "name", "") == "causal" and sq > 1:
            return torch.triu(torch.ones(sq, sk, dtype=torch.bool, device=device), diagonal=1)
        return mask

    def _logit_hook(self, layer_number: int):
        """Local attention: the softmax module's input is the raw score tensor."""
        def hook(module, args):
            if _in_backward():
                return
            scores = args[0].detach()
            if getattr(module, "scale", None) is not None:
                scores = scores * module.scale
            mask = self._default_mask(args[1] if len(args) > 1 else None, module.attn_mask_type,
                                      scores.shape[-2], scores.shape[-1], scores.device)
            self._accumulate_logits(layer_number, scores, mask)
        return hook

    def _sdpa_logit_hook(self, layer_number: int):
        """Fused (SDPA) attention never forms the scores: recompute QKᵀ·scale from its inputs on logged steps."""
        def hook(module, args, kwargs):
            if _in_backward():
                return
            query, key = args[0].detach(), args[1].detach()  # [s, b, heads or groups, hn]
            heads, groups = query.shape[2], key.shape[2]
            if heads != groups:
                key = key.repeat_interleave(heads // groups, dim=2)
            scale = module.softmax_scale
            if module.scale_mask_softmax.scale is not None:
                scale = scale * module.scale_mask_softmax.scale
            scores = torch.einsum("sbnh,tbnh->bnst", query.float(), key.float()) * scale
            mask = args[3] if len(args) > 3 else kwargs.get("attention_mask")
            mask_type = kwargs.get("attn_mask_type") or module.attn_mask_type
            mask = self._default_mask(mask, mask_type, scores.shape[-2], scores.shape[-1], scores.device)
            self._accumulate_logits(layer_number, scores, mask)
        return hook

    def attach(self) -> "MomentObserver":
        """Register the hooks (fresh statistics). Idempotent."""
        from megatron.core.transformer.transformer_layer import TransformerLayer

        from megatron.core.models.common.embeddings.language_model_embedding import LanguageModelEmbedding

        if self._handles:
            return self
        self._stats = defaultdict(_Stats)
        for chunk in self.chunks:
            # found by type, so wrappers that hold the model under another name (task heads) work too
            for embedding in (m for m in chunk.modules() if isinstance(m, LanguageModelEmbedding)):
                self._handles.append(embedding.register_forward_hook(self._embedding_hook()))
                emb_norm = getattr(embedding, "embedding_layernorm", None)
                if emb_norm is not None:
                    self._handles.append(emb_norm.register_forward_pre_hook(self._pre_norm_hook(0, attn=False)))
            for module in chunk.modules():
                if not isinstance(module, TransformerLayer):
                    continue
                number = int(module.layer_number)
                self._handles.append(module.register_forward_hook(self._layer_hook(number)))
                for attr, attn in (("post_mlp_layernorm", False), ("post_attn_layernorm", True)):
                    norm = getattr(module, attr, None)
                    if norm is not None:
                        self._handles.append(norm.register_forward_pre_hook(self._pre_norm_hook(number, attn)))
                core = getattr(getattr(module, "self_attention", None), "core_attention", None)
                if type(core).__name__ == "SDPAttention":
                    self._handles.append(core.register_forward_pre_hook(self._sdpa_logit_hook(number),
                                                                        with_kwargs=True))
                elif getattr(core, "scale_mask_softmax", None) is not None:
                    self._handles.append(core.scale_mask_softmax.register_forward_pre_hook(
                        self._logit_hook(number)))
        return self

    def detach(self) -> None:
        """Remove every hook registered by :meth:`attach` (statistics are kept until the next attach)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # --------------------------------------------------------------------------------------- collect
    def _local_records(self) -> List[dict]:
        records = []
        for number in sorted(self._stats):
            st = self._stats[number]
            rec = {"layer": number}
            if st.fwd is not None:
                rec.update(moments_from_forward(st.fwd))
            if st.grad is not None:
                rec["grad_var"] = _var_from_sums(st.grad)
            if st.logit is not None:
                rec["attn_logit_var"] = _var_from_sums(st.logit)
                rec["attn_logit_max"] = float(st.logit_max)
            if st.pre_norm is not None:
                rec["pre_norm_var"] = _var_from_sums(st.pre_norm)
            if st.pre_norm_attn is not None:
                rec["pre_norm_var_attn"] = _var_from_sums(st.pre_norm_attn)
            records.append(rec)
        return records

    def _reduce_logits_over_tp(self) -> None:
        """Heads are split over TP ranks: sum the logit sums and take the max across the TP group."""
        from megatron.core import parallel_state

        if not (torch.distributed.is_initialized() and parallel_state.model_parallel_is_initialized()):
            return
        if parallel_state.get_tensor_model_parallel_world_size() == 1:
            return
        group = parallel_state.get_tensor_model_parallel_group()
        numbers = sorted(n for n, st in self._stats.items() if st.logit is not None)
        if not numbers:
            return
        sums = torch.stack([self._stats[n].logit for n in numbers])
        maxes = torch.stack([self._stats[n].logit_max for n in numbers])
        torch.distributed.all_reduce(sums, group=group)
        torch.distributed.all_reduce(maxes, op=torch.distributed.ReduceOp.MAX, group=group)
        for i, n in enumerate(numbers):
            self._stats[n].logit = sums[i]
            self._stats[n].logit_max = maxes[i]

    def collect(self) -> List[dict]:
        """Reduce across TP, gather across PP to global rank 0; records sorted by layer on rank 0, [] elsewhere.

        A collective: call it on every rank of the job (also those whose stage has nothing to report).
        """
        from megatron.core import parallel_state

        self._reduce_logits_over_tp()
        local = self._local_records()
        if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
            return local
        reporter = True
        if parallel_state.model_parallel_is_initialized():
            reporter = (parallel_state.get_tensor_model_parallel_rank() == 0
                        and parallel_state.get_data_parallel_rank() == 0)
        payload = local if reporter else []
        gathered = [None] * torch.distributed.get_world_size() if torch.distributed.get_rank() == 0 else None
        torch.distributed.gather_object(payload, gathered, dst=0)
        if torch.distributed.get_rank() != 0:
            return []
        merged: Dict[int, dict] = {}
        for part in gathered:
            for rec in part or []:
                merged.setdefault(rec["layer"], {}).update(rec)
        return [merged[k] for k in sorted(merged)]


def write_moment_records(path: str, records: List[dict], iteration: int, tb_writer=None) -> None:
    """Append one JSON line per layer ``{"iteration": i, "layer": l, ...}`` to ``path``; TensorBoard scalars
    ``moments/<field>/layer_<l>`` when ``tb_writer`` is given. Call on the rank that got the records."""
    if not records:
        return
    lines = []
    for rec in records:
        row = {"iteration": int(iteration), "layer": int(rec["layer"])}
        row.update({k: float(v) for k, v in rec.items() if k != "layer"})
        lines.append(json.dumps(row))
        if tb_writer is not None:
            for key, value in rec.items():
                if key != "layer":
                    tb_writer.add_scalar(f"moments/{key}/layer_{int(rec['layer'])}", float(value), iteration)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    # One write of whole lines, in append mode: a crash never leaves half a record before the next one.
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
        fh.flush()
