// tests/comm/comm_test_main.cpp — gtest main for runs under mpirun.
//
// Every rank runs every test (collectives need all of them), but only rank 0 prints
// gtest's usual report; the other ranks print just their failures, prefixed with the
// rank, so output is not garbled. All ranks then agree on the exit status: the job
// fails when any rank failed.
#include <gtest/gtest.h>

#include <iostream>

#include "daemon/worker/comm/communicator.h"
#include "tests/comm/comm_test_support.h"

namespace accum::comm::commtest {
namespace {

std::unique_ptr<Communicator> g_world;

// Prints failed assertions of a non-zero rank, one line each.
class RankFailurePrinter final : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    std::cerr << "[rank " << rank_ << "] FAILED " << (test ? test->test_suite_name() : "") << "."
              << (test ? test->name() : "") << " at "
              << (result.file_name() ? result.file_name() : "?") << ":" << result.line_number()
              << ": " << result.summary() << std::endl;
  }

 private:
  int rank_;
};

}  // namespace

Communicator& world() { return *g_world; }

Communicator* acquire(CommBackend backend, std::unique_ptr<Communicator>* owner) {
  if (backend == CommBackend::kMpi) return g_world.get();
  *owner = make_communicator(backend);
  return owner->get();
}

}  // namespace accum::comm::commtest

int main(int argc, char** argv) {
  using namespace accum::comm;
  ::testing::InitGoogleTest(&argc, argv);
  commtest::g_world = make_communicator(CommBackend::kMpi);
  const int rank = commtest::g_world->rank();
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new commtest::RankFailurePrinter(rank));
  }
  const int64_t local_failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int64_t ranks_failed = local_failed;
  commtest::g_world->set_default_timeout(std::chrono::milliseconds(120000));
  commtest::g_world->all_reduce(&ranks_failed, 1, {ReduceOp::kSum, DataType::kInt64});
  if (rank == 0 && ranks_failed > 0) {
    std::cerr << "comm_test: " << ranks_failed << " of " << commtest::g_world->world_size()
              << " rank(s) had failures" << std::endl;
  }
  commtest::g_world.reset();
  finalize_communicators();
  return ranks_failed > 0 ? 1 : 0;
}
