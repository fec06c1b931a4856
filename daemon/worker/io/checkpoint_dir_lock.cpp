#include "daemon/worker/io/checkpoint_dir_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace accum::io {
namespace {

constexpr char kLockName[] = ".lock";

// The holder's own line, or "" when it could not be read.
std::string read_holder(int fd) {
  char text[256];
  const ssize_t n = ::pread(fd, text, sizeof(text) - 1, 0);
  if (n <= 0) return "";
  return std::string(absl::StripAsciiWhitespace(std::string(text, static_cast<size_t>(n))));
}

}  // namespace

absl::StatusOr<std::unique_ptr<CheckpointDirLock>> CheckpointDirLock::acquire(
    const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / kLockName).string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    const std::string holder = error == EWOULDBLOCK ? read_holder(fd) : "";
    ::close(fd);
    if (error == ENOLCK || error == EOPNOTSUPP || error == ENOSYS || error == EINVAL) {
      return absl::UnimplementedError(absl::StrCat("the file system of ", path,
                                                   " does not take locks (", std::strerror(error),
                                                   "): nothing keeps a second run out of ", dir));
    }
    if (error != EWOULDBLOCK) {
      return absl::InternalError(absl::StrCat("cannot lock ", path, ": ", std::strerror(error)));
    }
    return absl::UnavailableError(absl::StrCat(
        "checkpoint.dir ", dir, " is in use by another training run (",
        holder.empty() ? std::string("its holder is not known") : holder, ", holding ", path,
        "): two runs in one folder would replace each other's checkpoints; wait for that run "
        "to end, or give this one another checkpoint.dir"));
  }
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  const std::string holder = absl::StrCat("pid ", ::getpid(), " on host ", host, "\n");
  // Informational only (the flock is the lock): a failed write leaves an older holder's line.
  if (::ftruncate(fd, 0) == 0) {
    (void)!::pwrite(fd, holder.data(), holder.size(), 0);
  }
  return std::unique_ptr<CheckpointDirLock>(new CheckpointDirLock(fd));
}

CheckpointDirLock::~CheckpointDirLock() { ::close(fd_); }

}  // namespace accum::io
