#!/usr/bin/env python3
"""bench/gpu/torch_gpt2.py — the PyTorch reference for bench/gpu.sh.

The same GPT-2 and the same optimizer step as bench/gpu/gpt2_bench.cpp: pre-LN blocks,
tanh-GELU MLP, tied LM head, biases everywhere; bf16 autocast over fp32 parameters,
F.scaled_dot_product_attention(is_causal=True), torch.compile, fused AdamW (weight decay
0.1), clip_grad_norm_(1.0), K micro-batches per optimizer step, mean loss over the window.
Prints one JSON object (also written to --out) with the same fields as gpt2_bench.
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


HAVE_SDPA = hasattr(F, "scaled_dot_product_attention")


class Block(nn.Module):
    def __init__(self, c, n_head):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(c, eps=1e-5)
        self.c_attn = nn.Linear(c, 3 * c)
        self.c_proj = nn.Linear(c, c)
        self.ln_2 = nn.LayerNorm(c, eps=1e-5)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        shape = (b, t, self.n_head, c // self.n_head)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        if HAVE_SDPA:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # old PyTorch (< 2.0): only for a functional check, never for the benchmark
            att = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            y = att.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, n_layer, n_head, c, vocab, max_seq):
        super().__init__()
        self.wte = nn.Embedding(vocab, c)
        self.wpe = nn.Embedding(max_seq, c)
        self.h = nn.ModuleList(Block(c, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(c, eps=1e-5)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
            elif "ln" not in name:
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied LM head
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))


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
    timed = 0.0
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
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        if step > args.warmup:
            timed += seconds
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
