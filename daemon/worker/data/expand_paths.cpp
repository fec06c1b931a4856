// data/expand_paths.cpp — turns the spec's data paths (plain paths and glob
// patterns, in the order given) into the list of files a stream concatenates.
//
// Each pattern's matches are sorted bytewise (not by locale) so the stream, and
// with it the token order, is the same on every machine. A plain path is kept
// as is (open() reports a missing file by name); a pattern that matches nothing
// is an error naming it, unless a file has that literal name. Glob matches ending in ".mask" are
// skipped: they are the loss-mask sidecars of the data files, not data.
#include <glob.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "daemon/worker/data/token_stream.h"

namespace accum::data {

absl::StatusOr<std::vector<std::string>> expand_paths(const std::vector<std::string>& patterns) {
  if (patterns.empty()) return absl::InvalidArgumentError("no data paths given");
  std::vector<std::string> files;
  for (const std::string& pattern : patterns) {
    if (pattern.empty()) return absl::InvalidArgumentError("empty data path");
    if (pattern.find_first_of("*?[") == std::string::npos) {
      files.push_back(pattern);
      continue;
    }
    glob_t matches{};
    int rc = ::glob(pattern.c_str(), GLOB_NOSORT, nullptr, &matches);
    std::vector<std::string> found;
    if (rc == 0) {
      for (size_t i = 0; i < matches.gl_pathc; ++i) {
        std::string path = matches.gl_pathv[i];
        if (!absl::EndsWith(path, ".mask")) found.push_back(std::move(path));
      }
    }
    ::globfree(&matches);
    if (rc != 0 && rc != GLOB_NOMATCH)
      return absl::InternalError(
          absl::StrCat("data path pattern '", pattern, "': glob failed (code ", rc, ")"));
    if (found.empty() && ::access(pattern.c_str(), F_OK) == 0) {
      files.push_back(pattern);  // a file whose name merely contains [, ? or *
      continue;
    }
    if (found.empty())
      return absl::NotFoundError(absl::StrCat("data path pattern '", pattern, "' matches no file"));
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

}  // namespace accum::data
