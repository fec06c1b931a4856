// client/commands.cpp — one function per accumctl verb.
#include "client/commands.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "client/progress_bar.h"
#include "daemon/spec/spec.h"
#include "google/protobuf/util/json_util.h"

namespace accum::ctl {
namespace {

using accum::v1::JobState;

// `text` in a column `width` characters wide: cut after `width` UTF-8 characters (never
// inside one) and padded with spaces to that many, so that names in any script line up.
std::string column(const std::string& text, size_t width) {
  size_t chars = 0, end = 0;
  while (end < text.size() && chars < width) {
    ++end;
    while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) ++end;
    ++chars;
  }
  return text.substr(0, end) + std::string(width - chars, ' ');
}

std::string to_json(const google::protobuf::Message& message) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  // Every field, zeros too: a script finds the same keys on every line ("rank": 0).
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(message, &json, options);
  return json;
}

std::string state_text(JobState state) { return accum::v1::JobState_Name(state); }

std::string time_text(int64_t unix_ms) {
  const std::time_t seconds = unix_ms / 1000;
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y-%m-%d %H:%M:%S", std::localtime(&seconds));
  return buffer;
}

void print_status(const accum::v1::JobStatus& job) {
  std::cout << "id:        " << job.id() << "\n"
            << "name:      " << job.name() << "\n"
            << "state:     " << state_text(job.state()) << "\n"
            << "progress:  step " << job.last_metrics().step() << "/" << job.spec().max_steps();
  if (job.last_metrics().step() > 0) {
    const accum::v1::StepMetrics& last = job.last_metrics();
    std::cout << absl::StrFormat("  loss %s  %.0f tok/s", format_loss(last), last.tokens_per_s());
    if (last.model_tflops() > 0) {
      std::cout << absl::StrFormat("  %.3g TFLOP/s per rank", last.model_tflops());
    }
    if (last.has_mfu()) std::cout << absl::StrFormat("  MFU %.1f%%", 100.0 * last.mfu());
  }
  std::cout << "\n"
            << "ranks:     " << std::max(1, job.spec().world_size()) << "\n"
            << "restarts:  " << job.restarts()
            << (job.spec().has_max_restarts()
                    ? absl::StrCat(" of ", job.spec().max_restarts(), " allowed")
                    : std::string())
            << "\n"
            << "checkpoint: "
            << (job.latest_checkpoint_step() > 0
                    ? absl::StrCat("step ", job.latest_checkpoint_step())
                    : std::string("none of its own yet"))
            << "\n"
            << "job dir:   " << job.job_dir() << "\n";
  if (!job.message().empty()) std::cout << "message:   " << job.message() << "\n";
  std::cout << "history:\n";
  for (const auto& transition : job.transitions()) {
    std::cout << "  " << time_text(transition.time_unix_ms()) << "  " << std::left
              << absl::StrFormat("%-11s", state_text(transition.state())) << " "
              << transition.reason();
    if (!transition.message().empty()) {
      std::string message = transition.message();
      message = absl::StrReplaceAll(message, {{"\n", " | "}});  // a log tail's lines
      std::cout << ": " << message;
    }
    std::cout << "\n";
  }
}

// A job just queued: its id, or with --output json its status.
void print_queued(const Connection& connection, const accum::v1::JobStatus& job) {
  if (connection.options().json) {
    std::cout << to_json(job) << "\n";
  } else {
    std::cout << job.id() << "\n";
  }
}

// The submission's note on stderr (stdout stays the id alone, for scripts): where a continued
// job starts from and what a new max_steps changes, or where a job's checkpoints go when
// its spec named another place. Nothing when accumd had nothing to say.
void print_submission_note(const Connection& connection, const accum::v1::JobStatus& job) {
  if (connection.options().json || job.transitions_size() == 0) return;
  absl::string_view note = job.transitions(0).message();
  for (absl::string_view queued : {"; waiting for slots", "waiting for slots"}) {
    if (absl::EndsWith(note, queued)) note.remove_suffix(queued.size());
  }
  if (note.empty()) return;
  std::cout << std::flush;
  std::cerr << "accumctl: " << job.id() << " " << note << "\n";
}

}  // namespace

int submit_job(Connection& connection, const std::string& spec_path) {
  std::error_code error;
  if (std::filesystem::is_directory(spec_path, error)) {
    std::cerr << "accumctl: submit: " << spec_path << " is a folder; expected a job spec file\n";
    return kUsage;
  }
  auto text = accum::spec::read_spec_text(spec_path);
  if (!text.ok()) {
    std::cerr << "accumctl: submit: " << text.status().message() << "\n";
    return absl::IsNotFound(text.status()) ? kUsage : kInvalidArgument;
  }
  auto spec = accum::spec::parse_spec_json(*text);
  if (!spec.ok()) {
    std::cerr << "accumctl: submit: " << spec_path << ": " << spec.status().message() << "\n";
    return kInvalidArgument;
  }
  accum::v1::SubmitJobRequest request;
  *request.mutable_spec() = *spec;
  request.set_spec_dir(std::filesystem::absolute(spec_path).parent_path().string());
  accum::v1::SubmitJobResponse response;
  auto context = connection.context();
  const auto status = connection.stub().SubmitJob(context.get(), request, &response);
  if (!status.ok()) return connection.report(status, "submit " + spec_path);
  print_queued(connection, response.job());
  print_submission_note(connection, response.job());
  return kOk;
}

int continue_job(Connection& connection, const std::string& id, int64_t max_steps) {
  accum::v1::ContinueJobRequest request;
  request.set_id(id);
  request.set_max_steps(max_steps);
  accum::v1::SubmitJobResponse response;
  // accumd reads the checkpoint through (sha256) before it submits: gigabytes for big models.
  auto context = connection.context(600);
  const auto status = connection.stub().ContinueJob(context.get(), request, &response);
  if (!status.ok()) return connection.report(status, "continue " + id);
  print_queued(connection, response.job());
  print_submission_note(connection, response.job());
  return kOk;
}

int list_jobs(Connection& connection, const std::string& state_filter) {
  accum::v1::ListJobsRequest request;
  if (!state_filter.empty()) {
    JobState state;
    if (!accum::v1::JobState_Parse(absl::AsciiStrToUpper(state_filter), &state) ||
        state == accum::v1::JOB_STATE_UNSPECIFIED) {
      std::cerr << "accumctl: list --state " << state_filter
                << ": expected QUEUED, STARTING, RUNNING, RESTARTING, CANCELLING, SUCCEEDED, "
                   "FAILED or CANCELLED\n";
      return kUsage;
    }
    request.add_states(state);
  }
  request.set_page_size(500);
  bool header = !connection.options().json;  // printed once accumd has answered
  do {
    accum::v1::ListJobsResponse response;
    auto context = connection.context();
    const auto status = connection.stub().ListJobs(context.get(), request, &response);
    if (!status.ok()) return connection.report(status, "list");
    if (header) {
      std::cout << absl::StrFormat("%-12s %-20s %-11s %11s %10s %8s\n", "ID", "NAME", "STATE",
                                   "STEP", "LOSS", "RESTARTS");
      header = false;
    }
    for (const auto& job : response.jobs()) {
      if (connection.options().json) {
        std::cout << to_json(job) << "\n";
        continue;
      }
      std::cout << absl::StrFormat(
          "%-12s %s %-11s %11s %10s %8d\n", job.id(), column(job.name(), 20),
          state_text(job.state()),
          absl::StrFormat("%d/%d", job.last_metrics().step(), job.spec().max_steps()),
          format_loss(job.last_metrics()), job.restarts());
    }
    request.set_page_token(response.next_page_token());
  } while (!request.page_token().empty());
  return kOk;
}

int show_job(Connection& connection, const std::string& id) {
  accum::v1::GetJobRequest request;
  request.set_id(id);
  accum::v1::JobStatus job;
  auto context = connection.context();
  const auto status = connection.stub().GetJob(context.get(), request, &job);
  if (!status.ok()) return connection.report(status, "status " + id);
  if (connection.options().json) {
    std::cout << to_json(job) << "\n";
  } else {
    print_status(job);
  }
  return kOk;
}

namespace {

// Rides out an accumd restart under a long stream (watch, logs -f): the job goes on without
// accumd, and a restarted accumd re-attaches it, so the client waits for accumd, for up to
// `seconds`, and opens the stream again. `hint` ends the "lost accumd" line;
// `before_message` runs before either line (watch ends its progress bar there).
class Reconnection {
 public:
  Reconnection(
      Connection& connection, std::string what, int seconds, std::string hint,
      std::function<void()> before_message = [] {})
      : connection_(connection),
        what_(std::move(what)),
        seconds_(seconds),
        hint_(std::move(hint)),
        before_message_(std::move(before_message)) {}

  // For each item a stream delivers: says "reconnected" once after a loss.
  void delivered() {
    if (give_up_ == Clock::time_point{}) return;
    before_message_();
    std::cerr << "accumctl: " << what_ << ": reconnected to accumd\n";
    give_up_ = {};
  }

  // After a stream ended with `status`: true to open it again (accumd went away after the
  // stream had begun, and is back in time); false to end with `status`.
  bool again(const grpc::Status& status, bool began) {
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE || !began || seconds_ <= 0) {
      return false;
    }
    const auto now = Clock::now();
    if (give_up_ == Clock::time_point{}) {
      give_up_ = now + std::chrono::seconds(seconds_);
      before_message_();
      const ConnectionOptions& options = connection_.options();
      std::cerr << "accumctl: " << what_ << ": lost accumd at " << options.server << " ("
                << status.error_message() << ")"
                << (status.error_message().find("keepalive") != std::string::npos
                        ? absl::StrCat(
                              ": it stopped answering (no reply to a keepalive ping within ",
                              options.keepalive_timeout_s, " s)")
                        : std::string())
                << "; reconnecting for up to " << seconds_ << " s (" << hint_ << ")\n";
    } else if (now >= give_up_) {
      return false;
    }
    return connection_.wait_for_connection(give_up_);
  }

 private:
  using Clock = std::chrono::system_clock;
  Connection& connection_;
  const std::string what_;
  const int seconds_;
  const std::string hint_;
  const std::function<void()> before_message_;
  Clock::time_point give_up_{};  // set while accumd is lost
};

// What one `accumctl watch` has shown so far, across reconnections: a stream after a
// reconnect replays the job's history, and only what is new gets shown.
struct WatchView {
  bool tty = false, json = false;
  JobState state = accum::v1::JOB_STATE_UNSPECIFIED;
  int64_t max_steps = 0;
  int64_t last_step = 0;     // of the last metrics shown
  int64_t skip_through = 0;  // after a reconnection: the replayed steps already shown
  std::string last_status;   // state and message last printed
  bool bar_shown = false;

  void show(const accum::v1::JobEvent& event) {
    if (event.has_status()) {
      const auto& job = event.status();
      state = job.state();
      max_steps = job.spec().max_steps();
      std::string message = job.message();
      message = absl::StrReplaceAll(message, {{"\n", " | "}});  // a log tail's lines
      const std::string line =
          absl::StrCat(job.id(), " ", state_text(state), message.empty() ? "" : ": ", message);
      if (line == last_status) return;
      last_status = line;
      if (json) {
        std::cout << to_json(event) << std::endl;
        return;
      }
      if (bar_shown) std::cout << "\n";
      bar_shown = false;
      std::cout << line << std::endl;
    } else if (event.has_metrics()) {
      // A stream after a reconnection replays the history: skip up to what was shown.
      // Steps that go back otherwise are a restarted attempt's, and are shown.
      if (skip_through > 0 && event.metrics().step() <= skip_through) return;
      skip_through = 0;
      last_step = event.metrics().step();
      if (json) {
        std::cout << to_json(event) << std::endl;
        return;
      }
      if (event.metrics().max_steps() > 0) max_steps = event.metrics().max_steps();
      if (tty) {
        std::cout << "\r\033[K"
                  << format_progress_bar(event.metrics(), max_steps, state_text(state))
                  << std::flush;
        bar_shown = true;
      } else {
        std::cout << format_step_line(event.metrics(), max_steps) << std::endl;
      }
    }
  }
  void end_line() {
    if (bar_shown) std::cout << "\n";
    bar_shown = false;
  }
};

}  // namespace

int watch_job(Connection& connection, const std::string& id, int reconnect_s) {
  WatchView view;
  view.json = connection.options().json;
  view.tty = isatty(STDOUT_FILENO) && !view.json;
  Reconnection reconnection(connection, "watch " + id, reconnect_s,
                            "--reconnect-s; Ctrl-C stops watching, not the job",
                            [&] { view.end_line(); });
  bool connected = false;  // a stream delivered an event: accumd knew the job
  grpc::Status status;
  while (true) {
    accum::v1::WatchJobRequest request;
    request.set_id(id);
    auto context = connection.context(0);
    auto reader = connection.stub().WatchJob(context.get(), request);
    accum::v1::JobEvent event;
    while (reader->Read(&event)) {
      reconnection.delivered();
      connected = true;
      view.show(event);
    }
    status = reader->Finish();
    if (!reconnection.again(status, connected)) break;
    view.skip_through = view.last_step;
  }
  view.end_line();
  if (!status.ok()) return connection.report(status, "watch " + id);
  if (view.state == accum::v1::SUCCEEDED) return kOk;
  if (view.state == accum::v1::FAILED || view.state == accum::v1::CANCELLED) {
    return kJobNotSucceeded;
  }
  std::cerr << "accumctl: watch " << id << ": the stream ended while the job was "
            << state_text(view.state) << "\n";
  return kUnreachable;
}

int cancel_job(Connection& connection, const std::string& id, bool force) {
  accum::v1::CancelJobRequest request;
  request.set_id(id);
  request.set_force(force);
  accum::v1::JobStatus job;
  auto context = connection.context();
  const auto status = connection.stub().CancelJob(context.get(), request, &job);
  if (!status.ok()) return connection.report(status, "cancel " + id);
  if (connection.options().json) {
    std::cout << to_json(job) << "\n";
  } else {
    std::cout << job.id() << " " << state_text(job.state()) << ": " << job.message() << "\n";
  }
  return kOk;
}

int delete_job(Connection& connection, const std::string& id) {
  accum::v1::DeleteJobRequest request;
  request.set_id(id);
  accum::v1::DeleteJobResponse response;
  auto context = connection.context(600);  // removing a folder of big checkpoints takes a while
  const auto status = connection.stub().DeleteJob(context.get(), request, &response);
  if (!status.ok()) return connection.report(status, "delete " + id);
  if (connection.options().json) {
    std::cout << to_json(response) << "\n";
  } else {
    std::cout << "deleted " << response.id() << ": removed " << response.job_dir() << " ("
              << response.bytes_freed() << " bytes)\n";
  }
  return kOk;
}

int checkpoint_job(Connection& connection, const std::string& id) {
  accum::v1::CheckpointJobRequest request;
  request.set_id(id);
  accum::v1::CheckpointInfo info;
  auto context = connection.context(600);
  const auto status = connection.stub().CheckpointJob(context.get(), request, &info);
  if (!status.ok()) return connection.report(status, "checkpoint " + id);
  if (connection.options().json) {
    std::cout << to_json(info) << "\n";
  } else {
    std::cout << "checkpoint at step " << info.step() << ": " << info.path() << " (" << info.bytes()
              << " bytes)\n";
  }
  return kOk;
}

int list_checkpoints(Connection& connection, const std::string& id) {
  accum::v1::ListCheckpointsRequest request;
  request.set_id(id);
  accum::v1::ListCheckpointsResponse response;
  auto context = connection.context();
  const auto status = connection.stub().ListCheckpoints(context.get(), request, &response);
  if (!status.ok()) return connection.report(status, "checkpoints " + id);
  if (connection.options().json) {
    std::cout << to_json(response) << "\n";
    return kOk;
  }
  std::cout << absl::StrFormat("%8s  %12s  %-19s  %s\n", "STEP", "BYTES", "TIME", "PATH");
  for (const auto& info : response.checkpoints()) {
    std::cout << absl::StrFormat("%8d  %12d  %-19s  %s\n", info.step(), info.bytes(),
                                 time_text(info.time_unix_ms()), info.path());
  }
  return kOk;
}

int stream_logs(Connection& connection, const std::string& id, bool follow, int rank, int tail,
                int reconnect_s) {
  std::map<int, int64_t> next;  // rank -> index of the next line not yet printed
  bool began = false;
  // Only a follow waits for accumd: the others end with what they have.
  Reconnection reconnection(connection, "logs " + id, follow ? reconnect_s : 0, "--reconnect-s");
  grpc::Status status;
  while (true) {
    accum::v1::StreamLogsRequest request;
    request.set_id(id);
    request.set_follow(follow);
    request.set_rank(rank);
    request.set_tail(began ? 0 : tail);  // after a reconnection: all, less what was printed
    auto context = connection.context(follow ? 0 : 60);
    auto reader = connection.stub().StreamLogs(context.get(), request);
    // A follow that reached accumd has begun, lines or not (a new job's log may be empty).
    began = began || (follow && connection.connected());
    accum::v1::LogLine line;
    while (reader->Read(&line)) {
      reconnection.delivered();
      began = true;
      auto [seen, fresh] = next.try_emplace(line.rank(), 0);
      if (!fresh && line.index() < seen->second) continue;  // printed before a reconnection
      seen->second = line.index() + 1;
      if (connection.options().json) {
        std::cout << to_json(line) << "\n";
      } else {
        std::cout << "[rank " << line.rank() << "] " << line.line() << "\n";
      }
      if (follow) std::cout.flush();  // as it comes, also into a pipe or a file
    }
    std::cout.flush();
    status = reader->Finish();
    if (!reconnection.again(status, began)) break;
  }
  if (!status.ok()) return connection.report(status, "logs " + id);
  return kOk;
}

}  // namespace accum::ctl
