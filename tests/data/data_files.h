// tests/data/data_files.h — writes the data formats the loader reads into a
// fresh temporary directory, so every test builds its own inputs.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/common/temp_dir.h"

namespace accum::data::testing {

using accum::testing::TempDir;

inline void write_bytes(const std::string& path, const void* data, size_t bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
}

inline void append_bytes(const std::string& path, const void* data, size_t bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::app);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
}

// llm.c shard: 256 x int32 header {magic, version, count, 0...}, then tokens as
// uint16 (magic 20240520) or uint32 (magic 20240801).
inline void write_llmc(const std::string& path, const std::vector<uint32_t>& tokens,
                       bool wide = false, int32_t version = 1) {
  int32_t header[256] = {};
  header[0] = wide ? 20240801 : 20240520;
  header[1] = version;
  header[2] = static_cast<int32_t>(tokens.size());
  write_bytes(path, header, sizeof(header));
  for (uint32_t t : tokens) {
    if (wide) {
      append_bytes(path, &t, 4);
    } else {
      uint16_t v = static_cast<uint16_t>(t);
      append_bytes(path, &v, 2);
    }
  }
}

// nanoGPT .bin: raw uint16 tokens.
inline void write_nanogpt(const std::string& path, const std::vector<uint32_t>& tokens) {
  std::vector<uint16_t> data(tokens.begin(), tokens.end());
  write_bytes(path, data.data(), data.size() * 2);
}

inline void write_text(const std::string& path, const std::string& text) {
  write_bytes(path, text.data(), text.size());
}

// Tokens 0, 1, ..., n-1 shifted by `first` (token value == stream position when
// the stream is built from consecutive ranges).
inline std::vector<uint32_t> iota_tokens(uint32_t first, uint32_t n) {
  std::vector<uint32_t> tokens(n);
  for (uint32_t i = 0; i < n; ++i) tokens[i] = first + i;
  return tokens;
}

}  // namespace accum::data::testing
