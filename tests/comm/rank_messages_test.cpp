// The gather of every rank's message and how the messages are described (comm/rank_messages.h),
// on the real ranks of the test job: a world of 1, 2 and 4 under mpirun. The worker reports a
// failure before training from these, once, by rank 0 (tests/distributed/input_error_test.cpp).
#include "daemon/worker/comm/rank_messages.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/comm/comm_test_support.h"

namespace accum::comm {
namespace {

using commtest::world;

// A different length on every rank, none on rank 1, and a length that is not a multiple of
// the 8-byte words the gather packs text into.
std::string message_of(int rank) {
  if (rank == 1) return "";
  return "rank " + std::to_string(rank) + ": " +
         std::string(static_cast<size_t>(rank) * 5 + 3, 'x');
}

TEST(RankMessagesTest, EveryRankGetsEveryRanksMessage) {
  Communicator& comm = world();
  const std::vector<std::string> gathered = all_gather_messages(&comm, message_of(comm.rank()));
  ASSERT_EQ(static_cast<int>(gathered.size()), comm.world_size());
  for (int rank = 0; rank < comm.world_size(); ++rank) {
    EXPECT_EQ(gathered[static_cast<size_t>(rank)], message_of(rank)) << "rank " << rank;
  }
}

TEST(RankMessagesTest, TheGatherOverTheWorldGetsEveryRanksMessage) {
  Communicator& comm = world();
  const std::vector<std::string> gathered = all_gather_messages_over_world(message_of(comm.rank()));
  ASSERT_EQ(static_cast<int>(gathered.size()), comm.world_size());
  for (int rank = 0; rank < comm.world_size(); ++rank) {
    EXPECT_EQ(gathered[static_cast<size_t>(rank)], message_of(rank)) << "rank " << rank;
  }
  EXPECT_EQ(world_rank(), comm.rank());
}

TEST(RankMessagesTest, NoMessageOnAnyRankGathersOnlyEmptyMessages) {
  Communicator& comm = world();
  const std::vector<std::string> gathered = all_gather_messages(&comm, "");
  EXPECT_EQ(gathered, std::vector<std::string>(static_cast<size_t>(comm.world_size())));
  EXPECT_TRUE(group_by_message(gathered).empty());
}

TEST(RankMessagesTest, AMessageEveryRankReportsIsDescribedOnceWithoutRanks) {
  Communicator& comm = world();
  const std::vector<std::string> gathered =
      all_gather_messages(&comm, "data.train: data path pattern /x/*.txt matches no file");
  EXPECT_EQ(describe_groups(group_by_message(gathered), comm.world_size()),
            std::vector<std::string>{"data.train: data path pattern /x/*.txt matches no file"});
}

TEST(RankMessagesTest, MessagesThatDifferBetweenRanksAreEachDescribedOnceWithTheirRanks) {
  Communicator& comm = world();
  // Odd ranks miss one file, rank 2 another, the others nothing.
  std::string mine;
  if (comm.rank() % 2 == 1) mine = "data file a.bin: not found";
  if (comm.rank() == 2) mine = "data file b.bin: not found";
  const std::vector<std::string> lines =
      describe_groups(group_by_message(all_gather_messages(&comm, mine)), comm.world_size());
  std::vector<std::string> expected;
  if (comm.world_size() == 2) expected = {"data file a.bin: not found (rank 1)"};
  if (comm.world_size() == 4) {
    expected = {"data file a.bin: not found (ranks 1, 3)", "data file b.bin: not found (rank 2)"};
  }
  EXPECT_EQ(lines, expected);
}

TEST(RankMessagesTest, OneMessageFromSomeRanksOnlyNamesThem) {
  const std::vector<std::string> messages = {"", "gone", "gone", ""};
  EXPECT_EQ(describe_groups(group_by_message(messages), 4),
            std::vector<std::string>{"gone (ranks 1-2)"});
}

TEST(RankMessagesTest, RunsOfConsecutiveRanksAreWrittenAsRanges) {
  EXPECT_EQ(describe_ranks({3}), "rank 3");
  EXPECT_EQ(describe_ranks({1, 3}), "ranks 1, 3");
  EXPECT_EQ(describe_ranks({0, 1, 2, 5, 7, 8}), "ranks 0-2, 5, 7-8");
  std::vector<int> all(64);
  for (int rank = 0; rank < 64; ++rank) all[static_cast<size_t>(rank)] = rank;
  EXPECT_EQ(describe_ranks(all), "ranks 0-63");
}

}  // namespace
}  // namespace accum::comm
