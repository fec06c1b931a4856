// control/state_dir_lock.cpp — flock(LOCK_EX | LOCK_NB) on <state-dir>/accumd.lock.
#include "daemon/control/state_dir_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace accum::control {

absl::StatusOr<StateDirLock> StateDirLock::acquire(const std::string& state_dir) {
  std::error_code error;
  std::filesystem::create_directories(state_dir, error);
  if (error) {
    return absl::UnavailableError(
        absl::StrCat("--state-dir ", state_dir, ": cannot create: ", error.message()));
  }
  const std::string path = state_dir + "/accumd.lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("lock file ", path, ": cannot open: ", std::strerror(errno)));
  }
  StateDirLock lock(fd);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int flock_errno = errno;
    if (flock_errno != EWOULDBLOCK) {
      return absl::UnavailableError(
          absl::StrCat("lock file ", path, ": flock failed: ", std::strerror(flock_errno)));
    }
    char holder[32] = {};
    const ssize_t n = ::pread(fd, holder, sizeof(holder) - 1, 0);
    std::string pid = n > 0 ? std::string(holder, static_cast<size_t>(n)) : "";
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    return absl::FailedPreconditionError(
        absl::StrCat("another accumd", pid.empty() ? "" : absl::StrCat(" (pid ", pid, ")"),
                     " uses the state dir ", state_dir, ": it holds the lock file ", path,
                     "; stop it, or give this accumd another --state-dir"));
  }
  // Ours now: record who holds it, for the message another accumd prints.
  const std::string pid = absl::StrCat(::getpid(), "\n");
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    return absl::UnavailableError(
        absl::StrCat("lock file ", path, ": cannot write the pid: ", std::strerror(errno)));
  }
  return lock;
}

StateDirLock::~StateDirLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

}  // namespace accum::control
