// accumctl — command-line client for accumd.
//
//   accumctl [--server HOST:PORT] [--token-file F] [--output json] VERB ...
// Global flags may come before or after the verb. Exit codes: connection.h.
#include <cstdlib>
#include <iostream>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/commands.h"
#include "client/connection.h"

namespace {

using namespace accum::ctl;

constexpr const char* kHelp =
    R"(usage: accumctl [--server HOST:PORT] [--token-file F] [--tls-ca F] [--output json]
                [--keepalive-s N] [--keepalive-timeout-s N] VERB

verbs:
  submit SPEC.json            queue a job (relative paths resolve against the spec's folder); prints its id
  list [--state STATE]        all jobs (or those in STATE)
  status ID                   state, progress, restarts and the transition history of a job
  watch ID [--reconnect-s N]  follow a job to its end: a live progress bar (plain lines when not a terminal);
                              if accumd restarts meanwhile, reconnects for up to N s (default 60; 0: exit 3)
  cancel ID [--force]         graceful: checkpoint then stop; --force kills at once
  continue ID [--max-steps N] a new job that goes on from an ended job's latest checkpoint (the same
                              spec; N: train to step N instead of the job's max_steps); prints its id
  delete ID                   remove an ended job: its record and its folder (logs, metrics, checkpoints)
  checkpoint ID               checkpoint at the next optimizer step; waits until it is complete
  checkpoints ID              the job's complete checkpoints
  logs ID [-f] [--rank R] [--tail N]   the job's per-rank logs (-f follows until the job ends,
                              riding out an accumd restart as watch does)

flags:
  --server HOST:PORT   accumd's address (default $ACCUMD_SERVER or 127.0.0.1:7070)
  --token-file F       bearer token (default $ACCUMD_TOKEN_FILE)
  --tls-ca F           verify accumd's TLS certificate with this CA (turns TLS on)
  --output json        print replies as JSON (one object per line)
  --keepalive-s N      while a call is open (watch, logs -f, ...), ping accumd after N s of
                       silence (default 20; 1 to 3600)
  --keepalive-timeout-s N  give the call up when accumd does not answer a ping within N s
                       (default 10; 1 to 3600): an accumd that was stopped (SIGSTOP), hangs, or
                       whose host is gone ends a watch with exit 3, after --reconnect-s

exit codes:
  0 success (watch: the job SUCCEEDED)    5 invalid argument (bad spec: the message names the field)
  1 the watched job FAILED or was CANCELLED  6 unknown job id
  2 usage error                           7 the job's state does not allow it
  3 accumd unreachable or not answering   8 resource exhausted (slots, queue, request size, a full disk)
  4 authentication failed (token)         9 any other error
)";

// The flags that belong to some verbs only, and those verbs.
const std::map<std::string, std::set<std::string>> kVerbsOfFlag = {
    {"--force", {"cancel"}}, {"-f", {"logs"}},
    {"--follow", {"logs"}},  {"--rank", {"logs"}},
    {"--tail", {"logs"}},    {"--max-steps", {"continue"}},
    {"--state", {"list"}},   {"--reconnect-s", {"logs", "watch"}},
};

[[noreturn]] void usage(const std::string& message) {
  std::cerr << "accumctl: " << message << "\n(accumctl --help for usage)\n";
  std::exit(kUsage);
}

}  // namespace

int main(int argc, char** argv) {
  ConnectionOptions options;
  if (const char* server = std::getenv("ACCUMD_SERVER")) options.server = server;
  if (const char* token = std::getenv("ACCUMD_TOKEN_FILE")) options.token_file = token;
  std::vector<std::string> words;
  bool force = false, follow = false;
  int rank = -1, tail = 0, reconnect_s = 60;
  int64_t max_steps = 0;
  std::string state;
  // The verb-specific flags given, by their spelling: each is refused with another verb
  // (`submit SPEC --max-steps 300` would otherwise queue the spec's own max_steps).
  std::vector<std::string> verb_flags;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(arg + ": missing value");
      return argv[++i];
    };
    if (arg == "-h" || arg == "--help") {
      std::cout << kHelp;
      return kOk;
    } else if (arg == "--server") {
      options.server = value();
    } else if (arg == "--token-file") {
      options.token_file = value();
    } else if (arg == "--tls-ca") {
      options.tls_ca = value();
    } else if (arg == "--output") {
      const std::string format = value();
      if (format != "json" && format != "text")
        usage("--output " + format + ": expected json or text");
      options.json = format == "json";
    } else if (arg == "--keepalive-s") {
      if (!absl::SimpleAtoi(value(), &options.keepalive_s) || options.keepalive_s < 1 ||
          options.keepalive_s > 3600) {
        usage("--keepalive-s: expected seconds in [1, 3600]");
      }
    } else if (arg == "--keepalive-timeout-s") {
      if (!absl::SimpleAtoi(value(), &options.keepalive_timeout_s) ||
          options.keepalive_timeout_s < 1 || options.keepalive_timeout_s > 3600) {
        usage("--keepalive-timeout-s: expected seconds in [1, 3600]");
      }
    } else if (arg == "--force") {
      force = true;
    } else if (arg == "-f" || arg == "--follow") {
      follow = true;
    } else if (arg == "--rank") {
      if (!absl::SimpleAtoi(value(), &rank) || rank < 0) usage("--rank: expected a rank >= 0");
    } else if (arg == "--tail") {
      if (!absl::SimpleAtoi(value(), &tail) || tail < 0) usage("--tail: expected a count >= 0");
    } else if (arg == "--max-steps") {
      if (!absl::SimpleAtoi(value(), &max_steps) || max_steps < 1 ||
          max_steps > std::numeric_limits<int32_t>::max()) {
        usage(absl::StrCat("--max-steps: expected a step count in [1, ",
                           std::numeric_limits<int32_t>::max(), "]"));
      }
    } else if (arg == "--state") {
      state = value();
    } else if (arg == "--reconnect-s") {
      if (!absl::SimpleAtoi(value(), &reconnect_s) || reconnect_s < 0 || reconnect_s > 86400) {
        usage("--reconnect-s: expected seconds in [0, 86400]");
      }
    } else if (arg.size() > 1 && arg[0] == '-') {
      usage("unknown flag " + arg);
    } else {
      words.push_back(arg);
    }
    if (kVerbsOfFlag.count(arg)) verb_flags.push_back(arg);
  }
  if (words.empty()) usage("missing verb");
  const std::string verb = words[0];
  for (const std::string& flag : verb_flags) {
    const std::set<std::string>& verbs = kVerbsOfFlag.at(flag);
    if (!verbs.count(verb)) {
      usage(absl::StrCat(flag, " is a flag of ", absl::StrJoin(verbs, " and "), ", not of ", verb));
    }
  }
  auto need_argument = [&](const char* what) -> const std::string& {
    if (words.size() != 2) usage(verb + ": expected exactly one " + what);
    return words[1];
  };
  std::string error;
  auto connection = Connection::open(options, &error);
  if (!connection) usage(error);
  if (verb == "submit") return submit_job(*connection, need_argument("SPEC.json"));
  if (verb == "list") {
    if (words.size() != 1) usage("list takes no arguments (use --state STATE)");
    return list_jobs(*connection, state);
  }
  if (verb == "status") return show_job(*connection, need_argument("job id"));
  if (verb == "watch") return watch_job(*connection, need_argument("job id"), reconnect_s);
  if (verb == "cancel") return cancel_job(*connection, need_argument("job id"), force);
  if (verb == "continue") return continue_job(*connection, need_argument("job id"), max_steps);
  if (verb == "delete") return delete_job(*connection, need_argument("job id"));
  if (verb == "checkpoint") return checkpoint_job(*connection, need_argument("job id"));
  if (verb == "checkpoints") return list_checkpoints(*connection, need_argument("job id"));
  if (verb == "logs") {
    return stream_logs(*connection, need_argument("job id"), follow, rank, tail, reconnect_s);
  }
  usage("unknown verb '" + verb + "'");
}
