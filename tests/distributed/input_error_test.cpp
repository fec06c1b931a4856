// Bad input ends a job of several ranks with the worker's bad-input exit code (2,
// daemon/worker/exit_codes.h) as mpirun's own exit status, so accumd can tell it from
// a crash and fail the job instead of restarting it: whether every rank rejects the
// input or one rank alone does while the others wait for it in a collective.
#include <gtest/gtest.h>

#include "daemon/worker/exit_codes.h"
#include "tests/distributed/mpi_job.h"

namespace accum::testing {
namespace {

// Far longer than a run that ends at once; the lone-rank case must not wait it out.
constexpr int kCollectiveTimeoutS = 60;

TEST(InputErrorTest, EveryRankRejectingTheDataFileEndsMpirunWithTheBadInputCode) {
  MpiJobDir job;
  // A nanoGPT .bin holds uint16 tokens: an odd size is refused by every rank's loader.
  write_file(job / "odd.bin", std::string(4097, 'a'));
  const RunResult result =
      job.run_job("odd", 2, {{"data.train", "\"odd.bin\""}, {"data.format", "\"NANOGPT_BIN\""}});
  EXPECT_EQ(result.exit_code, worker::kExitBadInput) << result.output;
  EXPECT_NE(result.output.find("its size must be even, but it is 4097 bytes"), std::string::npos)
      << result.output;
}

TEST(InputErrorTest, OneRankRejectingItsInputEndsEveryRankWithTheBadInputCode) {
  MpiJobDir job;
  // Only rank 0 opens the link to accumd, so only rank 0 reads its CA file; rank 1
  // goes on into training and waits for rank 0 in the first collective.
  write_file(job / "not_a_ca.pem", "not a certificate\n");
  const std::string spec =
      job.write_spec("lone", {{"distributed.timeout_s", std::to_string(kCollectiveTimeoutS)}});
  const RunResult result = run(mpirun_argv(2, spec,
                                           {"-x", "ACCUM_CONTROL_ADDR=127.0.0.1:9", "-x",
                                            "ACCUM_CONTROL_TLS_CA=" + (job / "not_a_ca.pem")}),
                               kCollectiveTimeoutS / 2);
  EXPECT_EQ(result.exit_code, worker::kExitBadInput) << result.output;
  EXPECT_NE(result.output.find("not_a_ca.pem' is not a readable PEM certificate"),
            std::string::npos)
      << result.output;
  EXPECT_EQ(count_rank_processes(spec), 0) << "a rank outlived mpirun";
}

}  // namespace
}  // namespace accum::testing
