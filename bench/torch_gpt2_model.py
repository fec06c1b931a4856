"""bench/torch_gpt2_model.py — the one PyTorch GPT-2 that the benchmarks' twins train.

bench/train/gpt2_torch.py (CPU, Debian's python3-torch) and bench/gpu/torch_gpt2.py (GPU,
the host's PyTorch) import it, so both measure exactly accum-worker's model (DESIGN.md
"Model"): learned token + position embeddings, pre-LayerNorm blocks (eps 1e-5), causal
multi-head attention scaled by 1/sqrt(head_dim), MLP 4*C with tanh GELU, final LayerNorm,
LM head tied to wte, biases everywhere, no dropout; initialized as accumd does: N(0, 0.02),
residual projections N(0, 0.02 / sqrt(2 n_layer)), zero biases.

Attention is F.scaled_dot_product_attention(is_causal=True) where PyTorch has it (>= 2.0)
and the explicit masked softmax otherwise (Debian 12's torch 1.13).

tests/reference/torch_gpt2.py is deliberately separate: it checks accum-worker's math in
float64 and must not share code with what it checks against.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

HAVE_SDPA = hasattr(F, "scaled_dot_product_attention")


class Block(nn.Module):
    def __init__(self, c, n_head, max_seq):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(c, eps=1e-5)
        self.c_attn = nn.Linear(c, 3 * c)
        self.attn_proj = nn.Linear(c, c)
        self.ln_2 = nn.LayerNorm(c, eps=1e-5)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)
        if not HAVE_SDPA:
            mask = torch.tril(torch.ones(max_seq, max_seq, dtype=torch.bool))
            self.register_buffer("mask", mask.view(1, 1, max_seq, max_seq), persistent=False)

    def attention(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        shape = (b, t, self.n_head, c // self.n_head)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))  # (B, NH, T, hs)
        if HAVE_SDPA:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))  # (B, NH, T, T)
            att = att.masked_fill(~self.mask[:, :, :t, :t], float("-inf"))
            y = F.softmax(att, dim=-1) @ v
        return self.attn_proj(y.transpose(1, 2).contiguous().view(b, t, c))

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    """forward(idx, targets, reduction) is the cross-entropy of the next-token predictions,
    computed in fp32 (under autocast the logits are bf16), summed or averaged over targets."""

    def __init__(self, n_layer, n_head, c, vocab, max_seq, generator=None):
        super().__init__()
        self.wte = nn.Embedding(vocab, c)
        self.wpe = nn.Embedding(max_seq, c)
        self.h = nn.ModuleList(Block(c, n_head, max_seq) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(c, eps=1e-5)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                    p.normal_(0.0, std, generator=generator)
                elif name.endswith("bias"):
                    p.zero_()

    def forward(self, idx, targets, reduction="mean"):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t, dtype=torch.long, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied LM head
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1),
                               reduction=reduction)
