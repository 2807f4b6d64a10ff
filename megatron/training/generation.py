"""Text generation and scoring with a GPT model held in this process (TP1·PP1); what ``tools/generate.py`` runs.

The model is called as training calls it: token ids, position ids from 0, no attention mask (the layer spec's
causal mask). So a score here is the training loss per predicted token (cross-entropy over the padded
vocabulary, as ``pretrain_gpt.py``'s loss), and generation samples from the rows the tokenizer can decode (padded
rows only exist for TP splits). The optional KV cache is megatron-core's ``StaticInferenceContext``; with it,
each step feeds one token, without it each step re-runs the whole sequence (the reference).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F


class InputError(ValueError):
    """Input the tool cannot use (empty file, prompt too long, nothing to score); the message says why."""


# ----------------------------------------------------------------------------------------------------------
# Input files


def read_documents(path: str) -> List[str]:
    """Documents of ``path``: loose JSON (one ``{"text": ...}`` object per line) or, if the first non-blank line
    is not such an object, plain text (the whole file is one document)."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    with open(path, "r", encoding="utf-8") as f:
        try:
            content = f.read()
        except UnicodeDecodeError as exc:
            raise InputError(f"{path} is not UTF-8 text ({exc})") from None
    if not content.strip():
        raise InputError(f"{path} is empty")
    lines = content.splitlines()
    first = next(line for line in lines if line.strip())
    if not _is_text_record(first):
        return [content]
    docs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InputError(f'{path}:{number}: expected an object with a string "text" field')
        docs.append(record["text"])
    return docs


def _is_text_record(line: str) -> bool:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return False
    return isinstance(record, dict) and "text" in record


def read_prompts(path: str) -> List[str]:
    """One prompt per line (trailing newline dropped, blank lines skipped)."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    with open(path, "r", encoding="utf-8") as f:
        prompts = [line.rstrip("\r\n") for line in f if line.strip()]
    if not prompts:
        raise InputError(f"{path} holds no prompts")
    return prompts


# ----------------------------------------------------------------------------------------------------------
# Forward


def forward_logits(model, tokens: torch.Tensor, context=None, start: int = 0) -> torch.Tensor:
    """[b, s, padded vocab] fp32 logits of ``tokens`` [b, s] at positions ``start..start+s-1``.

    ``context``: a megatron-core inference context holding the keys/values of the first ``start`` positions."""
    b, s = tokens.shape
    positions = torch.arange(start, start + s, dtype=torch.long).unsqueeze(0).expand(b, -1)
    with torch.no_grad():
        if context is None:
            out = model(tokens, positions, None)
        else:
            out = model(tokens, positions, None, inference_context=context, runtime_gather_output=True)
    return out.float()


# ----------------------------------------------------------------------------------------------------------
# Scoring


@dataclass
class Score:
    nll_sum: float = 0.0
    tokens: int = 0
    windows: int = 0

    @property
    def nll(self) -> float:
        return self.nll_sum / self.tokens if self.tokens else float("nan")

    @property
    def ppl(self) -> float:
        return math.exp(self.nll)

    def line(self) -> str:
        return f"score: nll={self.nll:.8f} ppl={self.ppl:.6f} tokens={self.tokens} windows={self.windows}"


def windows(ids: Sequence[int], seq_length: int) -> List[List[int]]:
    """Consecutive, non-overlapping windows of ``seq_length`` tokens (the last may be shorter); a trailing
    one-token window predicts nothing and is dropped."""
    if seq_length < 2:
        raise InputError(f"--seq-length must be at least 2 (got {seq_length})")
    out = [list(ids[i:i + seq_length]) for i in range(0, len(ids), seq_length)]
    return [w for w in out if len(w) >= 2]


def score_windows(model, wins: Iterable[Sequence[int]], batch_size: int = 8) -> Score:
    """Sum of next-token NLLs of every window scored on its own (tokens 2..n of each window predicted).

    Windows of equal length run together (no padding, so batching changes nothing but rounding)."""
    by_length = {}
    for w in wins:
        by_length.setdefault(len(w), []).append(list(w))
    score = Score()
    for length in sorted(by_length):
        group = by_length[length]
        for i in range(0, len(group), max(1, batch_size)):
            tokens = torch.tensor(group[i:i + batch_size], dtype=torch.long)
            logits = forward_logits(model, tokens)
            nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1),
                                  reduction="none")
            score.nll_sum += float(nll.double().sum())
            score.tokens += nll.numel()
            score.windows += tokens.shape[0]
    return score


def score_documents(model, tokenizer, docs: Sequence[str], seq_length: int, batch_size: int = 8) -> Score:
    """Each document tokenized on its own, cut into windows, scored (see :func:`windows`)."""
    wins = []
    for doc in docs:
        wins.extend(windows(tokenizer.tokenize(doc), seq_length))
    if not wins:
        raise InputError("nothing to score: no document has two or more tokens")
    return score_windows(model, wins, batch_size)


# ----------------------------------------------------------------------------------------------------------
# Sampling


@dataclass(frozen=True)
class Sampling:
    """greedy: argmax; else softmax(logits / temperature), restricted to the top_k tokens (0: all) and to the
    smallest set of most likely tokens whose probability reaches top_p (1.0: all)."""
    greedy: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def check(self) -> "Sampling":
        if not self.greedy:
            if not self.temperature > 0:
                raise InputError(f"--temperature must be > 0 (got {self.temperature}); use --greedy for argmax")
            if self.top_k < 0:
                raise InputError(f"--top-k must be >= 0 (got {self.top_k})")
            if not 0 < self.top_p <= 1:
                raise InputError(f"--top-p must lie in (0, 1] (got {self.top_p})")
        return self


def filtered_logits(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """1-D logits scaled by the temperature, with the tokens top-k / top-p exclude set to -inf."""
    logits = logits.float() / sampling.temperature
    if 0 < sampling.top_k < logits.numel():
        kth = torch.topk(logits, sampling.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True)
        probs = torch.softmax(ordered, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass of the more likely tokens
        drop = before >= sampling.top_p
        drop[0] = False  # the most likely token always stays
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return logits


def next_token(logits: torch.Tensor, sampling: Sampling, generator: Optional[torch.Generator]) -> int:
    if sampling.greedy:
        return int(torch.argmax(logits))
    probs = torch.softmax(filtered_logits(logits, sampling), dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def generate(model, prompt: Sequence[int], max_new_tokens: int, vocab_size: int, sampling: Sampling,
             generator: Optional[torch.Generator] = None, eod: Optional[int] = None,
             use_cache: bool = True, logprobs: Optional[List[float]] = None) -> List[int]:
    """New token ids after ``prompt`` (stops after ``max_new_tokens`` or at ``eod`` when given, which is not
    returned). ``vocab_size``: the tokenizer's, so padded rows are never chosen. ``logprobs``: a list to append
    each returned token's log-probability to (the model's, over the padded vocabulary as in scoring)."""
    if not prompt:
        raise InputError("empty prompt: give at least one token")
    out: List[int] = []
    if max_new_tokens <= 0:
        return out
    tokens = torch.tensor([list(prompt)], dtype=torch.long)
    context = None
    if use_cache:
        from megatron.core.inference.contexts import StaticInferenceContext

        context = StaticInferenceContext(1, len(prompt) + max_new_tokens)
    logits = forward_logits(model, tokens, context)
    if context is not None:
        context.increment_sequence_len_offset(tokens.shape[1])
        context.enable_decode_mode()
    while True:
        token = next_token(logits[0, -1, :vocab_size], sampling, generator)
        if eod is not None and token == eod:
            break
        out.append(token)
        if logprobs is not None:
            logprobs.append(float(torch.log_softmax(logits[0, -1], dim=-1)[token]))
        if len(out) >= max_new_tokens:
            break
        step = torch.tensor([[token]], dtype=torch.long)
        if context is None:
            tokens = torch.cat([tokens, step], dim=1)
            logits = forward_logits(model, tokens)
        else:
            logits = forward_logits(model, step, context, start=context.sequence_len_offset)
            context.increment_sequence_len_offset(1)
    return out


def position_limit(args) -> Optional[int]:
    """Longest sequence the model can take: learned position tables end at --max-position-embeddings."""
    if getattr(args, "position_embedding_type", "learned_absolute") == "learned_absolute":
        return int(args.max_position_embeddings)
    return None


# ----------------------------------------------------------------------------------------------------------
# Loading

def load_gpt_checkpoint(load_dir: str, tokenizer_overrides=None):
    """(args, model, tokenizer) of the latest GPT checkpoint under ``load_dir``, built at TP1·PP1 by
    ``hf_checkpoint.session`` from the checkpoint's own flags; a BERT checkpoint raises ConfigError."""
    from megatron.training.hf_checkpoint import session
    from megatron.training.validate import ConfigError

    kind = session.saved_model_type(load_dir)
    if kind != "gpt":
        raise ConfigError(f"{load_dir} holds a {kind.upper()} checkpoint; generation and scoring need a GPT "
                          "checkpoint (pretrain_gpt.py)")
    args, model, _table, tokenizer, _extra = session.load_checkpoint_model(load_dir, "gpt", tokenizer_overrides)
    model.eval()
    return args, model, tokenizer
