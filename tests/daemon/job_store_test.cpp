// tests/daemon/job_store_test.cpp — JobStore on a real SQLite file: records,
// transitions with history, the state machine's refusals, paging, durability
// across re-opening.
#include "daemon/control/job_store.h"

#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "tests/common/scratch_tmpfs.h"

namespace accum::control {
namespace {

using namespace accum::v1;

// A database as the accumd before schema version 2 wrote it: its tables exactly as that accumd
// created them, a job waiting to restart (job-000001) and one cancelling (job-000002).
constexpr const char* kSchemaVersion1Database = R"sql(
CREATE TABLE jobs (
  id TEXT PRIMARY KEY, seq INTEGER UNIQUE NOT NULL, name TEXT NOT NULL, state INTEGER NOT NULL,
  spec_json TEXT NOT NULL, spec_dir TEXT NOT NULL, job_dir TEXT NOT NULL,
  world_size INTEGER NOT NULL, restarts INTEGER NOT NULL DEFAULT 0,
  attempt INTEGER NOT NULL DEFAULT 0, message TEXT NOT NULL DEFAULT '',
  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
  launcher_pid INTEGER NOT NULL DEFAULT 0, launcher_start_ticks INTEGER NOT NULL DEFAULT 0,
  latest_checkpoint_step INTEGER NOT NULL DEFAULT 0, last_metrics_json TEXT NOT NULL DEFAULT '');
CREATE TABLE transitions (
  job_id TEXT NOT NULL, seq INTEGER PRIMARY KEY AUTOINCREMENT, state INTEGER NOT NULL,
  time_ms INTEGER NOT NULL, reason TEXT NOT NULL, message TEXT NOT NULL);
CREATE INDEX transitions_by_job ON transitions(job_id, seq);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE deleted_jobs (id TEXT PRIMARY KEY, seq INTEGER NOT NULL);
INSERT INTO jobs(id, seq, name, state, spec_json, spec_dir, job_dir, world_size, restarts,
                 attempt, created_ms, updated_ms)
  VALUES('job-000001', 1, 'waits', 4, '{"name":"waits","max_steps":"7"}', '/s', '/j1', 1, 1, 1,
         1000, 2000),
        ('job-000002', 2, 'stops', 5, '{"name":"stops","max_steps":"7"}', '/s', '/j2', 2, 0, 1,
         1000, 2000);
INSERT INTO counters(name, value) VALUES('job', 2);
PRAGMA user_version = 1;
)sql";

class JobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/jobstore-test-XXXXXX";
    dir_ = mkdtemp(pattern);
    path_ = dir_ + "/accumd.db";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Inserts `count` QUEUED jobs named prefix0, prefix1, ...; returns their ids in order.
  std::vector<std::string> insert_jobs(JobStore& store, const std::string& prefix, int count) {
    std::vector<std::string> ids;
    for (int i = 0; i < count; ++i) {
      auto record = make_record(store, prefix + std::to_string(i));
      EXPECT_TRUE(store.insert(record, "submitted").ok());
      ids.push_back(record.id);
    }
    return ids;
  }

  JobRecord make_record(JobStore& store, const std::string& name) {
    JobRecord record;
    record.id = *store.next_id();
    record.name = name;
    record.spec.set_name(name);
    record.spec.set_max_steps(7);
    record.job_dir = dir_ + "/jobs/" + record.id;
    record.world_size = 2;
    return record;
  }

  std::string dir_, path_;
};

TEST_F(JobStoreTest, InsertGetAndTransitionHistory) {
  auto store = JobStore::open(path_);
  ASSERT_TRUE(store.ok()) << store.status();
  auto record = make_record(**store, "alpha");
  EXPECT_EQ(record.id, "job-000001");
  ASSERT_TRUE((*store)->insert(record, "submitted").ok());
  ASSERT_TRUE((*store)->transition(record.id, STARTING, "launch", "attempt 1").ok());
  ASSERT_TRUE((*store)->transition(record.id, RUNNING, "worker_hello", "").ok());

  auto got = (*store)->get(record.id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->state, RUNNING);
  EXPECT_EQ(got->name, "alpha");
  EXPECT_EQ(got->spec.max_steps(), 7);
  EXPECT_EQ(got->world_size, 2);
  auto history = (*store)->transitions(record.id);
  ASSERT_TRUE(history.ok());
  ASSERT_EQ(history->size(), 3u);
  EXPECT_EQ((*history)[0].state(), QUEUED);
  EXPECT_EQ((*history)[1].reason(), "launch");
  EXPECT_EQ((*history)[1].message(), "attempt 1");
  EXPECT_EQ((*history)[2].state(), RUNNING);
  EXPECT_LE((*history)[0].time_unix_ms(), (*history)[2].time_unix_ms());
}

TEST_F(JobStoreTest, ForbiddenTransitionIsFailedPreconditionAndChangesNothing) {
  auto store = *JobStore::open(path_);
  auto record = make_record(*store, "beta");
  ASSERT_TRUE(store->insert(record, "submitted").ok());
  auto status = store->transition(record.id, SUCCEEDED, "bogus", "");
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("QUEUED"), std::string::npos) << status;
  EXPECT_EQ(store->get(record.id)->state, QUEUED);
  EXPECT_EQ(store->transitions(record.id)->size(), 1u);
  EXPECT_EQ(store->transition("job-404", STARTING, "x", "").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->get("job-404").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(JobStoreTest, SurvivesReopenWithProcessAndProgress) {
  std::string id;
  {
    auto store = *JobStore::open(path_);
    auto record = make_record(*store, "gamma");
    id = record.id;
    ASSERT_TRUE(store->insert(record, "submitted").ok());
    ASSERT_TRUE(store->transition(id, STARTING, "launch", "").ok());
    ASSERT_TRUE(store->set_process(id, 4242, 99, 3).ok());
    ASSERT_TRUE(store->set_restarts(id, 2).ok());
    StepMetrics metrics;
    metrics.set_step(5);
    metrics.set_loss(2.5);
    ASSERT_TRUE(store->set_progress(id, metrics).ok());
    ASSERT_TRUE(store->set_latest_checkpoint(id, 4).ok());
  }
  auto store = *JobStore::open(path_);
  auto got = store->get(id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->state, STARTING);
  EXPECT_EQ(got->launcher_pid, 4242);
  EXPECT_EQ(got->launcher_start_ticks, 99);
  EXPECT_EQ(got->attempt, 3);
  EXPECT_EQ(got->restarts, 2);
  EXPECT_EQ(got->last_metrics.step(), 5);
  EXPECT_DOUBLE_EQ(got->last_metrics.loss(), 2.5);
  EXPECT_EQ(got->latest_checkpoint_step, 4);
  EXPECT_EQ(store->list_active()->size(), 1u);
  // Ids keep counting after re-opening.
  EXPECT_EQ(*store->next_id(), "job-000002");
}

// The disk holding the database fills up: writes fail with a status that says so, and
// change nothing (a refused transition leaves the state and its history as they were, in
// the database and in the read cache); what was written before stays readable, also after
// re-opening; once there is space again, writes go through.
TEST_F(JobStoreTest, FullDiskRefusesWritesAndLosesNoRecord) {
  testing::ScratchTmpfs disk(dir_ + "/disk", 1 << 20);
  ACCUM_SKIP_UNLESS_MOUNTED(disk);
  const std::string path = dir_ + "/disk/accumd.db";
  std::vector<std::string> ids;
  {
    auto store = *JobStore::open(path);
    for (const char* name : {"one", "two", "three"}) {
      auto record = make_record(*store, name);
      ASSERT_TRUE(store->insert(record, "submitted").ok());
      ids.push_back(record.id);
    }
    ASSERT_TRUE(store->transition(ids[0], STARTING, "launch", "attempt 1").ok());
    auto late = make_record(*store, "four");  // its id is taken before the disk fills
    ASSERT_GT(disk.fill("filler"), 0u);

    EXPECT_EQ(store->next_id().status().code(), absl::StatusCode::kResourceExhausted);
    const absl::Status refused = store->insert(late, "submitted");
    EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
    EXPECT_NE(refused.message().find("job database " + path + ": the disk is full"),
              std::string::npos)
        << refused;
    EXPECT_EQ(store->get(late.id).status().code(), absl::StatusCode::kNotFound);

    const absl::Status stuck = store->transition(ids[0], RUNNING, "worker_hello", "");
    EXPECT_EQ(stuck.code(), absl::StatusCode::kResourceExhausted) << stuck;
    EXPECT_EQ(store->get(ids[0])->state, STARTING);
    EXPECT_EQ(store->transitions(ids[0])->size(), 2u);
    EXPECT_FALSE(store->set_restarts(ids[1], 1).ok());
    EXPECT_EQ(store->get(ids[1])->restarts, 0);
    EXPECT_EQ(store->list({}, "", 10)->size(), 3u);
  }
  {
    auto store = JobStore::open(path);  // still full: opening reads
    ASSERT_TRUE(store.ok()) << store.status();
    EXPECT_EQ((*store)->get(ids[0])->state, STARTING);
    EXPECT_EQ((*store)->list({}, "", 10)->size(), 3u);
  }
  std::filesystem::remove(dir_ + "/disk/filler");
  {
    auto store = *JobStore::open(path);
    auto record = make_record(*store, "five");
    ASSERT_TRUE(store->insert(record, "submitted").ok());
    ASSERT_TRUE(store->transition(ids[0], RUNNING, "worker_hello", "").ok());
    ids.push_back(record.id);
  }
  auto store = *JobStore::open(path);
  auto all = store->list({}, "", 10);
  ASSERT_EQ(all->size(), 4u);
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ((*all)[i].id, ids[i]);
  EXPECT_EQ(store->get(ids[0])->state, RUNNING);
  EXPECT_EQ(store->transitions(ids[0])->size(), 3u);
}

TEST_F(JobStoreTest, ListFiltersByStateAndPages) {
  auto store = *JobStore::open(path_);
  const std::vector<std::string> ids = insert_jobs(*store, "job", 5);
  ASSERT_TRUE(store->transition(ids[1], CANCELLED, "cancel", "").ok());
  ASSERT_TRUE(store->transition(ids[3], CANCELLED, "cancel", "").ok());
  auto cancelled = store->list({CANCELLED}, "", 100);
  ASSERT_EQ(cancelled->size(), 2u);
  EXPECT_EQ((*cancelled)[0].id, ids[1]);
  auto page1 = store->list({}, "", 2);
  ASSERT_EQ(page1->size(), 2u);
  auto page2 = store->list({}, page1->back().id, 2);
  ASSERT_EQ(page2->size(), 2u);
  EXPECT_EQ((*page2)[0].id, ids[2]);
  EXPECT_EQ(store->list_active()->size(), 3u);
}

// A file that is not a SQLite database, or one damaged inside: accumd does not start on it,
// and the error names the file and what to do.
TEST_F(JobStoreTest, UnusableDatabaseIsRefusedNamingTheFileAndTheWayOut) {
  { std::ofstream(path_) << std::string(8192, 'x'); }
  auto garbage = JobStore::open(path_);
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kDataLoss) << garbage.status();
  EXPECT_NE(garbage.status().message().find("job database " + path_ + " cannot be used"),
            std::string::npos)
      << garbage.status();
  EXPECT_NE(garbage.status().message().find("move it aside"), std::string::npos)
      << garbage.status();

  // Damage inside: a table's pages overwritten where SQLite's header still reads fine.
  std::filesystem::remove(path_);
  {
    auto store = *JobStore::open(path_);
    insert_jobs(*store, "job", 200);
  }
  std::filesystem::remove(path_ + "-wal");
  std::filesystem::remove(path_ + "-shm");
  {
    std::fstream file(path_, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(4096 + 8);  // past the header page, into the b-tree pages after it
    const std::string noise(4096 * 3, '\x5a');
    file.write(noise.data(), static_cast<std::streamsize>(noise.size()));
  }
  auto damaged = JobStore::open(path_);
  ASSERT_FALSE(damaged.ok()) << "a damaged database was opened";
  EXPECT_NE(damaged.status().message().find(path_), std::string::npos) << damaged.status();
}

// The database records its schema version (SQLite's user_version). One written by a newer
// accumd is refused, naming both versions and the way out, and is left as it was: the jobs
// are still there for the accumd that wrote it.
TEST_F(JobStoreTest, DatabaseOfANewerSchemaIsRefusedAndLeftAsItWas) {
  std::vector<std::string> ids;
  {
    auto store = *JobStore::open(path_);
    ids = insert_jobs(*store, "job", 2);
  }
  auto user_version = [&] {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    sqlite3_stmt* statement = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, "PRAGMA user_version;", -1, &statement, nullptr), SQLITE_OK);
    EXPECT_EQ(sqlite3_step(statement), SQLITE_ROW);
    const int64_t version = sqlite3_column_int64(statement, 0);
    sqlite3_finalize(statement);
    sqlite3_close(db);
    return version;
  };
  EXPECT_EQ(user_version(), 2);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 7; CREATE TABLE newer_things (x INTEGER);",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto refused = JobStore::open(path_);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  const std::string message(refused.status().message());
  EXPECT_NE(message.find(path_ + " has schema version 7, newer than this accumd's (2)"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("--state-dir"), std::string::npos) << message;
  EXPECT_EQ(user_version(), 7);
  // Back at this accumd's version (as the newer accumd might leave it), every job is there.
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 2;", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto store = JobStore::open(path_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE((*store)->get(ids[0]).ok());
  EXPECT_TRUE((*store)->get(ids[1]).ok());
}

// One row whose spec cannot be read: the list shows the other jobs (and accumd's start finds
// them), and asking for that job says what is wrong with it.
TEST_F(JobStoreTest, DamagedRowIsLeftOutOfListsAndReadAsDataLoss) {
  std::vector<std::string> ids;
  {
    auto store = *JobStore::open(path_);
    ids = insert_jobs(*store, "job", 3);
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(
      sqlite3_exec(
          db, ("UPDATE jobs SET spec_json = '{\"name\": ' WHERE id = '" + ids[1] + "'").c_str(),
          nullptr, nullptr, nullptr),
      SQLITE_OK);
  sqlite3_close(db);
  auto store = *JobStore::open(path_);
  auto listed = store->list({}, "", 100);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].id, ids[0]);
  EXPECT_EQ((*listed)[1].id, ids[2]);
  EXPECT_EQ(store->list_active()->size(), 2u);
  auto read = store->get(ids[1]);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << read.status();
}

// Ids are 'job-%06d', so past job-999999 their text order is not their submission order
// ('job-1000000' < 'job-999999'). Listing and paging follow the submission order.
TEST_F(JobStoreTest, ListPagesInSubmissionOrderPastJob999999) {
  { ASSERT_TRUE(JobStore::open(path_).ok()); }  // creates the schema
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  // The id counter as 999,997 submits would have left it.
  const int rc = sqlite3_exec(db, "INSERT INTO counters(name, value) VALUES('job', 999997)",
                              nullptr, nullptr, nullptr);
  sqlite3_close(db);
  ASSERT_EQ(rc, SQLITE_OK);

  auto store = *JobStore::open(path_);
  const std::vector<std::string> ids = insert_jobs(*store, "late", 4);
  ASSERT_EQ(ids,
            (std::vector<std::string>{"job-999998", "job-999999", "job-1000000", "job-1000001"}));
  const auto listed = store->list({}, "", 10);
  ASSERT_TRUE(listed.ok()) << listed.status();
  std::vector<std::string> all;
  for (const auto& record : *listed) all.push_back(record.id);
  EXPECT_EQ(all, ids);
  std::vector<std::string> paged;
  std::string token;
  for (int page = 0; page < 10; ++page) {
    auto records = store->list({}, token, 1);
    ASSERT_TRUE(records.ok()) << records.status();
    if (records->empty()) break;
    paged.push_back(records->front().id);
    token = records->front().id;
  }
  EXPECT_EQ(paged, ids) << "paging one job at a time skipped or repeated jobs";
  const auto unknown = store->list({}, "job-123", 1);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument) << unknown.status();
  EXPECT_NE(unknown.status().message().find("page_token: no job 'job-123'"), std::string::npos)
      << unknown.status();
}

// remove() (DeleteJob) drops a job's record and transitions; its id is never handed out
// again, and a ListJobs page token naming it (a client paging while the operator deletes)
// still marks its place, also when it was the newest job and another was submitted since.
TEST_F(JobStoreTest, RemovedJobIsGoneButItsIdKeepsItsPlaceInPaging) {
  auto store = *JobStore::open(path_);
  const std::vector<std::string> ids = insert_jobs(*store, "job", 3);
  const auto page1 = store->list({}, "", 2);
  ASSERT_TRUE(page1.ok()) << page1.status();
  ASSERT_EQ(page1->back().id, ids[1]);
  ASSERT_TRUE(store->remove(ids[1]).ok());
  EXPECT_EQ(store->get(ids[1]).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store->transitions(ids[1])->empty());
  EXPECT_EQ(store->remove(ids[1]).code(), absl::StatusCode::kNotFound);
  const auto page2 = store->list({}, ids[1], 2);
  ASSERT_TRUE(page2.ok()) << page2.status();
  ASSERT_EQ(page2->size(), 1u);
  EXPECT_EQ((*page2)[0].id, ids[2]);

  ASSERT_TRUE(store->remove(ids[2]).ok());  // the newest
  store.reset();
  store = *JobStore::open(path_);
  const std::vector<std::string> later = insert_jobs(*store, "later", 1);
  EXPECT_EQ(later[0], "job-000004");
  const auto after = store->list({}, ids[2], 10);
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_EQ(after->size(), 1u) << "a job submitted after the deletion was skipped";
  EXPECT_EQ((*after)[0].id, later[0]);
  const auto all = store->list({}, "", 10);
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].id, ids[0]);
  EXPECT_EQ((*all)[1].id, later[0]);
}

// A launch's attempt number is written with its STARTING state, in one transaction (and
// the previous attempt's pid cleared with it): both, or, when the move is refused, neither.
TEST_F(JobStoreTest, TransitionRecordsTheNewAttemptWithTheState) {
  auto store = *JobStore::open(path_);
  auto record = make_record(*store, "launch");
  ASSERT_TRUE(store->insert(record, "submitted").ok());
  TransitionUpdate launch;
  launch.attempt = 1;
  ASSERT_TRUE(store->transition(record.id, STARTING, "launch", "attempt 1", launch).ok());
  ASSERT_TRUE(store->set_process(record.id, 4242, 99, 1).ok());
  ASSERT_TRUE(store->transition(record.id, RESTARTING, "worker_failed", "restart 1").ok());

  launch.attempt = 2;
  ASSERT_TRUE(store->transition(record.id, STARTING, "launch", "attempt 2", launch).ok());
  auto got = store->get(record.id);
  EXPECT_EQ(got->attempt, 2);
  EXPECT_EQ(got->launcher_pid, 0) << "attempt 2 has no process yet; 4242 was attempt 1's";
  EXPECT_EQ(got->launcher_start_ticks, 0);
  launch.attempt = 3;  // STARTING -> STARTING is refused
  EXPECT_EQ(store->transition(record.id, STARTING, "launch", "attempt 3", launch).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->get(record.id)->attempt, 2) << "a refused transition recorded its attempt";
}

// A restart's count is written with its RESTARTING state, in one transaction: a crash
// between two writes cannot spend a restart without the state (or the other way round),
// and a refused move spends none.
TEST_F(JobStoreTest, TransitionRecordsTheRestartCountWithTheState) {
  auto store = *JobStore::open(path_);
  auto record = make_record(*store, "restart");
  ASSERT_TRUE(store->insert(record, "submitted").ok());
  ASSERT_TRUE(store->transition(record.id, STARTING, "launch", "attempt 1").ok());
  TransitionUpdate restart;
  restart.restarts = 1;
  ASSERT_TRUE(store->transition(record.id, RESTARTING, "worker_failed", "restart 1", restart).ok());
  EXPECT_EQ(store->get(record.id)->restarts, 1);
  restart.restarts = 2;  // RESTARTING -> RESTARTING is refused
  EXPECT_EQ(store->transition(record.id, RESTARTING, "worker_failed", "again", restart).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->get(record.id)->restarts, 1) << "a refused transition spent a restart";
}

// A database written by the accumd before schema version 2 (its jobs table exactly as that
// accumd created it, a job waiting to restart and one cancelling) opens: it gains the
// force_cancel and restart_due_ms columns with the defaults that mean what that accumd did (a
// plain cancel, a restart due at once), keeps every job, records version 2, and takes the new
// columns' writes. Opening it again changes nothing.
TEST_F(JobStoreTest, DatabaseOfSchemaVersion1IsUpgradedKeepingItsJobs) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, kSchemaVersion1Database, nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  ASSERT_EQ(RESTARTING, 4);  // the numbers kSchemaVersion1Database writes
  ASSERT_EQ(CANCELLING, 5);

  for (int open_count = 1; open_count <= 2; ++open_count) {
    SCOPED_TRACE(open_count == 1 ? "first open: upgrades" : "second open");
    auto store = JobStore::open(path_);
    ASSERT_TRUE(store.ok()) << store.status();
    auto waits = (*store)->get("job-000001");
    ASSERT_TRUE(waits.ok()) << waits.status();
    EXPECT_EQ(waits->state, RESTARTING);
    EXPECT_EQ(waits->spec.max_steps(), 7);
    auto stops = (*store)->get("job-000002");
    ASSERT_TRUE(stops.ok()) << stops.status();
    EXPECT_EQ(stops->world_size, 2);
    if (open_count == 1) {
      EXPECT_EQ(waits->restarts, 1);
      EXPECT_EQ(waits->restart_due_ms, 0) << "an old restart is due at once";
      EXPECT_FALSE(stops->force_cancel) << "an old cancel is a plain one";
      ASSERT_TRUE((*store)->set_force_cancel("job-000002").ok());
      TransitionUpdate launch;
      launch.attempt = 2;
      ASSERT_TRUE((*store)->transition("job-000001", STARTING, "launch", "attempt 2", launch).ok());
      TransitionUpdate restart;
      restart.restarts = 2;
      restart.restart_due_ms = 1234567;
      ASSERT_TRUE(
          (*store)->transition("job-000001", RESTARTING, "worker_failed", "again", restart).ok());
    } else {
      EXPECT_EQ(waits->restart_due_ms, 1234567);
      EXPECT_EQ(waits->restarts, 2);
      EXPECT_TRUE(stops->force_cancel);
    }
    EXPECT_EQ(*(*store)->next_id(), open_count == 1 ? "job-000003" : "job-000004");
  }
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* statement = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA user_version;", -1, &statement, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(statement), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int64(statement, 0), 2);
  sqlite3_finalize(statement);
  sqlite3_close(db);
}

// An upgrade from schema version 1 that fails for a reason other than a full disk (here the
// database is locked: a sqlite3 shell left in a write transaction) is refused with what failed,
// that the database is unchanged at version 1, and that the next start tries again; not with
// the advice for a damaged file (move it aside). The database is indeed unchanged (its
// version, its jobs table's columns), and once the lock is gone the next open upgrades it.
TEST_F(JobStoreTest, FailedSchemaUpgradeLeavesTheDatabaseUnchangedAndIsTriedAgainAtTheNextOpen) {
  sqlite3* holder = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &holder), SQLITE_OK);
  // In WAL mode, as the accumd of version 1 left it: the holder's write lock lets readers in,
  // so the open reaches the upgrade and fails there, at its first write.
  ASSERT_EQ(sqlite3_exec(holder, "PRAGMA journal_mode=WAL;", nullptr, nullptr, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(holder, kSchemaVersion1Database, nullptr, nullptr, nullptr), SQLITE_OK);
  auto query_integer = [&](const char* sql) {
    sqlite3_stmt* statement = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(holder, sql, -1, &statement, nullptr), SQLITE_OK);
    EXPECT_EQ(sqlite3_step(statement), SQLITE_ROW);
    const int64_t value = sqlite3_column_int64(statement, 0);
    sqlite3_finalize(statement);
    return value;
  };
  ASSERT_EQ(sqlite3_exec(holder, "BEGIN IMMEDIATE;", nullptr, nullptr, nullptr), SQLITE_OK);

  auto refused = JobStore::open(path_);  // after the store's busy timeout (5 s)
  ASSERT_FALSE(refused.ok()) << "opened a database another connection holds locked";
  const std::string message(refused.status().message());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << message;
  EXPECT_NE(message.find(path_ + ": upgrading its schema from version 1 to 2 failed"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("database is locked"), std::string::npos) << message;
  EXPECT_NE(message.find("unchanged at version 1"), std::string::npos) << message;
  EXPECT_NE(message.find("tries it again when it next starts"), std::string::npos) << message;
  EXPECT_EQ(message.find("move it aside"), std::string::npos) << message;
  EXPECT_EQ(query_integer("PRAGMA user_version;"), 1);
  EXPECT_EQ(query_integer("SELECT COUNT(*) FROM pragma_table_info('jobs') "
                          "WHERE name IN ('force_cancel', 'restart_due_ms');"),
            0);
  ASSERT_EQ(sqlite3_exec(holder, "ROLLBACK;", nullptr, nullptr, nullptr), SQLITE_OK);

  auto store = JobStore::open(path_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE((*store)->get("job-000001").ok());
  EXPECT_TRUE((*store)->get("job-000002").ok());
  EXPECT_EQ(query_integer("PRAGMA user_version;"), 2);
  sqlite3_close(holder);
}

// A database another program holds locked (here: an exclusive transaction on a database not
// yet in WAL mode, so the store's own PRAGMA journal_mode=WAL waits out its busy timeout) is
// not damaged: the open says it is locked and by what kind of program, not to move it aside,
// and once the lock is gone the store opens it with every record.
TEST_F(JobStoreTest, ADatabaseLockedByAnotherProgramIsSaidToBeLockedNotDamaged) {
  {
    auto store = *JobStore::open(path_);
    ASSERT_TRUE(store->insert(make_record(*store, "kept"), "submitted").ok());
  }
  sqlite3* holder = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &holder), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(holder, "PRAGMA journal_mode=DELETE; BEGIN EXCLUSIVE;", nullptr, nullptr,
                         nullptr),
            SQLITE_OK);
  auto refused = JobStore::open(path_);  // after the store's busy timeout (5 s)
  ASSERT_FALSE(refused.ok()) << "opened a database another connection holds locked";
  const std::string message(refused.status().message());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << message;
  EXPECT_NE(message.find("job database " + path_ + " is locked by another program"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("start accumd again"), std::string::npos) << message;
  EXPECT_EQ(message.find("move it aside"), std::string::npos) << message;
  ASSERT_EQ(sqlite3_exec(holder, "ROLLBACK;", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(holder);
  auto store = JobStore::open(path_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE((*store)->get("job-000001").ok());
}

// A force cancel is written with its CANCELLING state, in one transaction, or by
// set_force_cancel for a job already CANCELLING; a refused move records none.
TEST_F(JobStoreTest, TransitionRecordsAForceCancelWithTheState) {
  auto store = *JobStore::open(path_);
  auto record = make_record(*store, "forced");
  ASSERT_TRUE(store->insert(record, "submitted").ok());
  EXPECT_FALSE(store->get(record.id)->force_cancel);
  TransitionUpdate force;
  force.force_cancel = true;
  EXPECT_EQ(store->transition(record.id, RUNNING, "hello", "refused", force).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(store->get(record.id)->force_cancel) << "a refused transition recorded it";
  ASSERT_TRUE(store->transition(record.id, STARTING, "launch", "attempt 1").ok());
  ASSERT_TRUE(store->transition(record.id, CANCELLING, "force_cancel", "killing", force).ok());
  EXPECT_TRUE(store->get(record.id)->force_cancel);

  auto graceful = make_record(*store, "graceful");
  ASSERT_TRUE(store->insert(graceful, "submitted").ok());
  ASSERT_TRUE(store->transition(graceful.id, STARTING, "launch", "attempt 1").ok());
  ASSERT_TRUE(store->transition(graceful.id, CANCELLING, "cancel", "asking").ok());
  EXPECT_FALSE(store->get(graceful.id)->force_cancel);
  ASSERT_TRUE(store->set_force_cancel(graceful.id).ok());
  EXPECT_TRUE(store->get(graceful.id)->force_cancel);
}

}  // namespace
}  // namespace accum::control
