#!/usr/bin/python3
"""tests/bench/torch_twins_test.py — the benchmarks' PyTorch twins and their shared model.

bench/torch_gpt2_model.py is what both twins train; these tests pin the parts of it the
benchmarks rely on (accumd's init, the tied head, the loss reductions) and run the CPU twin
end to end on a tiny model. The GPU twin needs CUDA and PyTorch >= 2.0: without them it
must refuse with exit code 3 and the reason, which is what is checked here.
"""
import json
import math
import os
import subprocess
import sys
import tempfile
import unittest

try:
    import torch
except ImportError:
    print(f"SKIPPED: {sys.executable} has no torch (needs python3-torch)")
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from torch_gpt2_model import GPT2  # noqa: E402

N_LAYER, N_HEAD, C, VOCAB, MAX_SEQ = 2, 2, 32, 64, 16


def tiny_model(seed):
    return GPT2(N_LAYER, N_HEAD, C, VOCAB, MAX_SEQ, generator=torch.Generator().manual_seed(seed))


class SharedModelTest(unittest.TestCase):
    def test_same_seed_same_weights_other_seed_other_weights(self):
        a, b, c = tiny_model(1), tiny_model(1), tiny_model(2)
        for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
            self.assertTrue(torch.equal(pa, pb), name)
            if pa.dim() >= 2:
                self.assertFalse(torch.equal(pa, pc), name)

    def test_init_is_accumds(self):
        model = tiny_model(3)
        for name, p in model.named_parameters():
            if name.endswith("proj.weight"):  # residual projections: 0.02 / sqrt(2 n_layer)
                self.assertAlmostEqual(p.std().item(), 0.02 / math.sqrt(2 * N_LAYER), delta=0.003)
            elif p.dim() >= 2:
                self.assertAlmostEqual(p.std().item(), 0.02, delta=0.003, msg=name)
            elif name.endswith("bias"):
                self.assertEqual(p.abs().max().item(), 0.0, name)
            else:  # LayerNorm weights
                self.assertTrue(torch.equal(p, torch.ones_like(p)), name)
        names = [name for name, _ in model.named_parameters()]
        self.assertNotIn("lm_head.weight", names)  # the head is tied to wte

    def test_sum_is_mean_times_targets_and_near_log_vocab_at_init(self):
        model = tiny_model(4)
        g = torch.Generator().manual_seed(5)
        idx = torch.randint(0, VOCAB, (3, MAX_SEQ), generator=g)
        targets = torch.randint(0, VOCAB, (3, MAX_SEQ), generator=g)
        with torch.no_grad():
            mean = model(idx, targets).item()
            total = model(idx, targets, reduction="sum").item()
        self.assertAlmostEqual(total, mean * idx.numel(), delta=1e-3 * abs(total))
        self.assertAlmostEqual(mean, math.log(VOCAB), delta=0.2)

    def test_attention_is_causal(self):
        # Changing the last token must not change any earlier position's prediction.
        model = tiny_model(6)
        idx = torch.randint(0, VOCAB, (1, MAX_SEQ), generator=torch.Generator().manual_seed(7))
        changed = idx.clone()
        changed[0, -1] = (idx[0, -1] + 1) % VOCAB
        targets = torch.zeros_like(idx)
        with torch.no_grad():
            per_target = model(idx, targets, reduction="none")
            per_target_changed = model(changed, targets, reduction="none")
        self.assertTrue(torch.equal(per_target[:-1], per_target_changed[:-1]))
        self.assertFalse(torch.equal(per_target[-1:], per_target_changed[-1:]))


class CpuTwinTest(unittest.TestCase):
    def test_trains_a_tiny_model_and_reports_every_step(self):
        B, T, K, steps = 2, 16, 2, 3
        with tempfile.TemporaryDirectory() as tmp:
            data = os.path.join(tmp, "text.txt")
            with open(data, "w") as f:
                f.write("the quick brown fox jumps over the lazy dog. " * 40)
            run = subprocess.run(
                [sys.executable, os.path.join(ROOT, "bench", "train", "gpt2_torch.py"),
                 "--data", data, "--format", "text", "--n-layer", "2", "--n-head", "2",
                 "--d-model", "32", "--vocab", "256", "--max-seq-len", "16", "--seq-len", str(T),
                 "--batch", str(B), "--accum", str(K), "--steps", str(steps), "--warmup", "1"],
                capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
                timeout=300)
        self.assertEqual(run.returncode, 0, run.stderr)
        records = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
        step_records = [r for r in records if "step" in r]
        self.assertEqual([r["step"] for r in step_records], list(range(1, steps + 1)))
        for r in step_records:
            self.assertEqual(r["tokens"], B * T * K)
            self.assertTrue(math.isfinite(r["grad_norm"]))
        self.assertAlmostEqual(step_records[0]["loss"], math.log(256), delta=0.3)
        self.assertLess(step_records[-1]["loss"], step_records[0]["loss"])
        summary = records[-1]
        self.assertEqual(summary["steps_timed"], steps - 1)
        self.assertGreater(summary["tokens_per_s"], 0)


class GpuTwinTest(unittest.TestCase):
    def test_refuses_without_cuda_or_sdpa_and_says_why(self):
        has_sdpa = hasattr(torch.nn.functional, "scaled_dot_product_attention")
        if torch.cuda.is_available() and has_sdpa:
            self.skipTest("a GPU and PyTorch >= 2.0 are here: bench/gpu.sh runs the twin itself")
        run = subprocess.run(
            [sys.executable, os.path.join(ROOT, "bench", "gpu", "torch_gpt2.py"), "--steps", "1"],
            capture_output=True, text=True, timeout=120)
        self.assertEqual(run.returncode, 3, run.stderr)
        reason = "scaled_dot_product_attention" if not has_sdpa else "cuda.is_available"
        self.assertIn(reason, run.stderr)


if __name__ == "__main__":
    unittest.main()
