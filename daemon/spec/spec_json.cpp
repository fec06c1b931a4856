#include "daemon/spec/spec_json.h"

#include <google/protobuf/descriptor.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "proto/accum.pb.h"

namespace accum::spec {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Value;

absl::Status invalid(const std::string& field, const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat("spec field `", field, "`: ", message));
}

// A JSON value as a message quotes it: a string in quotes, a number as written back.
std::string describe(const Value& value) {
  switch (value.kind_case()) {
    case Value::kStringValue:
      return absl::StrCat("\"", value.string_value(), "\"");
    case Value::kNumberValue: {
      // An integer as written, up to where a double holds every integer; past it, or with a
      // fraction, six significant digits.
      const double number = value.number_value();
      if (std::floor(number) == number && std::abs(number) < 0x1p53) {
        return absl::StrCat(static_cast<int64_t>(number));
      }
      return absl::StrCat(number);
    }
    case Value::kBoolValue:
      return value.bool_value() ? "true" : "false";
    case Value::kListValue:
      return "a list";
    case Value::kStructValue:
      return "an object";
    default:
      return "null";
  }
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// The field of `message` a misspelt `key` most likely meant: the closest name within a
// few edits, or one that contains the key or is contained in it ("micro_batch" for
// micro_batch_size, "train_files" for train); "" when none is close.
std::string closest_field(const Descriptor& message, const std::string& key) {
  std::string best;
  size_t best_distance = std::max<size_t>(2, key.size() / 3) + 1;
  for (int i = 0; i < message.field_count(); ++i) {
    const std::string& name = message.field(i)->name();
    size_t distance =
        std::min(edit_distance(key, name), edit_distance(key, message.field(i)->json_name()));
    const bool contains =
        name.size() >= 2 && key.size() >= 2 &&
        (key.find(name) != std::string::npos || name.find(key) != std::string::npos);
    if (contains) distance = std::min<size_t>(distance, 1);
    if (distance < best_distance) {
      best_distance = distance;
      best = name;
    }
  }
  return best;
}

absl::Status unknown_field(const Descriptor& message, const std::string& path,
                           const std::string& key) {
  std::vector<std::string> names;
  for (int i = 0; i < message.field_count(); ++i) names.push_back(message.field(i)->name());
  const std::string field = path.empty() ? key : absl::StrCat(path, ".", key);
  const std::string owner = path.empty() ? "a spec" : absl::StrCat("`", path, "`");
  const std::string guess = closest_field(message, key);
  return invalid(field,
                 absl::StrCat("no such field; ", owner, " has ", absl::StrJoin(names, ", "),
                              guess.empty() ? "" : absl::StrCat(" (did you mean `", guess, "`?)")));
}

// An integer field's value: a JSON number with no fraction, or a string of digits, within
// the field's type.
absl::Status check_integer(const FieldDescriptor& field, const std::string& path,
                           const Value& value) {
  double number = 0;
  bool integral = false;
  if (value.kind_case() == Value::kNumberValue) {
    number = value.number_value();
    integral = std::isfinite(number) && std::floor(number) == number;
  } else if (value.kind_case() == Value::kStringValue) {
    int64_t parsed_signed = 0;
    uint64_t parsed_unsigned = 0;
    if (absl::SimpleAtoi(value.string_value(), &parsed_signed)) {
      number = static_cast<double>(parsed_signed);
      integral = true;
    } else if (absl::SimpleAtoi(value.string_value(), &parsed_unsigned)) {
      number = static_cast<double>(parsed_unsigned);
      integral = true;
    }
  }
  double lo = 0, hi = 0;
  std::string range;
  switch (field.cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      lo = std::numeric_limits<int32_t>::min();
      hi = std::numeric_limits<int32_t>::max();
      range = "[-2147483648, 2147483647]";
      break;
    case FieldDescriptor::CPPTYPE_UINT32:
      hi = std::numeric_limits<uint32_t>::max();
      range = "[0, 4294967295]";
      break;
    case FieldDescriptor::CPPTYPE_INT64:
      lo = -0x1p63;
      hi = std::nextafter(0x1p63, 0.0);
      range = "[-2^63, 2^63)";
      break;
    default:  // uint64
      hi = std::nextafter(0x1p64, 0.0);
      range = "[0, 2^64)";
      break;
  }
  if (!integral)
    return invalid(path, absl::StrCat("got ", describe(value), ", expected an integer"));
  if (number < lo || number > hi) {
    return invalid(path, absl::StrCat("got ", describe(value), ", expected an integer in ", range));
  }
  // A JSON number is a double to most readers (this one's too, and it writes the spec back
  // so): past 2^53 its last digits are not the ones in the file. proto3 JSON writes such
  // a 64-bit integer as a string, which keeps every digit.
  if (value.kind_case() == Value::kNumberValue && std::abs(number) >= 0x1p53) {
    return invalid(path,
                   absl::StrCat("got ", describe(value),
                                ", a number too large for JSON to keep exactly; expected it "
                                "as a string (\"",
                                path.substr(path.rfind('.') + 1), "\": \"12345678901234567890\")"));
  }
  return absl::OkStatus();
}

absl::Status check_fields(const google::protobuf::Struct& object, const Descriptor& message,
                          const std::string& path);

// One value (a list's element when `element`) of `field`.
absl::Status check_value(const FieldDescriptor& field, const std::string& path, const Value& value,
                         bool element) {
  if (value.kind_case() == Value::kNullValue && !element) return absl::OkStatus();  // not set
  if (field.is_repeated() && !element) {
    if (value.kind_case() != Value::kListValue) {
      return invalid(path, absl::StrCat("got ", describe(value), ", expected a list"));
    }
    for (int i = 0; i < value.list_value().values_size(); ++i) {
      if (auto status = check_value(field, absl::StrCat(path, "[", i, "]"),
                                    value.list_value().values(i), true);
          !status.ok()) {
        return status;
      }
    }
    return absl::OkStatus();
  }
  const auto got = [&](const std::string& expected) {
    return invalid(path, absl::StrCat("got ", describe(value), ", expected ", expected));
  };
  switch (field.cpp_type()) {
    case FieldDescriptor::CPPTYPE_MESSAGE:
      if (value.kind_case() != Value::kStructValue) return got("an object");
      return check_fields(value.struct_value(), *field.message_type(), path);
    case FieldDescriptor::CPPTYPE_STRING:
      if (value.kind_case() != Value::kStringValue) return got("a string");
      return absl::OkStatus();
    case FieldDescriptor::CPPTYPE_BOOL:
      if (value.kind_case() == Value::kBoolValue) return absl::OkStatus();
      return got("true or false, unquoted");
    case FieldDescriptor::CPPTYPE_ENUM: {
      const auto* type = field.enum_type();
      std::vector<std::string> names;
      for (int i = 0; i < type->value_count(); ++i) names.push_back(type->value(i)->name());
      if (value.kind_case() == Value::kStringValue) {
        if (type->FindValueByName(value.string_value()) != nullptr) return absl::OkStatus();
      } else if (value.kind_case() == Value::kNumberValue) {
        const double number = value.number_value();
        if (std::floor(number) == number && std::abs(number) < 0x1p31) return absl::OkStatus();
      }
      return got(absl::StrCat("one of ", absl::StrJoin(names, ", ")));
    }
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT: {
      // Strings as proto3 JSON writes numbers, "NaN" and "Infinity" included: the
      // validator then refuses a value that is not finite by its own range.
      double number = 0;
      if (value.kind_case() == Value::kNumberValue ||
          (value.kind_case() == Value::kStringValue &&
           (absl::SimpleAtod(value.string_value(), &number) || value.string_value() == "NaN" ||
            value.string_value() == "Infinity" || value.string_value() == "-Infinity"))) {
        return absl::OkStatus();
      }
      return got("a number");
    }
    default:
      return check_integer(field, path, value);
  }
}

absl::Status check_fields(const google::protobuf::Struct& object, const Descriptor& message,
                          const std::string& path) {
  // In name order, so that the first error reported does not depend on the map's order.
  std::vector<std::string> keys;
  for (const auto& [key, value] : object.fields()) keys.push_back(key);
  std::sort(keys.begin(), keys.end());
  for (const std::string& key : keys) {
    const FieldDescriptor* field = message.FindFieldByName(key);
    for (int i = 0; field == nullptr && i < message.field_count(); ++i) {
      if (message.field(i)->json_name() == key) field = message.field(i);
    }
    if (field == nullptr) return unknown_field(message, path, key);
    const std::string field_path =
        path.empty() ? field->name() : absl::StrCat(path, ".", field->name());
    if (auto status = check_value(*field, field_path, object.fields().at(key), false);
        !status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status check_spec_json_fields(const google::protobuf::Struct& root) {
  return check_fields(root, *accum::v1::JobSpec::descriptor(), "");
}

}  // namespace accum::spec
