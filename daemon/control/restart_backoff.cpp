// control/restart_backoff.cpp — the restart delays of restart_backoff.h.
#include "daemon/control/restart_backoff.h"

#include <algorithm>

namespace accum::control {

std::chrono::milliseconds restart_backoff(std::chrono::milliseconds first, int restarts) {
  // At most 2^16 times an int of milliseconds (--restart-backoff-ms): no overflow.
  const auto doubled = first * (int64_t{1} << std::clamp(restarts - 1, 0, 16));
  return std::min<std::chrono::milliseconds>(doubled, kMaxBackoff);
}

std::chrono::milliseconds backoff_remaining(int64_t due_unix_ms, int64_t now_unix_ms) {
  if (due_unix_ms <= 0 || due_unix_ms <= now_unix_ms) return std::chrono::milliseconds(0);
  return std::min<std::chrono::milliseconds>(std::chrono::milliseconds(due_unix_ms - now_unix_ms),
                                             kMaxBackoff);
}

}  // namespace accum::control
