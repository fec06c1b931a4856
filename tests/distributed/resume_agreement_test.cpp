// Every rank resumes from the same checkpoint or the job does not start: ranks that
// resolve checkpoint.resume_from on their own (node-local checkpoint folders, one rank
// passing over a damaged checkpoint) would otherwise train on from different steps with
// mixed weights. Launched MPMD (`mpirun -np 1 W --spec a.json : -np 1 W --spec b.json`)
// so that rank 1 reads another checkpoint folder than rank 0.
#include <gtest/gtest.h>

#include <filesystem>

#include "daemon/worker/exit_codes.h"
#include "tests/distributed/mpi_job.h"

namespace accum::testing {
namespace {

namespace fs = std::filesystem;

// Rank 0 runs `spec0`, rank 1 runs `spec1`: one job of 2 ranks.
RunResult run_two_specs(const std::string& spec0, const std::string& spec1) {
  std::vector<std::string> argv = mpirun_argv(1, spec0);
  argv.insert(argv.end(), {":", "-np", "1", worker_binary(), "--spec", spec1});
  return run(argv, 120);
}

class ResumeAgreementTest : public ::testing::Test {
 protected:
  // Two ranks write checkpoints of steps 1..3 into ckpt_a; rank 1's folder ckpt_b
  // starts as a copy of it.
  void SetUp() override {
    const RunResult first = job_.run_job("first", 2, with({{"max_steps", "3"}}));
    ASSERT_EQ(first.exit_code, 0) << first.output;
    fs::copy(job_ / "ckpt_a", job_ / "ckpt_b", fs::copy_options::recursive);
    metrics_before_ = read_file(job_ / "metrics.jsonl");
  }

  Overrides with(const Overrides& more) const {
    return merged({{"checkpoint.dir", "\"ckpt_a\""},
                   {"checkpoint.every_steps", "1"},
                   {"checkpoint.keep_last", "0"},
                   {"batch.tokens_per_update", "128"}},
                  more);
  }

  // Resumes to step 5 with rank 0 on ckpt_a and rank 1 on ckpt_b.
  RunResult resume() const {
    const Overrides resume = {{"max_steps", "5"}, {"checkpoint.resume_from", "\"latest\""}};
    return run_two_specs(
        job_.write_spec("a", with(resume)),
        job_.write_spec("b", with(merged(resume, {{"checkpoint.dir", "\"ckpt_b\""},
                                                  {"metrics_path", "\"metrics_b.jsonl\""}}))));
  }

  // Refused as bad input before any step, naming what each rank resolved.
  void expect_refused(const RunResult& result, const std::string& rank1_resolved) const {
    EXPECT_EQ(result.exit_code, worker::kExitBadInput) << result.output;
    for (const std::string& words :
         {std::string("resolved checkpoint.resume_from \"latest\" to different checkpoints"),
          std::string("rank 0: step_00000003"), "rank 1: " + rank1_resolved}) {
      EXPECT_NE(result.output.find(words), std::string::npos) << words << ":\n" << result.output;
    }
    EXPECT_EQ(read_file(job_ / "metrics.jsonl"), metrics_before_) << "a step was taken";
    EXPECT_FALSE(fs::exists(job_ / "ckpt_a/step_00000004"));
    // Printed once per folder resolved, by rank 0, naming the ranks that resolved there.
    EXPECT_EQ(count_of(result.output, "accum-worker: error: "), 2) << result.output;
    EXPECT_NE(result.output.find("; here it resolved to " + std::string(job_ / "ckpt_a")),
              std::string::npos)
        << result.output;
    EXPECT_NE(result.output.find("checkpoint.dir, or the same checkpoint in each (rank 0)\n"),
              std::string::npos)
        << result.output;
    EXPECT_NE(result.output.find("checkpoint.dir, or the same checkpoint in each (rank 1)\n"),
              std::string::npos)
        << result.output;
  }

  static int count_of(const std::string& text, const std::string& words) {
    int count = 0;
    for (size_t at = text.find(words); at != std::string::npos; at = text.find(words, at + 1)) {
      ++count;
    }
    return count;
  }

  MpiJobDir job_;
  std::string metrics_before_;
};

TEST_F(ResumeAgreementTest, SameCheckpointInEachRanksFolderResumes) {
  const RunResult result = resume();
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("resumed from"), std::string::npos) << result.output;
  EXPECT_EQ(read_metrics(job_ / "metrics.jsonl").size(), 5u);
}

TEST_F(ResumeAgreementTest, RankWithAnOlderLatestCheckpointIsRefused) {
  fs::remove_all(job_ / "ckpt_b/step_00000003");
  write_file(job_ / "ckpt_b/latest", "step_00000002\n");
  expect_refused(resume(), "step_00000002");
}

TEST_F(ResumeAgreementTest, RankFallingBackPastADamagedCheckpointIsRefused) {
  // Rank 1's copy of step 3 fails verification, so its "latest" falls back to step 2.
  const std::string model = job_ / "ckpt_b/step_00000003/model.safetensors";
  std::string bytes = read_file(model);
  bytes[bytes.size() - 5] ^= 0x5a;
  write_file(model, bytes);
  expect_refused(resume(), "step_00000002");
}

TEST_F(ResumeAgreementTest, RankWithoutCheckpointsIsRefusedInsteadOfStartingFresh) {
  fs::remove_all(job_ / "ckpt_b");
  expect_refused(resume(), "no checkpoint (a fresh start)");
}

TEST_F(ResumeAgreementTest, SameStepFromAnotherRunIsRefused) {
  // Rank 1's step 3 holds other weights (a run with another learning rate).
  fs::remove_all(job_ / "ckpt_b");
  const RunResult other = job_.run_job("other", 2,
                                       with({{"max_steps", "3"},
                                             {"checkpoint.dir", "\"ckpt_b\""},
                                             {"optimizer.lr", "0.001"},
                                             {"metrics_path", "\"metrics_other.jsonl\""}}));
  ASSERT_EQ(other.exit_code, 0) << other.output;
  expect_refused(resume(), "step_00000003 (weights sha256");
}

}  // namespace
}  // namespace accum::testing
