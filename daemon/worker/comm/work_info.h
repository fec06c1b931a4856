// comm/work_info.h — what every back end's Work handle knows about its collective,
// so that a failure or timeout message reads the same on every back end:
//   "all_reduce timed out after 200 ms on rank 1 of 4 (optimizer step 7, mpi,
//    1024 x float32)".
// Internal to comm/.
#pragma once

#include <spdlog/logger.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "daemon/worker/comm/communicator.h"

namespace accum::comm {

struct WorkInfo {
  const char* collective = "";  // "all_reduce", "reduce_scatter", ...
  const char* backend = "";
  int rank = 0;
  int world_size = 1;
  int64_t step = 0;  // the communicator's optimizer step when the collective was issued
  size_t count = 0;
  DataType dtype = DataType::kFloat32;
};

WorkInfo make_work_info(const Communicator& comm, const char* collective, size_t count,
                        DataType dtype);
const char* dtype_name(DataType dtype);
std::string timeout_message(const WorkInfo& info, std::chrono::milliseconds timeout);
std::string failure_message(const WorkInfo& info, const std::string& detail);

// A Work that finished when it was issued (single-process collectives).
class CompletedWork final : public Work {
 public:
  bool is_completed() override { return true; }
  void wait(std::chrono::milliseconds) override {}
};

// The "comm" spdlog logger (stderr), created on first use.
std::shared_ptr<spdlog::logger> comm_logger();

}  // namespace accum::comm
