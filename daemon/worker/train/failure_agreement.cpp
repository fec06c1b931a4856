// train/failure_agreement.cpp — the agreement on failing, over the gather of the ranks'
// messages in comm/rank_messages.h.
#include "daemon/worker/train/failure_agreement.h"

#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/worker/comm/rank_messages.h"
#include "daemon/worker/exit_codes.h"

namespace accum::train {
namespace {

// The payload that marks a status every rank agreed on; its value is never read.
constexpr char kAgreedPayload[] = "accum.worker/failure-agreed-by-every-rank";

bool is_input_error(absl::StatusCode code) {
  return code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound ||
         code == absl::StatusCode::kFailedPrecondition || code == absl::StatusCode::kDataLoss ||
         code == absl::StatusCode::kOutOfRange;
}

// A rank's outcome as it travels: "" for OK, else "<status code> <message>", so that the
// code that decides the exit code travels with the message.
std::string encode(const absl::Status& status) {
  if (status.ok()) return "";
  // A failure without a message still travels, and is reported, as one.
  const std::string message = status.message().empty() ? absl::StatusCodeToString(status.code())
                                                       : std::string(status.message());
  return absl::StrCat(static_cast<int>(status.code()), " ", message);
}

// The one status every rank derives alike from every rank's encode()d outcome. An input
// error wins over any other: a rerun would meet it again, so the job must not be restarted.
absl::Status combine(const std::vector<std::string>& outcomes) {
  absl::StatusCode code = absl::StatusCode::kOk;
  std::vector<std::string> messages(outcomes.size());
  for (size_t rank = 0; rank < outcomes.size(); ++rank) {
    const std::string& outcome = outcomes[rank];
    if (outcome.empty()) continue;
    const size_t space = outcome.find(' ');
    int number = static_cast<int>(absl::StatusCode::kUnknown);
    if (!absl::SimpleAtoi(outcome.substr(0, space), &number)) {
      number = static_cast<int>(absl::StatusCode::kUnknown);
    }
    const auto rank_code = static_cast<absl::StatusCode>(number);
    messages[rank] = space == std::string::npos ? "" : outcome.substr(space + 1);
    if (code == absl::StatusCode::kOk || (!is_input_error(code) && is_input_error(rank_code))) {
      code = rank_code;
    }
  }
  if (code == absl::StatusCode::kOk) return absl::OkStatus();
  const int world_size = static_cast<int>(outcomes.size());
  absl::Status agreed(
      code,
      absl::StrJoin(comm::describe_groups(comm::group_by_message(messages), world_size), "\n"));
  agreed.SetPayload(kAgreedPayload, absl::Cord("1"));
  return agreed;
}

}  // namespace

int exit_code_for(const absl::Status& status) {
  return is_input_error(status.code()) ? worker::kExitBadInput : worker::kExitRuntimeFailure;
}

absl::Status agree_on_failure(comm::Communicator* comm, const absl::Status& mine) {
  return combine(comm::all_gather_messages(comm, encode(mine)));
}

absl::Status agree_on_failure_over_world(const absl::Status& mine) {
  return combine(comm::all_gather_messages_over_world(encode(mine)));
}

bool is_agreed_failure(const absl::Status& status) {
  return status.GetPayload(kAgreedPayload).has_value();
}

}  // namespace accum::train
