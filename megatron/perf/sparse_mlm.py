"""BERT's masked-LM head evaluated only at the masked positions.

Flag: ``--mlm-head-positions masked`` (``all`` = stock). Replaces: ``BertModel``'s LM head (dense + GeLU +
LayerNorm) and vocabulary projection on every token, although the MLM loss uses only the masked ~15 %; for
small, narrow models with BERT's 30,522-word vocabulary that projection dominates the step. Exactness:
<= 1e-6 relative at every masked position, forward and gradients; the same loss (tests/perf/test_sparse_mlm.py).
Applies to BERT without sequence parallelism (there the LM head sees only a slice of the sequence), when the
forward is given ``mlm_positions`` (pretrain_bert.py passes the loss mask); otherwise it is the stock model.

:class:`MaskedPositionsBertModel` gathers the hidden states of the loss positions before the LM head and
scatters the per-token losses back to ``[b, s]`` (zeros elsewhere), so the loss function, the loss mask and the
logged numbers are unchanged. It is a model class, chosen at construction by
:func:`megatron.perf.bert_model_class`.
"""

from __future__ import annotations

from typing import Optional

import torch

from megatron.core.models.bert.bert_model import BertModel


class MaskedPositionsBertModel(BertModel):
    """``BertModel`` whose LM head and loss run only on ``mlm_positions`` (a [b, s] 0/1 mask) when given."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._positions_sb: Optional[torch.Tensor] = None  # [s, b] bool, set for one forward call
        if self.post_process:
            self.lm_head.register_forward_pre_hook(self._gather_positions, with_kwargs=True)

    def forward(self, input_ids, attention_mask, tokentype_ids=None, lm_labels=None, inference_context=None, *,
                inference_params=None, mlm_positions: Optional[torch.Tensor] = None):
        sparse = (mlm_positions is not None and lm_labels is not None and self.post_process
                  and not self.config.sequence_parallel)
        self._positions_sb = mlm_positions.transpose(0, 1).bool() if sparse else None
        try:
            return super().forward(input_ids, attention_mask, tokentype_ids, lm_labels, inference_context,
                                   inference_params=inference_params)
        finally:
            self._positions_sb = None

    def _gather_positions(self, module, args, kwargs):
        """lm_head pre-hook: [s, b, h] hidden states -> [n, 1, h], the n loss positions in (s, b) order."""
        if self._positions_sb is None:
            return None
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        selected = hidden[self._positions_sb].unsqueeze(1)
        if "hidden_states" in kwargs:
            return args, {**kwargs, "hidden_states": selected}
        return (selected,) + tuple(args[1:]), kwargs

    def compute_language_model_loss(self, labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        positions = self._positions_sb
        if positions is None:
            return super().compute_language_model_loss(labels, logits)
        selected_labels = labels.transpose(0, 1)[positions].unsqueeze(0)  # [1, n], same order as the logits
        loss = super().compute_language_model_loss(selected_labels, logits)  # [1, n]
        full = loss.new_zeros(positions.shape).masked_scatter(positions, loss.reshape(-1))  # [s, b]
        return full.transpose(0, 1).contiguous()
