#!/usr/bin/env python3
"""bench/gpu/block_schedule.py — how busy a causal attention grid keeps the GPU's block slots,
by a list-scheduling model: blocks start in launch order, each on the first slot to free up,
and a block's time is its number of tiles (plus a fixed cost per block).

    block_schedule.py [--seq 1024] [--heads 96] [--sms 132] [--blocks-per-sm 4 3]
                      [--overhead 1.0] [--groups 48 32]

Prints, for each blocks-per-SM figure, the share of slot time busy until the last block
ends, for launch orders of the same blocks (kernels/cuda/attention_mma.cu's block_task,
ACCUM_ATTENTION_HEAD_GROUP = the group size):
  by head         group 1: each head's blocks longest to shortest, then the next head's
                  (the attention kernels up to 4.9 in bench/RESULTS.md)
  longest first   one group of every head: every head's longest block, then every head's
                  next longest, ... (the default)
  groups of G     longest first within G heads, then the next G heads
Block lengths: with T/64 tiles, the forward and dQ block of query tile i streams i + 1 key
tiles, the dK/dV block of key tile j streams T/64 - j query tiles: the same set of lengths.
"""
import argparse
import heapq


def busy_share(lengths, slots):
    """Share of slots x makespan spent on blocks, for blocks started in the given order."""
    free_at = [0.0] * slots
    for length in lengths:
        start = heapq.heappop(free_at)
        heapq.heappush(free_at, start + length)
    return sum(lengths) / (slots * max(free_at))


def launch_order(heads, tiles, group, overhead):
    """Block lengths in launch order: heads in groups of `group` (the last may be smaller),
    within a group every head's rank-0 (longest) block, then rank 1, ... (block_task)."""
    lengths = []
    for first in range(0, heads, group):
        in_group = min(group, heads - first)
        lengths += [tiles - rank + overhead for rank in range(tiles) for _ in range(in_group)]
    return lengths


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=96, help="batch x heads (GPT-2 124M, B=8: 96)")
    ap.add_argument("--sms", type=int, default=132, help="H100 SXM: 132")
    ap.add_argument("--blocks-per-sm", type=int, nargs="+", default=[4, 3],
                    help="4: the forward and dQ kernels; 3: dK/dV (ncu, RESULTS 4.9)")
    ap.add_argument("--overhead", type=float, default=1.0,
                    help="fixed cost of a block, in tiles (loading its own rows, storing)")
    ap.add_argument("--groups", type=int, nargs="*", default=[48, 32],
                    help="head group sizes to model besides 1 and all heads")
    args = ap.parse_args()
    tiles = (args.seq + 63) // 64
    orders = [("by head", 1), ("longest first", args.heads)]
    orders += [(f"groups of {g}", g) for g in args.groups]
    print(f"T={args.seq} ({tiles} tiles), {args.heads} heads, {args.sms} SMs, "
          f"block overhead {args.overhead} tiles")
    for per_sm in args.blocks_per_sm:
        slots = args.sms * per_sm
        shares = [(name, busy_share(launch_order(args.heads, tiles, group, args.overhead), slots))
                  for name, group in orders]
        base = shares[0][1]
        print(f"{per_sm} blocks per SM: " + ", ".join(
            f"{name} {100 * share:.0f}% busy ({share / base:.3f}x)" for name, share in shares))


if __name__ == "__main__":
    main()
