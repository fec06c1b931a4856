#!/usr/bin/env python3
"""tests/bench/ncu_kernels_test.py — bench/gpu/ncu_kernels.py on ncu CSV logs whose sums are known."""
import os
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench", "gpu"))
import ncu_kernels  # noqa: E402

HEADER = ('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream",'
          '"Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit",'
          '"Metric Value"\n')


def row(launch, kernel, metric, unit, value):
    return (f'"{launch}","1","gpt2_bench","h","{kernel}","1","13","(128, 1, 1)","(16, 96, 1)",'
            f'"0","9.0","Command line profiler metrics","{metric}","{unit}","{value}"\n')


def stall(launch, kernel, reason, value):
    return row(launch, kernel, f"smsp__warp_issue_stalled_{reason}_per_warp_active.pct", "%", value)


FWD = "void accum::<unnamed>::attention_forward_mma_kernel<64>(bf16 *, int)"
ADAMW = "void accum::<unnamed>::adamw_kernel<float>(float *, int)"


class NcuKernelsTest(unittest.TestCase):
    def rows(self, text):
        f = tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False)
        f.write("==PROF== Connected to process 1\n" + HEADER + text)  # ncu's notices first
        f.close()
        self.addCleanup(os.unlink, f.name)
        return ncu_kernels.read_rows(f.name)

    def test_times_group_launches_by_kernel_and_convert_units(self):
        text = ncu_kernels.time_table(self.rows(
            row(0, FWD, "gpu__time_duration.sum", "usecond", "90") +
            row(1, FWD, "gpu__time_duration.sum", "nsecond", "110,000") +
            row(2, ADAMW, "gpu__time_duration.sum", "usecond", "50")))
        self.assertIn("Kernel time of one profiled run: 0.25 ms in 3 launches", text)
        lines = [l for l in text.splitlines() if l.startswith("| `")]
        self.assertEqual(len(lines), 2)
        self.assertIn("attention_forward_mma_kernel<>", lines[0])  # largest first
        self.assertIn("| 0.200 | 80.0% | 2 | 100.0 |", lines[0])
        self.assertIn("| 0.050 | 20.0% | 1 | 50.0 |", lines[1])

    def test_before_and_after_side_by_side_with_kernels_only_one_build_has(self):
        partials = "void accum::column_partials_kernel<1, 8>(float *, int)"
        fused = "void accum::layernorm_backward_fused_kernel<3, 3>(bf16 *, int)"
        before = self.rows(
            row(0, FWD, "gpu__time_duration.sum", "usecond", "100") +
            row(1, partials, "gpu__time_duration.sum", "usecond", "10") +
            row(2, partials, "gpu__time_duration.sum", "usecond", "10"))
        after = self.rows(
            row(0, FWD, "gpu__time_duration.sum", "usecond", "80") +
            row(1, fused, "gpu__time_duration.sum", "usecond", "15"))
        text = ncu_kernels.compare_table(before, after)
        self.assertIn("0.12 ms before (3 launches), 0.10 ms after (2 launches): 0.792x", text)
        lines = {l.split("`")[1]: l for l in text.splitlines() if l.startswith("| `")}
        self.assertIn("| 0.100 | 0.080 | 1 | 1 | 100.0 | 80.0 |",
                      lines["void accum::<>::attention_forward_mma_kernel<>"])
        self.assertIn("| 0.020 | - | 2 | - | 10.0 | - |",
                      lines["void accum::column_partials_kernel<>"])
        self.assertIn("| - | 0.015 | - | 1 | - | 15.0 |",
                      lines["void accum::layernorm_backward_fused_kernel<>"])
        order = [l.split("`")[1] for l in text.splitlines() if l.startswith("| `")]
        self.assertEqual(order[0], "void accum::<>::attention_forward_mma_kernel<>")  # largest

    def test_stalls_average_launches_and_list_the_largest_reasons_first(self):
        reasons = ["barrier", "long_scoreboard", "short_scoreboard", "mio_throttle",
                   "math_pipe_throttle", "wait", "not_selected"]
        text = ""
        for launch in (0, 1):
            for i, reason in enumerate(reasons):  # barrier 10 and 30: mean 20, the largest
                value = 10 + 20 * launch if reason == "barrier" else i + launch
                text += stall(launch, FWD, reason, value)
        text += stall(2, ADAMW, "long_scoreboard", "61.5")
        text += row(2, ADAMW, "gpu__time_duration.sum", "usecond", "50")  # not a stall: ignored
        table = ncu_kernels.stall_table(self.rows(text))
        lines = {l.split("`")[1]: l for l in table.splitlines() if l.startswith("| `")}
        fwd = lines["void accum::<>::attention_forward_mma_kernel<>"]
        self.assertIn("| 2 | barrier 20.0, not_selected 6.5, wait 5.5, math_pipe_throttle 4.5, "
                      "mio_throttle 3.5, short_scoreboard 2.5 |", fwd)  # 6 shown, largest first
        self.assertNotIn("long_scoreboard", fwd)  # 1.5: the seventh
        self.assertIn("| 1 | long_scoreboard 61.5 |", lines["void accum::<>::adamw_kernel<>"])

    def test_every_stall_metric_is_named_as_ncu_names_it(self):
        self.assertEqual(len(ncu_kernels.STALL_METRICS), len(set(ncu_kernels.STALL_METRICS)))
        for metric in ncu_kernels.STALL_METRICS:
            self.assertRegex(metric, r"^smsp__warp_issue_stalled_[a-z_]+_per_warp_active\.pct$")

    def test_a_log_without_a_table_is_an_error(self):
        f = tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False)
        f.write("==ERROR== Failed to find metric smsp__nonsense\n")
        f.close()
        self.addCleanup(os.unlink, f.name)
        with self.assertRaises(SystemExit):
            ncu_kernels.read_rows(f.name)


if __name__ == "__main__":
    unittest.main()
