// What a job of several ranks prints: one line per step. Open MPI gives each rank a
// pseudo-terminal even when mpirun's own output goes to a file or a pipe (accumd's logs, a
// script's capture), so a worker that drew its progress bar whenever stdout was a terminal
// left those logs one \r-joined line until the job ended.
#include <gtest/gtest.h>

#include "tests/distributed/mpi_job.h"

namespace accum::testing {
namespace {

TEST(RankOutputTest, RanksUnderMpirunPrintOneLinePerStepNotAProgressBar) {
  MpiJobDir job;
  const RunResult result = job.run_job("lines", 2, {{"max_steps", "4"}});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(result.output.find('\r'), std::string::npos) << result.output;
  for (int step = 1; step <= 4; ++step) {
    const std::string line = "step " + std::to_string(step) + "/4 loss ";
    const size_t first = result.output.find(line);
    EXPECT_NE(first, std::string::npos) << result.output;
    EXPECT_EQ(result.output.find(line, first + 1), std::string::npos)
        << "step " << step << " printed more than once:\n"
        << result.output;
  }
}

}  // namespace
}  // namespace accum::testing
