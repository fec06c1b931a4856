// comm/rank_messages.cpp — gathering the ranks' messages and describing them.
#include "daemon/worker/comm/rank_messages.h"

#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>

#include "daemon/worker/comm/mpi_runtime.h"

namespace accum::comm {
namespace {

// Sums `count` int64 values in place over every rank of the job.
using SumOverRanks = std::function<void(int64_t* values, size_t count)>;

constexpr size_t kWordBytes = sizeof(int64_t);

size_t words_for(size_t bytes) { return (bytes + kWordBytes - 1) / kWordBytes; }

// Every rank's `mine` (the same count on each), in rank order: a rank fills its own slots
// and leaves every other one zero, so the sum over the ranks holds each rank's values.
std::vector<int64_t> gather_slots(const SumOverRanks& sum_over_ranks, int rank, int world_size,
                                  const std::vector<int64_t>& mine) {
  std::vector<int64_t> slots(mine.size() * static_cast<size_t>(world_size), 0);
  std::copy(mine.begin(), mine.end(), slots.begin() + mine.size() * static_cast<size_t>(rank));
  sum_over_ranks(slots.data(), slots.size());
  return slots;
}

// The gather both transports share. Messages travel as int64 words in the same way: a rank
// copies its bytes into its own words and leaves every other word zero.
std::vector<std::string> gather_messages(const SumOverRanks& sum_over_ranks, int rank,
                                         int world_size, const std::string& mine) {
  const std::vector<int64_t> lengths =
      gather_slots(sum_over_ranks, rank, world_size, {static_cast<int64_t>(mine.size())});
  std::vector<size_t> first_word(static_cast<size_t>(world_size) + 1, 0);
  for (size_t r = 0; r < lengths.size(); ++r) {
    first_word[r + 1] = first_word[r] + words_for(static_cast<size_t>(lengths[r]));
  }
  std::vector<std::string> messages(static_cast<size_t>(world_size));
  // The usual case, every rank fine: one all-reduce of world_size integers and no more.
  if (first_word.back() == 0) return messages;
  std::vector<int64_t> words(first_word.back(), 0);
  if (!mine.empty()) {
    std::memcpy(words.data() + first_word[static_cast<size_t>(rank)], mine.data(), mine.size());
  }
  sum_over_ranks(words.data(), words.size());
  for (size_t r = 0; r < messages.size(); ++r) {
    messages[r].assign(reinterpret_cast<const char*>(words.data() + first_word[r]),
                       static_cast<size_t>(lengths[r]));
  }
  return messages;
}

SumOverRanks sum_over(Communicator* comm) {
  return [comm](int64_t* values, size_t count) {
    comm->all_reduce(values, count, {ReduceOp::kSum, DataType::kInt64});
  };
}

}  // namespace

std::vector<int64_t> all_gather_int64(Communicator* comm, const std::vector<int64_t>& mine) {
  return gather_slots(sum_over(comm), comm->rank(), comm->world_size(), mine);
}

std::vector<std::string> all_gather_messages(Communicator* comm, const std::string& mine) {
  return gather_messages(sum_over(comm), comm->rank(), comm->world_size(), mine);
}

std::vector<std::string> all_gather_messages_over_world(const std::string& mine) {
  ensure_mpi_initialized();
  int world_size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  const SumOverRanks sum = [](int64_t* values, size_t count) {
    MpiCallGuard guard;
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, values, static_cast<int>(count), MPI_INT64_T, MPI_SUM,
                            MPI_COMM_WORLD),
              "MPI_Allreduce of the ranks' messages");
  };
  return gather_messages(sum, world_rank(), world_size, mine);
}

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

std::vector<RankGroup> group_by_message(const std::vector<std::string>& messages) {
  std::vector<RankGroup> groups;
  for (size_t rank = 0; rank < messages.size(); ++rank) {
    if (messages[rank].empty()) continue;
    auto group = std::find_if(groups.begin(), groups.end(), [&](const RankGroup& candidate) {
      return candidate.message == messages[rank];
    });
    if (group == groups.end()) {
      groups.push_back(RankGroup{messages[rank], {}});
      group = groups.end() - 1;
    }
    group->ranks.push_back(static_cast<int>(rank));
  }
  return groups;
}

std::string describe_ranks(const std::vector<int>& ranks) {
  std::string text = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t begin = 0; begin < ranks.size();) {
    size_t end = begin + 1;  // one past the run of consecutive ranks that starts at begin
    while (end < ranks.size() && ranks[end] == ranks[end - 1] + 1) ++end;
    if (begin > 0) text += ", ";
    text += std::to_string(ranks[begin]);
    if (end - begin > 1) text += "-" + std::to_string(ranks[end - 1]);
    begin = end;
  }
  return text;
}

std::vector<std::string> describe_groups(const std::vector<RankGroup>& groups, int world_size) {
  if (groups.size() == 1 && static_cast<int>(groups[0].ranks.size()) == world_size) {
    return {groups[0].message};
  }
  std::vector<std::string> lines;
  for (const RankGroup& group : groups) {
    lines.push_back(group.message + " (" + describe_ranks(group.ranks) + ")");
  }
  return lines;
}

}  // namespace accum::comm
