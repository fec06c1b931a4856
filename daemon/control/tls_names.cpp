// control/tls_names.cpp — the certificate name check of tls_names.h, with OpenSSL's
// X509_check_host / X509_check_ip_asc (the checks gRPC's own matching follows).
#include "daemon/control/tls_names.h"

#include <arpa/inet.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace accum::control {
namespace {

bool is_ip_address(const std::string& host) {
  unsigned char address[16];
  return inet_pton(AF_INET, host.c_str(), address) == 1 ||
         inet_pton(AF_INET6, host.c_str(), address) == 1;
}

// "DNS:vm", "IP:127.0.0.1", or "CN=vm" when the certificate has no subject alternative
// names: what a user compares with the host accumd dials.
std::vector<std::string> certificate_names(X509* cert) {
  std::vector<std::string> names;
  auto* sans =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; sans != nullptr && i < sk_GENERAL_NAME_num(sans); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(sans, i);
    if (name->type == GEN_DNS) {
      const ASN1_IA5STRING* dns = name->d.dNSName;
      names.push_back(
          absl::StrCat("DNS:", std::string(reinterpret_cast<const char*>(dns->data), dns->length)));
    } else if (name->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* ip = name->d.iPAddress;
      char text[INET6_ADDRSTRLEN] = "?";
      inet_ntop(ip->length == 4 ? AF_INET : AF_INET6, ip->data, text, sizeof(text));
      names.push_back(absl::StrCat("IP:", text));
    }
  }
  GENERAL_NAMES_free(sans);
  if (names.empty()) {
    char common_name[256] = "";
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, common_name,
                                  sizeof(common_name)) > 0) {
      names.push_back(absl::StrCat("CN=", common_name));
    }
  }
  return names;
}

}  // namespace

std::string host_of_address(const std::string& address) {
  const size_t colon = address.rfind(':');
  std::string host = colon == std::string::npos ? address : address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return host;
}

absl::Status certificate_names_host(const std::string& cert_path, const std::string& host) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(cert_path.c_str(), "r"), &std::fclose);
  if (!file) {
    return absl::InvalidArgumentError(absl::StrCat("--tls-cert ", cert_path, ": cannot read"));
  }
  std::unique_ptr<X509, void (*)(X509*)> cert(PEM_read_X509(file.get(), nullptr, nullptr, nullptr),
                                              &X509_free);
  if (!cert) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-cert ", cert_path, ": no PEM certificate in it"));
  }
  const int matched = is_ip_address(host)
                          ? X509_check_ip_asc(cert.get(), host.c_str(), 0)
                          : X509_check_host(cert.get(), host.data(), host.size(),
                                            X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, nullptr);
  if (matched == 1) return absl::OkStatus();
  const std::vector<std::string> names = certificate_names(cert.get());
  return absl::InvalidArgumentError(
      absl::StrCat("--tls-cert ", cert_path, " does not name ", host, " (it names ",
                   names.empty() ? std::string("no host") : absl::StrJoin(names, ", "), ")"));
}

}  // namespace accum::control
