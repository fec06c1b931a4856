#!/usr/bin/env python3
"""bench/gpu/torch_gpt2.py — the PyTorch reference for bench/gpu.sh.

The same GPT-2 (bench/torch_gpt2_model.py, shared with the CPU twin) and the same optimizer
step as bench/gpu/gpt2_bench.cpp: bf16 autocast over fp32 parameters,
F.scaled_dot_product_attention(is_causal=True), torch.compile, fused AdamW (weight decay
0.1), clip_grad_norm_(1.0), K micro-batches per optimizer step, mean loss over the window.
Prints one JSON object (also written to --out) with the same fields as gpt2_bench.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from torch_gpt2_model import GPT2, HAVE_SDPA  # noqa: E402  (bench/, found through the path above)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--dmodel", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    if not HAVE_SDPA or not hasattr(torch, "compile"):
        print(f"torch_gpt2: PyTorch {torch.__version__} lacks scaled_dot_product_attention or "
              "torch.compile (needs >= 2.0)", file=sys.stderr)
        return 3
    if not torch.cuda.is_available():
        print("torch_gpt2: torch.cuda.is_available() is False", file=sys.stderr)
        return 3
    torch.manual_seed(1234)
    torch.backends.cuda.matmul.allow_tf32 = True
    dev = "cuda"
    model = GPT2(args.layers, args.heads, args.dmodel, args.vocab, max(1024, args.seq)).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    compiled = model if args.no_compile else torch.compile(model)

    g = torch.Generator().manual_seed(42)
    n = args.batch * args.seq
    batches = [torch.randint(0, min(args.vocab, 50257), (n + 1,), generator=g) for _ in range(4)]
    batches = [(b[:-1].view(args.batch, args.seq).to(dev), b[1:].view(args.batch, args.seq).to(dev))
               for b in batches]

    torch.cuda.reset_peak_memory_stats()
    first_loss = last_loss = float("nan")
    timed = timed_micro = 0.0
    micro = 0
    for step in range(1, args.warmup + args.steps + 1):
        torch.cuda.synchronize()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        window_loss = 0.0
        for _ in range(args.grad_accum):
            x, y = batches[micro % 4]
            micro += 1
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                loss = compiled(x, y) / args.grad_accum
            loss.backward()
            window_loss += loss.detach()
        torch.cuda.synchronize()  # the phases timed apart, as gpt2_bench does
        micro_seconds = time.perf_counter() - start
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        if step > args.warmup:
            timed += seconds
            timed_micro += micro_seconds
        value = float(window_loss)
        if step == 1:
            first_loss = value
        last_loss = value
        print(f"step {step}{' (warmup)' if step <= args.warmup else ''} loss {value:.4f} "
              f"grad_norm {float(norm):.4f} {seconds * 1e3:.1f} ms", file=sys.stderr)

    step_ms = timed / args.steps * 1e3
    result = {
        "impl": "pytorch" + ("" if args.no_compile else "-compile"),
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
        "n_layer": args.layers, "n_head": args.heads, "d_model": args.dmodel, "vocab": args.vocab,
        "batch": args.batch, "seq": args.seq, "grad_accum": args.grad_accum, "params": n_params,
        "steps": args.steps, "step_ms": step_ms,
        "micro_ms": timed_micro / args.steps / args.grad_accum * 1e3,
        "optimizer_ms": (timed - timed_micro) / args.steps * 1e3,
        "tokens_per_s": n * args.grad_accum / (step_ms / 1e3),
        "flops_per_token": 6.0 * n_params + 12.0 * args.layers * args.dmodel * args.seq,
        "first_loss": first_loss, "last_loss": last_loss,
        "peak_bytes_allocated": torch.cuda.max_memory_allocated(),
    }
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
