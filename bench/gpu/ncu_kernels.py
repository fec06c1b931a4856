#!/usr/bin/env python3
"""bench/gpu/ncu_kernels.py — per-kernel time table from an ncu CSV log.

usage: ncu_kernels.py NCU_CSV [--out FILE]
       ncu_kernels.py NCU_CSV --before BEFORE_CSV [--out FILE]
       ncu_kernels.py --stalls NCU_CSV [--out FILE]
The CSV comes from `ncu --metrics gpu__time_duration.sum --csv --log-file FILE prog ...`
(bench/gpu.sh with ACCUM_BENCH_NCU=1). Kernels are grouped by name (template arguments
dropped); the table lists total time, share, launches and mean time, largest first.

--before: the same kind of CSV from another build of the same run (bench/gpu/lease.sh: the
"before" binaries), and a side-by-side table instead: per kernel, total ms, launches and mean
us before and after, a kernel only one build has with "-" for the other.

--stalls reads a CSV of the metrics STALL_METRICS names instead (bench/gpu.sh with
ACCUM_BENCH_NCU_DETAIL=1): for each kernel, the share of its active warps stalled for each
reason (launches averaged), reasons largest first, the 6 largest shown.
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


# Why warps do not issue, as ncu names the reasons (smsp__warp_issue_stalled_<reason>_
# per_warp_active.pct: the share of active warps stalled for that reason per cycle).
STALL_REASONS = ["barrier", "long_scoreboard", "short_scoreboard", "mio_throttle",
                 "math_pipe_throttle", "lg_throttle", "wait", "not_selected", "selected",
                 "dispatch_stall", "no_instruction", "branch_resolving", "tex_throttle",
                 "membar", "drain", "imc_miss", "sleeping", "misc"]
STALL_METRICS = [f"smsp__warp_issue_stalled_{r}_per_warp_active.pct" for r in STALL_REASONS]


def read_rows(path):
    with open(path, errors="replace") as f:
        text = f.read()
    start = text.find('"ID"')  # ncu prints its own lines before the table
    if start < 0:
        raise SystemExit(f"{path}: no ncu CSV table in it")
    return list(csv.DictReader(io.StringIO(text[start:])))


def number(text):
    return float(text.replace(",", ""))


def stall_table(rows, shown=6):
    """Markdown: per kernel (by total share of stalls), its largest stall reasons."""
    sums = defaultdict(lambda: defaultdict(float))  # kernel -> reason -> sum over launches
    launches = defaultdict(set)
    prefix, suffix = "smsp__warp_issue_stalled_", "_per_warp_active.pct"
    for row in rows:
        metric = row.get("Metric Name", "")
        if not (metric.startswith(prefix) and metric.endswith(suffix)):
            continue
        key = short_name(row["Kernel Name"])
        sums[key][metric[len(prefix):-len(suffix)]] += number(row["Metric Value"])
        launches[key].add(row["ID"])
    if not sums:
        raise SystemExit("no smsp__warp_issue_stalled_* rows")
    lines = ["Stall reasons: % of active warps stalled for each, per cycle (launches averaged)",
             "", "| kernel | launches | largest stall reasons |", "|---|---|---|"]
    for key in sorted(sums):
        n = len(launches[key])
        reasons = sorted(sums[key].items(), key=lambda kv: -kv[1])[:shown]
        cells = ", ".join(f"{name} {value / n:.1f}" for name, value in reasons)
        lines.append(f"| `{key[:90]}` | {n} | {cells} |")
    return "\n".join(lines) + "\n"


def kernel_times(rows):
    """Per kernel (short name): total microseconds and launches."""
    totals, counts = defaultdict(float), defaultdict(int)
    scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}
    for row in rows:
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        us = number(row["Metric Value"]) * scale.get(row.get("Metric Unit", "nsecond"), 1e-3)
        key = short_name(row["Kernel Name"])
        totals[key] += us
        counts[key] += 1
    if not totals:
        raise SystemExit("no gpu__time_duration.sum rows")
    return totals, counts


def time_table(rows):
    """Markdown: total time, share, launches and mean time per kernel, largest first."""
    totals, counts = kernel_times(rows)
    whole = sum(totals.values())
    lines = [f"Kernel time of one profiled run: {whole / 1e3:.2f} ms in "
             f"{sum(counts.values())} launches", "",
             "| kernel | total ms | share | launches | mean us |", "|---|---|---|---|---|"]
    for key, us in sorted(totals.items(), key=lambda kv: -kv[1]):
        lines.append(f"| `{key[:90]}` | {us / 1e3:.3f} | {100 * us / whole:.1f}% | "
                     f"{counts[key]} | {us / counts[key]:.1f} |")
    return "\n".join(lines) + "\n"


def compare_table(before_rows, after_rows):
    """Markdown: per kernel, before and after side by side, largest (either build) first."""
    before, before_n = kernel_times(before_rows)
    after, after_n = kernel_times(after_rows)
    whole_b, whole_a = sum(before.values()), sum(after.values())
    lines = [f"Kernel time of one profiled run: {whole_b / 1e3:.2f} ms before "
             f"({sum(before_n.values())} launches), {whole_a / 1e3:.2f} ms after "
             f"({sum(after_n.values())} launches): {whole_a / whole_b:.3f}x", "",
             "| kernel | ms before | ms after | launches before | launches after "
             "| mean us before | mean us after |", "|---|---|---|---|---|---|---|"]

    def cells(totals, counts, key):
        if key not in totals:
            return "-", "-", "-"
        return (f"{totals[key] / 1e3:.3f}", str(counts[key]),
                f"{totals[key] / counts[key]:.1f}")

    keys = sorted(set(before) | set(after), key=lambda k: -max(before.get(k, 0), after.get(k, 0)))
    for key in keys:
        (tb, nb, mb), (ta, na, ma) = cells(before, before_n, key), cells(after, after_n, key)
        lines.append(f"| `{key[:90]}` | {tb} | {ta} | {nb} | {na} | {mb} | {ma} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--out", default="")
    ap.add_argument("--stalls", action="store_true")
    ap.add_argument("--before", default="", help="CSV of the same run from the build before")
    args = ap.parse_args()
    rows = read_rows(args.csv)
    if args.stalls:
        text = stall_table(rows)
    elif args.before:
        text = compare_table(read_rows(args.before), rows)
    else:
        text = time_table(rows)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
