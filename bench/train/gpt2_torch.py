#!/usr/bin/python3
"""PyTorch twin of accum-worker's CPU training step, for the throughput benchmark.

Same model: bench/torch_gpt2_model.py (shared with the GPU twin; torch 1.13 has no
scaled_dot_product_attention, so attention takes the explicit masked-softmax form). Same step: K micro-batches, token-weighted loss (sum of per-target
losses / targets in the window), clip_grad_norm_(grad_clip), AdamW (decay on
tensors with >= 2 dims only), the LR schedule of DESIGN.md.
Same data order: micro-batch i of step s reads B*T+1 tokens at offset
((s*K + i) mod chunks)*B*T, chunks = floor((tokens-1)/(B*T)) (no shuffle).

Prints one JSON line per optimizer step ({"step", "loss", "step_ms", "tokens"})
and a final summary line {"summary": ..., "tokens_per_s": ...} over the steps
after --warmup.

Usage: gpt2_torch.py --data FILE --format text|bin --n-layer 4 --n-head 4 --d-model 256
       --vocab 256 --max-seq-len 256 --seq-len 256 --batch 8 --accum 1 --steps 8 --warmup 3
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from torch_gpt2_model import GPT2  # noqa: E402  (bench/, found through the path above)

PRESETS = {  # (n_layer, n_head, d_model), vocab 50257, max_seq_len 1024
    "gpt2-124m": (12, 12, 768),
    "gpt2-350m": (24, 16, 1024),
}


def load_stream(path, fmt):
    if fmt == "text":
        return np.fromfile(path, dtype=np.uint8).astype(np.int64)
    return np.fromfile(path, dtype=np.uint16).astype(np.int64)  # nanoGPT .bin


def micro_batch(stream, step, i, K, B, T):
    need = B * T + 1
    chunks = (len(stream) - 1) // (B * T)  # accumd's data/token_stream.h order contract
    offset = ((step * K + i) % chunks) * B * T
    chunk = torch.from_numpy(stream[offset:offset + need])
    return chunk[:-1].view(B, T), chunk[1:].view(B, T)


def learning_rate(args, s):
    if s < args.warmup_lr:
        return args.lr * (s + 1) / args.warmup_lr
    if args.schedule == "constant":
        return args.lr
    frac = (s - args.warmup_lr) / max(1, args.steps - args.warmup_lr)
    return args.min_lr + 0.5 * (1 + math.cos(math.pi * frac)) * (args.lr - args.min_lr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--format", choices=["text", "bin"], default="text")
    ap.add_argument("--preset", default="")
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--max-seq-len", type=int, default=256)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3, help="timed steps excluded")
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--min-lr", type=float, default=0.0)
    ap.add_argument("--warmup-lr", type=int, default=0)
    ap.add_argument("--schedule", default="constant")
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    if args.preset:
        args.n_layer, args.n_head, args.d_model = PRESETS[args.preset]
        args.vocab, args.max_seq_len = 50257, 1024
    B, T, K = args.batch, args.seq_len, args.accum
    stream = load_stream(args.data, args.format)
    if stream.max() >= args.vocab:
        sys.exit(f"{args.data}: token {int(stream.max())} >= vocab {args.vocab}")

    model = GPT2(args.n_layer, args.n_head, args.d_model, args.vocab, args.max_seq_len,
                 generator=torch.Generator().manual_seed(args.seed))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    n_params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "params": n_params}), flush=True)

    timed_tokens, timed_s = 0, 0.0
    for step in range(args.steps):
        started = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for i in range(K):
            x, y = micro_batch(stream, step, i, K, B, T)
            loss = model(x, y, reduction="sum")
            (loss / (B * T * K)).backward()  # token-weighted over the window (unmasked)
            loss_sum += loss.item()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        for group in opt.param_groups:
            group["lr"] = learning_rate(args, step)
        opt.step()
        step_s = time.perf_counter() - started
        tokens = B * T * K
        print(json.dumps({"step": step + 1, "loss": loss_sum / tokens, "grad_norm": float(grad_norm),
                          "step_ms": step_s * 1e3, "tokens": tokens}), flush=True)
        if step >= args.warmup:
            timed_tokens += tokens
            timed_s += step_s
    print(json.dumps({"summary": "torch", "steps_timed": args.steps - args.warmup,
                      "tokens_per_s": timed_tokens / timed_s if timed_s > 0 else 0.0}), flush=True)


if __name__ == "__main__":
    main()
