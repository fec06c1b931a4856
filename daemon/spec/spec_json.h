// spec/spec_json.h — a spec's JSON checked against accum.v1.JobSpec's fields before
// protobuf reads it, so that a misspelt name or a value of the wrong kind gets the
// validator's kind of message: the field's path, what it got and what was expected
// ("spec field `model.nlayer`: no such field; `model` has preset, n_layer, ... (did you
// mean `n_layer`?)"), where protobuf's own says "(model) nlayer: Cannot find field." or
// "invalid value "TPU" for type type.googleapis.com/accum.v1.Device".
//
// What it accepts is what canonical protobuf JSON accepts, less protobuf's leniency
// for booleans: a field by its proto name or its lowerCamelCase JSON name; null for
// "not set"; numbers as JSON numbers or strings (proto3 JSON writes 64-bit integers as
// strings, so a spec printed with `accumctl --output json` reads back); an enum by name
// or number (validate_and_fill() refuses an unknown number); and true or false, unquoted,
// for a boolean. protobuf's C++ parser would also take "true", "yes", "1" or "t" in
// quotes, its Python parser none of them: the Python client (accumd_client/spec.py) applies
// these same rules, with these messages.
#pragma once

#include <google/protobuf/struct.pb.h>

#include "absl/status/status.h"

namespace accum::spec {

// OK, or INVALID_ARGUMENT naming the first field of `root` (the spec's JSON as a Struct)
// that accum.v1.JobSpec does not have, or whose value it cannot hold.
absl::Status check_spec_json_fields(const google::protobuf::Struct& root);

}  // namespace accum::spec
