// bench/comm_bench/comm_bench.cpp — communication-only benchmark of the MPI back end
// and GradReducer, run under mpirun (rank 0 prints markdown tables).
//
// 1. all-reduce: time per blocking all-reduce and bus bandwidth
//    busbw = bytes * 2 (N-1) / N / time (the bytes each rank sends and receives).
// 2. one optimizer step of a synthetic model of `layers` equal layers: K micro-batches
//    of "backward" (a fixed amount of arithmetic per layer writing its gradients),
//    the reduction only in the last one, with overlap (mark_ready_from after each
//    layer) and without (everything in finish()). Reports bytes reduced per step
//    (must equal the gradient size for every K), the exposed communication time
//    (blocked in finish()) and its share of the step.
//
// Usage: mpirun -np 4 comm_bench [gradient_floats] [layers]

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "daemon/worker/comm/communicator.h"
#include "daemon/worker/comm/grad_reducer.h"

namespace {

using Clock = std::chrono::steady_clock;
using accum::comm::Communicator;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Max over ranks: a step is as slow as its slowest rank.
double max_over_ranks(Communicator* comm, double value) {
  std::vector<double> all(comm->world_size());
  comm->all_gather(&value, all.data(), 1, accum::comm::DataType::kFloat64);
  return *std::max_element(all.begin(), all.end());
}

void bench_all_reduce(Communicator* comm) {
  const int world = comm->world_size();
  if (comm->rank() == 0) {
    std::printf(
        "\n| floats | bytes | ms per all-reduce | bus GB/s | ms per blocking MPI_Allreduce "
        "(reference) |\n|---:|---:|---:|---:|---:|\n");
  }
  for (size_t count = 256; count <= (size_t{16} << 20); count *= 8) {
    std::vector<float> buf(count, 1.0f);
    comm->all_reduce(buf.data(), count);  // warm-up
    const int reps = count >= (size_t{1} << 20) ? 5 : 50;
    comm->barrier();
    const auto start = Clock::now();
    for (int r = 0; r < reps; ++r) comm->all_reduce(buf.data(), count);
    const double ms = max_over_ranks(comm, ms_since(start)) / reps;
    // Reference: the library's own blocking all-reduce on MPI_COMM_WORLD.
    comm->barrier();
    const auto mpi_start = Clock::now();
    for (int r = 0; r < reps; ++r) {
      MPI_Allreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(count), MPI_FLOAT, MPI_SUM,
                    MPI_COMM_WORLD);
    }
    const double mpi_ms = max_over_ranks(comm, ms_since(mpi_start)) / reps;
    const double bytes = static_cast<double>(count) * sizeof(float);
    const double busbw = bytes * 2.0 * (world - 1) / world / (ms * 1e-3) / 1e9;
    if (comm->rank() == 0) {
      std::printf("| %zu | %.0f | %.3f | %.2f | %.3f |\n", count, bytes, ms, busbw, mpi_ms);
    }
  }
}

// Stand-in for one layer's backward: arithmetic that ends by adding into its grads.
void layer_backward(float* grads, size_t count, int flops_per_element) {
  for (size_t i = 0; i < count; ++i) {
    float x = static_cast<float>(i & 1023) * 1e-3f;
    for (int f = 0; f < flops_per_element; ++f) x = x * 0.999f + 1e-4f;
    grads[i] += x;
  }
}

struct StepResult {
  double step_ms = 0, exposed_ms = 0;
  int64_t bytes_reduced = 0, gradient_collectives = 0;
};

StepResult run_step(Communicator* comm, std::vector<float>* grads, int layers, int K, bool overlap,
                    size_t bucket_bytes, int flops_per_element) {
  const size_t n = grads->size();
  const size_t layer = n / layers;
  accum::comm::GradReducer reducer(comm, grads->data(), n, {bucket_bytes, 0, overlap});
  std::fill(grads->begin(), grads->end(), 0.0f);
  comm->barrier();
  comm->counters() = {};
  const auto start = Clock::now();
  for (int micro = 0; micro < K; ++micro) {
    const bool last = micro == K - 1;
    if (last) reducer.begin_window();
    for (int l = layers - 1; l >= 0; --l) {
      const size_t begin = static_cast<size_t>(l) * layer;
      const size_t end = l == layers - 1 ? n : begin + layer;
      layer_backward(grads->data() + begin, end - begin, flops_per_element);
      if (last) reducer.mark_ready_from(begin);
    }
  }
  reducer.finish();
  StepResult result;
  result.step_ms = max_over_ranks(comm, ms_since(start));
  result.exposed_ms = max_over_ranks(comm, comm->counters().exposed_ms);
  result.bytes_reduced = comm->counters().bytes_reduced;
  result.gradient_collectives = comm->counters().gradient_collectives;
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  const size_t gradient_floats = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : (4u << 20);
  const int layers = argc > 2 ? std::atoi(argv[2]) : 12;
  auto comm = accum::comm::make_communicator(accum::comm::CommBackend::kMpi);
  comm->set_default_timeout(std::chrono::minutes(5));
  if (comm->rank() == 0) {
    std::printf(
        "# comm_bench: %d ranks (MPI back end), gradient %zu floats (%.1f MiB), %d layers\n",
        comm->world_size(), gradient_floats, gradient_floats * 4.0 / (1 << 20), layers);
  }
  bench_all_reduce(comm.get());

  std::vector<float> grads(gradient_floats);
  if (comm->rank() == 0) {
    std::printf(
        "\n| K | bucket MiB | overlap | step ms | exposed comm ms | comm share | buckets | bytes "
        "reduced / step |\n|---:|---:|---|---:|---:|---:|---:|---:|\n");
  }
  for (int K : {1, 4, 16}) {
    for (size_t bucket_mib : {size_t{1}, size_t{25}}) {
      for (bool overlap : {false, true}) {
        // Median of 3 steps by step time (the machine is shared and noisy).
        std::vector<StepResult> runs;
        for (int rep = 0; rep < 3; ++rep) {
          runs.push_back(run_step(comm.get(), &grads, layers, K, overlap, bucket_mib << 20, 8));
        }
        std::sort(runs.begin(), runs.end(),
                  [](const StepResult& a, const StepResult& b) { return a.step_ms < b.step_ms; });
        const StepResult& r = runs[1];
        if (comm->rank() == 0) {
          std::printf("| %d | %zu | %s | %.1f | %.1f | %.1f%% | %lld | %lld |\n", K, bucket_mib,
                      overlap ? "yes" : "no", r.step_ms, r.exposed_ms,
                      100.0 * r.exposed_ms / r.step_ms,
                      static_cast<long long>(r.gradient_collectives),
                      static_cast<long long>(r.bytes_reduced));
        }
      }
    }
  }
  comm.reset();
  accum::comm::finalize_communicators();
  return 0;
}
