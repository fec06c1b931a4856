// io/json.h — a small JSON value with a strict parser and a writer, for the
// files this project writes and reads itself: safetensors headers, manifest.json,
// state.json, metrics lines.
//
// Design choices:
//  - Numbers keep their kind: an integer literal that fits int64 stays an exact
//    int64 (steps, byte offsets, token positions, seeds); anything with a
//    fraction or exponent (or out of int64 range) is a double.
//  - Objects keep insertion order (so written files read in a stable order);
//    lookup is linear, which is fine for the small objects we handle. Duplicate
//    keys are a parse error (found with a hash set: parsing stays linear in the
//    number of keys, whatever a file holds).
//  - The writer prints doubles in the shortest form that reads back to the same
//    bits and always with a '.', 'e' or exponent so they re-parse as doubles.
//    JSON has no NaN/Infinity: they are written as null.
//  - The parser accepts exactly RFC 8259 (no comments, no trailing commas), with
//    a nesting limit, and reports errors with line, column and byte offset.
//
// Thread safety: a Json value is a plain value type (copyable, no sharing).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"

namespace accum::io {

class Json {
 public:
  enum class Type { kNull, kBool, kInt, kDouble, kString, kArray, kObject };
  using Array = std::vector<Json>;
  using Object = std::vector<std::pair<std::string, Json>>;

  Json() = default;  // null
  // Copy and move are defined out of line: GCC 12 inlining std::variant's move
  // into callers reports false -Wmaybe-uninitialized errors under -Werror.
  Json(const Json& other);
  Json(Json&& other) noexcept;
  Json& operator=(const Json& other);
  Json& operator=(Json&& other) noexcept;
  ~Json();
  Json(std::nullptr_t) {}
  Json(bool value) : value_(value) {}
  template <typename T,
            std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  Json(T value) : value_(static_cast<int64_t>(value)) {}
  Json(double value) : value_(value) {}
  Json(const char* value) : value_(std::string(value)) {}
  Json(std::string value) : value_(std::move(value)) {}
  Json(std::string_view value) : value_(std::string(value)) {}
  Json(Array value) : value_(std::move(value)) {}
  Json(Object value) : value_(std::move(value)) {}

  static Json array() { return Json(Array{}); }
  static Json object() { return Json(Object{}); }

  Type type() const { return static_cast<Type>(value_.index()); }
  static const char* type_name(Type type);  // "null", "bool", "integer", ...
  bool is_null() const { return type() == Type::kNull; }
  bool is_bool() const { return type() == Type::kBool; }
  bool is_int() const { return type() == Type::kInt; }
  bool is_double() const { return type() == Type::kDouble; }
  bool is_number() const { return is_int() || is_double(); }
  bool is_string() const { return type() == Type::kString; }
  bool is_array() const { return type() == Type::kArray; }
  bool is_object() const { return type() == Type::kObject; }

  // Accessors. REQUIRES: the value has that type (as_double also takes an int).
  bool as_bool() const { return std::get<bool>(value_); }
  int64_t as_int() const { return std::get<int64_t>(value_); }
  double as_double() const;
  const std::string& as_string() const { return std::get<std::string>(value_); }
  const Array& as_array() const { return std::get<Array>(value_); }
  Array& as_array() { return std::get<Array>(value_); }
  const Object& as_object() const { return std::get<Object>(value_); }
  Object& as_object() { return std::get<Object>(value_); }

  // Object member by key, or nullptr when absent or when this is not an object.
  const Json* find(std::string_view key) const;
  // Sets (or replaces) an object member. REQUIRES: is_object(). Returns *this.
  Json& set(std::string key, Json value);
  // Appends to an array. REQUIRES: is_array().
  void push_back(Json value) { as_array().push_back(std::move(value)); }

  // Serializes. indent < 0: one line, no spaces; indent >= 0: pretty-printed
  // with that many spaces per level.
  std::string dump(int indent = -1) const;

  friend bool operator==(const Json& a, const Json& b) { return a.value_ == b.value_; }

 private:
  void dump_to(std::string* out, int indent, int depth) const;
  std::variant<std::nullptr_t, bool, int64_t, double, std::string, Array, Object> value_;
};

// Parses one JSON document (surrounding whitespace allowed). Errors are
// INVALID_ARGUMENT: "JSON error at line L, column C (byte B): what".
absl::StatusOr<Json> parse_json(std::string_view text);

// Appends `text` as a quoted JSON string (escaping ", \ and control characters).
void append_json_string(std::string* out, std::string_view text);

}  // namespace accum::io
