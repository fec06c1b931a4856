// tests/common/scratch_tmpfs.h — a small tmpfs mounted for one test, so that it can fill a
// real file system (ENOSPC) without touching the machine's disks; unmounted when destroyed.
// Mounting needs root with CAP_SYS_ADMIN: where that is missing, `error` says why and
// ACCUM_SKIP_UNLESS_MOUNTED skips the test with it. fill() takes what is left; resize()
// changes the size in place.
#pragma once

#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

namespace accum::testing {

class ScratchTmpfs {
 public:
  ScratchTmpfs(const std::string& path, size_t bytes) : path_(path), bytes_(bytes) {
    std::filesystem::create_directories(path);
    if (::mount("tmpfs", path.c_str(), "tmpfs", 0, options(bytes).c_str()) != 0) {
      error = std::strerror(errno);
    }
  }
  ~ScratchTmpfs() {
    if (error.empty()) ::umount2(path_.c_str(), MNT_DETACH);
  }
  ScratchTmpfs(const ScratchTmpfs&) = delete;
  ScratchTmpfs& operator=(const ScratchTmpfs&) = delete;

  // Grows or shrinks the file system without losing its files; false (errno set) on failure.
  bool resize(size_t bytes) {
    return ::mount("tmpfs", path_.c_str(), "tmpfs", MS_REMOUNT, options(bytes).c_str()) == 0;
  }
  // Writes `name` until the file system is full; returns the bytes written.
  size_t fill(const std::string& name) {
    const int fd = ::open((path_ + "/" + name).c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return 0;
    const std::string block(4096, 'f');
    size_t written = 0;
    for (ssize_t n; (n = ::write(fd, block.data(), block.size())) > 0;) written += n;
    ::close(fd);
    return written;
  }
  std::string error;  // empty when mounted

  // Why the test cannot run: what could not be mounted, what it needs, and the error.
  std::string skip_reason() const {
    return "mounting a " + std::to_string(bytes_) + "-byte tmpfs at " + path_ +
           " to fill needs root with CAP_SYS_ADMIN: " + error;
  }

 private:
  static std::string options(size_t bytes) { return "size=" + std::to_string(bytes); }
  std::string path_;
  size_t bytes_;
};

}  // namespace accum::testing

// In a test body: skips the test, saying why, where `disk` (a ScratchTmpfs) is not mounted.
#define ACCUM_SKIP_UNLESS_MOUNTED(disk)                              \
  do {                                                               \
    if (!(disk).error.empty()) GTEST_SKIP() << (disk).skip_reason(); \
  } while (false)
