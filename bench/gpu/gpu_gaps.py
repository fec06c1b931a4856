#!/usr/bin/env python3
"""bench/gpu/gpu_gaps.py — how long the GPU waits between its kernels, from an nsys trace.

usage: gpu_gaps.py TRACE_CSV [--out FILE] [--top N]
TRACE_CSV is `nsys stats --report cuda_gpu_trace --format csv` of a run profiled with
`nsys profile --capture-range=cudaProfilerApi` (gpt2_bench marks its timed steps), so the
trace holds the timed steps only. Every row is one kernel, memcpy or memset on the GPU.
Prints the span (first start to last end), the time the GPU was busy (the union of the
rows' intervals), the idle rest, how many gaps were longer than 2 us, and the longest gaps
with the operations on either side: a gap after a loss download is a host
synchronization; many small gaps between kernels are launch overhead (what a CUDA graph
removes).
"""
import argparse
import csv
import io


def read_rows(path):
    with open(path, errors="replace") as f:
        text = f.read()
    # nsys prints notices before the table; the header is the line naming the start column.
    lines = text.splitlines()
    header = next((i for i, line in enumerate(lines) if "Start" in line and "Duration" in line), None)
    if header is None:
        raise SystemExit(f"{path}: no 'Start ... Duration' header: not a cuda_gpu_trace CSV")
    reader = csv.DictReader(io.StringIO("\n".join(lines[header:])))
    columns = reader.fieldnames or []
    def column(prefix):
        found = [c for c in columns if c.strip().startswith(prefix)]
        if not found:
            raise SystemExit(f"{path}: no column starting with {prefix!r} in {columns}")
        return found[0]
    start_col, duration_col, name_col = column("Start"), column("Duration"), column("Name")
    rows = []
    for row in reader:
        try:
            start = float(row[start_col])
            duration = float(row[duration_col])
        except (TypeError, ValueError):
            continue  # a summary or blank line
        rows.append((start, start + duration, row[name_col].strip()))
    if not rows:
        raise SystemExit(f"{path}: no GPU operations in the trace")
    return sorted(rows)


def gaps(rows):
    """(span_ns, busy_ns, [(gap_ns, before_name, after_name)]) of time-sorted intervals."""
    span = max(end for _, end, _ in rows) - rows[0][0]
    busy, found = 0.0, []
    cur_start, cur_end, cur_name = rows[0]
    for start, end, name in rows[1:]:
        if start > cur_end:  # idle from cur_end to start
            busy += cur_end - cur_start
            found.append((start - cur_end, cur_name, name))
            cur_start, cur_end, cur_name = start, end, name
        elif end > cur_end:  # overlaps (another stream): extend the busy interval
            cur_end, cur_name = end, name
    busy += cur_end - cur_start
    return span, busy, found


def short(name, width=60):
    return name if len(name) <= width else name[: width - 3] + "..."


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--out", default="")
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args()
    rows = read_rows(args.csv)
    span, busy, found = gaps(rows)
    idle = span - busy
    over = [g for g in found if g[0] > 2000]
    lines = [
        f"GPU operations: {len(rows)}; span {span / 1e6:.3f} ms; busy {busy / 1e6:.3f} ms; "
        f"idle {idle / 1e6:.3f} ms ({100 * idle / span:.1f}%) in {len(found)} gaps, "
        f"{len(over)} longer than 2 us",
        "",
        "| gap us | previous operation | next operation |",
        "|---|---|---|",
    ]
    for gap, before, after in sorted(found, reverse=True)[: args.top]:
        lines.append(f"| {gap / 1e3:.1f} | `{short(before)}` | `{short(after)}` |")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
