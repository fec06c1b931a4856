#!/usr/bin/python3
"""check_hf_init.py — `init_from` reads the Hugging Face GPT-2 safetensors files other
tools write, and refuses wrong ones by name.

Each file below is written by hand (u64 header length, JSON header, data) with the
variants real files have:
  hub         names without "transformer.", F32, the attn.bias / attn.masked_bias buffers
              as F32 (openai-community/gpt2's model.safetensors), __metadata__ format pt
  prefixed    "transformer." names and lm_head.weight equal to wte (a torch state_dict)
  fp16, bf16  every tensor in half precision (save_pretrained after .half() / bf16)
  bool_mask   attn.bias as BOOL, as transformers 4.2x saved it (persistent buffer)
  head_only   lm_head.weight and no wte: safetensors.torch.save_model keeps the
              alphabetically first name of tied tensors
For each, accum-worker's first-step loss (the forward of the loaded weights, fp32) must
equal the float64 PyTorch reference's loss of the same weights (rounded to the file's
dtype) to 1e-6 relative. Then a wrong vocabulary, a missing tensor and an unsupported
dtype must each exit 2 with a message naming the file, the tensor and what was expected.

Exit codes: 0 pass, 1 fail, 77 skipped (torch not importable; ctest SKIP_RETURN_CODE).
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import numpy as np
    import torch_gpt2 as ref
    from check_against_accum import Checker, make_text, read_metrics, rel, write
    MISSING = None if ref.torch is not None else "torch"
except ImportError as error:  # numpy itself missing
    MISSING = error.name

MODEL = {"n_layer": 2, "n_head": 4, "d_model": 64, "vocab_size": 256, "max_seq_len": 32}
B, T = 2, 24
LOSS_TOL = 1e-6  # fp32 forward vs fp64 forward of the same weights (observed ~1e-8)


def encode(dtype, array):
    """(bytes, the values as float64 after rounding to dtype)."""
    torch = ref.torch
    if dtype == "F32":
        a = np.ascontiguousarray(array, dtype=np.float32)
        return a.tobytes(), a.astype(np.float64)
    if dtype == "F64":
        a = np.ascontiguousarray(array, dtype=np.float64)
        return a.tobytes(), a
    if dtype == "F16":
        a = np.ascontiguousarray(array, dtype=np.float16)
        return a.tobytes(), a.astype(np.float64)
    if dtype == "BF16":
        t = torch.tensor(np.asarray(array, dtype=np.float32)).to(torch.bfloat16)
        return t.view(torch.int16).numpy().tobytes(), t.to(torch.float64).numpy()
    if dtype == "BOOL":
        a = np.ascontiguousarray(array, dtype=np.bool_)
        return a.tobytes(), None
    raise ValueError(dtype)


def write_hf(path, tensors, metadata=None):
    """tensors: [(name, dtype, array)] in file order. Returns {name: float64 values}."""
    header, blobs, offset, values = {}, [], 0, {}
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, array in tensors:
        blob, rounded = encode(dtype, array)
        header[name] = {"dtype": dtype, "shape": list(np.shape(array)),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
        values[name] = rounded
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    write(path, struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return values


def hf_tensors(init, dtype, prefix=True, head=False, wte=True, buffers=None):
    """GPT2LMHeadModel's tensors from `init` ("transformer." names) in `dtype`."""
    out = []
    for name, array in init.items():
        if name == "transformer.wte.weight" and not wte:
            continue
        out.append((name if prefix else name[len("transformer."):], dtype, array))
    if buffers:
        tril = np.tril(np.ones((MODEL["max_seq_len"],) * 2)).reshape(1, 1, *(MODEL["max_seq_len"],) * 2)
        for layer in range(MODEL["n_layer"]):
            p = f"{'transformer.' if prefix else ''}h.{layer}.attn."
            out.append((p + "bias", buffers, tril))
            out.append((p + "masked_bias", dtype, np.array(-1e4)))
    if head:
        out.append(("lm_head.weight", dtype, init["transformer.wte.weight"]))
    return out


def as_reference(values):
    """The loaded weights under the reference's names (head as wte, buffers dropped)."""
    weights = {}
    for name, array in values.items():
        if ".attn.bias" in name or ".attn.masked_bias" in name:
            continue
        if name == "lm_head.weight":
            if "transformer.wte.weight" in values or "wte.weight" in values:
                continue
            name = "transformer.wte.weight"
        weights[name if name.startswith("transformer.") else "transformer." + name] = array
    return weights


def run_worker(args, work, variant):
    spec = {
        "name": f"hf-{variant}",
        "model": MODEL,
        "data": {"train": "corpus.txt", "format": "TEXT_BYTES", "shuffle": False},
        "batch": {"micro_batch_size": B, "seq_len": T, "tokens_per_update": B * T},
        "optimizer": {"lr": 1e-3, "warmup_steps": 0, "schedule": "constant"},
        "max_steps": 1, "seed": 1, "init_from": f"{variant}.safetensors",
        "checkpoint": {"dir": f"ckpt-{variant}", "every_steps": 0, "keep_last": 1},
        "metrics_path": f"{variant}.jsonl", "device": "CPU", "precision": "FP32",
    }
    spec_path = os.path.join(work, f"{variant}.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f, indent=1)
    env = dict(os.environ, OMP_NUM_THREADS="2")
    run = subprocess.run([args.worker, "--spec", spec_path], cwd=work, env=env, timeout=120,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return spec_path, run


def check(args, work):
    c = Checker()
    write(os.path.join(work, "corpus.txt"), make_text(1000, 5))
    # Weights 10x GPT-2's init scale, so the loss is far from ln(vocab) and every tensor
    # moves it well past the tolerance.
    init = {name: (10 * a if a.ndim >= 2 else a).astype(np.float32)
            for name, a in ref.random_init(MODEL, seed=4321).items()}
    good = {
        "hub": (hf_tensors(init, "F32", prefix=False, buffers="F32"), {"format": "pt"}),
        "prefixed": (hf_tensors(init, "F32", head=True), None),
        "fp16": (hf_tensors(init, "F16", prefix=False, buffers="F16"), {"format": "pt"}),
        "bf16": (hf_tensors(init, "BF16", head=True), {"format": "pt"}),
        "bool_mask": (hf_tensors(init, "F32", prefix=False, buffers="BOOL"), {"format": "pt"}),
        "head_only": (hf_tensors(init, "F32", head=True, wte=False), {"format": "pt"}),
    }
    for variant, (tensors, metadata) in good.items():
        path = os.path.join(work, f"{variant}.safetensors")
        values = write_hf(path, tensors, metadata)
        spec_path, run = run_worker(args, work, variant)
        if run.returncode != 0:
            c.check(False, f"{variant}: accum-worker exited {run.returncode}:\n{run.stdout[-2000:]}")
            continue
        worker = read_metrics(os.path.join(work, f"{variant}.jsonl"))
        reference, _ = ref.train(ref.load_spec(spec_path), as_reference(values), steps=1)
        got, want = worker[0]["loss"], reference[0]["loss"]
        print(f"{variant:>10}: loss accum {got:.9f} torch fp64 {want:.9f} rel {rel(got, want):.1e}")
        c.check(rel(got, want) <= LOSS_TOL, f"{variant}: loss {got!r} vs torch {want!r}")
    # The half-precision files must really differ from fp32, or their checks prove little.
    losses = {v: read_metrics(os.path.join(work, f"{v}.jsonl"))[0]["loss"]
              for v in ("hub", "fp16", "bf16") if os.path.exists(os.path.join(work, f"{v}.jsonl"))}
    if len(losses) == 3:
        c.check(losses["fp16"] != losses["hub"] and losses["bf16"] != losses["hub"],
                f"half-precision files gave the fp32 loss {losses}: no rounding was exercised")

    wte = init["transformer.wte.weight"]
    wide = np.concatenate([wte, wte[:1]])
    bad = {
        "wrong_vocab": ([t if t[0] != "wte.weight" else ("wte.weight", "F32", wide)
                         for t in hf_tensors(init, "F32", prefix=False)],
                        ["wte.weight has shape [257, 64], expected [256, 64]"]),
        "missing": ([t for t in hf_tensors(init, "F32") if t[0] != "transformer.h.1.ln_2.bias"],
                    ["missing tensor transformer.h.1.ln_2.bias of shape [64]"]),
        "f64": ([t if t[0] != "wpe.weight" else ("wpe.weight", "F64", t[2])
                 for t in hf_tensors(init, "F32", prefix=False)],
                ["tensor 'wpe.weight': unsupported dtype 'F64' (expected F32, F16 or BF16)"]),
    }
    for variant, (tensors, words) in bad.items():
        write_hf(os.path.join(work, f"{variant}.safetensors"), tensors)
        _, run = run_worker(args, work, variant)
        c.check(run.returncode == 2, f"{variant}: exit {run.returncode}, expected 2 (bad input)")
        for text in words + [f"{variant}.safetensors"]:
            c.check(text in run.stdout, f"{variant}: output lacks {text!r}:\n{run.stdout[-2000:]}")
        print(f"{variant:>10}: exit {run.returncode}")
    if c.failures:
        print(f"{len(c.failures)} check(s) failed")
        return 1
    print("PASS: init_from loads every Hugging Face GPT-2 variant and refuses the wrong ones")
    return 0


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", required=True, help="path to accum-worker")
    parser.add_argument("--workdir", help="keep the files here (default: a temp dir, removed "
                        "when every check passes)")
    args = parser.parse_args(argv)
    if MISSING:
        print(f"SKIPPED: {MISSING} is not importable by {sys.executable}; "
              "the Hugging Face init check needs Debian's python3-torch and python3-numpy")
        return 77
    ref.torch.set_num_threads(2)
    if not os.access(args.worker, os.X_OK):
        print(f"FAIL: accum-worker not found or not executable at {args.worker}")
        return 1
    work = args.workdir or tempfile.mkdtemp(prefix="accum-hf-init-")
    os.makedirs(work, exist_ok=True)
    print("work dir:", work)
    status = check(args, work)
    if status == 0 and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)  # a failure keeps its files to look at
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
