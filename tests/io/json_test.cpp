// tests/io/json_test.cpp — the JSON reader/writer: every value kind round-trips,
// integers stay exact, doubles keep their bits, and malformed text is refused
// with its position.
#include "daemon/worker/io/json.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace accum::io {
namespace {

Json parse_ok(std::string_view text) {
  auto value = parse_json(text);
  EXPECT_TRUE(value.ok()) << value.status() << " for: " << text;
  return value.ok() ? *value : Json();
}

std::string parse_error(std::string_view text) {
  auto value = parse_json(text);
  EXPECT_FALSE(value.ok()) << "accepted: " << text;
  return value.ok() ? std::string() : std::string(value.status().message());
}

TEST(Json, ParsesEveryKind) {
  Json v = parse_ok(R"( {"a": 1, "b": -2.5, "c": "x", "d": [true, false, null], "e": {}} )");
  ASSERT_TRUE(v.is_object());
  EXPECT_EQ(v.find("a")->as_int(), 1);
  EXPECT_TRUE(v.find("a")->is_int());
  EXPECT_DOUBLE_EQ(v.find("b")->as_double(), -2.5);
  EXPECT_EQ(v.find("c")->as_string(), "x");
  const Json::Array& d = v.find("d")->as_array();
  ASSERT_EQ(d.size(), 3u);
  EXPECT_TRUE(d[0].as_bool());
  EXPECT_FALSE(d[1].as_bool());
  EXPECT_TRUE(d[2].is_null());
  EXPECT_TRUE(v.find("e")->is_object());
  EXPECT_EQ(v.find("missing"), nullptr);
}

TEST(Json, Int64IsExactAndHugeIntegersBecomeDoubles) {
  Json big = parse_ok("9007199254740993");  // 2^53 + 1: not representable as double
  ASSERT_TRUE(big.is_int());
  EXPECT_EQ(big.as_int(), 9007199254740993LL);
  EXPECT_EQ(parse_ok("-9223372036854775808").as_int(), std::numeric_limits<int64_t>::min());
  Json huge = parse_ok("18446744073709551616");  // 2^64
  EXPECT_TRUE(huge.is_double());
  EXPECT_DOUBLE_EQ(huge.as_double(), 18446744073709551616.0);
  EXPECT_EQ(Json(int64_t{9007199254740993}).dump(), "9007199254740993");
}

TEST(Json, DoublesRoundTripBitExactAndStayDoubles) {
  for (double d : {0.1, 1.0 / 3.0, 1e-300, 6.02214076e23, -0.0, 1.0, 123456789.0, 5e-324}) {
    Json parsed = parse_ok(Json(d).dump());
    ASSERT_TRUE(parsed.is_double()) << Json(d).dump();
    EXPECT_EQ(std::signbit(parsed.as_double()), std::signbit(d));
    EXPECT_EQ(parsed.as_double(), d) << Json(d).dump();
  }
  EXPECT_EQ(Json(2.0).dump(), "2.0");
  EXPECT_EQ(Json(std::nan("")).dump(), "null");  // JSON has no NaN
  EXPECT_EQ(Json(std::numeric_limits<double>::infinity()).dump(), "null");
}

TEST(Json, StringEscapesDecodeAndReencode) {
  Json s = parse_ok(R"("q\" b\\ s\/ \b\f\n\r\t \u00e9 \ud83d\ude00 \u0001")");
  EXPECT_EQ(s.as_string(), "q\" b\\ s/ \b\f\n\r\t \xC3\xA9 \xF0\x9F\x98\x80 \x01");
  std::string dumped = s.dump();
  EXPECT_EQ(dumped, "\"q\\\" b\\\\ s/ \\b\\f\\n\\r\\t \xC3\xA9 \xF0\x9F\x98\x80 \\u0001\"");
  EXPECT_EQ(parse_ok(dumped), s);
}

TEST(Json, WriterRoundTripsNestedDocumentsCompactAndPretty) {
  Json doc = Json::object();
  doc.set("step", 100).set("loss", 2.75).set("name", "run \"1\"");
  Json files = Json::array();
  files.push_back(Json(Json::Object{{"name", "a"}, {"size", 12}}));
  files.push_back(Json());
  doc.set("files", files);
  doc.set("empty", Json::array());
  EXPECT_EQ(
      doc.dump(),
      R"({"step":100,"loss":2.75,"name":"run \"1\"","files":[{"name":"a","size":12},null],"empty":[]})");
  EXPECT_EQ(parse_ok(doc.dump()), doc);
  EXPECT_EQ(parse_ok(doc.dump(2)), doc);
  EXPECT_NE(doc.dump(2).find("\n  \"step\": 100,"), std::string::npos) << doc.dump(2);
  doc.set("step", 101);  // set replaces, keeps position
  EXPECT_EQ(doc.as_object().front().first, "step");
  EXPECT_EQ(doc.find("step")->as_int(), 101);
}

TEST(Json, MalformedInputIsRefusedWithPosition) {
  EXPECT_NE(parse_error("{\"a\": 1,\n \"b\": }").find("line 2, column 7"), std::string::npos)
      << parse_error("{\"a\": 1,\n \"b\": }");
  EXPECT_NE(parse_error("[1, 2,]").find("expected a value"), std::string::npos);
  EXPECT_NE(parse_error("{\"a\":1,\"a\":2}").find("duplicate key \"a\""), std::string::npos);
  EXPECT_NE(parse_error("01").find("leading zero"), std::string::npos);
  EXPECT_NE(parse_error("\"abc").find("unterminated string"), std::string::npos);
  EXPECT_NE(parse_error("\"\\x\"").find("invalid escape"), std::string::npos);
  EXPECT_NE(parse_error("\"\\ud800\"").find("surrogate"), std::string::npos);
  EXPECT_NE(parse_error("\"a\nb\"").find("control character"), std::string::npos);
  EXPECT_NE(parse_error("{} x").find("after the JSON value"), std::string::npos);
  EXPECT_NE(parse_error("").find("unexpected end"), std::string::npos);
  EXPECT_NE(parse_error("tru").find("unexpected character"), std::string::npos);
  EXPECT_NE(parse_error("1.").find("digits after '.'"), std::string::npos);
  EXPECT_NE(parse_error("1e400").find("out of double range"), std::string::npos);
  EXPECT_NE(parse_error(std::string(300, '[')).find("nesting deeper"), std::string::npos);
}

}  // namespace
}  // namespace accum::io
