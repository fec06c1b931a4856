#!/usr/bin/env python3
"""bench/gpu/summarize.py — turns gpt2_bench / torch_gpt2 JSON results into the markdown
table that bench/gpu.sh writes (and appends to bench/RESULTS.md).

usage: summarize.py --card NAME --command CMD --tests LINE --out FILE ours.json [torch.json]
       [--scaling k1.json k8.json ...] [--ablation LABEL=ours_without_X.json ...]
       [--batches ours_b16.json ...]
A --batches result is the same model at another micro-batch (tokens/s and MFU as the
micro-batch grows: the per-step costs that do not scale with it, the optimizer above all,
weigh less).
An ablation is the same accum-cuda run with one optimization switched off (e.g. the
CUDA-core attention instead of the tensor-core one): its row shows what that optimization buys.
MFU = tokens_per_s * flops_per_token / peak dense bf16 FLOP/s of the card: the peak_tflops
gpt2_bench reports (the product's table in kernels/cuda/device_peak.cpp, or ACCUM_PEAK_TFLOPS).
"""
import argparse
import datetime
import json
import os

def load(path):
    with open(path) as f:
        return json.loads(f.read().strip().splitlines()[-1])


def mfu(result, peak):
    if peak is None:
        return "n/a (unknown peak; set ACCUM_PEAK_TFLOPS)"
    return f"{100.0 * result['tokens_per_s'] * result['flops_per_token'] / (peak * 1e12):.1f}%"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--card", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--tests", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--scaling", nargs="*", default=[])
    ap.add_argument("--ablation", nargs="*", default=[])
    ap.add_argument("--large", default="")
    ap.add_argument("--batches", nargs="*", default=[])
    ap.add_argument("--vocab-runs", nargs="*", default=[],
                    help="accum-cuda's (and PyTorch's) run at another vocabulary size")
    ap.add_argument("results", nargs="+")
    args = ap.parse_args()
    ours = load(args.results[0])
    peak = ours.get("peak_tflops") or None  # 0: a card the table does not know
    theirs = load(args.results[1]) if len(args.results) > 1 else None

    lines = [f"### GPU benchmark — {args.card}, {datetime.date.today().isoformat()}", "",
             f"Command: `{args.command}`", ""]
    if args.tests:
        lines += [f"gpu tests: {args.tests}", ""]
    lines += [f"GPT-2 ({ours['params'] / 1e6:.1f}M params, L={ours['n_layer']} C={ours['d_model']}"
              f" V={ours['vocab']}), micro-batch B={ours['batch']}, T={ours['seq']}, "
              f"K={ours['grad_accum']}; peak bf16 {peak if peak else '?'} TFLOP/s", "",
              "| implementation | step ms | tokens/s | MFU | loss first → last |",
              "|---|---|---|---|---|"]
    for r in [ours] + ([theirs] if theirs else []):
        lines.append(f"| {r['impl']} | {r['step_ms']:.1f} | {r['tokens_per_s']:.0f} | {mfu(r, peak)}"
                     f" | {r['first_loss']:.3f} → {r['last_loss']:.3f} |")
    ablations = []
    for item in args.ablation:
        label, _, path = item.rpartition("=")
        if path and os.path.exists(path):
            ablations.append((label, load(path)))
    for label, r in ablations:
        lines.append(f"| {r['impl']} with {label} | {r['step_ms']:.1f} | {r['tokens_per_s']:.0f} | "
                     f"{mfu(r, peak)} | {r['first_loss']:.3f} → {r['last_loss']:.3f} |")
    for label, r in ablations:
        # An ablation switches an optimization off (> 1x: it pays); a variant switches a
        # candidate on (< 1x: the candidate is faster than the default).
        lines += ["", f"default / with `{label}` (tokens/s): "
                      f"**{ours['tokens_per_s'] / r['tokens_per_s']:.3f}x**"]
    batches = [load(path) for path in args.batches if os.path.exists(path)]
    if batches:
        lines += ["", "accum-cuda at other micro-batches (same model, T, K; one run each):", "",
                  "| micro-batch B | step ms | tokens/s | MFU |", "|---|---|---|---|"]
        for r in sorted([ours] + batches, key=lambda r: r["batch"]):
            lines.append(f"| {r['batch']} | {r['step_ms']:.1f} | {r['tokens_per_s']:.0f} | "
                         f"{mfu(r, peak)} |")
    vocab_runs = [load(path) for path in args.vocab_runs if os.path.exists(path)]
    if vocab_runs:
        v = vocab_runs[0]["vocab"]
        lines += ["", f"The same runs at V={v}, the vocabulary a spec's GPT-2 preset trains (the "
                      f"rows above use V={ours['vocab']}, a multiple of 64, as llm.c pads it):", "",
                  "| implementation | V | step ms | tokens/s | MFU | against the same at "
                  f"V={ours['vocab']} |", "|---|---|---|---|---|---|"]
        for r in vocab_runs:
            same = ours if r["impl"] == ours["impl"] else theirs
            against = (f"{same['step_ms'] / r['step_ms']:.3f}x" if same else "-")
            lines.append(f"| {r['impl']} | {r['vocab']} | {r['step_ms']:.1f} | "
                         f"{r['tokens_per_s']:.0f} | {mfu(r, peak)} | {against} |")
    if theirs:
        lines += ["", f"tokens/s ratio accum-cuda / PyTorch: "
                      f"**{ours['tokens_per_s'] / theirs['tokens_per_s']:.3f}x** (goal >= 1.1x)"]
    else:
        lines += ["", "PyTorch reference: not run (no torch with CUDA on this host)."]
    if args.scaling:
        runs = []
        for path in args.scaling:  # per-K results, or one interleaved --k-scaling run
            r = load(path)
            runs.extend(r["results"] if r.get("mode") == "k_scaling" else [r])
        runs.sort(key=lambda r: r["grad_accum"])
        base = runs[0]
        # The goal: a step of K micro-batches costs K micro-steps and one optimizer step,
        # nothing more. Parts measured in the smallest-K run (synchronized apart).
        lines += ["", f"Optimizer-step time vs K at fixed micro-batch (K={base['grad_accum']} run: "
                      f"micro-step {base['micro_ms']:.2f} ms, clip + AdamW "
                      f"{base['optimizer_ms']:.2f} ms); overhead = step / (K x micro-step + "
                      "optimizer) - 1, with the K=1 run's micro-step (anything that makes "
                      "micro-steps slower in long windows counts, the card's clock too) and "
                      "with this run's own (what a step adds to its micro-steps):",
                  "", "| K | step ms | micro-step ms in this run | K x micro-step + optimizer ms "
                      "| overhead | overhead vs this run's micro-steps |",
                  "|---|---|---|---|---|---|"]
        for r in runs:
            ideal = r["grad_accum"] * base["micro_ms"] + base["optimizer_ms"]
            own = r["grad_accum"] * r["micro_ms"] + base["optimizer_ms"]
            lines.append(f"| {r['grad_accum']} | {r['step_ms']:.1f} | {r['micro_ms']:.2f} | "
                         f"{ideal:.1f} | {100 * (r['step_ms'] / ideal - 1):+.2f}% | "
                         f"{100 * (r['step_ms'] / own - 1):+.2f}% |")
        split = [r for r in runs if r.get("adding_micro_ms") is not None]
        if split:
            # What an adding micro-step costs over a writing one, both timed (CUDA events) in
            # the same windows: the price of reading the fp32 gradient sum back.
            lines += ["", "Micro-steps split by CUDA events: the window's first writes the fp32 "
                          "gradients, the others add to them (read + write):",
                      "", "| K | first (writes) ms | others (add) ms | add / write |",
                      "|---|---|---|---|"]
            for r in split:
                lines.append(f"| {r['grad_accum']} | {r['first_micro_ms']:.2f} | "
                             f"{r['adding_micro_ms']:.2f} | "
                             f"{100 * (r['adding_micro_ms'] / r['first_micro_ms'] - 1):+.2f}% |")
        clocked = [r for r in runs if r.get("sm_mhz") is not None]
        if clocked:
            # A card at its power cap lowers its clock under long runs of matrix work: the
            # same work then takes longer (bench/gpu/clock_sampler.h).
            lines += ["", "The card's SM clock in each K's timed blocks (NVML, every 5 ms):", "",
                      "| K | mean SM clock MHz | samples at the power cap |", "|---|---|---|"]
            for r in clocked:
                lines.append(f"| {r['grad_accum']} | {r['sm_mhz']:.0f} | "
                             f"{100 * r['power_capped']:.0f}% |")
    if args.large and os.path.exists(args.large):
        r = load(args.large)
        gib = 1024.0 ** 3
        lines += ["", f"1.3B configuration (L={r['n_layer']} C={r['d_model']} T={r['seq']}, "
                      f"{r['params'] / 1e9:.2f}B params): largest micro-batch that fit "
                      f"in {r.get('device_mib', 0) / 1024:.1f} GiB of device memory: "
                      f"B={r['batch']}; {r['tokens_per_s']:.0f} tokens/s, MFU {mfu(r, peak)}; "
                      f"memory allocated by the model (the arithmetic) "
                      f"{r['model_bytes_allocated'] / gib:.1f} GiB vs device memory used "
                      f"(cudaMemGetInfo) {r['device_bytes_used'] / gib:.1f} GiB"]
    lines.append("")
    text = "\n".join(lines)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
