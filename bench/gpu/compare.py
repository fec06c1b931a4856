#!/usr/bin/env python3
"""bench/gpu/compare.py — before/after timing of gpt2_bench builds on one GPU, in one run.

usage: compare.py [--rounds R] [--out FILE] LABEL=PATH/gpt2_bench ... [-- gpt2_bench flags]

Runs every build's gpt2_bench in turn, R rounds (so drift in clocks or temperature hits
all builds alike), and prints a markdown table: median / min / max step ms per build,
tokens/s at the median, and the speed-up against the first build. A build that fails or
whose training does not learn is reported and makes the exit status 1.
"""
import argparse
import json
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
    ap.add_argument("builds", nargs="+", help="LABEL=PATH/gpt2_bench")
    args = ap.parse_args(argv)
    builds = []
    for item in args.builds:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            ap.error(f"{item}: expected LABEL=PATH")
        builds.append((label, path))

    step_ms = {label: [] for label, _ in builds}
    last = {}
    status = 0
    for r in range(args.rounds):
        for label, path in builds:
            run = subprocess.run([path, *flags], capture_output=True, text=True)
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
    for label, _ in builds:
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
