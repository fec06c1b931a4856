// comm/rank_messages.h — every rank's message, gathered at a point all ranks reach, and
// described once: how a job of N ranks reports an error that N ranks found alike (once,
// not N times) and one that differs between ranks (each message once, with its ranks).
//
// The gather is built from integer all-reduces only, which every back end takes on host
// memory (NCCL stages host buffers; its all_gather needs device ones): each rank fills
// its own slots and leaves the others zero, so the sum is every rank's data.
//
// Thread safety: the gathers are collectives, called from the thread that drives the
// communicator; the describing functions are pure.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "daemon/worker/comm/communicator.h"

namespace accum::comm {

// Every rank's `mine` (the same count of values on each rank), concatenated in rank order:
// one all-reduce. Throws CommError as the collectives do.
std::vector<int64_t> all_gather_int64(Communicator* comm, const std::vector<int64_t>& mine);

// Every rank's message, indexed by rank ("" for a rank that has none). Every rank must
// call it at the same point, in the same order as its other collectives: one all-reduce of
// the lengths, and one of the text when any rank has some. Throws CommError as the
// collectives do (after comm's default_timeout()).
std::vector<std::string> all_gather_messages(Communicator* comm, const std::string& mine);

// The same over MPI_COMM_WORLD, for the ranks of an mpirun job before any Communicator
// exists (the back end comes from the spec, which may be what failed). Initializes MPI
// when it is not yet, so a later make_communicator() finds it running. MPI has no
// timeout here: it returns when every rank has called it. Throws CommError when MPI fails.
std::vector<std::string> all_gather_messages_over_world(const std::string& mine);
// This process's rank in MPI_COMM_WORLD, for the callers of the gather above.
// REQUIRES: MPI is running (after all_gather_messages_over_world()).
int world_rank();

// The ranks that reported one message.
struct RankGroup {
  std::string message;
  std::vector<int> ranks;  // ascending
};

// The distinct non-empty messages of `messages` (indexed by rank), in the order of the
// first rank that reported each.
std::vector<RankGroup> group_by_message(const std::vector<std::string>& messages);

// "rank 3", or "ranks 1, 3", "ranks 0-63", "ranks 0-2, 5": runs of consecutive ranks
// are written as ranges so that a job of many ranks still reads in one line.
// REQUIRES: `ranks` is ascending and not empty.
std::string describe_ranks(const std::vector<int>& ranks);

// One line per group: the message alone when it is the only one and every one of the
// `world_size` ranks reported it, else the message followed by " (<describe_ranks>)".
std::vector<std::string> describe_groups(const std::vector<RankGroup>& groups, int world_size);

}  // namespace accum::comm
