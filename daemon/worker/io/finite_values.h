// io/finite_values.h — finding the first NaN or infinity in fp32 data, for the readers and
// the checkpoint writer that refuse weights or optimizer moments that are not numbers.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <optional>
#include <string>

namespace accum::io {

// The index of the first NaN or infinite value of values[0, count), if there is one.
inline std::optional<size_t> first_non_finite(const float* values, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    if (!std::isfinite(values[i])) return i;
  }
  return std::nullopt;
}

// "nan", "inf" or "-inf" (the sign of a NaN says nothing, so it is left out); a finite
// value in the shortest form that reads back the same.
inline std::string value_name(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char text[32];
  std::snprintf(text, sizeof(text), "%.9g", value);
  return text;
}

}  // namespace accum::io
