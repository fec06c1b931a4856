// io/json.cpp — recursive-descent JSON parser (RFC 8259) and writer.
//
// The parser walks the text once with a cursor; every error carries the byte
// offset and its line/column. Strings are decoded to UTF-8 (\uXXXX escapes,
// surrogate pairs joined); raw bytes >= 0x80 are passed through unchanged.
#include "daemon/worker/io/json.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <unordered_set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace accum::io {
namespace {

constexpr int kMaxDepth = 256;

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  absl::StatusOr<Json> parse_document() {
    skip_whitespace();
    Json value;
    if (absl::Status s = parse_value(0, &value); !s.ok()) return s;
    skip_whitespace();
    if (pos_ != text_.size()) return error("unexpected characters after the JSON value");
    return value;
  }

 private:
  absl::Status error(absl::string_view what) const {
    int line = 1, column = 1;
    for (size_t i = 0; i < pos_ && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    return absl::InvalidArgumentError(absl::StrFormat(
        "JSON error at line %d, column %d (byte %d): %s", line, column, pos_, what));
  }

  void skip_whitespace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }

  bool consume_literal(std::string_view literal) {
    if (text_.substr(pos_, literal.size()) != literal) return false;
    pos_ += literal.size();
    return true;
  }

  absl::Status parse_value(int depth, Json* out) {
    if (depth > kMaxDepth) return error(absl::StrCat("nesting deeper than ", kMaxDepth));
    if (pos_ >= text_.size()) return error("unexpected end of input, expected a value");
    switch (text_[pos_]) {
      case '{':
        return parse_object(depth, out);
      case '[':
        return parse_array(depth, out);
      case '"': {
        std::string s;
        if (absl::Status st = parse_string(&s); !st.ok()) return st;
        *out = Json(std::move(s));
        return absl::OkStatus();
      }
      case 't':
        if (consume_literal("true")) {
          *out = Json(true);
          return absl::OkStatus();
        }
        break;
      case 'f':
        if (consume_literal("false")) {
          *out = Json(false);
          return absl::OkStatus();
        }
        break;
      case 'n':
        if (consume_literal("null")) {
          *out = Json();
          return absl::OkStatus();
        }
        break;
      default:
        if (text_[pos_] == '-' || (text_[pos_] >= '0' && text_[pos_] <= '9'))
          return parse_number(out);
    }
    return error(absl::StrFormat("unexpected character '%c', expected a value", text_[pos_]));
  }

  absl::Status parse_object(int depth, Json* out) {
    ++pos_;  // '{'
    Json object = Json::object();
    // The keys seen so far: a linear search per key made an object of n keys cost n^2/2
    // string compares (a safetensors header of a few MB took hours to read).
    std::unordered_set<std::string> keys;
    skip_whitespace();
    if (pos_ < text_.size() && text_[pos_] == '}') {
      ++pos_;
      *out = std::move(object);
      return absl::OkStatus();
    }
    while (true) {
      skip_whitespace();
      if (pos_ >= text_.size() || text_[pos_] != '"') return error("expected a string key");
      size_t key_pos = pos_;
      std::string key;
      if (absl::Status s = parse_string(&key); !s.ok()) return s;
      if (!keys.insert(key).second) {
        pos_ = key_pos;
        return error(absl::StrCat("duplicate key \"", key, "\""));
      }
      skip_whitespace();
      if (pos_ >= text_.size() || text_[pos_] != ':') return error("expected ':' after key");
      ++pos_;
      skip_whitespace();
      Json value;
      if (absl::Status s = parse_value(depth + 1, &value); !s.ok()) return s;
      object.as_object().emplace_back(std::move(key), std::move(value));
      skip_whitespace();
      if (pos_ < text_.size() && text_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < text_.size() && text_[pos_] == '}') {
        ++pos_;
        *out = std::move(object);
        return absl::OkStatus();
      }
      return error("expected ',' or '}' in object");
    }
  }

  absl::Status parse_array(int depth, Json* out) {
    ++pos_;  // '['
    Json array = Json::array();
    skip_whitespace();
    if (pos_ < text_.size() && text_[pos_] == ']') {
      ++pos_;
      *out = std::move(array);
      return absl::OkStatus();
    }
    while (true) {
      skip_whitespace();
      Json value;
      if (absl::Status s = parse_value(depth + 1, &value); !s.ok()) return s;
      array.push_back(std::move(value));
      skip_whitespace();
      if (pos_ < text_.size() && text_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < text_.size() && text_[pos_] == ']') {
        ++pos_;
        *out = std::move(array);
        return absl::OkStatus();
      }
      return error("expected ',' or ']' in array");
    }
  }

  // Reads 4 hex digits at pos_ into *code.
  bool read_hex4(uint32_t* code) {
    if (pos_ + 4 > text_.size()) return false;
    uint32_t value = 0;
    for (int i = 0; i < 4; ++i) {
      char c = text_[pos_ + i];
      value <<= 4;
      if (c >= '0' && c <= '9') {
        value |= c - '0';
      } else if (c >= 'a' && c <= 'f') {
        value |= c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        value |= c - 'A' + 10;
      } else {
        return false;
      }
    }
    pos_ += 4;
    *code = value;
    return true;
  }

  static void append_utf8(uint32_t code, std::string* out) {
    if (code < 0x80) {
      out->push_back(static_cast<char>(code));
    } else if (code < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (code >> 6)));
      out->push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else if (code < 0x10000) {
      out->push_back(static_cast<char>(0xE0 | (code >> 12)));
      out->push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xF0 | (code >> 18)));
      out->push_back(static_cast<char>(0x80 | ((code >> 12) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (code & 0x3F)));
    }
  }

  absl::Status parse_escape(std::string* out) {
    if (pos_ >= text_.size()) return error("unterminated escape in string");
    char c = text_[pos_++];
    switch (c) {
      case '"':
        out->push_back('"');
        return absl::OkStatus();
      case '\\':
        out->push_back('\\');
        return absl::OkStatus();
      case '/':
        out->push_back('/');
        return absl::OkStatus();
      case 'b':
        out->push_back('\b');
        return absl::OkStatus();
      case 'f':
        out->push_back('\f');
        return absl::OkStatus();
      case 'n':
        out->push_back('\n');
        return absl::OkStatus();
      case 'r':
        out->push_back('\r');
        return absl::OkStatus();
      case 't':
        out->push_back('\t');
        return absl::OkStatus();
      case 'u':
        break;
      default:
        --pos_;
        return error(absl::StrFormat("invalid escape '\\%c' in string", c));
    }
    uint32_t code = 0;
    if (!read_hex4(&code)) return error("\\u must be followed by 4 hex digits");
    if (code >= 0xD800 && code <= 0xDBFF) {  // high surrogate: a low one must follow
      uint32_t low = 0;
      if (!consume_literal("\\u") || !read_hex4(&low) || low < 0xDC00 || low > 0xDFFF)
        return error("unpaired UTF-16 high surrogate in \\u escape");
      code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
    } else if (code >= 0xDC00 && code <= 0xDFFF) {
      return error("unpaired UTF-16 low surrogate in \\u escape");
    }
    append_utf8(code, out);
    return absl::OkStatus();
  }

  absl::Status parse_string(std::string* out) {
    ++pos_;  // opening quote
    while (true) {
      if (pos_ >= text_.size()) return error("unterminated string");
      char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        return absl::OkStatus();
      }
      if (static_cast<unsigned char>(c) < 0x20) return error("control character in string");
      ++pos_;
      if (c == '\\') {
        if (absl::Status s = parse_escape(out); !s.ok()) return s;
      } else {
        out->push_back(c);
      }
    }
  }

  // number = [-] int [frac] [exp]; int = 0 | [1-9][0-9]*
  absl::Status parse_number(Json* out) {
    size_t start = pos_;
    auto digits = [&] {
      size_t from = pos_;
      while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
      return pos_ - from;
    };
    if (text_[pos_] == '-') ++pos_;
    size_t int_start = pos_;
    size_t int_digits = digits();
    if (int_digits == 0) return error("expected digits in number");
    if (int_digits > 1 && text_[int_start] == '0') {
      pos_ = int_start;
      return error("leading zero in number");
    }
    bool is_integer = true;
    if (pos_ < text_.size() && text_[pos_] == '.') {
      ++pos_;
      is_integer = false;
      if (digits() == 0) return error("expected digits after '.' in number");
    }
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
      is_integer = false;
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
      if (digits() == 0) return error("expected digits in exponent");
    }
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    if (is_integer) {
      int64_t value = 0;
      auto [ptr, ec] = std::from_chars(first, last, value);
      if (ec == std::errc() && ptr == last) {
        *out = Json(value);
        return absl::OkStatus();
      }
      // Out of int64 range: fall through to double.
    }
    double value = 0;
    auto [ptr, ec] = std::from_chars(first, last, value);
    if (ptr != last || (ec != std::errc() && ec != std::errc::result_out_of_range)) {
      pos_ = start;
      return error("malformed number");
    }
    if (ec == std::errc::result_out_of_range) {
      pos_ = start;
      return error("number out of double range");
    }
    *out = Json(value);
    return absl::OkStatus();
  }

  std::string_view text_;
  size_t pos_ = 0;
};

void append_double(std::string* out, double value) {
  if (!std::isfinite(value)) {
    out->append("null");
    return;
  }
  char buf[64];
  auto [ptr, ec] = std::to_chars(buf, buf + sizeof(buf), value);  // shortest round-trip form
  std::string_view text(buf, ptr - buf);
  out->append(text);
  if (text.find_first_of(".eE") == std::string_view::npos) out->append(".0");
}

void append_newline_indent(std::string* out, int indent, int depth) {
  out->push_back('\n');
  out->append(static_cast<size_t>(indent) * depth, ' ');
}

}  // namespace

Json::Json(const Json& other) = default;
Json::Json(Json&& other) noexcept = default;
Json& Json::operator=(const Json& other) = default;
Json& Json::operator=(Json&& other) noexcept = default;
Json::~Json() = default;

const char* Json::type_name(Type type) {
  switch (type) {
    case Type::kNull:
      return "null";
    case Type::kBool:
      return "bool";
    case Type::kInt:
      return "integer";
    case Type::kDouble:
      return "number";
    case Type::kString:
      return "string";
    case Type::kArray:
      return "array";
    case Type::kObject:
      return "object";
  }
  return "unknown";
}

double Json::as_double() const {
  if (is_int()) return static_cast<double>(as_int());
  return std::get<double>(value_);
}

const Json* Json::find(std::string_view key) const {
  if (!is_object()) return nullptr;
  for (const auto& [name, value] : as_object())
    if (name == key) return &value;
  return nullptr;
}

Json& Json::set(std::string key, Json value) {
  Object& object = as_object();
  for (auto& [name, existing] : object) {
    if (name == key) {
      existing = std::move(value);
      return *this;
    }
  }
  object.emplace_back(std::move(key), std::move(value));
  return *this;
}

void append_json_string(std::string* out, std::string_view text) {
  out->push_back('"');
  for (char c : text) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out->append(absl::StrFormat("\\u%04x", static_cast<unsigned char>(c)));
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

void Json::dump_to(std::string* out, int indent, int depth) const {
  switch (type()) {
    case Type::kNull:
      out->append("null");
      return;
    case Type::kBool:
      out->append(as_bool() ? "true" : "false");
      return;
    case Type::kInt:
      out->append(absl::StrCat(as_int()));
      return;
    case Type::kDouble:
      append_double(out, std::get<double>(value_));
      return;
    case Type::kString:
      append_json_string(out, as_string());
      return;
    case Type::kArray: {
      const Array& array = as_array();
      out->push_back('[');
      for (size_t i = 0; i < array.size(); ++i) {
        if (i > 0) out->push_back(',');
        if (indent >= 0) append_newline_indent(out, indent, depth + 1);
        array[i].dump_to(out, indent, depth + 1);
      }
      if (indent >= 0 && !array.empty()) append_newline_indent(out, indent, depth);
      out->push_back(']');
      return;
    }
    case Type::kObject: {
      const Object& object = as_object();
      out->push_back('{');
      for (size_t i = 0; i < object.size(); ++i) {
        if (i > 0) out->push_back(',');
        if (indent >= 0) append_newline_indent(out, indent, depth + 1);
        append_json_string(out, object[i].first);
        out->append(indent >= 0 ? ": " : ":");
        object[i].second.dump_to(out, indent, depth + 1);
      }
      if (indent >= 0 && !object.empty()) append_newline_indent(out, indent, depth);
      out->push_back('}');
      return;
    }
  }
}

std::string Json::dump(int indent) const {
  std::string out;
  dump_to(&out, indent, 0);
  return out;
}

absl::StatusOr<Json> parse_json(std::string_view text) { return Parser(text).parse_document(); }

}  // namespace accum::io
