// hostd's metrics endpoint (README "Metrics"), scraped over real HTTP from
// real hostds: values that move (procs by status, spawns, failures, RPC
// histograms, per proc and per actor series), a non-loopback address
// refused without TLS and a token, the token required when configured, and
// HTTPS off loopback. Also GetProcState's usage (RSS, threads).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "catch2/catch.hpp"
#include "lib/testing/temp_dir.h"
#include "proto/host.grpc.pb.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using testing::Context;
using testing::TempDir;
using testing::TestHost;

struct HttpReply {
  int status = 0;
  std::string head;
  std::string body;
};

// GET `path` from 127.0.0.1:`port` with `headers` (each "Name: value"),
// over TLS checked against `ca_file` if it is set: a tiny client, one
// request per connection.
absl::StatusOr<HttpReply> Get(int port, const std::string& path,
                              const std::vector<std::string>& headers = {},
                              const std::string& ca_file = "") {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) !=
      0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("cannot connect to ", port));
  }
  std::string request = absl::StrCat("GET ", path,
                                     " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     "Connection: close\r\n");
  for (const std::string& header : headers) {
    absl::StrAppend(&request, header, "\r\n");
  }
  request += "\r\n";
  std::string reply;
  char buffer[16384];
  if (ca_file.empty()) {
    send(fd, request.data(), request.size(), MSG_NOSIGNAL);
    for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) {
      reply.append(buffer, static_cast<size_t>(n));
    }
  } else {
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    SSL* ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set1_host(ssl, "127.0.0.1");
    const bool shook = SSL_connect(ssl) == 1;
    if (shook) {
      SSL_write(ssl, request.data(), static_cast<int>(request.size()));
      for (int n; (n = SSL_read(ssl, buffer, sizeof(buffer))) > 0;) {
        reply.append(buffer, static_cast<size_t>(n));
      }
    }
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    if (!shook) {
      close(fd);
      return absl::UnavailableError("TLS handshake failed");
    }
  }
  close(fd);
  HttpReply parsed;
  const size_t end = reply.find("\r\n\r\n");
  if (end == std::string::npos ||
      !absl::SimpleAtoi(reply.substr(9, 3), &parsed.status)) {
    return absl::InternalError(absl::StrCat("not HTTP: ", reply.substr(0, 80)));
  }
  parsed.head = reply.substr(0, end);
  parsed.body = reply.substr(end + 4);
  return parsed;
}

// The metrics port hostd logged ("serving metrics at http://h:PORT/...").
int MetricsPort(const TestHost& host) {
  const std::string log = host.HostdLog();
  const size_t at = log.find("serving metrics at ");
  REQUIRE(at != std::string::npos);
  const std::string url = log.substr(at, log.find('\n', at) - at);
  const size_t colon = url.rfind(':');
  int port = 0;
  REQUIRE(absl::SimpleAtoi(
      url.substr(colon + 1, url.find('/', colon) - colon - 1), &port));
  return port;
}

// The value of the sample line that starts with `series` + " " (e.g.
// `hostmesh_procs{status="RUNNING"}`), or nullopt.
std::optional<double> Value(const std::string& text,
                            const std::string& series) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, series + " ")) {
      double value = 0;
      if (absl::SimpleAtod(line.substr(series.size() + 1), &value)) {
        return value;
      }
    }
  }
  return std::nullopt;
}

std::string Scrape(int port) {
  absl::StatusOr<HttpReply> reply = Get(port, "/metrics");
  REQUIRE(reply.ok());
  REQUIRE(reply->status == 200);
  CHECK(absl::StrContains(reply->head, "text/plain; version=0.0.4"));
  return reply->body;
}

void WriteSecret(const std::string& path, const std::string& text) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(write(fd, text.data(), text.size()) ==
          static_cast<ssize_t>(text.size()));
  close(fd);
}

TEST_CASE(
    "the metrics endpoint's procs, spawns, failures, RPC histograms and per "
    "proc and actor series move with what the host does") {
  auto host = TestHost::Start({"--metrics-listen=127.0.0.1:0"});
  REQUIRE(host != nullptr);
  const int port = MetricsPort(*host);
  const std::string before = Scrape(port);
  CHECK(Value(before, "hostmesh_procs{status=\"RUNNING\"}") == 0.0);
  CHECK(Value(before, "hostmesh_proc_spawns_total") == 0.0);
  CHECK(Value(before, "hostmesh_proc_failures_total") == 0.0);
  CHECK(Value(before, "hostmesh_hostd_starts_total") == 1.0);
  const std::string get_count =
      "hostmesh_rpc_duration_seconds_count{method=\"/mesh.v1.Host/"
      "GetProcState\"}";

  // A procd: RUNNING, with an actor.
  v1::ProcState state;
  REQUIRE(host->Create("p0", 0, v1::ProcSpec(), &state).ok());
  REQUIRE(host->Wait({"p0"}, v1::RUNNING).procs(0).status() == v1::RUNNING);
  v1::CreateOrUpdateActorRequest create;
  create.set_proc("p0");
  create.set_name("counter");
  create.set_type("mesh.counter");
  v1::ActorState actor;
  REQUIRE(v1::Proc::NewStub(host->channel())
              ->CreateOrUpdateActor(Context().get(), create, &actor)
              .ok());
  // A proc that fails at once.
  REQUIRE(host->Create("bad", 1, testing::Shell("exit 3"), &state).ok());
  REQUIRE(host->Wait({"bad"}, v1::STOPPED).procs(0).status() == v1::FAILED);
  for (int i = 0; i < 3; ++i) REQUIRE(host->Get("p0", &state).ok());

  // Introspection through GetProcState: the live proc's RSS and threads.
  CHECK(state.usage().rss_bytes() > 1024 * 1024);
  CHECK(state.usage().threads() >= 2);

  const std::string after = Scrape(port);
  INFO(after);
  CHECK(Value(after, "hostmesh_procs{status=\"RUNNING\"}") == 1.0);
  CHECK(Value(after, "hostmesh_procs{status=\"FAILED\"}") == 1.0);
  CHECK(Value(after, "hostmesh_proc_spawns_total") == 2.0);
  CHECK(Value(after, "hostmesh_proc_failures_total") == 1.0);
  CHECK(Value(after, get_count) >= 3.0);
  CHECK(Value(after,
              "hostmesh_rpcs_total{method=\"/mesh.v1.Host/"
              "GetProcState\",code=\"OK\"}") >= 3.0);
  CHECK(Value(after, "hostmesh_proc_resident_bytes{proc=\"p0\"}") > 1e6);
  CHECK(Value(after, "hostmesh_proc_threads{proc=\"p0\"}") >= 2.0);
  CHECK(Value(after,
              "hostmesh_actor_queue_depth{proc=\"p0\",actor=\"counter\"}") ==
        0.0);
  CHECK(Value(after,
              "hostmesh_actor_messages_handled_total{proc=\"p0\","
              "actor=\"counter\"}") == 0.0);
  // malloc's count: glibc's, which AddressSanitizer's allocator bypasses
  // (there it reads 0).
  REQUIRE(Value(after, "hostmesh_heap_bytes").has_value());
#ifndef __SANITIZE_ADDRESS__
  CHECK(Value(after, "hostmesh_heap_bytes") > 0.0);
#endif
  // The histogram counts grow with calls.
  REQUIRE(host->Get("p0", &state).ok());
  CHECK(Value(Scrape(port), get_count) > *Value(after, get_count));
  // Only /metrics, and only GET.
  absl::StatusOr<HttpReply> other = Get(port, "/other");
  REQUIRE(other.ok());
  CHECK(other->status == 404);
}

TEST_CASE(
    "a non-loopback metrics address without TLS and a token stops hostd at "
    "start, saying what to set") {
  TempDir dir;
  const std::vector<std::string> common = {
      "--listen=127.0.0.1:0", "--state-dir=" + dir.path() + "/state",
      "--runtime-dir=" + dir.path() + "/run", "--cgroup=none"};
  std::vector<std::string> args = common;
  args.push_back("--metrics-listen=0.0.0.0:0");
  ExitInfo exit = testing::RunHostdToExit(args);
  CHECK(exit.exit_code == std::optional<int>(2));
  CHECK_THAT(exit.stderr_tail, Catch::Contains("is not loopback") &&
                                   Catch::Contains("--metrics-token-file") &&
                                   Catch::Contains("--tls-cert"));
  // A token alone is not enough.
  const std::string token_file = dir.path() + "/metrics.token";
  WriteSecret(token_file, "0123456789abcdef0123456789abcdef\n");
  args.push_back("--metrics-token-file=" + token_file);
  exit = testing::RunHostdToExit(args);
  CHECK(exit.exit_code == std::optional<int>(2));
  CHECK_THAT(exit.stderr_tail, Catch::Contains("need TLS and a token"));
  // A short token is refused too.
  WriteSecret(token_file, "short\n");
  args = common;
  args.push_back("--metrics-listen=127.0.0.1:0");
  args.push_back("--metrics-token-file=" + token_file);
  exit = testing::RunHostdToExit(args);
  CHECK(exit.exit_code == std::optional<int>(2));
  CHECK_THAT(exit.stderr_tail, Catch::Contains("at least 16 characters"));
}

TEST_CASE("with a metrics token a scrape without it is 401 and with it 200") {
  TempDir dir;
  const std::string token = "0123456789abcdef0123456789abcdef";
  const std::string token_file = dir.path() + "/metrics.token";
  WriteSecret(token_file, token + "\n");
  auto host = TestHost::Start(
      {"--metrics-listen=127.0.0.1:0", "--metrics-token-file=" + token_file});
  REQUIRE(host != nullptr);
  const int port = MetricsPort(*host);
  absl::StatusOr<HttpReply> none = Get(port, "/metrics");
  REQUIRE(none.ok());
  CHECK(none->status == 401);
  CHECK_FALSE(absl::StrContains(none->body, "hostmesh_procs"));
  absl::StatusOr<HttpReply> wrong =
      Get(port, "/metrics", {"Authorization: Bearer " + token + "x"});
  REQUIRE(wrong.ok());
  CHECK(wrong->status == 401);
  absl::StatusOr<HttpReply> right =
      Get(port, "/metrics", {"Authorization: Bearer " + token});
  REQUIRE(right.ok());
  CHECK(right->status == 200);
  CHECK(absl::StrContains(right->body, "hostmesh_procs{status=\"RUNNING\"}"));
}

TEST_CASE(
    "off loopback the metrics are served over TLS to a scrape with the "
    "token only") {
  TempDir dir;
  const std::string certs = dir.path() + "/certs";
  REQUIRE(std::system(absl::StrCat("deploy/make-certs.sh ", certs,
                                   " --ca --host host0 --ip 127.0.0.1 "
                                   ">/dev/null 2>&1")
                          .c_str()) == 0);
  const std::string token = "fedcba9876543210fedcba9876543210";
  const std::string token_file = dir.path() + "/metrics.token";
  WriteSecret(token_file, token + "\n");
  auto host = TestHost::Start(
      {"--metrics-listen=0.0.0.0:0", "--metrics-token-file=" + token_file,
       "--tls-cert=" + certs + "/host0.pem",
       "--tls-key=" + certs + "/host0.key", "--tls-ca=" + certs + "/ca.pem"});
  REQUIRE(host != nullptr);
  CHECK(absl::StrContains(host->HostdLog(), "serving metrics at https://"));
  const int port = MetricsPort(*host);
  const std::string ca = certs + "/ca.pem";
  absl::StatusOr<HttpReply> none = Get(port, "/metrics", {}, ca);
  REQUIRE(none.ok());
  CHECK(none->status == 401);
  absl::StatusOr<HttpReply> right =
      Get(port, "/metrics", {"Authorization: Bearer " + token}, ca);
  REQUIRE(right.ok());
  CHECK(right->status == 200);
  CHECK(absl::StrContains(right->body, "hostmesh_procs{status=\"RUNNING\"}"));
  // Plain HTTP gets no metrics there.
  absl::StatusOr<HttpReply> plain =
      Get(port, "/metrics", {"Authorization: Bearer " + token});
  CHECK_FALSE((plain.ok() && plain->status == 200));
}

}  // namespace
}  // namespace mesh
