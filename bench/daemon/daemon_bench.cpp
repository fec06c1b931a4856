// daemon_bench — load generator and timer for accumd (issue 5, "Benchmark").
//
// Talks to a running accumd (bench/daemon/run.sh starts one) and prints
// Markdown tables:
//   throughput: the same training job run under each load condition, rounds
//     interleaved (round r runs the conditions rotated by r, a Latin square, so
//     slow drifts of a shared machine hit every condition alike). A loaded run
//     starts its GetJob clients at the job's first optimizer step and stops
//     them when the job ends, so the load covers every measured step. Reports
//     the job's tokens/s per run, the median over rounds, the slowdown against
//     the unloaded runs, and the GetJob latencies of the loaded runs.
//   startup: SubmitJob -> STARTING -> RUNNING -> first optimizer step (first
//     metrics event on WatchJob) of a small job, run after run.
//
//   daemon_bench --server HOST:PORT --token-file F --spec SPEC.json
//                [--phase all|throughput|startup] [--rounds 3] [--clients 64]
//                [--channels private|shared] [--conditions none,closed,paced:10]
//                [--skip-steps 5] [--startup-runs 5] [--startup-max-steps 2]
//                [--pin-worker-cpus LIST]
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/daemon/bench_connection.h"
#include "bench/daemon/cpu_pinning.h"
#include "bench/daemon/getjob_load.h"
#include "bench/daemon/job_run.h"
#include "bench/daemon/latency_stats.h"
#include "daemon/spec/spec.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace {

using accum::bench::fixed;
using accum::bench::median;

constexpr const char* kUsage = R"(usage: daemon_bench --server HOST:PORT --spec SPEC.json [options]
  --token-file F            bearer token for accumd
  --phase P                 all | throughput | startup (default all)
  --rounds N                interleaved rounds of the throughput phase (default 3)
  --conditions LIST         load conditions, comma-separated: none | closed | paced:HZ
                            (default none,closed)
  --clients N               concurrent GetJob clients in a loaded run (default 64)
  --channels M              private (one channel + TCP connection per client) | shared
  --skip-steps N            steps left out of tokens/s at the start of a run (default 5)
  --startup-runs N          jobs timed from SubmitJob to the first step (default 5)
  --startup-max-steps N     max_steps of those jobs (default 2)
  --job-timeout-s S         a job that runs longer fails the benchmark (default 600)
  --pin-worker-cpus LIST    at its first step, move the training worker to these CPUs
                            (e.g. 0; run accumd and daemon_bench on the others with taskset)
)";

struct Options {
  std::string server;
  std::string token_file;
  std::string spec_path;
  std::string phase = "all";
  int rounds = 3;
  std::vector<std::string> conditions = {"none", "closed"};
  int clients = 64;
  bool shared_channel = false;
  int skip_steps = 5;
  int startup_runs = 5;
  int startup_max_steps = 2;
  int job_timeout_s = 600;
  std::vector<int> worker_cpus;  // empty: leave the worker where the kernel puts it
};

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "daemon_bench: " << message << "\n\n" << kUsage;
  std::exit(2);
}

int parse_int(const std::string& flag, const std::string& value, int min) {
  int number = 0;
  if (!absl::SimpleAtoi(value, &number) || number < min) {
    usage_error(absl::StrCat(flag, " '", value, "': expected an integer >= ", min));
  }
  return number;
}

// "none" -> nullopt (no load); "closed" -> 0 Hz; "paced:HZ" -> HZ per client.
std::optional<double> condition_rate(const std::string& condition) {
  if (condition == "none") return std::nullopt;
  if (condition == "closed") return 0.0;
  double hz = 0;
  if (condition.rfind("paced:", 0) == 0 && absl::SimpleAtod(condition.substr(6), &hz) && hz > 0) {
    return hz;
  }
  usage_error(
      absl::StrCat("--conditions: '", condition, "'; expected none, closed or paced:HZ (HZ > 0)"));
}

Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (i + 1 >= argc) usage_error(flag + ": missing value (or unknown flag)");
    const std::string value = argv[++i];
    if (flag == "--server") {
      options.server = value;
    } else if (flag == "--token-file") {
      options.token_file = value;
    } else if (flag == "--spec") {
      options.spec_path = value;
    } else if (flag == "--phase") {
      options.phase = value;
    } else if (flag == "--rounds") {
      options.rounds = parse_int(flag, value, 1);
    } else if (flag == "--conditions") {
      options.conditions = absl::StrSplit(value, ',', absl::SkipEmpty());
    } else if (flag == "--clients") {
      options.clients = parse_int(flag, value, 1);
    } else if (flag == "--channels") {
      if (value != "private" && value != "shared") {
        usage_error("--channels: expected private or shared");
      }
      options.shared_channel = value == "shared";
    } else if (flag == "--skip-steps") {
      options.skip_steps = parse_int(flag, value, 0);
    } else if (flag == "--startup-runs") {
      options.startup_runs = parse_int(flag, value, 1);
    } else if (flag == "--startup-max-steps") {
      options.startup_max_steps = parse_int(flag, value, 1);
    } else if (flag == "--job-timeout-s") {
      options.job_timeout_s = parse_int(flag, value, 1);
    } else if (flag == "--pin-worker-cpus") {
      auto cpus = accum::bench::parse_cpu_list(value);
      if (!cpus.ok()) usage_error(absl::StrCat("--pin-worker-cpus: ", cpus.status().message()));
      options.worker_cpus = *std::move(cpus);
    } else {
      usage_error("unknown flag " + flag);
    }
  }
  if (options.server.empty()) usage_error("--server is required");
  if (options.spec_path.empty()) usage_error("--spec is required");
  if (options.phase != "all" && options.phase != "throughput" && options.phase != "startup") {
    usage_error("--phase: expected all, throughput or startup");
  }
  if (options.conditions.empty()) usage_error("--conditions: empty");
  for (const auto& condition : options.conditions) (void)condition_rate(condition);
  return options;
}

struct ConditionRuns {
  std::vector<double> tokens_per_s;
  std::vector<double> samples_us;  // pooled GetJob latencies of every run
  int64_t errors = 0;
  double seconds = 0;
};

std::string describe_load(const Options& options, double rate_hz) {
  return absl::StrCat(
      options.clients, " clients, ",
      options.shared_channel ? "one shared channel" : "one channel (TCP connection) each",
      rate_hz > 0 ? absl::StrCat(", each ", fixed(rate_hz, 0), " GetJob/s")
                  : ", closed loop (back to back)");
}

int throughput_phase(const Options& options, const accum::bench::BenchConnection& connection,
                     const accum::v1::JobSpec& spec, const std::string& spec_dir) {
  std::cout << "### Training throughput with and without GetJob load\n\n"
            << "| round | condition | job | state | steps counted | tokens/s (mean) | tokens/s "
               "(median step) "
               "| tokens/s (WatchJob wall) | GetJob calls | calls/s | p50 ms | p99 ms | p99.9 ms | "
               "max ms | errors |\n"
            << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  std::map<std::string, ConditionRuns> by_condition;
  const int n = static_cast<int>(options.conditions.size());
  for (int round = 0; round < options.rounds; ++round) {
    for (int k = 0; k < n; ++k) {
      const std::string& condition = options.conditions[(k + round) % n];
      const auto rate = condition_rate(condition);
      std::unique_ptr<accum::bench::GetJobLoad> load;
      if (rate) {
        accum::bench::LoadOptions load_options;
        load_options.clients = options.clients;
        load_options.shared_channel = options.shared_channel;
        load_options.rate_per_client_hz = *rate;
        load = std::make_unique<accum::bench::GetJobLoad>(&connection, load_options);
      }
      spdlog::info("round {} condition {}: submitting", round + 1, condition);
      auto run = accum::bench::run_job(
          connection, spec, spec_dir, options.skip_steps,
          [&](const std::string& id, const std::string& job_dir) {
            if (!options.worker_cpus.empty()) {
              auto pinned = accum::bench::pin_job_processes(job_dir, options.worker_cpus);
              if (!pinned.ok()) spdlog::warn("{}", std::string(pinned.status().message()));
            }
            if (load) load->start(id);
          },
          std::chrono::seconds(options.job_timeout_s));
      accum::bench::LoadResult loaded;
      if (load) loaded = load->stop();
      if (!run.ok()) {
        spdlog::error("round {} condition {}: {}", round + 1, condition,
                      std::string(run.status().message()));
        return 1;
      }
      const auto throughput = accum::bench::throughput_of(run->metrics, options.skip_steps);
      auto& runs = by_condition[condition];
      runs.tokens_per_s.push_back(throughput.tokens_per_s);
      runs.errors += loaded.errors;
      runs.seconds += loaded.seconds;
      runs.samples_us.insert(runs.samples_us.end(), loaded.samples_us.begin(),
                             loaded.samples_us.end());
      std::cout << "| " << round + 1 << " | " << condition << " | " << run->id << " | "
                << accum::v1::JobState_Name(run->final_state) << " | " << throughput.steps << " | "
                << fixed(throughput.tokens_per_s, 0) << " | "
                << fixed(throughput.median_step_tokens_per_s, 0) << " | "
                << fixed(run->watched_tokens_per_s, 0) << " | ";
      if (load) {
        std::cout << loaded.latency.count << " | " << fixed(loaded.requests_per_s, 0) << " | "
                  << fixed(loaded.latency.p50_ms, 3) << " | " << fixed(loaded.latency.p99_ms, 3)
                  << " | " << fixed(loaded.latency.p999_ms, 3) << " | "
                  << fixed(loaded.latency.max_ms, 3) << " | " << loaded.errors
                  << (loaded.first_error.empty() ? "" : " (" + loaded.first_error + ")") << " |\n";
      } else {
        std::cout << "- | - | - | - | - | - | - |\n";
      }
      std::cout.flush();
      if (run->final_state != accum::v1::SUCCEEDED) {
        spdlog::error("job {} ended {}", run->id, accum::v1::JobState_Name(run->final_state));
        return 1;
      }
    }
  }
  const double baseline =
      by_condition.count("none") ? median(by_condition["none"].tokens_per_s) : 0;
  std::cout << "\n### Summary (median over " << options.rounds << " rounds)\n\n"
            << "| condition | load | tokens/s (median of runs) | slowdown vs none | GetJob calls/s "
               "| p50 ms | p99 ms | p99.9 ms | max ms | errors |\n"
            << "|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& condition : options.conditions) {
    auto& runs = by_condition[condition];
    const auto rate = condition_rate(condition);
    const double tokens = median(runs.tokens_per_s);
    std::cout << "| " << condition << " | "
              << (rate ? describe_load(options, *rate) : "no GetJob load") << " | "
              << fixed(tokens, 0) << " | "
              << (baseline > 0 && rate ? fixed(100.0 * (1.0 - tokens / baseline), 1) + " %" : "-")
              << " | ";
    if (rate) {
      const auto pooled = accum::bench::summarize_latencies(&runs.samples_us);
      std::cout << fixed(runs.seconds > 0 ? pooled.count / runs.seconds : 0, 0) << " | "
                << fixed(pooled.p50_ms, 3) << " | " << fixed(pooled.p99_ms, 3) << " | "
                << fixed(pooled.p999_ms, 3) << " | " << fixed(pooled.max_ms, 3) << " | "
                << runs.errors << " |\n";
    } else {
      std::cout << "- | - | - | - | - | - |\n";
    }
  }
  std::cout << "\nLatency columns of the summary pool every call of that condition's runs.\n\n";
  return 0;
}

int startup_phase(const Options& options, const accum::bench::BenchConnection& connection,
                  accum::v1::JobSpec spec, const std::string& spec_dir) {
  spec.set_max_steps(options.startup_max_steps);
  spec.set_name("startup-" + spec.name());
  std::cout
      << "### SubmitJob to the first optimizer step (" << options.startup_max_steps
      << "-step job, no other load)\n\n"
      << "| run | job | SubmitJob RPC ms | -> STARTING ms | -> RUNNING ms | -> first step ms |\n"
      << "|---|---|---|---|---|---|\n";
  std::vector<double> submit, starting, running, first_step;
  for (int i = 0; i < options.startup_runs; ++i) {
    auto run = accum::bench::run_job(connection, spec, spec_dir, 0, nullptr,
                                     std::chrono::seconds(options.job_timeout_s));
    if (!run.ok()) {
      spdlog::error("startup run {}: {}", i + 1, std::string(run.status().message()));
      return 1;
    }
    if (run->final_state != accum::v1::SUCCEEDED || run->to_first_step_ms < 0) {
      spdlog::error("startup job {} ended {} (first step seen: {})", run->id,
                    accum::v1::JobState_Name(run->final_state), run->to_first_step_ms >= 0);
      return 1;
    }
    submit.push_back(run->submit_rpc_ms);
    starting.push_back(run->to_starting_ms);
    running.push_back(run->to_running_ms);
    first_step.push_back(run->to_first_step_ms);
    std::cout << "| " << i + 1 << " | " << run->id << " | " << fixed(run->submit_rpc_ms, 1) << " | "
              << fixed(run->to_starting_ms, 0) << " | " << fixed(run->to_running_ms, 0) << " | "
              << fixed(run->to_first_step_ms, 1) << " |\n";
    std::cout.flush();
  }
  std::cout << "| **median** | | " << fixed(median(submit), 1) << " | "
            << fixed(median(starting), 0) << " | " << fixed(median(running), 0) << " | **"
            << fixed(median(first_step), 1) << "** |\n\n"
            << "STARTING and RUNNING are the daemon's transition times (unix ms, so whole-ms "
               "resolution); "
               "the first step is when its metrics event reached this client on WatchJob.\n\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse_options(argc, argv);
  // The tables go to stdout; progress and errors to stderr.
  spdlog::set_default_logger(spdlog::stderr_color_mt("daemon_bench"));
  spdlog::set_pattern("[%H:%M:%S.%e] [daemon_bench] [%l] %v");
  auto connection = accum::bench::BenchConnection::open(options.server, options.token_file);
  if (!connection.ok()) {
    spdlog::error("{}", std::string(connection.status().message()));
    return 2;
  }
  auto spec = accum::spec::load_spec_file(options.spec_path);
  if (!spec.ok()) {
    spdlog::error("{}", std::string(spec.status().message()));
    return 2;
  }
  const std::string spec_dir =
      std::filesystem::absolute(options.spec_path).parent_path().lexically_normal().string();
  if (options.phase == "all" || options.phase == "throughput") {
    if (int rc = throughput_phase(options, *connection, *spec, spec_dir); rc != 0) return rc;
  }
  if (options.phase == "all" || options.phase == "startup") {
    if (int rc = startup_phase(options, *connection, *spec, spec_dir); rc != 0) return rc;
  }
  return 0;
}
