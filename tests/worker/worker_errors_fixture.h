// tests/worker/worker_errors_fixture.h — the fixture of the worker's bad-input tests
// (errors_test.cpp: the spec, data and run; checkpoint_errors_test.cpp: checkpoints): a
// folder with a corpus, and the real worker run on a spec in it.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "tests/worker/worker_test_util.h"

namespace accum::testing {

class WorkerErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override { write_file(dir_ / "corpus.txt", make_corpus(20000)); }

  RunResult run_spec(const std::string& json) {
    write_file(dir_ / "job.json", json);
    return run({worker_binary(), "--spec", dir_ / "job.json"});
  }
  RunResult run_with(const std::map<std::string, std::string>& overrides) {
    return run_spec(tiny_spec_json(overrides));
  }

  TempDir dir_;
};

}  // namespace accum::testing
