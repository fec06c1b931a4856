// control/job_store.cpp — SQLite implementation of JobStore.
//
// Statements are prepared per call (the store handles a few writes per second;
// clarity beats caching). Specs and metrics are stored as canonical JSON so the
// database stays readable with the sqlite3 shell.
#include "daemon/control/job_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <utility>
#include <variant>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "daemon/control/job_state.h"
#include "google/protobuf/util/json_util.h"
#include "spdlog/spdlog.h"

namespace accum::control {
namespace {

using Arg = std::variant<int64_t, std::string>;

constexpr size_t kMaxCachedJobs = 4096;  // beyond this the read cache starts over

// The schema's version, kept in the database as SQLite's user_version. 1: the schema below
// (0: a database from before versions, which the schema below upgrades by adding its tables);
// 2: jobs gained the columns of kAddedColumns. A database from a newer accumd is refused
// rather than written by code that does not know it.
constexpr int kSchemaVersion = 2;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, seq INTEGER UNIQUE NOT NULL, name TEXT NOT NULL, state INTEGER NOT NULL,
  spec_json TEXT NOT NULL, spec_dir TEXT NOT NULL, job_dir TEXT NOT NULL,
  world_size INTEGER NOT NULL, restarts INTEGER NOT NULL DEFAULT 0,
  attempt INTEGER NOT NULL DEFAULT 0, message TEXT NOT NULL DEFAULT '',
  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
  launcher_pid INTEGER NOT NULL DEFAULT 0, launcher_start_ticks INTEGER NOT NULL DEFAULT 0,
  latest_checkpoint_step INTEGER NOT NULL DEFAULT 0, last_metrics_json TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS transitions (
  job_id TEXT NOT NULL, seq INTEGER PRIMARY KEY AUTOINCREMENT, state INTEGER NOT NULL,
  time_ms INTEGER NOT NULL, reason TEXT NOT NULL, message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS transitions_by_job ON transitions(job_id, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deleted_jobs (id TEXT PRIMARY KEY, seq INTEGER NOT NULL);
)sql";

// Columns added to `jobs` after version 1, with the version that added them. An older
// database gains each it lacks (ALTER TABLE), with a default that means what the older accumd
// did: no forced cancel, no restart delay left.
struct AddedColumn {
  int version;
  const char* name;
  const char* definition;
};
constexpr AddedColumn kAddedColumns[] = {
    {2, "force_cancel", "INTEGER NOT NULL DEFAULT 0"},
    {2, "restart_due_ms", "INTEGER NOT NULL DEFAULT 0"},
};

constexpr const char* kJobColumns =
    "id, name, state, spec_json, spec_dir, job_dir, world_size, restarts, attempt, message, "
    "created_ms, updated_ms, launcher_pid, launcher_start_ticks, latest_checkpoint_step, "
    "last_metrics_json, force_cancel, restart_due_ms";

// The status of SQLite's last error on `db`. A full disk is RESOURCE_EXHAUSTED and names
// the database file: the write was rolled back, and freeing space is what the user can do.
absl::Status sqlite_error(sqlite3* db, absl::string_view what, absl::string_view detail = "") {
  const std::string message = absl::StrCat("sqlite ", what, ": ", sqlite3_errmsg(db), detail);
  if (sqlite3_errcode(db) == SQLITE_FULL) {
    const char* file = sqlite3_db_filename(db, "main");
    return absl::ResourceExhaustedError(absl::StrCat("job database ", file != nullptr ? file : "",
                                                     ": the disk is full, so nothing was written ",
                                                     "(", message, "); free space and retry"));
  }
  return absl::InternalError(message);
}

// TEST ONLY: with ACCUM_TEST_REFUSE_TRANSITIONS=STATE:N (e.g. FAILED:20) in its environment,
// the store refuses the first N transitions into STATE as a full disk would, writing
// nothing; other transitions and writes go through. It opens the window in which accumd
// must keep a job's outcome and retry it (tests/daemon/e2e_launch_failure_test.cpp), which a
// real full disk opens only by chance between two writes. Never set it in production.
bool refuse_transition_for_test(accum::v1::JobState to) {
  struct Refusals {
    accum::v1::JobState state = accum::v1::JOB_STATE_UNSPECIFIED;
    std::atomic<int> left{0};
  };
  static Refusals* const refusals = [] {
    auto* parsed = new Refusals;
    const char* value = std::getenv("ACCUM_TEST_REFUSE_TRANSITIONS");
    if (value == nullptr) return parsed;
    const std::pair<std::string, std::string> parts =
        absl::StrSplit(value, absl::MaxSplits(':', 1));
    int count = 0;
    if (!accum::v1::JobState_Parse(parts.first, &parsed->state) ||
        !absl::SimpleAtoi(parts.second, &count) || count < 0) {
      spdlog::error("ACCUM_TEST_REFUSE_TRANSITIONS='{}' ignored: expected STATE:N", value);
      return parsed;
    }
    parsed->left = count;
    spdlog::warn("TEST ONLY: the job store refuses the next {} transitions to {}", count,
                 parts.first);
    return parsed;
  }();
  if (to != refusals->state) return false;
  int left = refusals->left.load();
  while (left > 0 && !refusals->left.compare_exchange_weak(left, left - 1)) {
  }
  return left > 0;
}

// A prepared statement that finalizes itself.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  absl::Status bind(const std::vector<Arg>& args) {
    if (rc_ != SQLITE_OK) return error("prepare");
    for (size_t i = 0; i < args.size(); ++i) {
      const int index = static_cast<int>(i) + 1;
      int rc;
      if (const auto* number = std::get_if<int64_t>(&args[i])) {
        rc = sqlite3_bind_int64(stmt_, index, *number);
      } else {
        const auto& text = std::get<std::string>(args[i]);
        rc = sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()),
                               SQLITE_TRANSIENT);
      }
      if (rc != SQLITE_OK) return error("bind");
    }
    return absl::OkStatus();
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int step() { return sqlite3_step(stmt_); }
  int64_t integer(int column) { return sqlite3_column_int64(stmt_, column); }
  std::string text(int column) {
    const auto* bytes = sqlite3_column_text(stmt_, column);
    return bytes ? std::string(reinterpret_cast<const char*>(bytes)) : std::string();
  }
  absl::Status error(const char* what) { return sqlite_error(db_, what); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

absl::Status run(sqlite3* db, const std::string& sql, const std::vector<Arg>& args) {
  Statement statement(db, sql);
  if (auto status = statement.bind(args); !status.ok()) return status;
  const int rc = statement.step();
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) return statement.error("step");
  return absl::OkStatus();
}

std::string to_json(const google::protobuf::Message& message) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &json, options);
  return json;
}

absl::StatusOr<JobRecord> read_record(Statement& row) {
  JobRecord record;
  record.id = row.text(0);
  record.name = row.text(1);
  record.state = static_cast<accum::v1::JobState>(row.integer(2));
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  if (!google::protobuf::util::JsonStringToMessage(row.text(3), &record.spec, options).ok()) {
    return absl::DataLossError(absl::StrCat("job ", record.id, ": stored spec_json is unreadable"));
  }
  record.spec_dir = row.text(4);
  record.job_dir = row.text(5);
  record.world_size = static_cast<int>(row.integer(6));
  record.restarts = static_cast<int>(row.integer(7));
  record.attempt = static_cast<int>(row.integer(8));
  record.message = row.text(9);
  record.created_ms = row.integer(10);
  record.updated_ms = row.integer(11);
  record.launcher_pid = row.integer(12);
  record.launcher_start_ticks = row.integer(13);
  record.latest_checkpoint_step = row.integer(14);
  const std::string metrics = row.text(15);
  if (!metrics.empty()) {
    (void)google::protobuf::util::JsonStringToMessage(metrics, &record.last_metrics, options);
  }
  record.force_cancel = row.integer(16) != 0;
  record.restart_due_ms = row.integer(17);
  return record;
}

// `lists`: a row that cannot be read is left out (logged) instead of failing the query.
absl::StatusOr<std::vector<JobRecord>> query_records(sqlite3* db, const std::string& sql,
                                                     const std::vector<Arg>& args,
                                                     bool lists = true) {
  Statement statement(db, sql);
  if (auto status = statement.bind(args); !status.ok()) return status;
  std::vector<JobRecord> records;
  for (int rc = statement.step(); rc != SQLITE_DONE; rc = statement.step()) {
    if (rc != SQLITE_ROW) return statement.error("query");
    auto record = read_record(statement);
    if (!record.ok() && !lists) return record.status();
    if (!record.ok()) {
      // One damaged row does not hide the others (a list, accumd's start); GetJob of that
      // id answers DATA_LOSS.
      spdlog::error("job database {}: {}; left out", sqlite3_db_filename(db, "main"),
                    std::string(record.status().message()));
      continue;
    }
    records.push_back(*std::move(record));
  }
  return records;
}

}  // namespace

int64_t now_unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::open(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    std::string why = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open job database ", path, ": ", why));
  }
  sqlite3_busy_timeout(db, 5000);
  std::unique_ptr<JobStore> store(new JobStore(db));
  // A file that is not a database, or one damaged beyond SQLite's own recovery, is named with
  // what the user can do; a full disk keeps its RESOURCE_EXHAUSTED.
  auto unusable = [&](const absl::Status& status) {
    if (!absl::IsInternal(status)) return status;
    // Locked (past the busy timeout) is not damaged: another program holds a transaction
    // on the file, and moving the database aside would lose every job record for nothing.
    if (const int code = sqlite3_errcode(db); code == SQLITE_BUSY || code == SQLITE_LOCKED) {
      return absl::UnavailableError(absl::StrCat(
          "job database ", path, " is locked by another program (", status.message(),
          ") and was not changed; end that program's transaction (an sqlite3 shell, a backup "
          "tool) and start accumd again"));
    }
    return absl::DataLossError(absl::StrCat(
        "job database ", path, " cannot be used (", status.message(),
        "); move it aside to start with an empty one (each job's folder under the state dir "
        "keeps its spec.json), or put back a copy"));
  };
  for (const char* pragma : {"PRAGMA journal_mode=WAL;", "PRAGMA synchronous=FULL;"}) {
    if (auto status = store->exec(pragma); !status.ok()) return unusable(status);
  }
  int64_t found_version = 0;
  {
    Statement version(db, "PRAGMA user_version;");
    if (version.step() != SQLITE_ROW) return unusable(version.error("user_version"));
    if (const int64_t found = found_version = version.integer(0); found > kSchemaVersion) {
      return absl::FailedPreconditionError(
          absl::StrCat("job database ", path, " has schema version ", found,
                       ", newer than this accumd's (", kSchemaVersion,
                       "): a newer accumd wrote it; run that accumd on this state dir, or "
                       "give this one another --state-dir. The database was not changed"));
    }
  }
  if (auto status = store->exec(kSchema); !status.ok()) return unusable(status);
  // Written only when it changes: an accumd that starts on a full disk must still open it.
  // A migration that fails changed nothing (one transaction, migrate()), so the advice for
  // a damaged file does not fit it: the next start simply tries it again.
  if (found_version != kSchemaVersion) {
    if (auto status = store->migrate(found_version); !status.ok()) {
      if (!absl::IsInternal(status)) return status;  // a full disk keeps RESOURCE_EXHAUSTED
      return absl::UnavailableError(
          absl::StrCat("job database ", path, ": upgrading its schema from version ", found_version,
                       " to ", kSchemaVersion, " failed (", status.message(),
                       "); the upgrade was rolled back, leaving the database unchanged at version ",
                       found_version, ", and accumd tries it again when it next starts"));
    }
  }
  {
    Statement check(db, "PRAGMA quick_check;");
    std::vector<std::string> problems;
    for (int rc = check.step(); rc == SQLITE_ROW; rc = check.step()) {
      if (check.text(0) != "ok") problems.push_back(check.text(0));
    }
    if (!problems.empty()) {
      return unusable(absl::InternalError(absl::StrCat(
          "quick_check: ",
          absl::StrJoin(problems.begin(), problems.begin() + std::min<size_t>(problems.size(), 3),
                        "; "))));
    }
  }
  return store;
}

JobStore::~JobStore() { sqlite3_close(db_); }

absl::Status JobStore::migrate(int64_t found_version) {
  // Which columns `jobs` has: a database that says version 0 may hold any of them already
  // (an accumd that died between creating the table and recording the version).
  std::vector<std::string> have;
  {
    Statement columns(db_, "PRAGMA table_info(jobs);");
    for (int rc = columns.step(); rc != SQLITE_DONE; rc = columns.step()) {
      if (rc != SQLITE_ROW) return columns.error("table_info");
      have.push_back(columns.text(1));
    }
  }
  // The columns and the new version in one transaction: both, or (a crash, a full disk)
  // neither, and the next start tries again.
  if (auto status = exec("BEGIN IMMEDIATE"); !status.ok()) return status;
  absl::Status status;
  for (const AddedColumn& column : kAddedColumns) {
    if (column.version <= found_version ||
        std::find(have.begin(), have.end(), column.name) != have.end()) {
      continue;
    }
    status = exec(
        absl::StrCat("ALTER TABLE jobs ADD COLUMN ", column.name, " ", column.definition, ";"));
    if (!status.ok()) break;
  }
  if (status.ok()) status = exec(absl::StrCat("PRAGMA user_version = ", kSchemaVersion, ";"));
  if (!status.ok()) {
    (void)exec("ROLLBACK");
    return status;
  }
  // A COMMIT that fails may leave the transaction open (SQLITE_BUSY does): it is rolled back
  // here, so that a failed upgrade never leaves anything of itself behind.
  if (status = exec("COMMIT"); !status.ok()) {
    (void)exec("ROLLBACK");
    return status;
  }
  if (found_version > 0) {
    spdlog::info("job database {}: schema upgraded from version {} to {}",
                 sqlite3_db_filename(db_, "main"), found_version, kSchemaVersion);
  }
  return absl::OkStatus();
}

absl::Status JobStore::exec(const std::string& sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
    sqlite3_free(error);  // sqlite3_errmsg(db_) says the same
    return sqlite_error(db_, "exec", absl::StrCat(" in: ", sql.substr(0, 60)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> JobStore::next_id() {
  std::lock_guard lock(mutex_);
  if (auto s = run(db_,
                   "INSERT INTO counters(name, value) VALUES('job', 1) "
                   "ON CONFLICT(name) DO UPDATE SET value = value + 1",
                   {});
      !s.ok()) {
    return s;
  }
  Statement statement(db_, "SELECT value FROM counters WHERE name = 'job'");
  if (statement.step() != SQLITE_ROW) return statement.error("counter");
  return absl::StrFormat("job-%06d", statement.integer(0));
}

void JobStore::forget_locked(const std::string& id) {
  record_cache_.erase(id);
  transitions_cache_.erase(id);
}

absl::Status JobStore::insert(const JobRecord& r, const std::string& reason) {
  std::lock_guard lock(mutex_);
  forget_locked(r.id);
  const int64_t now = r.created_ms ? r.created_ms : now_unix_ms();
  if (auto s = exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  auto s = run(db_,
               absl::StrCat("INSERT INTO jobs(", kJobColumns,
                            ", seq) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,"
                            "(SELECT MAX((SELECT IFNULL(MAX(seq),0) FROM jobs), "
                            "(SELECT IFNULL(MAX(seq),0) FROM deleted_jobs))+1))"),
               {r.id, r.name, int64_t{r.state}, to_json(r.spec), r.spec_dir, r.job_dir,
                int64_t{r.world_size}, int64_t{r.restarts}, int64_t{r.attempt}, r.message, now, now,
                r.launcher_pid, r.launcher_start_ticks, r.latest_checkpoint_step, std::string(),
                int64_t{r.force_cancel}, r.restart_due_ms});
  if (s.ok()) {
    s = run(db_,
            "INSERT INTO transitions(job_id, state, time_ms, reason, message) VALUES(?,?,?,?,?)",
            {r.id, int64_t{r.state}, now, reason, r.message});
  }
  if (!s.ok()) {
    (void)exec("ROLLBACK");
    return s;
  }
  return exec("COMMIT");
}

absl::StatusOr<JobRecord> JobStore::get(const std::string& id) {
  std::lock_guard lock(mutex_);
  if (auto cached = record_cache_.find(id); cached != record_cache_.end()) return cached->second;
  auto records =
      query_records(db_, absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE id = ?"), {id},
                    /*lists=*/false);
  if (!records.ok()) return records.status();
  if (records->empty()) return absl::NotFoundError(absl::StrCat("no job with id '", id, "'"));
  if (record_cache_.size() >= kMaxCachedJobs) record_cache_.clear();
  record_cache_[id] = records->front();
  return std::move(records->front());
}

absl::StatusOr<std::vector<JobRecord>> JobStore::list(
    const std::vector<accum::v1::JobState>& states, const std::string& after_id, int limit) {
  std::lock_guard lock(mutex_);
  // Pages follow the submission sequence, not the id text: 'job-1000000' sorts before
  // 'job-999999' as text.
  int64_t after_seq = 0;
  if (!after_id.empty()) {
    // A token whose job was deleted since (remove()) still marks its place.
    Statement seq(db_,
                  "SELECT seq FROM jobs WHERE id = ?1 UNION ALL "
                  "SELECT seq FROM deleted_jobs WHERE id = ?1");
    if (auto s = seq.bind({after_id}); !s.ok()) return s;
    const int rc = seq.step();
    if (rc == SQLITE_DONE) {
      return absl::InvalidArgumentError(absl::StrCat(
          "page_token: no job '", after_id, "'; expected the token a previous page returned"));
    }
    if (rc != SQLITE_ROW) return seq.error("page");
    after_seq = seq.integer(0);
  }
  std::string sql = absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE seq > ?");
  if (!states.empty()) {
    std::vector<std::string> numbers;
    for (auto state : states) numbers.push_back(std::to_string(static_cast<int>(state)));
    absl::StrAppend(&sql, " AND state IN (", absl::StrJoin(numbers, ","), ")");
  }
  absl::StrAppend(&sql, " ORDER BY seq LIMIT ?");
  return query_records(db_, sql, {after_seq, int64_t{limit}});
}

absl::StatusOr<std::vector<JobRecord>> JobStore::list_active() {
  std::lock_guard lock(mutex_);
  return query_records(
      db_,
      absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE state NOT IN (?,?,?) ORDER BY seq"),
      {int64_t{accum::v1::SUCCEEDED}, int64_t{accum::v1::FAILED}, int64_t{accum::v1::CANCELLED}});
}

absl::StatusOr<std::map<accum::v1::JobState, int64_t>> JobStore::count_by_state() {
  std::lock_guard lock(mutex_);
  Statement statement(db_, "SELECT state, COUNT(*) FROM jobs GROUP BY state");
  if (auto status = statement.bind({}); !status.ok()) return status;
  std::map<accum::v1::JobState, int64_t> counts;
  for (int rc = statement.step(); rc != SQLITE_DONE; rc = statement.step()) {
    if (rc != SQLITE_ROW) return statement.error("count");
    counts[static_cast<accum::v1::JobState>(statement.integer(0))] = statement.integer(1);
  }
  return counts;
}

absl::Status JobStore::transition(const std::string& id, accum::v1::JobState to,
                                  const std::string& reason, const std::string& message,
                                  const TransitionUpdate& update) {
  std::lock_guard lock(mutex_);
  if (refuse_transition_for_test(to)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("job database: the disk is full, so nothing was written (", state_name(to),
                     " refused by ACCUM_TEST_REFUSE_TRANSITIONS)"));
  }
  forget_locked(id);
  if (auto s = exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  auto finish = [&](absl::Status status) {
    if (!status.ok()) {
      (void)exec("ROLLBACK");
      return status;
    }
    return exec("COMMIT");
  };
  Statement current(db_, "SELECT state FROM jobs WHERE id = ?");
  if (auto s = current.bind({id}); !s.ok()) return finish(s);
  if (current.step() != SQLITE_ROW) {
    return finish(absl::NotFoundError(absl::StrCat("no job with id '", id, "'")));
  }
  const auto from = static_cast<accum::v1::JobState>(current.integer(0));
  if (!transition_allowed(from, to)) {
    return finish(absl::FailedPreconditionError(
        absl::StrCat("job ", id, " is ", state_name(from), "; it cannot become ", state_name(to))));
  }
  const int64_t now = now_unix_ms();
  std::string assignments = "state = ?, message = ?, updated_ms = ?";
  std::vector<Arg> args = {int64_t{to}, message, now};
  if (update.attempt >= 0) {
    absl::StrAppend(&assignments, ", attempt = ?, launcher_pid = 0, launcher_start_ticks = 0");
    args.emplace_back(int64_t{update.attempt});
  }
  if (update.restarts >= 0) {
    absl::StrAppend(&assignments, ", restarts = ?");
    args.emplace_back(int64_t{update.restarts});
  }
  if (update.restart_due_ms >= 0) {
    absl::StrAppend(&assignments, ", restart_due_ms = ?");
    args.emplace_back(update.restart_due_ms);
  }
  if (update.force_cancel) absl::StrAppend(&assignments, ", force_cancel = 1");
  args.emplace_back(id);
  auto s = run(db_, absl::StrCat("UPDATE jobs SET ", assignments, " WHERE id = ?"), args);
  if (s.ok()) {
    s = run(db_,
            "INSERT INTO transitions(job_id, state, time_ms, reason, message) VALUES(?,?,?,?,?)",
            {id, int64_t{to}, now, reason, message});
  }
  return finish(s);
}

absl::Status JobStore::remove(const std::string& id) {
  std::lock_guard lock(mutex_);
  forget_locked(id);
  if (auto s = exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  // Its place in the submission order stays: a ListJobs page that ended at it goes on.
  auto s =
      run(db_, "INSERT OR REPLACE INTO deleted_jobs(id, seq) SELECT id, seq FROM jobs WHERE id = ?",
          {id});
  if (s.ok()) s = run(db_, "DELETE FROM jobs WHERE id = ?", {id});
  if (s.ok() && sqlite3_changes(db_) == 0) {
    s = absl::NotFoundError(absl::StrCat("no job with id '", id, "'"));
  }
  if (s.ok()) s = run(db_, "DELETE FROM transitions WHERE job_id = ?", {id});
  if (!s.ok()) {
    (void)exec("ROLLBACK");
    return s;
  }
  return exec("COMMIT");
}

absl::StatusOr<std::vector<accum::v1::Transition>> JobStore::transitions(const std::string& id) {
  std::lock_guard lock(mutex_);
  if (auto cached = transitions_cache_.find(id); cached != transitions_cache_.end()) {
    return cached->second;
  }
  Statement statement(
      db_, "SELECT state, time_ms, reason, message FROM transitions WHERE job_id = ? ORDER BY seq");
  if (auto s = statement.bind({id}); !s.ok()) return s;
  std::vector<accum::v1::Transition> history;
  for (int rc = statement.step(); rc != SQLITE_DONE; rc = statement.step()) {
    if (rc != SQLITE_ROW) return statement.error("transitions");
    auto& t = history.emplace_back();
    t.set_state(static_cast<accum::v1::JobState>(statement.integer(0)));
    t.set_time_unix_ms(statement.integer(1));
    t.set_reason(statement.text(2));
    t.set_message(statement.text(3));
  }
  if (transitions_cache_.size() >= kMaxCachedJobs) transitions_cache_.clear();
  transitions_cache_[id] = history;
  return history;
}

absl::Status JobStore::update_columns(const std::string& id, const std::string& assignments,
                                      const std::vector<std::string>& text_args,
                                      const std::vector<int64_t>& int_args) {
  std::lock_guard lock(mutex_);
  forget_locked(id);
  std::vector<Arg> args;
  for (const auto& text : text_args) args.emplace_back(text);
  for (int64_t number : int_args) args.emplace_back(number);
  args.emplace_back(now_unix_ms());
  args.emplace_back(id);
  return run(db_, absl::StrCat("UPDATE jobs SET ", assignments, ", updated_ms = ? WHERE id = ?"),
             args);
}

absl::Status JobStore::set_process(const std::string& id, int64_t pid, int64_t start_ticks,
                                   int attempt) {
  return update_columns(id, "launcher_pid = ?, launcher_start_ticks = ?, attempt = ?", {},
                        {pid, start_ticks, attempt});
}

absl::Status JobStore::set_restarts(const std::string& id, int restarts) {
  return update_columns(id, "restarts = ?", {}, {restarts});
}

absl::Status JobStore::set_force_cancel(const std::string& id) {
  return update_columns(id, "force_cancel = ?", {}, {1});
}

absl::Status JobStore::set_progress(const std::string& id, const accum::v1::StepMetrics& metrics) {
  return update_columns(id, "last_metrics_json = ?", {to_json(metrics)}, {});
}

absl::Status JobStore::set_latest_checkpoint(const std::string& id, int64_t step) {
  return update_columns(id, "latest_checkpoint_step = ?", {}, {step});
}

}  // namespace accum::control
