// control/valid_utf8.h — text from files and processes made fit for a proto `string`.
//
// proto3 `string` fields must hold UTF-8: a client refuses to parse a reply that does
// not (accumctl and Python alike), so one worker error naming a file with a Latin-1 name
// would make GetJob, ListJobs (of every job), WatchJob and StreamLogs fail. What accumd
// reads from logs, launcher output and the file system passes through valid_utf8() on
// its way into a reply.
// Thread safety: a pure function.
#pragma once

#include <string>
#include <string_view>

namespace accum::control {

// `text` with every byte that is not part of a well-formed UTF-8 sequence (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF) replaced by U+FFFD; valid text
// comes back unchanged.
std::string valid_utf8(std::string_view text);

}  // namespace accum::control
