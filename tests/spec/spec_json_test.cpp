// tests/spec/spec_json_test.cpp — a spec's JSON against accum.v1.JobSpec's fields: a name
// the spec does not have, or a value of the wrong kind, is refused naming the field, what
// it got and what was expected; what canonical proto3 JSON writes reads back.
#include <gtest/gtest.h>

#include <string>

#include "daemon/spec/spec.h"

namespace accum::spec {
namespace {

std::string error_of(const std::string& json) {
  auto parsed = parse_spec_json(json);
  if (parsed.ok()) return "(parsed)";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(parsed.status().message());
}

TEST(SpecJson, AnUnknownFieldNamesWhatItsObjectHasAndTheClosestName) {
  EXPECT_EQ(error_of(R"({"model": {"nlayer": 2}})"),
            "spec field `model.nlayer`: no such field; `model` has preset, n_layer, n_head, "
            "d_model, vocab_size, max_seq_len (did you mean `n_layer`?)");
  EXPECT_EQ(error_of(R"({"data": {"train_files": ["a"]}})"),
            "spec field `data.train_files`: no such field; `data` has train, val, format, "
            "shuffle, use_mask (did you mean `train`?)");
  EXPECT_EQ(error_of(R"({"batch": {"micro_batch": 4}})"),
            "spec field `batch.micro_batch`: no such field; `batch` has micro_batch_size, "
            "seq_len, tokens_per_update, grad_accum_steps (did you mean `micro_batch_size`?)");
  // Nothing close: the list alone.
  const std::string top = error_of(R"({"optimizer": {}, "foo": 1})");
  EXPECT_EQ(top.rfind("spec field `foo`: no such field; a spec has name, model, data, ", 0), 0u)
      << top;
  EXPECT_EQ(top.find("did you mean"), std::string::npos) << top;
}

TEST(SpecJson, AValueOfTheWrongKindNamesWhatWasExpected) {
  EXPECT_EQ(error_of(R"({"optimizer": {"lr": "abc"}})"),
            "spec field `optimizer.lr`: got \"abc\", expected a number");
  EXPECT_EQ(error_of(R"({"max_steps": 1.5})"),
            "spec field `max_steps`: got 1.5, expected an integer");
  EXPECT_EQ(error_of(R"({"max_steps": 1e30})"),
            "spec field `max_steps`: got 1e+30, expected an integer in [-2147483648, 2147483647]");
  EXPECT_EQ(error_of(R"({"max_steps": 2147483648})"),
            "spec field `max_steps`: got 2147483648, expected an integer in [-2147483648, "
            "2147483647]");
  EXPECT_EQ(error_of(R"({"model": [1]})"), "spec field `model`: got a list, expected an object");
  EXPECT_EQ(error_of(R"({"device": "TPU"})"),
            "spec field `device`: got \"TPU\", expected one of CPU, CUDA");
  EXPECT_EQ(error_of(R"({"data": {"shuffle": "yes"}})"),
            "spec field `data.shuffle`: got \"yes\", expected true or false, unquoted");
  EXPECT_EQ(error_of(R"({"data": {"shuffle": "true"}})"),
            "spec field `data.shuffle`: got \"true\", expected true or false, unquoted");
  EXPECT_EQ(error_of(R"({"data": {"train": ["a", 1]}})"),
            "spec field `data.train[1]`: got 1, expected a string");
  EXPECT_EQ(error_of(R"({"launch": {"mpirun_args": "-v"}})"),
            "spec field `launch.mpirun_args`: got \"-v\", expected a list");
  EXPECT_EQ(error_of(R"({"name": {"a": 1}})"),
            "spec field `name`: got an object, expected a string");
}

// Past 2^53 a JSON number's last digits are lost to a double: such a 64-bit integer is
// refused as a number and read exactly as a string, the way proto3 JSON writes it.
TEST(SpecJson, ALargeIntegerIsReadExactlyAsAStringAndRefusedAsANumber) {
  const std::string refused = error_of(R"({"seed": 12345678901234567891})");
  EXPECT_EQ(refused.rfind("spec field `seed`: got 1.23457e+19, a number too large for JSON to keep "
                          "exactly; expected it as a string (\"seed\": ",
                          0),
            0u)
      << refused;
  auto parsed = parse_spec_json(R"({"seed": "12345678901234567891", "data": {"train": "a"}})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->seed(), 12345678901234567891ull);
  auto small = parse_spec_json(R"({"seed": 9007199254740991, "data": {"train": "a"}})");
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->seed(), 9007199254740991ull);  // 2^53 - 1, exact as a number
}

// What canonical proto3 JSON allows still parses: lowerCamelCase names, null for unset,
// numbers as strings, enums by name or number; and a spec printed by spec_to_json reads
// back to the same spec.
TEST(SpecJson, WhatProto3JsonWritesReadsBack) {
  auto parsed = parse_spec_json(
      R"({"maxSteps": "12", "model": {"nLayer": 2, "preset": null}, "device": 1,
          "precision": "BF16", "optimizer": {"lr": "1e-3", "beta1": "NaN"},
          "data": {"shuffle": true, "useMask": false, "train": "corpus.txt"}})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->max_steps(), 12);
  EXPECT_EQ(parsed->model().n_layer(), 2);
  EXPECT_EQ(parsed->device(), accum::v1::CUDA);
  EXPECT_EQ(parsed->precision(), accum::v1::BF16);
  EXPECT_EQ(parsed->optimizer().lr(), 1e-3);
  EXPECT_TRUE(parsed->data().shuffle());
  ASSERT_EQ(parsed->data().train_size(), 1);
  parsed->set_seed(12345678901234567891ull);
  auto again = parse_spec_json(spec_to_json(*parsed));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->SerializeAsString(), parsed->SerializeAsString());
}

}  // namespace
}  // namespace accum::spec
