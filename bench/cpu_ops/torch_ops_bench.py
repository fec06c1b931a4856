"""PyTorch twin of ops_bench.cpp: the same ops at the same shapes, median ms.

Backward times use torch.autograd.grad on a retained graph of that op alone.
Run through bench/cpu_ops/run.sh (Debian python3-torch, OMP_NUM_THREADS=2).
"""
import math
import sys
import time

import torch
import torch.nn.functional as F


def time_ms(fn, reps):
    fn()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return samples[len(samples) // 2]


def attention(qkv, B, T, C, NH):
    q, k, v = qkv.split(C, dim=2)
    hs = C // NH
    q = q.view(B, T, NH, hs).transpose(1, 2)
    k = k.view(B, T, NH, hs).transpose(1, 2)
    v = v.view(B, T, NH, hs).transpose(1, 2)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    return (att @ v).transpose(1, 2).contiguous().view(B, T, C)


def run(name, B, T, C, NH, V, L, reps):
    torch.set_num_threads(2)
    N = B * T
    print(f"== torch {name}: B={B} T={T} C={C} NH={NH} V={V} layers={L} threads={torch.get_num_threads()}")
    rows = []

    def fwd_bwd(op, per_step, make):
        inputs, fn = make()
        out = fn(*inputs)
        dout = torch.randn_like(out)
        rows.append((op + "_fwd", time_ms(lambda: fn(*inputs), reps), per_step))
        rows.append((op + "_bwd", time_ms(
            lambda: torch.autograd.grad(out, inputs, dout, retain_graph=True), reps), per_step))

    def leaf(*shape):
        return torch.randn(*shape, requires_grad=True)

    fwd_bwd("layernorm", 2 * L + 1, lambda: ((leaf(N, C), leaf(C), leaf(C)),
                                             lambda x, w, b: F.layer_norm(x, (C,), w, b, 1e-5)))
    for op, cin, cout in (("matmul_qkv", C, 3 * C), ("matmul_proj", C, C),
                          ("matmul_fc", C, 4 * C), ("matmul_fcproj", 4 * C, C)):
        fwd_bwd(op, L, lambda cin=cin, cout=cout: ((leaf(N, cin), leaf(cout, cin), leaf(cout)), F.linear))
    fwd_bwd("attention", L, lambda: ((leaf(B, T, 3 * C),), lambda qkv: attention(qkv, B, T, C, NH)))
    fwd_bwd("gelu", L, lambda: ((leaf(N * 4 * C),), lambda x: F.gelu(x, approximate="tanh")))
    a, b = torch.randn(N * C), torch.randn(N * C)
    rows.append(("residual_fwd", time_ms(lambda: a + b, reps), 2 * L))
    fwd_bwd("lm_head", 1, lambda: ((leaf(N, C), leaf(V, C)), F.linear))
    logits = torch.randn(N, V, requires_grad=True)
    targets = torch.randint(0, V, (N,))

    def ce():
        loss = F.cross_entropy(logits, targets)
        return torch.autograd.grad(loss, logits)
    rows.append(("crossentropy", time_ms(ce, reps), 1))
    params = V * C + L * 12 * C * C
    p = torch.nn.Parameter(torch.randn(params))
    p.grad = torch.randn(params)
    opt = torch.optim.AdamW([p], lr=1e-4, weight_decay=0.1)
    rows.append(("adamw(all params)", time_ms(opt.step, reps), 1))
    rows.append(("sum_squares(all)", time_ms(lambda: p.grad.norm(), reps), 1))
    step = 0.0
    for op, ms, k in rows:
        print(f"{op:20s} {ms:9.3f} ms  x{k:<3d} = {ms * k:9.2f} ms")
        step += ms * k
    print(f"{'STEP ESTIMATE':20s} {step:9.2f} ms  -> {N / (step / 1000):.0f} tokens/s (op sum)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "124m":
        run("gpt2-124m", 2, 256, 768, 12, 50257, 12, 5)
    else:
        run("small", 8, 256, 256, 4, 256, 4, 15)
