// kernels/cuda/matmul_algos.h — cuBLASLt algorithm choices timed once, then kept in a file
// and reused (as PyTorch's TunableOp keeps its results): the file ACCUM_CUBLASLT_ALGOS=FILE
// names, or, with the spec's cuda.keep_cublaslt_algorithms, this machine's file in
// checkpoint.dir (algo_file_name).
//
// cuBLASLt's heuristic picks an algorithm per GEMM shape without running it; on an H200 its
// first choice was up to 1.13x slower than the best of its first 8 (bench/RESULTS.md 4.15).
// Timing the candidates at run time would make the choice, and so the bits, depend on timing
// noise; keeping the choice in a file makes every later run (a rerun, a resume) use the same
// algorithms and get the same bits. The file names the machine (GPU and cuBLASLt version) it
// was made on; another machine's file is refused, since its choices mean nothing here.
//
// File format (text, tab-separated):
//   # a comment line (written first; '#' lines are skipped)
//   machine<TAB>NAME                      exactly once, before any choice
//   SHAPE<TAB>I<TAB>N<TAB>US              one per GEMM plan: the heuristic's candidate #I
//                                          (0-based) of the N it offered; US: the candidates'
//                                          times in µs, space-separated (-1: failed to run)
// Every process of a job may share one file: each read and append happens under an exclusive
// flock, and a process that has timed a shape another has meanwhile kept takes the kept
// choice, so all ranks run the same algorithms. A choice line is appended in one write, then
// fsynced; a last line without its newline (a crash mid-write) is cut off when the file is
// next read, and its shape is timed again.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace accum::kernels::cuda {

struct AlgoChoice {
  int index = 0;       // into the heuristic's candidates, in its order
  int candidates = 0;  // how many it offered when the choice was made
};

class AlgoTable {
 public:
  // Reads `path` (a missing file is an empty table, created on the first add()) for
  // `machine`. Throws std::runtime_error naming the file, the line and what was expected
  // when the file is unreadable, malformed, or made on another machine.
  // `source` names what chose the file, in every message: the variable or the spec field.
  AlgoTable(std::string path, std::string machine, std::string source = "ACCUM_CUBLASLT_ALGOS");

  const AlgoChoice* find(const std::string& shape) const;
  // Keeps `choice` (timed as `us`) for `shape`: re-reads the file, and returns the choice
  // already there if another process kept one for `shape` meanwhile; else appends this one and
  // returns it. Throws std::runtime_error when the file cannot be read or written, or has
  // become malformed.
  AlgoChoice record(const std::string& shape, AlgoChoice choice, const std::vector<float>& us);
  const std::string& path() const { return path_; }
  const std::string& source() const { return source_; }

 private:
  // Replaces the table with the choices in `content` (the whole file); throws as the
  // constructor does.
  void parse(const std::string& content);

  std::string path_, machine_, source_;
  bool machine_written_ = false;
  std::map<std::string, AlgoChoice> choices_;
};

// The name of the file that keeps `machine`'s choices in a folder of them (the spec's
// cuda.keep_cublaslt_algorithms): "cublaslt_algos_" + machine with every run of characters
// other than letters and digits as one '_' + ".tsv", e.g.
// cublaslt_algos_NVIDIA_H200_cuBLASLt_130100.tsv. A job moved to another kind of GPU, or to
// another cuBLASLt, times its algorithms again in a file of its own.
std::string algo_file_name(const std::string& machine);

// The candidate with the smallest time (times <= 0: failed to run), or -1 if none ran.
int fastest_candidate(const std::vector<float>& us);

}  // namespace accum::kernels::cuda
