#!/usr/bin/env python3
"""bench/gpu/ncu_kernels.py — per-kernel time table from an ncu CSV log.

usage: ncu_kernels.py NCU_CSV [--out FILE]
The CSV comes from `ncu --metrics gpu__time_duration.sum --csv --log-file FILE prog ...`
(bench/gpu.sh with ACCUM_BENCH_NCU=1). Kernels are grouped by name (template arguments
dropped); the table lists total time, share, launches and mean time, largest first.
"""
import argparse
import csv
import io
import re
from collections import defaultdict


def short_name(name):
    name = re.sub(r"<[^<>]*>", "<>", name)  # innermost template arguments first
    name = re.sub(r"\(.*\)$", "", name)  # parameter list
    return name.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    with open(args.csv, errors="replace") as f:
        text = f.read()
    start = text.find('"ID"')  # ncu prints its own lines before the table
    if start < 0:
        raise SystemExit(f"{args.csv}: no ncu CSV table in it")
    totals, counts = defaultdict(float), defaultdict(int)
    for row in csv.DictReader(io.StringIO(text[start:])):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(row["Metric Value"].replace(",", ""))
        scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}
        us = value * scale.get(row.get("Metric Unit", "nsecond"), 1e-3)
        key = short_name(row["Kernel Name"])
        totals[key] += us
        counts[key] += 1
    if not totals:
        raise SystemExit(f"{args.csv}: no gpu__time_duration.sum rows")
    whole = sum(totals.values())
    lines = [f"Kernel time of one profiled run: {whole / 1e3:.2f} ms in "
             f"{sum(counts.values())} launches", "",
             "| kernel | total ms | share | launches | mean us |", "|---|---|---|---|---|"]
    for key, us in sorted(totals.items(), key=lambda kv: -kv[1]):
        lines.append(f"| `{key[:90]}` | {us / 1e3:.3f} | {100 * us / whole:.1f}% | "
                     f"{counts[key]} | {us / counts[key]:.1f} |")
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
