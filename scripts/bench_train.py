"""Step time of our GPT training step vs stock megatron-core vs a plain-PyTorch GPT of the same shape.

One process, same data, same shapes; every variant runs a full optimizer step (forward, backward, Adam). The
variants' steps are interleaved round-robin and the median per variant is reported.

- ``plain``: a hand-written pre-LN GPT (scaled_dot_product_attention, tied embeddings) with torch AdamW
  (fused where this torch supports it) -- the speed a user would get without Megatron.
- ``mcore-local``: megatron-core GPTModel with its stock local layer spec and default init, driven by our
  loop's ``train_step`` with megatron-core's own DDP grad hooks and optimizer (``--grad-buffer-impl megatron``)
  and the no-pipelining schedule.
- ``ours``: exactly what ``pretrain_gpt.py`` builds (``model_provider`` + ``train_step``) for
  ``--init-scheme megatron`` and ``dslm``, with the stock-equivalent path (``--attention-backend local
  --linear-impl megatron --grad-buffer-impl megatron``) and the defaults (``--attention-backend auto
  --linear-impl torch --grad-buffer-impl direct``).
- ``+moments@100``: the average step cost with ``--log-moments-interval 100`` (one hooked step per 100),
  estimated from measured plain and hooked steps: (99 * t_plain + t_hooked) / 100.

    python scripts/bench_train.py                    # CPU shapes 12x256, 96x64, 384x32 (seq 128)
    python scripts/bench_train.py --shapes 96x64 --steps 10 --markdown docs/performance.md
    python scripts/bench_train.py --gpu              # 24x1024, 192x256 (seq 512), 1000x128 (seq 256), bf16
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]

CPU_SHAPES = ["12x256", "96x64", "384x32"]
GPU_SHAPES = ["24x1024:512", "192x256:512", "1000x128:256"]
VOCAB = 1023  # +1 EOD = 1024: no padding differences between variants
DEFAULT_FLAGS = "attn=auto linear=torch grads=direct"  # the variant name of pretrain_gpt.py's default path


# ------------------------------------------------------------------------------------ plain PyTorch GPT

class PlainBlock(nn.Module):
    def __init__(self, d: int, heads: int, p: float):
        super().__init__()
        self.heads, self.p = heads, p
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):  # x: [b, s, d]
        b, s, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.p if self.training else 0.0)
        x = x + F.dropout(self.proj(a.transpose(1, 2).reshape(b, s, d)), self.p, self.training)
        return x + F.dropout(self.fc2(F.gelu(self.fc1(self.ln2(x)))), self.p, self.training)


class PlainGPT(nn.Module):
    def __init__(self, layers: int, d: int, heads: int, seq: int, vocab: int, p: float):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(PlainBlock(d, heads, p) for _ in range(layers))
        self.ln_f, self.p = nn.LayerNorm(d), p

    def forward(self, tokens, labels):
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        x = F.dropout(self.wte(tokens) + self.wpe(pos), self.p, self.training)
        for blk in self.blocks:
            x = blk(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.reshape(-1))


def plain_step_fn(layers, d, heads, seq, mbs, device, dtype):
    model = PlainGPT(layers, d, heads, seq, VOCAB + 1, 0.1).to(device)
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (mbs, seq + 1), generator=gen).to(device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return step, None


# ------------------------------------------------------------------------------------ our stack

def _argv(layers, d, heads, seq, mbs, scheme, backend, gpu):
    argv = ["--num-layers", str(layers), "--hidden-size", str(d), "--num-attention-heads", str(heads),
            "--seq-length", str(seq), "--max-position-embeddings", str(seq), "--micro-batch-size", str(mbs),
            "--train-iters", "1000", "--lr", "1e-4", "--mock-data", "--vocab-size", str(VOCAB),
            "--init-scheme", scheme, "--attention-backend", backend, "--eval-iters", "0",
            "--log-moments-interval", "100", "--moments-file", os.devnull]
    # without --gpu both stacks run on the CPU, also on a GPU host (the baseline follows the same flag)
    return argv + (["--bf16"] if gpu else ["--cpu"])


class _Batches:
    """Endless identical micro-batches in the dict layout GPTDataset yields."""

    def __init__(self, mbs, seq):
        gen = torch.Generator().manual_seed(0)
        t = torch.randint(0, VOCAB, (mbs, seq + 1), generator=gen)
        self.batch = {"tokens": t[:, :-1], "labels": t[:, 1:], "loss_mask": torch.ones(mbs, seq),
                      "position_ids": torch.arange(seq).expand(mbs, seq)}

    def __iter__(self):
        return self

    def __next__(self):
        return self.batch


def pretrain_gpt():
    """The root-level entry script as a module (entry scripts are not part of the installed package)."""
    if "pretrain_gpt" not in sys.modules:
        spec = importlib.util.spec_from_file_location("pretrain_gpt", REPO / "pretrain_gpt.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["pretrain_gpt"] = module
    return sys.modules["pretrain_gpt"]


def megatron_step_fn(layers, d, heads, seq, mbs, scheme, backend, gpu, stock=False, linear_impl="torch",
                     grad_buffer="direct", extra_argv=()):
    from megatron.training import training
    from megatron.training.metrics import MomentLogging

    entry = pretrain_gpt()

    args = training.initialize_megatron(argv=_argv(layers, d, heads, seq, mbs, scheme, backend, gpu)
                                        + ["--linear-impl", linear_impl, "--grad-buffer-impl", grad_buffer]
                                        + list(extra_argv))
    provider = entry.model_provider
    if stock:
        from megatron.core.models.gpt import GPTModel
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

        def provider(pre_process=True, post_process=True, config=None):
            return GPTModel(config, get_gpt_layer_local_spec(), vocab_size=args.padded_vocab_size,
                            max_sequence_length=seq, pre_process=pre_process, post_process=post_process)
    model, optimizer, scheduler = training.setup_model_and_optimizer(provider, args)
    data = _Batches(mbs, seq)
    moments = MomentLogging(args, model)

    def step():
        training.train_step(entry.forward_step, data, model, optimizer, scheduler, args)

    def hooked_step():
        moments.before(100)
        step()
        moments.after(100)
    return step, hooked_step


# ------------------------------------------------------------------------------------ timing

def _sync(gpu):
    if gpu:
        torch.cuda.synchronize()


def time_interleaved(steps: dict, n: int, warmup: int, gpu: bool) -> dict:
    """Median step time per variant, the variants' steps interleaved round-robin (rotating order).

    Timing variants one after the other biased the comparison by up to 10 % on a shared CPU (whichever ran
    later was slower: allocator state, neighbours); interleaving gives every variant the same conditions.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    names = list(steps)
    times = {name: [] for name in names}
    for r in range(n):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            _sync(gpu)
            t0 = time.perf_counter()
            steps[name]()
            _sync(gpu)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def bench_shape(shape, steps, warmup, mbs, gpu):
    dims, _, seq = shape.partition(":")
    layers, d = (int(v) for v in dims.split("x"))
    seq = int(seq or 128)
    heads = max(1, d // 64) if d >= 256 else max(1, d // 32)
    device = torch.device("cuda" if gpu else "cpu")
    dtype = torch.bfloat16 if gpu else torch.float32
    fns, hooked = {}, {}
    fns["plain-pytorch"], _ = plain_step_fn(layers, d, heads, seq, mbs, device, dtype)
    fns["mcore-local (stock)"], _ = megatron_step_fn(layers, d, heads, seq, mbs, "megatron", "local", gpu,
                                                     stock=True, linear_impl="megatron", grad_buffer="megatron")
    for scheme in ("megatron", "dslm"):
        for backend, linear, grads in (("local", "megatron", "megatron"), ("auto", "torch", "direct")):
            name = f"ours {scheme} attn={backend} linear={linear} grads={grads}"
            fns[name], hooked[scheme] = megatron_step_fn(layers, d, heads, seq, mbs, scheme, backend, gpu,
                                                         linear_impl=linear, grad_buffer=grads)
    measured = time_interleaved(fns, steps, warmup, gpu)
    hooked_t = time_interleaved({k: v for k, v in hooked.items()}, max(2, steps // 3), 1, gpu)
    rows = {}
    for name, t in measured.items():
        rows[name] = t
        for scheme in ("megatron", "dslm"):
            if name == f"ours {scheme} {DEFAULT_FLAGS}":
                rows[f"{name} +moments@100"] = (99 * t + hooked_t[scheme]) / 100
                rows[f"  (one hooked step, {scheme})"] = hooked_t[scheme]
    tokens = mbs * seq
    return layers, d, seq, heads, rows, tokens


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="*", default=None, help="LAYERSxHIDDEN[:SEQ] (default: CPU or GPU set)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant (median reported)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--micro-batch-size", type=int, default=4)
    p.add_argument("--gpu", action="store_true", help="GPU shapes in bf16 (needs CUDA)")
    p.add_argument("--markdown", help="also write the table (markdown) to this file")
    a = p.parse_args()
    if a.gpu and not torch.cuda.is_available():
        sys.exit("error: --gpu needs a CUDA device")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    shapes = a.shapes or (GPU_SHAPES if a.gpu else CPU_SHAPES)
    lines = [f"device: {torch.cuda.get_device_name(0) if a.gpu else 'CPU'} | torch {torch.__version__} | "
             f"threads {torch.get_num_threads()} | micro-batch {a.micro_batch_size} | median of {a.steps} "
             f"interleaved steps",
             "", "| shape | variant | step ms | tokens/s | vs plain | vs ours megatron (default flags) |",
             "|---|---|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    for shape in shapes:
        layers, d, seq, heads, rows, tokens = bench_shape(shape, a.steps, a.warmup, a.micro_batch_size, a.gpu)
        base, ours = rows["plain-pytorch"], rows[f"ours megatron {DEFAULT_FLAGS}"]
        for name, t in rows.items():
            line = (f"| {layers}x{d} seq{seq} h{heads} | {name} | {t * 1e3:.1f} | {tokens / t:.0f} | "
                    f"{t / base:.3f} | {t / ours:.3f} |")
            lines.append(line)
            print(line, flush=True)
    if a.markdown:
        tmp = a.markdown + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, a.markdown)


if __name__ == "__main__":
    main()
