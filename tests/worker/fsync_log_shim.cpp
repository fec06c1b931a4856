// tests/worker/fsync_log_shim.cpp — an LD_PRELOAD library for the durability test: it logs
// every fsync (with the path of the descriptor) and every rename, in call order, to the file
// $ACCUM_TEST_SYSCALL_LOG, then makes the real call. One fault can be asked for:
// $ACCUM_TEST_FLOCK_ERRNO=n makes every flock fail with errno n, as on a file system that
// takes no locks (ENOLCK: an NFS mount without lockd).
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <string>

namespace {

std::string absolute(const char* path) {
  if (path[0] == '/') return path;
  char cwd[PATH_MAX];
  return std::string(getcwd(cwd, sizeof(cwd)) != nullptr ? cwd : ".") + "/" + path;
}

// One line per call, written with one write() so lines of different threads do not mix.
void log_line(const std::string& line) {
  const char* log = getenv("ACCUM_TEST_SYSCALL_LOG");
  if (log == nullptr) return;
  const int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  const std::string text = line + "\n";
  (void)!write(fd, text.data(), text.size());
  close(fd);
}

template <typename F>
F real(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" int fsync(int fd) {
  char link[64], path[PATH_MAX];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  const ssize_t n = readlink(link, path, sizeof(path) - 1);
  path[n > 0 ? n : 0] = '\0';
  log_line(std::string("fsync ") + path);
  return real<int (*)(int)>("fsync")(fd);
}

extern "C" int rename(const char* from, const char* to) {
  log_line("rename " + absolute(from) + " " + absolute(to));
  return real<int (*)(const char*, const char*)>("rename")(from, to);
}

extern "C" int renameat2(int from_dir, const char* from, int to_dir, const char* to,
                         unsigned int flags) {
  log_line("renameat2 " + absolute(from) + " " + absolute(to));
  return real<int (*)(int, const char*, int, const char*, unsigned int)>("renameat2")(
      from_dir, from, to_dir, to, flags);
}

extern "C" int flock(int fd, int operation) {
  if (const char* forced = getenv("ACCUM_TEST_FLOCK_ERRNO")) {
    errno = atoi(forced);
    return -1;
  }
  return real<int (*)(int, int)>("flock")(fd, operation);
}
