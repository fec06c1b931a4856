#!/usr/bin/env python3
"""bench/gpu/compare.py — before/after timing of gpt2_bench builds on one GPU, in one run.

usage: compare.py [--rounds R] [--out FILE] LABEL=[VAR=VALUE ...] PATH/gpt2_bench ...
                  [-- gpt2_bench flags]

A build is a gpt2_bench binary, with environment switches before it if any (one argument:
'graphs-off=ACCUM_CUDA_GRAPHS=0 build-lease/bin/gpt2_bench' times a switch of one binary).
Runs every build's gpt2_bench in turn, R rounds (so drift in clocks or temperature hits
all builds alike), and prints a markdown table: median / min / max step ms per build,
tokens/s at the median, and the speed-up against the first build. A build that fails or
whose training does not learn is reported and makes the exit status 1.
"""
import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys


def main():
    argv = sys.argv[1:]
    flags = []
    if "--" in argv:
        i = argv.index("--")
        argv, flags = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="")
    ap.add_argument("builds", nargs="+", help="LABEL=[VAR=VALUE ...] PATH/gpt2_bench")
    args = ap.parse_args(argv)
    builds = []
    for item in args.builds:
        label, sep, spec = item.partition("=")
        words = shlex.split(spec)
        switches = {}
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            name, _, value = words.pop(0).partition("=")
            switches[name] = value
        if not sep or not label or len(words) != 1:
            ap.error(f"{item}: expected LABEL=[VAR=VALUE ...] PATH")
        builds.append((label, words[0], switches))

    step_ms = {label: [] for label, _, _ in builds}
    last = {}
    status = 0
    for r in range(args.rounds):
        for label, path, switches in builds:
            run = subprocess.run([path, *flags], capture_output=True, text=True,
                                 env={**os.environ, **switches})
            if run.returncode != 0:
                print(f"{label}: exit {run.returncode}: {run.stderr.strip()[-400:]}", file=sys.stderr)
                status = 1
                continue
            result = json.loads(run.stdout.strip().splitlines()[-1])
            step_ms[label].append(result["step_ms"])
            last[label] = result
            print(f"round {r + 1} {label}: {result['step_ms']:.2f} ms", file=sys.stderr)

    base = None
    lines = [f"gpt2_bench {' '.join(flags)}, {args.rounds} rounds, builds alternating", "",
             "| build | median step ms | min | max | tokens/s (median) | speed-up |",
             "|---|---|---|---|---|---|"]
    for label, _, _ in builds:
        times = step_ms[label]
        if not times:
            lines.append(f"| {label} | failed | | | | |")
            continue
        median = statistics.median(times)
        base = base or median
        tokens = last[label]["batch"] * last[label]["seq"] * last[label]["grad_accum"]
        lines.append(f"| {label} | {median:.2f} | {min(times):.2f} | {max(times):.2f} | "
                     f"{tokens / (median / 1e3):.0f} | {base / median:.3f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
