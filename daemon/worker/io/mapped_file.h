// io/mapped_file.h — a read-only memory map of a whole file (RAII).
//
// Header-only on purpose: the data loader maps files and the safetensors reader opens them
// (open_regular_file), and the data library does not link the io library. An empty file maps
// to {nullptr, 0} (mmap refuses length 0). Errors name the file and the errno.
// Each mapping is registered with mapping_fault.h, so that a SIGBUS from the file
// shrinking under the worker is reported by name (once the handler is installed).
//
// Thread safety: the mapping is immutable; reads from several threads are fine.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "daemon/worker/io/mapping_fault.h"

namespace accum::io {

// A regular file opened read-only, with its size; the caller closes fd. NOT_FOUND when the
// file is missing, PERMISSION_DENIED when it cannot be opened, FAILED_PRECONDITION when it is
// not a regular file, INTERNAL for other system errors; each names the file.
struct OpenedFile {
  int fd = -1;
  size_t size = 0;
};
inline absl::StatusOr<OpenedFile> open_regular_file(const std::string& path) {
  // O_NONBLOCK: opening a FIFO (a named pipe given as a data file) for reading would
  // wait for a writer forever, deaf to SIGTERM; this way fstat below refuses it at once.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    int err = errno;
    std::string what = absl::StrCat(path, ": cannot open: ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(what);
    return absl::PermissionDeniedError(what);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat(path, ": fstat failed: ", std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(path, ": not a regular file"));
  }
  return OpenedFile{fd, static_cast<size_t>(st.st_size)};
}

class MappedFile {
 public:
  // Maps `path` read-only. NOT_FOUND when the file is missing, FAILED_PRECONDITION
  // when it is not a regular file, INTERNAL for other system errors.
  static absl::StatusOr<std::unique_ptr<MappedFile>> open(const std::string& path) {
    auto opened = open_regular_file(path);
    if (!opened.ok()) return opened.status();
    const int fd = opened->fd;
    auto file = std::unique_ptr<MappedFile>(new MappedFile());
    file->size_ = opened->size;
    if (file->size_ > 0) {
      // MAP_POPULATE: both users read every byte right away (validation scan,
      // tensor copy); prefaulting in one call is much cheaper than 4 KiB faults.
      void* base = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
      if (base == MAP_FAILED) {
        int err = errno;
        ::close(fd);
        return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(err)));
      }
      file->data_ = static_cast<const uint8_t*>(base);
      // So that a SIGBUS from the file shrinking under us names it (mapping_fault.h).
      file->fault_slot_ = register_mapping(base, file->size_, path);
    }
    ::close(fd);  // the mapping stays valid after close
    return file;
  }

  ~MappedFile() {
    unregister_mapping(fault_slot_);
    if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

  // Access-pattern hint to the kernel (MADV_SEQUENTIAL, MADV_NORMAL, ...); best effort.
  void advise(int advice) const {
    if (data_ != nullptr) ::madvise(const_cast<uint8_t*>(data_), size_, advice);
  }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  int fault_slot_ = -1;  // register_mapping()'s slot, or -1
};

}  // namespace accum::io
