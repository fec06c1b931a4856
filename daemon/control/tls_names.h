// control/tls_names.h — does accumd's TLS certificate name the address its workers dial?
//
// Under TLS every job's rank 0 verifies accumd's certificate against the host it dials
// (the --advertise address, or the --listen one with 0.0.0.0 read as 127.0.0.1). A
// certificate made for the machine's name, served on 0.0.0.0, fails that check on every
// link: the jobs train but never report, and are killed at --hello-timeout-s. accumd checks
// the name once at start instead, and refuses to serve.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace accum::control {

// The host part of "HOST:PORT" ("[::1]:7070" gives "::1").
std::string host_of_address(const std::string& address);

// OK when the PEM certificate in `cert_path` (its first one: the leaf) names `host` the
// way gRPC's TLS check matches it: an IP address against the certificate's IP subject
// alternative names; a DNS name against its DNS ones (a leading "*." wildcard included),
// or against its common name when it has none. INVALID_ARGUMENT naming the file, `host`
// and the names the certificate holds when it does not; INVALID_ARGUMENT when the file
// holds no PEM certificate.
absl::Status certificate_names_host(const std::string& cert_path, const std::string& host);

}  // namespace accum::control
