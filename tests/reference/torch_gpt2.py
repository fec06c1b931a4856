#!/usr/bin/python3
"""torch_gpt2.py — an independent PyTorch reference of accum-worker's training math.

Written from DESIGN.md alone (not from the C++ sources), so that agreement with
accum-worker is evidence that both follow the contract:

  model     GPT-2: learned token + position embeddings, pre-LN blocks (eps 1e-5),
            causal MHA scaled 1/sqrt(head_dim), MLP 4C with tanh GELU, final LN,
            LM head tied to wte, biases on every linear, no dropout.
  weights   safetensors with Hugging Face GPT2LMHeadModel names, Conv1D [in, out].
  loss      token-weighted over the global batch: sum of CE over counted targets
            / counted targets (a target counts iff its `<file>.mask` byte != 0).
  optimizer torch.optim.AdamW (decay only on >= 2-D tensors), clip_grad_norm_,
            LR: warmup lr*(s+1)/warmup, then cosine to min_lr (or constant).
  data      TEXT_BYTES; micro-batch i of step s reads B*T+1 bytes from chunk
            c = s*K + i: chunks = floor((len-1)/(B*T)), offset = (c mod chunks)*B*T,
            or perm_e[c mod chunks]*B*T with shuffle (e = c // chunks).

Runs in float64 by default (the reference), float32 on request.
Uses only /usr/bin/python3 with numpy and torch (Debian python3-torch 1.13); the
safetensors reader/writer below is json + struct + numpy.

CLI (used by the spike investigation; the ctest imports this module):
  torch_gpt2.py train --spec job.json [--init W.safetensors] [--metrics OUT] [--float32]
  torch_gpt2.py accum-init --spec job.json --out W.safetensors   (accum's own random init)
"""
import argparse
import glob
import json
import math
import os
import struct
import sys

import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the caller decides what a missing torch means (the ctest skips)
    torch = None
    F = None

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15

# --------------------------------------------------------------------------------------
# safetensors: u64 LE header length | JSON header | raw little-endian data.
_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16}


def read_safetensors(path):
    """Returns {name: np.ndarray}; checks offsets tile the data section."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: {len(raw)} bytes, too short for a safetensors header")
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name} has dtype {info['dtype']}, expected F32/F64/F16")
        begin, end = info["data_offsets"]
        arr = np.frombuffer(data[begin:end], dtype=dtype)
        if arr.size != int(np.prod(info["shape"], dtype=np.int64)):
            raise ValueError(f"{path}: tensor {name} has {arr.size} values for shape {info['shape']}")
        out[name] = arr.reshape(info["shape"]).copy()
    return out


def write_safetensors(path, tensors):
    """Writes {name: array} as F32, data 8-byte aligned."""
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        blob = np.ascontiguousarray(arr, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode("utf-8")
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


# --------------------------------------------------------------------------------------
# Model description: Hugging Face GPT2LMHeadModel names and shapes, canonical order.
def hf_parameter_shapes(n_layer, d_model, vocab_size, max_seq_len):
    C = d_model
    shapes = [("transformer.wte.weight", (vocab_size, C)), ("transformer.wpe.weight", (max_seq_len, C))]
    for layer in range(n_layer):
        p = f"transformer.h.{layer}."
        shapes += [(p + "ln_1.weight", (C,)), (p + "ln_1.bias", (C,)),
                   (p + "attn.c_attn.weight", (C, 3 * C)), (p + "attn.c_attn.bias", (3 * C,)),
                   (p + "attn.c_proj.weight", (C, C)), (p + "attn.c_proj.bias", (C,)),
                   (p + "ln_2.weight", (C,)), (p + "ln_2.bias", (C,)),
                   (p + "mlp.c_fc.weight", (C, 4 * C)), (p + "mlp.c_fc.bias", (4 * C,)),
                   (p + "mlp.c_proj.weight", (4 * C, C)), (p + "mlp.c_proj.bias", (C,))]
    shapes += [("transformer.ln_f.weight", (C,)), ("transformer.ln_f.bias", (C,))]
    return shapes


def random_init(cfg, seed):
    """A GPT-2-style init of our own (N(0, 0.02), residual projections / sqrt(2L),
    LN gains 1, LN biases and linear biases small random so their gradients matter)."""
    rng = np.random.default_rng(seed)
    L = cfg["n_layer"]
    out = {}
    for name, shape in hf_parameter_shapes(L, cfg["d_model"], cfg["vocab_size"], cfg["max_seq_len"]):
        if len(shape) >= 2:
            std = 0.02 / math.sqrt(2 * L) if name.endswith("c_proj.weight") else 0.02
            out[name] = rng.normal(0.0, std, shape)
        elif "ln_" in name and name.endswith(".weight"):
            out[name] = 1.0 + rng.normal(0.0, 0.05, shape)
        else:
            out[name] = rng.normal(0.0, 0.01, shape)
        out[name] = out[name].astype(np.float32)
    return out


def accum_default_init(cfg, seed):
    """accum-worker's own init when no init_from is given (reproduced so a spike seen in a
    plain worker run can be replayed here): one stream of unit normals from splitmix64 →
    Box–Muller (cos then sin), consumed in canonical tensor order by >= 2-D tensors;
    std 0.02, c_proj weights 0.02f/sqrtf(2L); LN gains 1, biases 0."""
    L = cfg["n_layer"]
    shapes = hf_parameter_shapes(L, cfg["d_model"], cfg["vocab_size"], cfg["max_seq_len"])
    n_random = sum(int(np.prod(s)) for _, s in shapes if len(s) >= 2)
    n_uniform = n_random + (n_random % 2)
    state = np.uint64(seed) + np.arange(1, n_uniform + 1, dtype=np.uint64) * np.uint64(GOLDEN)
    z = state
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    u = ((z >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)
    unit = np.empty(n_uniform)
    for k in range(n_uniform // 2):  # math.* = the same libm the worker calls
        radius = math.sqrt(-2.0 * math.log(u[2 * k]))
        angle = 2.0 * math.pi * u[2 * k + 1]
        unit[2 * k] = radius * math.cos(angle)
        unit[2 * k + 1] = radius * math.sin(angle)
    residual_std = float(np.float32(0.02) / np.sqrt(np.float32(2 * L), dtype=np.float32))
    out, used = {}, 0
    for name, shape in shapes:
        if len(shape) >= 2:
            n = int(np.prod(shape))
            std = residual_std if name.endswith("c_proj.weight") else float(np.float32(0.02))
            out[name] = (unit[used:used + n] * std).astype(np.float32).reshape(shape)
            used += n
        elif "ln_" in name and name.endswith(".weight"):
            out[name] = np.ones(shape, np.float32)
        else:
            out[name] = np.zeros(shape, np.float32)
    return out


class Gpt2:
    """GPT-2 as plain tensors keyed by HF names (no nn.Module: fewer moving parts)."""

    def __init__(self, cfg, weights, dtype):
        self.cfg = cfg
        self.dtype = dtype
        self.names = [n for n, _ in hf_parameter_shapes(cfg["n_layer"], cfg["d_model"],
                                                       cfg["vocab_size"], cfg["max_seq_len"])]
        self.params = {}
        for name, shape in hf_parameter_shapes(cfg["n_layer"], cfg["d_model"], cfg["vocab_size"],
                                               cfg["max_seq_len"]):
            key = name if name in weights else name[len("transformer."):]
            if key not in weights:
                raise KeyError(f"missing tensor {name} of shape {list(shape)}")
            arr = np.asarray(weights[key])
            if tuple(arr.shape) != tuple(shape):
                raise ValueError(f"tensor {name} has shape {list(arr.shape)}, expected {list(shape)}")
            self.params[name] = torch.tensor(arr, dtype=dtype, requires_grad=True)

    def parameters(self):
        return [self.params[n] for n in self.names]

    def state_numpy(self):
        return {n: self.params[n].detach().cpu().numpy() for n in self.names}

    @staticmethod
    def _gelu(x):  # tanh approximation, written out
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))

    def _ln(self, x, prefix):
        return F.layer_norm(x, (x.shape[-1],), self.params[prefix + ".weight"],
                            self.params[prefix + ".bias"], eps=1e-5)

    def logits(self, idx):
        """idx: (B, T) int64 → logits (B, T, V)."""
        P, cfg = self.params, self.cfg
        B, T = idx.shape
        C, NH = cfg["d_model"], cfg["n_head"]
        hs = C // NH
        x = P["transformer.wte.weight"][idx] + P["transformer.wpe.weight"][:T][None]
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        for layer in range(cfg["n_layer"]):
            p = f"transformer.h.{layer}."
            h = self._ln(x, p + "ln_1")
            qkv = h @ P[p + "attn.c_attn.weight"] + P[p + "attn.c_attn.bias"]  # (B,T,3C)
            q, k, v = qkv.split(C, dim=2)
            q, k, v = (t.view(B, T, NH, hs).transpose(1, 2) for t in (q, k, v))  # (B,NH,T,hs)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
            att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, C)
            x = x + (y @ P[p + "attn.c_proj.weight"] + P[p + "attn.c_proj.bias"])
            h = self._ln(x, p + "ln_2")
            h = self._gelu(h @ P[p + "mlp.c_fc.weight"] + P[p + "mlp.c_fc.bias"])
            x = x + (h @ P[p + "mlp.c_proj.weight"] + P[p + "mlp.c_proj.bias"])
        x = self._ln(x, "transformer.ln_f")
        return x @ P["transformer.wte.weight"].t()

    def loss_sum(self, inputs, targets, mask):
        """Sum of CE over counted targets (mask != 0); returns (tensor, counted)."""
        logits = self.logits(torch.as_tensor(inputs, dtype=torch.long))
        V = logits.shape[-1]
        ce = F.cross_entropy(logits.reshape(-1, V), torch.as_tensor(targets, dtype=torch.long).reshape(-1),
                             reduction="none")
        weight = torch.as_tensor(mask.reshape(-1) != 0, dtype=logits.dtype)
        return (ce * weight).sum(), int((mask != 0).sum())


# --------------------------------------------------------------------------------------
# Data: the concatenated TEXT_BYTES stream and its chunk order.
class Xoshiro256:
    """xoshiro256** seeded from splitmix64; below(n) rejects the short top range."""

    def __init__(self, seed):
        self.s = []
        sm = seed & MASK64
        for _ in range(4):
            sm = (sm + GOLDEN) & MASK64
            self.s.append(_mix64(sm))

    def next(self):
        s = self.s
        result = (_rotl((s[1] * 5) & MASK64, 7) * 9) & MASK64
        t = (s[1] << 17) & MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)
        return result

    def below(self, bound):
        threshold = ((1 << 64) - bound) % bound
        while True:
            r = self.next()
            if r >= threshold:
                return r % bound


def _rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & MASK64


def _mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def chunk_permutation(chunks, seed, epoch):
    perm = list(range(chunks))
    rng = Xoshiro256(_mix64((seed ^ ((epoch * GOLDEN) & MASK64)) & MASK64))
    for i in range(chunks - 1, 0, -1):
        j = rng.below(i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def expand_paths(patterns, base):
    files = []
    for pattern in ([patterns] if isinstance(patterns, str) else patterns):
        if not os.path.isabs(pattern):
            pattern = os.path.join(base, pattern)
        if any(ch in pattern for ch in "*?["):
            found = sorted((p for p in glob.glob(pattern) if not p.endswith(".mask")),
                           key=lambda s: s.encode())
            files += found if found else [pattern]
        else:
            files.append(pattern)
    return files


class ByteStream:
    """TEXT_BYTES: each byte one token; optional per-token mask from `<file>.mask`."""

    def __init__(self, files, use_mask):
        self.tokens = np.concatenate([np.fromfile(f, dtype=np.uint8) for f in files]).astype(np.int64)
        if use_mask:
            self.mask = np.concatenate([np.fromfile(f + ".mask", dtype=np.uint8) for f in files])
            assert self.mask.size == self.tokens.size, "mask sidecar size != data size"
        else:
            self.mask = np.ones(self.tokens.size, dtype=np.uint8)
        self._perm_cache = {}

    def chunk(self, c, B, T, shuffle=False, seed=0):
        bt = B * T
        chunks = (self.tokens.size - 1) // bt
        index = c % chunks
        if shuffle:
            epoch = c // chunks
            key = (chunks, seed, epoch)
            if key not in self._perm_cache:
                self._perm_cache = {key: chunk_permutation(chunks, seed, epoch)}
            index = self._perm_cache[key][index]
        off = index * bt
        span = self.tokens[off:off + bt + 1]
        x, y = span[:-1].reshape(B, T), span[1:].reshape(B, T)
        m = self.mask[off + 1:off + bt + 1].reshape(B, T)  # the mask byte at the target's position
        return x, y, m


# --------------------------------------------------------------------------------------
# Spec handling, schedule, training.
def load_spec(path):
    with open(path) as f:
        spec = json.load(f)
    spec["_base"] = os.path.dirname(os.path.abspath(path))
    return spec


def model_config(spec):
    m = spec["model"]
    return {"n_layer": m["n_layer"], "n_head": m["n_head"], "d_model": m["d_model"],
            "vocab_size": m["vocab_size"], "max_seq_len": m["max_seq_len"]}


def optimizer_settings(spec):
    o = spec.get("optimizer", {})
    return {"lr": o.get("lr", 6e-4), "min_lr": o.get("min_lr", 0.0), "warmup": o.get("warmup_steps", 0),
            "schedule": o.get("schedule", "cosine") or "cosine", "wd": o.get("weight_decay", 0.1),
            "beta1": o.get("beta1", 0.9), "beta2": o.get("beta2", 0.95), "eps": o.get("eps", 1e-8),
            "clip": o.get("grad_clip", 1.0), "decay_steps": o.get("decay_steps", 0)}


def learning_rate(opt, step, max_steps):
    if step < opt["warmup"]:
        return opt["lr"] * (step + 1) / opt["warmup"]
    decay_end = opt["decay_steps"] or max_steps
    if opt["schedule"] == "constant" or decay_end <= opt["warmup"]:
        return opt["lr"]
    if step >= decay_end:
        return opt["min_lr"]
    progress = (step - opt["warmup"]) / (decay_end - opt["warmup"])
    return opt["min_lr"] + 0.5 * (1.0 + math.cos(math.pi * progress)) * (opt["lr"] - opt["min_lr"])


def grad_accum_steps(spec):
    b = spec["batch"]
    per = b["micro_batch_size"] * b["seq_len"]
    if b.get("grad_accum_steps"):
        return b["grad_accum_steps"]
    assert b["tokens_per_update"] % per == 0
    return b["tokens_per_update"] // per


def train(spec, init, dtype=None, steps=None, on_step=None):
    """Trains like one accum-worker rank. Returns (metrics list, final weights as numpy)."""
    dtype = dtype or torch.float64
    cfg, opt = model_config(spec), optimizer_settings(spec)
    B, T, K = spec["batch"]["micro_batch_size"], spec["batch"]["seq_len"], grad_accum_steps(spec)
    data = spec["data"]
    stream = ByteStream(expand_paths(data["train"], spec["_base"]), data.get("use_mask", False))
    shuffle, seed = data.get("shuffle", False), spec.get("seed", 0)
    max_steps = spec["max_steps"]
    model = Gpt2(cfg, init, dtype)
    decay = [model.params[n] for n in model.names if model.params[n].dim() >= 2]
    no_decay = [model.params[n] for n in model.names if model.params[n].dim() < 2]
    adamw = torch.optim.AdamW([{"params": decay, "weight_decay": opt["wd"]},
                               {"params": no_decay, "weight_decay": 0.0}],
                              lr=opt["lr"], betas=(opt["beta1"], opt["beta2"]), eps=opt["eps"])
    params = model.parameters()
    metrics = []
    for step in range(steps if steps is not None else max_steps):
        for p in params:
            p.grad = None
        loss_sum, counted = 0.0, 0
        for i in range(K):
            x, y, m = stream.chunk(step * K + i, B, T, shuffle, seed)
            loss, n = model.loss_sum(x, y, m)
            loss.backward()  # gradients add up over the K micro-batches
            loss_sum += loss.item()
            counted += n
        with torch.no_grad():
            for p in params:
                p.grad.mul_(1.0 / counted if counted else 0.0)
        if opt["clip"] > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, opt["clip"]))
        else:
            norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
        lr = learning_rate(opt, step, max_steps)
        for group in adamw.param_groups:
            group["lr"] = lr
        adamw.step()
        row = {"step": step + 1, "loss": loss_sum / counted if counted else 0.0, "lr": lr,
               "grad_norm": norm, "tokens": counted}
        metrics.append(row)
        if on_step:
            on_step(row)
    return metrics, model.state_numpy()


def eval_loss(spec, weights, dtype=None, batches=None):
    """The worker's eval: val chunks 0..batches-1 in order (no shuffle), token-weighted."""
    dtype = dtype or torch.float64
    data = spec["data"]
    stream = ByteStream(expand_paths(data["val"], spec["_base"]), data.get("use_mask", False))
    B, T = spec["batch"]["micro_batch_size"], spec["batch"]["seq_len"]
    model = Gpt2(model_config(spec), weights, dtype)
    total, counted = 0.0, 0
    with torch.no_grad():
        for i in range(batches or spec.get("eval", {}).get("batches", 4)):
            loss, n = model.loss_sum(*stream.chunk(i, B, T))
            total += loss.item()
            counted += n
    return total / counted


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a TEXT_BYTES spec in PyTorch, print metrics lines")
    t.add_argument("--spec", required=True)
    t.add_argument("--init", help="safetensors init (default: the spec's init_from, else accum's init)")
    t.add_argument("--metrics", help="write JSON lines here too")
    t.add_argument("--steps", type=int)
    t.add_argument("--float32", action="store_true")
    t.add_argument("--save", help="write the final weights here (safetensors)")
    a = sub.add_parser("accum-init", help="write accum-worker's own random init for a spec")
    a.add_argument("--spec", required=True)
    a.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if torch is None and args.cmd == "train":
        print("torch is not importable by", sys.executable, file=sys.stderr)
        return 77
    spec = load_spec(args.spec)
    if args.cmd == "accum-init":
        write_safetensors(args.out, accum_default_init(model_config(spec), spec.get("seed", 0)))
        return 0
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if args.init:
        init = read_safetensors(args.init)
    elif spec.get("init_from"):
        path = spec["init_from"]
        init = read_safetensors(path if os.path.isabs(path) else os.path.join(spec["_base"], path))
    else:
        init = accum_default_init(model_config(spec), spec.get("seed", 0))
    out = open(args.metrics, "w") if args.metrics else None

    def show(row):
        line = json.dumps(row)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    _, final = train(spec, init, torch.float32 if args.float32 else torch.float64, args.steps, show)
    if args.save:
        write_safetensors(args.save, final)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
