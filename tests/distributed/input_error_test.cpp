// Bad input ends a job of several ranks with the worker's bad-input exit code (2,
// daemon/worker/exit_codes.h) as mpirun's own exit status, so accumd can tell it from
// a crash and fail the job instead of restarting it: whether every rank rejects the
// input or one rank alone does while the others wait for it in a collective. The ranks
// agree on a failure before training, so the error is printed once, by rank 0, naming the
// ranks that found it unless every rank did, and no rank needs MPI_Abort to end the job.
#include <gtest/gtest.h>

#include <string>

#include "daemon/worker/exit_codes.h"
#include "tests/distributed/mpi_job.h"

namespace accum::testing {
namespace {

// Far longer than a run that ends at once; the lone-rank case must not wait it out.
constexpr int kCollectiveTimeoutS = 60;

constexpr char kErrorPrefix[] = "accum-worker: error: ";

int count_occurrences(const std::string& text, const std::string& what) {
  int count = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) {
    ++count;
  }
  return count;
}

// The job printed `error` as its one error line, and ended without MPI_Abort (whose banner
// Open MPI prints, and before which comm::abort_job logs "aborting the job").
void expect_reported_once_without_abort(const RunResult& result, const std::string& error) {
  EXPECT_EQ(count_occurrences(result.output, kErrorPrefix), 1) << result.output;
  EXPECT_NE(result.output.find(kErrorPrefix + error + "\n"), std::string::npos)
      << "expected the line: " << kErrorPrefix << error << "\n"
      << result.output;
  EXPECT_EQ(result.output.find("MPI_ABORT"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("aborting the job"), std::string::npos) << result.output;
}

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

TEST(InputErrorTest, ADataPatternNoRankMatchesIsReportedOnceWithoutMpiAbort) {
  MpiJobDir job;
  const std::string pattern = job / "missing/*.txt";
  const RunResult result = job.run_job("nodata", 4, {{"data.train", "\"" + pattern + "\""}});
  EXPECT_EQ(result.exit_code, worker::kExitBadInput) << result.output;
  expect_reported_once_without_abort(
      result, "data.train: data path pattern '" + pattern + "' matches no file");
}

TEST(InputErrorTest, ASpecEveryRankRejectsIsReportedOnceWithoutMpiAbort) {
  MpiJobDir job;
  // d_model 32 does not split into 3 heads: the spec is refused before MPI starts.
  const RunResult result = job.run_job("heads", 4, {{"model.n_head", "3"}});
  EXPECT_EQ(result.exit_code, worker::kExitBadInput) << result.output;
  const size_t error = result.output.find(kErrorPrefix);
  ASSERT_NE(error, std::string::npos) << result.output;
  const std::string line = result.output.substr(error, result.output.find('\n', error) - error);
  EXPECT_NE(line.find("n_head"), std::string::npos) << result.output;
  expect_reported_once_without_abort(result, line.substr(std::string(kErrorPrefix).size()));
}

TEST(InputErrorTest, AnErrorOnlyRankZeroFindsIsReportedOnceNamingRankZero) {
  MpiJobDir job;
  // Only rank 0 opens the link to accumd, so only rank 0 reads its CA file.
  write_file(job / "not_a_ca.pem", "not a certificate\n");
  const std::string spec = job.write_spec("rank0", {});
  const RunResult result = run(mpirun_argv(4, spec,
                                           {"-x", "ACCUM_CONTROL_ADDR=127.0.0.1:9", "-x",
                                            "ACCUM_CONTROL_TLS_CA=" + (job / "not_a_ca.pem")}),
                               kCollectiveTimeoutS);
  EXPECT_EQ(result.exit_code, worker::kExitBadInput) << result.output;
  const size_t error = result.output.find(kErrorPrefix);
  ASSERT_NE(error, std::string::npos) << result.output;
  const std::string line = result.output.substr(error, result.output.find('\n', error) - error);
  EXPECT_NE(line.find("not_a_ca.pem' is not a readable PEM certificate"), std::string::npos)
      << result.output;
  EXPECT_EQ(line.substr(line.size() - 9), " (rank 0)") << result.output;
  expect_reported_once_without_abort(result, line.substr(std::string(kErrorPrefix).size()));
}

}  // namespace
}  // namespace accum::testing
