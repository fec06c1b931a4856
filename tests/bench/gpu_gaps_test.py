#!/usr/bin/env python3
"""tests/bench/gpu_gaps_test.py — bench/gpu/gpu_gaps.py on traces whose gaps are known."""
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench", "gpu"))
import gpu_gaps  # noqa: E402

# nsys prints notices before the table; a memcpy on another stream overlaps a kernel.
TRACE = """Processing [report.sqlite] with [cuda_gpu_trace.py]...
"Start (ns)","Duration (ns)","CorrId","Strm","Name"
1000,500,1,7,"kernel_a"
1500,1000,2,7,"kernel_b"
5500,200,3,7,"[CUDA memcpy Device-to-Host]"
5600,300,4,8,"kernel_c"
9000,1000,5,7,"kernel_d"
"""


class GpuGapsTest(unittest.TestCase):
    def write(self, text):
        f = tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False)
        f.write(text)
        f.close()
        self.addCleanup(os.unlink, f.name)
        return f.name

    def test_busy_time_is_the_union_and_gaps_name_their_neighbours(self):
        span, busy, found = gpu_gaps.gaps(gpu_gaps.read_rows(self.write(TRACE)))
        self.assertEqual(span, 9000)  # 1000 .. 10000
        self.assertEqual(busy, 1500 + 400 + 1000)  # back-to-back a, b; overlapping copy, c
        self.assertEqual(sorted(found), [(3000, "kernel_b", "[CUDA memcpy Device-to-Host]"),
                                         (3100, "kernel_c", "kernel_d")])

    def test_no_gaps_when_operations_touch(self):
        span, busy, found = gpu_gaps.gaps([(0, 10, "a"), (10, 25, "b"), (25, 30, "c")])
        self.assertEqual((span, busy, found), (30, 30, []))

    def test_report_lists_the_longest_gap_first(self):
        out = subprocess.run([sys.executable, os.path.join(ROOT, "bench/gpu/gpu_gaps.py"),
                              self.write(TRACE)], capture_output=True, text=True, check=True)
        self.assertIn("idle 0.006 ms (67.8%) in 2 gaps, 2 longer than 2 us", out.stdout)
        table = [line for line in out.stdout.splitlines() if line.startswith("| 3.")]
        self.assertEqual(table[0], "| 3.1 | `kernel_c` | `kernel_d` |")

    def test_a_csv_without_the_trace_columns_is_refused(self):
        bad = subprocess.run([sys.executable, os.path.join(ROOT, "bench/gpu/gpu_gaps.py"),
                              self.write("Name,Total\nk,1\n")], capture_output=True, text=True)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("not a cuda_gpu_trace CSV", bad.stderr)


if __name__ == "__main__":
    unittest.main()
