"""Task heads on a megatron-core BertModel: sentence-pair classification and multiple choice.

megatron-core 0.16 ships no task heads (upstream's lived in the removed legacy models), so the finetuning
model is :class:`BertWithHead`: the pretrained BertModel's embedding, encoder and pooler, then a small head.
The masked-LM head, output layer and sentence-order head are dropped (no unused parameters in the
optimizer); the remaining parameters keep their pretraining checkpoint keys, so ``--pretrained-checkpoint``
loads them by name. The head's own weights live under ``task_head.`` and are drawn from a generator keyed
on (seed, parameter name): the same on every rank and at every TP size.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

# The model weights' keyed generator: one hash for every layout-independent draw.
from megatron.dslm.mcore.weight_init import keyed_generator


def init_linear_(linear: nn.Linear, std: float, seed: int, key: str) -> None:
    """Normal(0, std) weight from the keyed generator, zero bias (the init-table convention)."""
    with torch.no_grad():
        weight = torch.randn(linear.weight.shape, generator=keyed_generator(seed, key + ".weight"))
        linear.weight.copy_(weight * std)
        if linear.bias is not None:
            linear.bias.zero_()


class ClassificationHead(nn.Module):
    """pooled [b, h] -> dropout -> Linear(h, num_classes) -> logits [b, num_classes]."""

    def __init__(self, hidden_size: int, num_classes: int, dropout: float, std: float, seed: int,
                 key: str = "task_head.classifier"):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_classes)
        init_linear_(self.classifier, std, seed, key)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(pooled))


class MultipleChoiceHead(nn.Module):
    """One score per option: pooled [b*k, h] -> Linear(h, 1) -> [b, k]; softmax over options in the loss.

    The model sees each (article+question, option) pair as its own sequence; the ``k`` options of one
    question are consecutive rows of the batch.
    """

    def __init__(self, hidden_size: int, num_choices: int, dropout: float, std: float, seed: int,
                 key: str = "task_head.scorer"):
        super().__init__()
        self.num_choices = num_choices
        self.dropout = nn.Dropout(dropout)
        self.scorer = nn.Linear(hidden_size, 1)
        init_linear_(self.scorer, std, seed, key)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        scores = self.scorer(self.dropout(pooled))
        return scores.view(-1, self.num_choices)


class BertWithHead(nn.Module):
    """BertModel body (embedding -> encoder -> pooler) plus a task head.

    Not a MegatronModule subclass on purpose: ``sharded_state_dict`` below hands the body's keys through
    unchanged (``embedding.*``, ``encoder.*``, ``pooler.*``) so a pretraining checkpoint matches them.
    """

    def __init__(self, bert, head: Optional[nn.Module]):
        super().__init__()
        if getattr(bert, "pooler", None) is None:
            raise ValueError("task heads read the pooler: build the BertModel with add_binary_head=True")
        # Unused by tasks: drop them so no parameter sits in the optimizer without a gradient.
        bert.lm_head = None
        bert.output_layer = None
        bert.binary_head = None
        self.bert = bert
        self.task_head = head
        self.config = bert.config
        self.pre_process = bert.pre_process
        self.post_process = bert.post_process
        self.model_type = bert.model_type
        # finalize_model_grads looks these up on the chunk; tying is moot without the output layer.
        self.share_embeddings_and_output_weights = False

    def set_input_tensor(self, input_tensor) -> None:
        self.bert.set_input_tensor(input_tensor)

    def forward(self, input_ids, attention_mask, tokentype_ids=None):
        bert = self.bert
        extended_mask = bert.bert_extended_attention_mask(attention_mask)
        embedded = None
        if bert.pre_process:
            embedded = bert.embedding(input_ids=input_ids, position_ids=bert.bert_position_ids(input_ids),
                                      tokentype_ids=tokentype_ids)
        hidden = bert.encoder(hidden_states=embedded, attention_mask=extended_mask)
        if not bert.post_process:
            return hidden
        return self.task_head(bert.pooler(hidden, 0))

    def load_state_dict(self, state_dict, strict: bool = True):
        """Accept the checkpoint's flat keys (``embedding.*``, ``task_head.*``), as ``sharded_state_dict`` names them."""
        head_prefix = "task_head."
        head = {k[len(head_prefix):]: v for k, v in state_dict.items() if k.startswith(head_prefix)}
        body = {k: v for k, v in state_dict.items() if not k.startswith(head_prefix)}
        result = self.bert.load_state_dict(body, strict=strict)
        if self.task_head is not None:
            head_result = self.task_head.load_state_dict(head, strict=strict)
            result.missing_keys.extend(head_prefix + k for k in head_result.missing_keys)
            result.unexpected_keys.extend(head_prefix + k for k in head_result.unexpected_keys)
        return result

    def sharded_state_dict(self, prefix: str = "", sharded_offsets=(), metadata=None):
        from megatron.core.transformer.utils import make_sharded_tensors_for_checkpoint

        state = self.bert.sharded_state_dict(prefix=prefix, sharded_offsets=sharded_offsets, metadata=metadata)
        if self.task_head is not None:
            head_prefix = f"{prefix}task_head."
            state.update(make_sharded_tensors_for_checkpoint(
                self.task_head.state_dict(prefix="", keep_vars=True), head_prefix, {}, sharded_offsets))
        return state
