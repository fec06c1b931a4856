// io/durable_file.cpp — the small file helpers checkpoint code is built from:
// read a whole file, write one and fsync it, fsync a directory, create folders
// durably, sha256 of a file.
//
// Durability rule (POSIX): data reaches the disk after fsync(file); a new name
// or a rename reaches it after fsync(parent directory). Callers that publish a
// file by rename therefore do write_file_durable(tmp) -> rename -> fsync_dir.
#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/worker/io/checkpoint_dir.h"

namespace accum::io {
namespace {

absl::Status errno_error(const std::string& path, absl::string_view action, int err) {
  std::string what = absl::StrCat(path, ": ", action, " failed: ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(what);
  // A full disk (or quota) is no bug and no bad input: callers tell the user so.
  if (err == ENOSPC || err == EDQUOT) return absl::ResourceExhaustedError(what);
  return absl::InternalError(what);
}

// Closes a file descriptor on scope exit.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

absl::StatusOr<std::string> read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno_error(path, "open", errno);
  FdCloser closer{fd};
  std::string contents;
  char buffer[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(path, "read", errno);
    }
    if (n == 0) break;
    contents.append(buffer, static_cast<size_t>(n));
  }
  return contents;
}

absl::Status write_file_durable(const std::string& path, const std::string& contents) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errno_error(path, "create", errno);
  FdCloser closer{fd};
  const char* p = contents.data();
  size_t left = contents.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(path, "write", errno);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) return errno_error(path, "fsync", errno);
  closer.fd = -1;
  if (::close(fd) != 0) return errno_error(path, "close", errno);
  return absl::OkStatus();
}

absl::Status fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno_error(dir, "open directory", errno);
  FdCloser closer{fd};
  if (::fsync(fd) != 0) return errno_error(dir, "fsync directory", errno);
  return absl::OkStatus();
}

absl::Status create_directories_durable(const std::string& dir) {
  std::filesystem::path target = std::filesystem::path(dir).lexically_normal();
  if (!target.has_filename()) target = target.parent_path();  // "a/b/" names "a/b"
  std::vector<std::filesystem::path> created;                 // deepest first
  std::error_code error;
  for (auto path = target; !path.empty() && !std::filesystem::exists(path, error);
       path = path.parent_path()) {
    created.push_back(path);
    if (path == path.parent_path()) break;
  }
  std::filesystem::create_directories(target, error);
  if (error) return errno_error(target.string(), "create directory", error.value());
  for (auto it = created.rbegin(); it != created.rend(); ++it) {
    const auto parent = it->parent_path();
    if (absl::Status s = fsync_dir(parent.empty() ? "." : parent.string()); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> sha256_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno_error(path, "open", errno);
  FdCloser closer{fd};
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    return absl::InternalError(absl::StrCat(path, ": cannot initialize sha256"));
  std::vector<unsigned char> buffer(1 << 20);
  while (true) {
    ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(path, "read", errno);
    }
    if (n == 0) break;
    if (EVP_DigestUpdate(ctx.get(), buffer.data(), static_cast<size_t>(n)) != 1)
      return absl::InternalError(absl::StrCat(path, ": sha256 update failed"));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), digest, &digest_len) != 1)
    return absl::InternalError(absl::StrCat(path, ": sha256 final failed"));
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < digest_len; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 0xF]);
  }
  return hex;
}

}  // namespace accum::io
