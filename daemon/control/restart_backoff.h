// control/restart_backoff.h — how long a failed job waits before its next attempt.
//
// The delay doubles with each restart, up to kMaxBackoff. Its end is recorded in the job
// store as wall-clock time (steady_clock does not outlive the process), so an accumd
// restarted meanwhile waits out what is left of it. Wall clocks step: a due time read back
// is trusted only as far as kMaxBackoff ahead.
//
// Thread safety: pure functions.
#pragma once

#include <chrono>
#include <cstdint>

namespace accum::control {

inline constexpr std::chrono::milliseconds kMaxBackoff{60000};

// The delay before restart number `restarts` (1 for the first): `first` doubled per
// restart after the first, at most kMaxBackoff. REQUIRES: restarts >= 1, first >= 0.
std::chrono::milliseconds restart_backoff(std::chrono::milliseconds first, int restarts);

// What is left at `now_unix_ms` of a backoff due at `due_unix_ms` (both wall clock, ms since
// the epoch): 0 once it is due, or when the due time is unknown (0, a store written before
// due times were kept); never more than kMaxBackoff, however far ahead the due time lies
// (the clock was stepped back since it was written).
std::chrono::milliseconds backoff_remaining(int64_t due_unix_ms, int64_t now_unix_ms);

}  // namespace accum::control
