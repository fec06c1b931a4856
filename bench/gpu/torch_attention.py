#!/usr/bin/env python3
"""bench/gpu/torch_attention.py — what PyTorch's fused attention kernels take on this card
for one GPT-2 attention call, to set our attention kernels (kernels/cuda/attention_mma.cu)
against what exists.

Causal F.scaled_dot_product_attention on bf16 (B, NH, T, HS) tensors, once per backend
PyTorch offers here (flash, cuDNN, memory-efficient), each timed with CUDA events: the
forward alone, and forward + backward (the backward is the difference). Our kernels' times
for the same shape come from ncu in the same lease call (bench/gpu/lease.sh). Prints a
Markdown table, and with --out writes the rows as JSON.
"""
import argparse
import json
import sys

import torch
import torch.nn.functional as F


def time_ms(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--head-size", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("torch_attention: no CUDA device visible to PyTorch", file=sys.stderr)
        return 3
    from torch.nn.attention import SDPBackend, sdpa_kernel

    shape = (args.batch, args.heads, args.seq, args.head_size)
    gen = torch.Generator(device="cuda").manual_seed(1)
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=gen)
               .requires_grad_() for _ in range(3))
    dout = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=gen)
    # Causal attention work: 4 B NH T^2 HS / 2 FLOPs forward, 2.5x that backward.
    fwd_flop = 4 * args.batch * args.heads * args.seq * args.seq * args.head_size / 2
    rows = []
    backends = [("flash", SDPBackend.FLASH_ATTENTION),
                ("cudnn", getattr(SDPBackend, "CUDNN_ATTENTION", None)),
                ("efficient", SDPBackend.EFFICIENT_ATTENTION)]
    for name, backend in backends:
        if backend is None:
            continue
        try:
            with sdpa_kernel([backend]):
                def forward():
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True)

                def forward_backward():
                    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                    torch.autograd.grad(out, (q, k, v), dout)

                fwd = time_ms(forward, args.warmup, args.iters)
                both = time_ms(forward_backward, args.warmup, args.iters)
        except RuntimeError as error:  # a backend that does not run here
            print(f"torch_attention: {name}: {str(error).splitlines()[0]}", file=sys.stderr)
            continue
        bwd = both - fwd
        rows.append({"backend": name, "forward_us": fwd * 1e3, "backward_us": bwd * 1e3,
                     "forward_tflops": fwd_flop / (fwd * 1e-3) / 1e12,
                     "backward_tflops": 2.5 * fwd_flop / (bwd * 1e-3) / 1e12})
    print(f"PyTorch {torch.__version__}, {torch.cuda.get_device_name()}, causal SDPA, "
          f"B={args.batch} NH={args.heads} T={args.seq} HS={args.head_size}, bf16")
    print("| backend | forward us | backward us | forward TFLOP/s | backward TFLOP/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['forward_us']:.1f} | {r['backward_us']:.1f} | "
              f"{r['forward_tflops']:.0f} | {r['backward_tflops']:.0f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
