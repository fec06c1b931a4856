#!/usr/bin/python3
"""End-to-end communication benchmark of the real trainer: 4 CPU ranks under mpirun.

Usage: bench/comm/run_trainer_comm_bench.py [--build DIR] [--steps S] [--bucket-mb M] [--out FILE]

What it measures, all from the worker's own metrics.jsonl (rank 0 reports the step)
and from the kernel's peak-RSS accounting of each rank:

  1. K = 1, 4, 16 at a fixed micro-batch (B x T), overlap on and off:
     bytes reduced per optimizer step (must equal the fp32 gradient size, 4 * params,
     for every K), collectives per step, step time, exposed communication
     (comm_exposed_ms: time the trainer was blocked waiting for gradient buckets) and
     its share of the step (should fall as ~1/K: one reduction per K micro-steps).
  2. Peak memory per rank (max RSS, /usr/bin/time %M) with ZeRO-1 vs stage 0 on a
     larger model: the Adam moments (8 bytes/param) shrink to 1/N per rank.

The first optimizer step of each run is warm-up and is dropped; the rest are
reported as medians. The machine may be shared: the load average before and after
is written next to the table.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile

RANKS = 4
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
          "--mca", "btl", "self,vader"]


def parameter_count(n_layer, d_model, vocab, max_seq_len):
    # 12C^2 + 13C per block, token + position embeddings, final LayerNorm (LM head tied).
    return vocab * d_model + max_seq_len * d_model + n_layer * (12 * d_model ** 2 + 13 * d_model) \
        + 2 * d_model


def write_corpus(path, size=1 << 20):
    """Byte-level text: the Debian licence texts, repeated to `size` bytes."""
    root = "/usr/share/common-licenses"
    text = b""
    for name in sorted(os.listdir(root)):
        full = os.path.join(root, name)
        if os.path.isfile(full) and not os.path.islink(full):
            with open(full, "rb") as f:
                text += f.read()
    with open(path, "wb") as f:
        f.write((text * (size // len(text) + 1))[:size])


def spec_json(model, batch_tokens_k, steps, zero_stage, no_overlap, tag, bucket_mb=25.0):
    n_layer, n_head, d_model, seq_len, micro_batch = model
    return {
        "name": tag,
        "model": {"n_layer": n_layer, "n_head": n_head, "d_model": d_model,
                  "vocab_size": 256, "max_seq_len": seq_len},
        "data": {"train": "corpus.txt", "format": "TEXT_BYTES", "shuffle": False},
        "batch": {"micro_batch_size": micro_batch, "seq_len": seq_len,
                  "tokens_per_update": RANKS * batch_tokens_k * micro_batch * seq_len},
        "optimizer": {"lr": 1e-3, "schedule": "constant", "warmup_steps": 0},
        "max_steps": steps, "seed": 1,
        "checkpoint": {"dir": "ckpt_" + tag, "every_steps": 0, "keep_last": 1},
        "metrics_path": tag + ".jsonl",
        "distributed": {"zero_stage": zero_stage, "no_overlap": no_overlap,
                        "bucket_mb": bucket_mb},
    }


def run_job(workdir, worker, spec, tag):
    spec_path = os.path.join(workdir, tag + ".json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    rss_prefix = os.path.join(workdir, tag + ".rss.")
    # Each rank runs under /usr/bin/time so its own max RSS is recorded (KiB).
    rank_cmd = ("exec /usr/bin/time -f %M -o {prefix}$OMPI_COMM_WORLD_RANK {worker} --spec {spec}"
                .format(prefix=shlex.quote(rss_prefix), worker=shlex.quote(worker),
                        spec=shlex.quote(spec_path)))
    cmd = MPIRUN + ["-x", "OMP_NUM_THREADS=1", "-np", str(RANKS), "bash", "-c", rank_cmd]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        sys.exit("job %s failed (%d):\n%s%s" % (tag, proc.returncode, proc.stdout, proc.stderr))
    with open(os.path.join(workdir, tag + ".jsonl")) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    rss_kib = []
    for rank in range(RANKS):
        with open(rss_prefix + str(rank)) as f:
            rss_kib.append(int(f.read().split()[-1]))
    return lines, rss_kib


def median(lines, key):
    return statistics.median(line[key] for line in lines)


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default="build", help="build dir holding bin/accum-worker")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per run (first dropped)")
    parser.add_argument("--bucket-mb", type=float, default=2.0,
                        help="gradient bucket size of the communication runs (several buckets "
                             "are needed for the backward to have anything to overlap)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "RESULTS-comm.md"))
    args = parser.parse_args()
    worker = os.path.abspath(os.path.join(args.build, "bin", "accum-worker"))
    if not os.access(worker, os.X_OK):
        sys.exit("no accum-worker at %s (build it: ninja -C %s accum-worker)" % (worker, args.build))

    # (n_layer, n_head, d_model, seq_len, micro_batch)
    comm_model = (4, 4, 256, 128, 4)
    memory_model = (4, 8, 512, 128, 2)
    comm_params = parameter_count(4, 256, 256, 128)
    memory_params = parameter_count(4, 512, 256, 128)

    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = load_average()
    rows, memory_rows = [], []
    with tempfile.TemporaryDirectory(prefix="accum-comm-bench-") as workdir:
        write_corpus(os.path.join(workdir, "corpus.txt"))
        for k in (1, 4, 16):
            result = {}
            for no_overlap in (False, True):
                tag = "k%d_%s" % (k, "no_overlap" if no_overlap else "overlap")
                print("running", tag, file=sys.stderr, flush=True)
                lines, _ = run_job(workdir, worker,
                                   spec_json(comm_model, k, args.steps, 0, no_overlap, tag,
                                             args.bucket_mb), tag)
                result[no_overlap] = lines[1:]
            over, plain = result[False], result[True]
            rows.append({
                "K": k,
                "bytes_reduced": sorted({line["bytes_reduced"] for line in over + plain}),
                "collectives": sorted({line["collectives"] for line in over + plain}),
                "first_micro": sorted({line.get("first_gradient_collective_micro_step")
                                       for line in over + plain}),
                "step_ms": median(over, "step_ms"),
                "step_collectives": sorted({line.get("step_collectives") for line in over + plain}),
                "exposed_overlap": median(over, "comm_exposed_ms"),
                "step_ms_plain": median(plain, "step_ms"),
                "exposed_plain": median(plain, "comm_exposed_ms"),
            })
        for zero_stage in (0, 1):
            tag = "memory_zero%d" % zero_stage
            print("running", tag, file=sys.stderr, flush=True)
            lines, rss = run_job(workdir, worker,
                                 spec_json(memory_model, 1, 2, zero_stage, False, tag), tag)
            shard_bytes = 0
            step_dir = os.path.join(workdir, "ckpt_" + tag, "step_00000002")
            for name in os.listdir(step_dir):
                if name.startswith("optimizer"):
                    shard_bytes = max(shard_bytes, os.path.getsize(os.path.join(step_dir, name)))
            memory_rows.append({"zero": zero_stage, "rss": rss, "optimizer_file": shard_bytes,
                                "bytes_gathered": lines[-1].get("bytes_gathered", 0)})
    load_after = load_average()

    out = []
    out.append("## Trainer communication, 4 CPU ranks (bench/comm)\n")
    out.append("- Date: %s" % started.strftime("%Y-%m-%d %H:%M UTC"))
    out.append("- Machine: %d cores (`nproc`), %s, %s; Open MPI `--mca btl self,vader`, "
               "4 ranks oversubscribed, OMP_NUM_THREADS=1 per rank"
               % (os.cpu_count(), cpu_model(), platform.platform()))
    out.append("- Load average (1/5/15 min) before: %s, after: %s (the machine is shared "
               "with other builds)" % (load_before, load_after))
    out.append("- Command: `%s`" % " ".join([os.path.relpath(__file__)] + sys.argv[1:]))
    out.append("- Communication runs: GPT-2 n_layer %d, n_head %d, d_model %d, seq_len %d, "
               "vocab 256 = %d parameters (gradient %.2f MiB fp32), micro-batch B=%d x T=%d on "
               "each rank, %g MiB buckets, stage 0; %d optimizer steps per run, first "
               "dropped, medians of the rest. Exposed comm = time the trainer was blocked in "
               "the gradient reduction (`comm_exposed_ms`); comm share = exposed / step time"
               % (comm_model[0], comm_model[1], comm_model[2], comm_model[3], comm_params,
                  comm_params * 4 / 2 ** 20, comm_model[4], comm_model[3], args.bucket_mb,
                  args.steps))
    out.append("")
    out.append("| K | bytes reduced / step | 4 x params | gradient collectives / step | "
               "all collectives / step | micro-step of first collective | step ms (overlap) | "
               "step ms / K | exposed comm ms (overlap) "
               "| comm share (overlap) | step ms (no overlap) | exposed comm ms (no overlap) | "
               "comm share (no overlap) |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        out.append("| %d | %s | %d | %s | %s | %s | %.1f | %.1f | %.1f | %.1f%% | %.1f | %.1f | "
                   "%.1f%% |" % (
            row["K"], ", ".join(str(b) for b in row["bytes_reduced"]), 4 * comm_params,
            ", ".join(str(c) for c in row["collectives"]),
            ", ".join(str(c) for c in row["step_collectives"]),
            ", ".join(str(m) for m in row["first_micro"]),
            row["step_ms"], row["step_ms"] / row["K"], row["exposed_overlap"], 100 * row["exposed_overlap"] / row["step_ms"],
            row["step_ms_plain"], row["exposed_plain"],
            100 * row["exposed_plain"] / row["step_ms_plain"]))
    out.append("")
    out.append("Peak memory per rank (max RSS from `/usr/bin/time -f %%M`), GPT-2 n_layer %d, "
               "n_head %d, d_model %d, seq_len %d = %d parameters, B=%d, K=1, 2 steps. Adam "
               "moments are 8 bytes/param = %.1f MiB per rank at stage 0; ZeRO-1 keeps 1/%d of "
               "them (%.1f MiB) on each rank."
               % (memory_model[0], memory_model[1], memory_model[2], memory_model[3],
                  memory_params, memory_model[4], 8 * memory_params / 2 ** 20, RANKS,
                  8 * memory_params / 2 ** 20 / RANKS))
    out.append("")
    out.append("| zero_stage | max RSS per rank (MiB), ranks 0..3 | largest optimizer file in "
               "the checkpoint (MiB) | parameter bytes all-gathered / step |")
    out.append("|---|---|---|---|")
    for row in memory_rows:
        out.append("| %d | %s | %.1f | %d |" % (
            row["zero"], ", ".join("%.1f" % (kib / 1024) for kib in row["rss"]),
            row["optimizer_file"] / 2 ** 20, row["bytes_gathered"]))
    if len(memory_rows) == 2:
        saved = (statistics.mean(memory_rows[0]["rss"]) - statistics.mean(memory_rows[1]["rss"])) / 1024
        out.append("")
        out.append("Mean max RSS saved per rank by ZeRO-1: %.1f MiB (expected about %.1f MiB: "
                   "the moments' 8 bytes/param x (1 - 1/%d))."
                   % (saved, 8 * memory_params / 2 ** 20 * (1 - 1 / RANKS), RANKS))
        saved_others = (statistics.mean(memory_rows[0]["rss"][1:])
                        - statistics.mean(memory_rows[1]["rss"][1:])) / 1024
        out.append("Ranks 1..%d alone: %.1f MiB. Rank 0 peaks higher in both runs: it also holds "
                   "host copies of what it writes into the checkpoint (the model, and at stage 0 "
                   "the full moments for optimizer.safetensors; under ZeRO-1 every rank writes "
                   "only its own shard)." % (RANKS - 1, saved_others))
    text = "\n".join(out) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
