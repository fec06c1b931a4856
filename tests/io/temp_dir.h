// tests/io/temp_dir.h — the shared TempDir and a text-file writer for the io tests.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/common/temp_dir.h"

namespace accum::io::testing {

using accum::testing::TempDir;

inline void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

}  // namespace accum::io::testing
