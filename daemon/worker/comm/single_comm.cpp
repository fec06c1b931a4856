// comm/single_comm.cpp — the single-process back end: a world of one rank.
//
// Every collective is exact and immediate: all-reduce (sum or avg over one rank) and
// broadcast leave the buffer as it is; reduce-scatter and all-gather copy (or do
// nothing when in place). Work handles are complete when returned.
#include <cstring>

#include "daemon/worker/comm/backends.h"
#include "daemon/worker/comm/work_info.h"

namespace accum::comm {
namespace {

class SingleCommunicator final : public Communicator {
 public:
  const char* backend_name() const override { return "single"; }
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  int local_rank() const override { return 0; }

  std::unique_ptr<Work> all_reduce_async(void*, size_t, const CollectiveOptions& opts) override {
    check_op(opts, "all_reduce");
    ++counters_.collectives;
    return std::make_unique<CompletedWork>();  // op over one rank (sum, or sum / 1)
  }
  std::unique_ptr<Work> reduce_scatter_async(const void* send, void* recv, size_t count,
                                             const CollectiveOptions& opts) override {
    check_op(opts, "reduce_scatter");
    ++counters_.collectives;
    copy_buffer(recv, send, count * dtype_size(opts.dtype));
    return std::make_unique<CompletedWork>();
  }
  std::unique_ptr<Work> all_gather_async(const void* send, void* recv, size_t count,
                                         DataType dtype) override {
    ++counters_.collectives;
    copy_buffer(recv, send, count * dtype_size(dtype));
    return std::make_unique<CompletedWork>();
  }
  std::unique_ptr<Work> broadcast_async(void*, size_t, DataType, int root) override {
    if (root != 0) {
      throw CommError("broadcast: root " + std::to_string(root) +
                      " is not a rank of the single-process communicator (expected 0)");
    }
    ++counters_.collectives;
    return std::make_unique<CompletedWork>();
  }
  void barrier() override { ++counters_.collectives; }

 private:
  static void check_op(const CollectiveOptions& opts, const char* collective) {
    if (opts.op == ReduceOp::kAvg && opts.dtype == DataType::kInt64) {
      throw CommError(std::string(collective) +
                      ": ReduceOp::kAvg needs float32 or float64, got int64");
    }
  }
};

}  // namespace

std::unique_ptr<Communicator> make_single_communicator() {
  return std::make_unique<SingleCommunicator>();
}

}  // namespace accum::comm
