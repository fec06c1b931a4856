// tests/daemon/e2e_tls_test.cpp — accumd over TLS: clients and the workers' link back both
// verify accumd's certificate, and accumd refuses at start a certificate that does not name
// the host its workers dial (the README's remote set-up: --listen 0.0.0.0 with a certificate
// made for the machine's name).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

#include "gtest/gtest.h"
#include "tests/daemon/daemon_harness.h"

namespace accum::testing {
namespace {

// A self-signed certificate with the subject alternative names `san` (openssl's syntax,
// e.g. "IP:127.0.0.1,DNS:localhost"), made with the openssl CLI. Returns "" on success, else
// what went wrong with openssl's own output. openssl is one of accumd's packages
// (deploy/setup.sh), so a failure here fails the test: these tests are never skipped.
std::string make_self_signed(const std::string& dir, const std::string& san, std::string* cert,
                             std::string* key) {
  *cert = dir + "/tls-cert.pem";
  *key = dir + "/tls-key.pem";
  const std::string log = dir + "/openssl.log";
  const std::string command =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost -addext "
      "subjectAltName=" +
      san + " -keyout " + *key + " -out " + *cert + " > " + log + " 2>&1";
  if (std::system(command.c_str()) == 0) return "";
  std::ifstream in(log);
  const std::string output((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return "the openssl command (deploy/setup.sh installs it) could not make a test certificate: " +
         command + "\n" + output;
}

// A loopback port free at the time of the call (for a flag that needs it up front).
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof(address);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), size) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
    close(fd);
    return 0;
  }
  close(fd);
  return ntohs(address.sin_port);
}

// TLS end to end: accumctl verifies the daemon with --tls-ca, the workers' link back to the
// daemon goes over TLS too (the launcher hands them the CA), and plaintext is refused.
TEST(DaemonSecurity, TlsServesClientsAndWorkersAndRefusesPlaintext) {
  DaemonHarness daemon;
  std::string cert, key;
  const std::string no_certificate =
      make_self_signed(daemon.dir(), "IP:127.0.0.1,DNS:localhost", &cert, &key);
  ASSERT_TRUE(no_certificate.empty()) << no_certificate;
  DaemonOptions options;
  options.extra_args = {"--tls-cert", cert, "--tls-key", key};
  ASSERT_TRUE(daemon.start(options));
  std::string output;
  const std::string spec_path = daemon.dir() + "/job.json";
  std::ofstream(spec_path) << daemon.spec_json("tls", 4, 1, 0);
  ASSERT_EQ(run_accumctl(daemon, {"--tls-ca", cert, "submit", spec_path}, &output), 0) << output;
  const std::string id = output.substr(0, output.find('\n'));
  ASSERT_EQ(run_accumctl(daemon, {"--tls-ca", cert, "watch", id}, &output), 0) << output;
  EXPECT_NE(output.find("SUCCEEDED"), std::string::npos) << output;
  // The last metrics reach the daemon only through the worker's TLS link.
  ASSERT_EQ(run_accumctl(daemon, {"--tls-ca", cert, "--output", "json", "status", id}, &output), 0)
      << output;
  EXPECT_NE(output.find("\"step\":\"4\""), std::string::npos)
      << "the worker's link did not report step 4 over TLS:\n"
      << output;
  // Plaintext clients get nothing: accumctl without --tls-ca, and a raw insecure stub.
  EXPECT_EQ(run_accumctl(daemon, {"list"}, &output), 3) << output;
  EXPECT_NE(output.find("if it serves TLS, pass --tls-ca FILE"), std::string::npos) << output;
  EXPECT_EQ(output.find("ID "), std::string::npos) << "a table header without a table:\n" << output;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  accum::v1::ListJobsResponse response;
  EXPECT_EQ(daemon.stub().ListJobs(&context, accum::v1::ListJobsRequest(), &response).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

// A certificate made for the machine's name, served on 0.0.0.0: the workers dial
// 127.0.0.1, which it does not name, so every job's link would fail its TLS check (the job
// trains unreported, and is killed at --hello-timeout-s). accumd refuses to start, naming
// the host, the certificate's names and --advertise.
TEST(DaemonSecurity, TlsCertificateThatDoesNotNameTheWorkersHostIsRefusedAtStart) {
  DaemonHarness daemon;  // not started: only its build and scratch folders are used
  std::string cert, key;
  const std::string no_certificate =
      make_self_signed(daemon.dir(), "DNS:trainer-host.invalid", &cert, &key);
  ASSERT_TRUE(no_certificate.empty()) << no_certificate;
  const std::string accumd = "timeout 20 " + daemon.build_dir() + "/bin/accumd --state-dir '" +
                             daemon.dir() + "/state' --tls-cert " + cert + " --tls-key " + key;
  std::string output;
  // `timeout`: an accumd that took the certificate would serve until killed (exit 124).
  EXPECT_EQ(run_command(accumd + " --listen 0.0.0.0:0", &output), 2) << output;
  EXPECT_NE(output.find(cert + " does not name 127.0.0.1 (it names DNS:trainer-host.invalid)"),
            std::string::npos)
      << output;
  EXPECT_NE(output.find("--advertise HOST:PORT"), std::string::npos) << output;
  // The same with an --advertise host it does not name either.
  EXPECT_EQ(run_command(accumd + " --listen 127.0.0.1:0 --advertise localhost:1", &output), 2)
      << output;
  EXPECT_NE(output.find(cert + " does not name localhost"), std::string::npos) << output;
}

// What the refusal advises works: --advertise with a name the certificate holds, and the
// job's link reports every step over TLS.
TEST(DaemonSecurity, TlsWithAnAdvertisedNameTheCertificateHoldsLinksTheWorkers) {
  DaemonHarness daemon;
  std::string cert, key;
  const std::string no_certificate = make_self_signed(daemon.dir(), "DNS:localhost", &cert, &key);
  ASSERT_TRUE(no_certificate.empty()) << no_certificate;
  const int port = free_port();
  ASSERT_NE(port, 0);
  const std::string advertise = "localhost:" + std::to_string(port);
  DaemonOptions options;
  options.extra_args = {"--tls-cert",  cert,       "--tls-key",
                        key,           "--listen", "127.0.0.1:" + std::to_string(port),
                        "--advertise", advertise};
  ASSERT_TRUE(daemon.start(options));
  std::string output;
  const std::string spec_path = daemon.dir() + "/job.json";
  std::ofstream(spec_path) << daemon.spec_json("tls-advertised", 4, 1, 0);
  // A later --server wins: the client, too, dials the name the certificate holds.
  const std::vector<std::string> tls = {"--server", advertise, "--tls-ca", cert};
  auto with_tls = [&](std::vector<std::string> args) {
    args.insert(args.begin(), tls.begin(), tls.end());
    return args;
  };
  ASSERT_EQ(run_accumctl(daemon, with_tls({"submit", spec_path}), &output), 0) << output;
  const std::string id = output.substr(0, output.find('\n'));
  ASSERT_EQ(run_accumctl(daemon, with_tls({"watch", id}), &output), 0) << output;
  ASSERT_EQ(run_accumctl(daemon, with_tls({"--output", "json", "status", id}), &output), 0)
      << output;
  EXPECT_NE(output.find("\"step\":\"4\""), std::string::npos)
      << "the worker's link did not report step 4 over TLS to " << advertise << ":\n"
      << output;
}

}  // namespace
}  // namespace accum::testing
