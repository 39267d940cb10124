// ServerAuth against real gRPC servers and channels: local credentials with
// tokens, and TLS with certificates made by deploy/make-certs.sh.
#include "lib/auth/server_auth.h"

#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "catch2/catch.hpp"
#include "lib/auth/credentials.h"
#include "lib/testing/temp_dir.h"
#include "proto/host.grpc.pb.h"

namespace mesh {
namespace {

// GetHostInfo answers the caller's identity (in `hostname`) to any role;
// ShutdownHost needs admin.
class WhoAmI final : public v1::Host::CallbackService {
 public:
  explicit WhoAmI(const ServerAuth* auth) : auth_(auth) {}
  grpc::ServerUnaryReactor* GetHostInfo(grpc::CallbackServerContext* context,
                                        const v1::GetHostInfoRequest*,
                                        v1::HostInfo* response) override {
    auto* reactor = context->DefaultReactor();
    absl::StatusOr<Principal> caller = auth_->Authenticate(*context);
    if (!caller.ok()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                   std::string(caller.status().message())));
      return reactor;
    }
    response->set_hostname(caller->identity);
    response->set_version(std::string(RoleName(caller->role)));
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  grpc::ServerUnaryReactor* ShutdownHost(grpc::CallbackServerContext* context,
                                         const v1::ShutdownHostRequest*,
                                         v1::ShutdownHostResponse*) override {
    auto* reactor = context->DefaultReactor();
    absl::StatusOr<Principal> caller = auth_->Authenticate(*context);
    absl::Status allowed =
        caller.ok() ? Authorize(*caller, "ShutdownHost", {}) : caller.status();
    reactor->Finish(
        allowed.ok()
            ? grpc::Status::OK
            : grpc::Status(static_cast<grpc::StatusCode>(allowed.code()),
                           std::string(allowed.message())));
    return reactor;
  }

 private:
  const ServerAuth* auth_;
};

class Server {
 public:
  explicit Server(std::unique_ptr<ServerAuth> auth)
      : auth_(std::move(auth)), service_(auth_.get()) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", auth_->ServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    REQUIRE(server_ != nullptr);
  }
  ~Server() { server_->Shutdown(); }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  std::unique_ptr<ServerAuth> auth_;
  WhoAmI service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

grpc::Status WhoIs(const std::string& address,
                   const ClientCredentials& credentials, v1::HostInfo* info) {
  auto stub = v1::Host::NewStub(NewAuthedChannel(address, credentials));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  return stub->GetHostInfo(&context, v1::GetHostInfoRequest(), info);
}

grpc::Status Shutdown(const std::string& address,
                      const ClientCredentials& credentials) {
  auto stub = v1::Host::NewStub(NewAuthedChannel(address, credentials));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  v1::ShutdownHostResponse response;
  return stub->ShutdownHost(&context, v1::ShutdownHostRequest(), &response);
}

void WriteFile(const std::string& path, const std::string& text, int mode) {
  std::ofstream(path) << text;
  REQUIRE(chmod(path.c_str(), mode) == 0);
}

ClientCredentials Token(const std::string& token) {
  ClientCredentials credentials;
  credentials.token = token;
  return credentials;
}

constexpr char kOpsToken[] = "ops-0123456789abcdef";
constexpr char kAliceToken[] = "alice-0123456789abcdef";

std::unique_ptr<ServerAuth> LocalAuth(const testing::TempDir& dir) {
  const std::string tokens = dir.path() + "/tokens";
  WriteFile(tokens,
            absl::StrCat("# identity role token\n", "ops admin ", kOpsToken,
                         "\n", "alice client ", kAliceToken, "\n"),
            0600);
  ServerAuthOptions options;
  options.tokens_file = tokens;
  absl::StatusOr<std::unique_ptr<ServerAuth>> auth =
      ServerAuth::Create(options, /*listen_is_loopback=*/true);
  REQUIRE(auth.ok());
  return *std::move(auth);
}

TEST_CASE("a token from the tokens file names the caller and its role") {
  testing::TempDir dir;
  Server server(LocalAuth(dir));
  v1::HostInfo info;
  grpc::Status status = WhoIs(server.address(), Token(kOpsToken), &info);
  REQUIRE(status.ok());
  CHECK(info.hostname() == "ops");
  CHECK(info.version() == "admin");
  REQUIRE(WhoIs(server.address(), Token(kAliceToken), &info).ok());
  CHECK(info.hostname() == "alice");
  CHECK(info.version() == "client");
}

TEST_CASE(
    "a call without credentials or with a wrong token is UNAUTHENTICATED "
    "before its handler runs") {
  testing::TempDir dir;
  Server server(LocalAuth(dir));
  v1::HostInfo info;
  grpc::Status none = WhoIs(server.address(), ClientCredentials(), &info);
  CHECK(none.error_code() == grpc::StatusCode::UNAUTHENTICATED);
  CHECK_THAT(none.error_message(), Catch::Contains("no credentials"));
  grpc::Status wrong =
      WhoIs(server.address(), Token("not-a-token-of-this-host"), &info);
  CHECK(wrong.error_code() == grpc::StatusCode::UNAUTHENTICATED);
  CHECK_THAT(wrong.error_message(), Catch::Contains("not valid"));
  // A prefix of a real token is no token.
  grpc::Status prefix = WhoIs(
      server.address(), Token(std::string(kOpsToken).substr(0, 10)), &info);
  CHECK(prefix.error_code() == grpc::StatusCode::UNAUTHENTICATED);
}

TEST_CASE(
    "a client may not run an admin verb: PERMISSION_DENIED names the "
    "role it needs") {
  testing::TempDir dir;
  Server server(LocalAuth(dir));
  grpc::Status denied = Shutdown(server.address(), Token(kAliceToken));
  CHECK(denied.error_code() == grpc::StatusCode::PERMISSION_DENIED);
  CHECK_THAT(denied.error_message(), Catch::Contains("needs role admin"));
  CHECK_THAT(denied.error_message(), Catch::Contains("alice has role client"));
  CHECK(Shutdown(server.address(), Token(kOpsToken)).ok());
}

TEST_CASE(
    "a tokens file others can read, or a malformed one, is refused "
    "naming the file") {
  testing::TempDir dir;
  const std::string tokens = dir.path() + "/tokens";
  ServerAuthOptions options;
  options.tokens_file = tokens;
  WriteFile(tokens, absl::StrCat("ops admin ", kOpsToken, "\n"), 0644);
  absl::StatusOr<std::unique_ptr<ServerAuth>> open =
      ServerAuth::Create(options, true);
  REQUIRE_FALSE(open.ok());
  CHECK_THAT(std::string(open.status().message()), Catch::Contains("0644"));
  WriteFile(tokens, "ops superuser 0123456789abcdef0123\n", 0600);
  absl::StatusOr<std::unique_ptr<ServerAuth>> bad_role =
      ServerAuth::Create(options, true);
  REQUIRE_FALSE(bad_role.ok());
  CHECK_THAT(std::string(bad_role.status().message()),
             Catch::Contains("line 1") && Catch::Contains("unknown role") &&
                 !Catch::Contains("superuser"));
  WriteFile(tokens, "hostd:local admin 0123456789abcdef0123\n", 0600);
  CHECK_FALSE(ServerAuth::Create(options, true).ok());
  WriteFile(tokens, "ops admin short\n", 0600);
  CHECK_FALSE(ServerAuth::Create(options, true).ok());
}

constexpr char kBobToken[] = "bob-0123456789abcdef";
constexpr char kLocalToken[] = "local-0123456789abcdef";

TEST_CASE(
    "ReloadTokens: a token added to the tokens file is accepted, a removed "
    "one refused, and built-in tokens stay") {
  testing::TempDir dir;
  std::unique_ptr<ServerAuth> owned = LocalAuth(dir);
  ServerAuth* auth = owned.get();
  auth->AddToken(kLocalIdentity, Role::kAdmin, kLocalToken);
  Server server(std::move(owned));
  v1::HostInfo info;
  REQUIRE(WhoIs(server.address(), Token(kAliceToken), &info).ok());
  REQUIRE(WhoIs(server.address(), Token(kBobToken), &info).error_code() ==
          grpc::StatusCode::UNAUTHENTICATED);

  WriteFile(
      dir.path() + "/tokens",
      absl::StrCat("ops admin ", kOpsToken, "\nbob client ", kBobToken, "\n"),
      0600);
  absl::StatusOr<size_t> reloaded = auth->ReloadTokens();
  REQUIRE(reloaded.ok());
  CHECK(*reloaded == 2);
  REQUIRE(WhoIs(server.address(), Token(kBobToken), &info).ok());
  CHECK(info.hostname() == "bob");
  CHECK(info.version() == "client");
  grpc::Status alice = WhoIs(server.address(), Token(kAliceToken), &info);
  CHECK(alice.error_code() == grpc::StatusCode::UNAUTHENTICATED);
  CHECK_THAT(alice.error_message(), Catch::Contains("not valid"));
  REQUIRE(WhoIs(server.address(), Token(kOpsToken), &info).ok());
  CHECK(info.hostname() == "ops");
  REQUIRE(WhoIs(server.address(), Token(kLocalToken), &info).ok());
  CHECK(info.hostname() == kLocalIdentity);
  CHECK(info.version() == "admin");
}

TEST_CASE(
    "ReloadTokens of a bad tokens file changes nothing and says why, naming "
    "the file") {
  testing::TempDir dir;
  const std::string tokens = dir.path() + "/tokens";
  std::unique_ptr<ServerAuth> owned = LocalAuth(dir);
  ServerAuth* auth = owned.get();
  Server server(std::move(owned));
  v1::HostInfo info;

  // A bad line after a good one: not even the good line is taken.
  WriteFile(tokens,
            absl::StrCat("bob client ", kBobToken, "\nops superuser ",
                         kOpsToken, "\n"),
            0600);
  absl::StatusOr<size_t> bad_line = auth->ReloadTokens();
  REQUIRE_FALSE(bad_line.ok());
  CHECK_THAT(std::string(bad_line.status().message()),
             Catch::Contains(tokens) && Catch::Contains("line 2") &&
                 !Catch::Contains(kOpsToken));
  // Others may read it: refused too.
  WriteFile(tokens, absl::StrCat("bob client ", kBobToken, "\n"), 0644);
  absl::StatusOr<size_t> open = auth->ReloadTokens();
  REQUIRE_FALSE(open.ok());
  CHECK_THAT(std::string(open.status().message()), Catch::Contains("0644"));
  // Gone.
  REQUIRE(unlink(tokens.c_str()) == 0);
  CHECK_FALSE(auth->ReloadTokens().ok());

  // The tokens of the last good read still work; the bad files' do not.
  REQUIRE(WhoIs(server.address(), Token(kAliceToken), &info).ok());
  CHECK(info.hostname() == "alice");
  REQUIRE(WhoIs(server.address(), Token(kOpsToken), &info).ok());
  CHECK(info.version() == "admin");
  CHECK(WhoIs(server.address(), Token(kBobToken), &info).error_code() ==
        grpc::StatusCode::UNAUTHENTICATED);
}

// The auth context of a call without TLS (a token call never looks further).
class NoTlsContext final : public grpc::AuthContext {
 public:
  bool IsPeerAuthenticated() const override { return false; }
  std::vector<grpc::string_ref> GetPeerIdentity() const override { return {}; }
  std::string GetPeerIdentityPropertyName() const override { return ""; }
  std::vector<grpc::string_ref> FindPropertyValues(
      const std::string&) const override {
    return {};
  }
  grpc::AuthPropertyIterator begin() const override { return Iterator(); }
  grpc::AuthPropertyIterator end() const override { return Iterator(); }
  void AddProperty(const std::string&, const grpc::string_ref&) override {}
  bool SetPeerIdentityPropertyName(const std::string&) override {
    return false;
  }

 private:
  struct Iterator : grpc::AuthPropertyIterator {};
};

TEST_CASE(
    "calls authenticating while the tokens file is reloaded always find a "
    "token that every version of the file holds") {
  testing::TempDir dir;
  const std::string tokens = dir.path() + "/tokens";
  std::unique_ptr<ServerAuth> auth = LocalAuth(dir);
  const NoTlsContext context;
  const std::vector<std::string> ops = {absl::StrCat("Bearer ", kOpsToken)};
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  std::atomic<int> calls{0};
  std::vector<std::thread> callers;
  for (int i = 0; i < 4; ++i) {
    callers.emplace_back([&] {
      while (!done.load()) {
        absl::StatusOr<Principal> caller = auth->Authenticate(ops, context);
        if (!caller.ok() || caller->identity != "ops") ++failures;
        ++calls;
      }
    });
  }
  // ops is in every version of the file, first or last; alice and bob take
  // turns.
  for (int round = 0; round < 300; ++round) {
    const std::string ops_line = absl::StrCat("ops admin ", kOpsToken, "\n");
    const std::string other =
        round % 2 == 0 ? absl::StrCat("bob client ", kBobToken, "\n")
                       : absl::StrCat("alice client ", kAliceToken, "\n");
    WriteFile(tokens, round % 3 == 0 ? ops_line + other : other + ops_line,
              0600);
    REQUIRE(auth->ReloadTokens().ok());
  }
  while (calls.load() < 1000) absl::SleepFor(absl::Milliseconds(1));
  done = true;
  for (std::thread& caller : callers) caller.join();
  CHECK(failures.load() == 0);
}

TEST_CASE(
    "a listen address off loopback without TLS is refused naming the "
    "flags to set") {
  absl::StatusOr<std::unique_ptr<ServerAuth>> auth =
      ServerAuth::Create(ServerAuthOptions(), /*listen_is_loopback=*/false);
  REQUIRE_FALSE(auth.ok());
  CHECK_THAT(std::string(auth.status().message()),
             Catch::Contains("--tls-cert") && Catch::Contains("--tls-ca"));
}

// A CA, a host cert for 127.0.0.1, client certs (admin, plain, expired) and
// a cert of another CA, made by deploy/make-certs.sh as an operator would.
class Certs {
 public:
  Certs() {
    const std::string script = "deploy/make-certs.sh";
    const std::string dir = dir_.path();
    for (const std::string& args :
         {std::string("--ca --host host0 --ip 127.0.0.1"),
          std::string("--client ops"), std::string("--client alice"),
          std::string("--client old --expired")}) {
      Run(absl::StrCat(script, " ", dir, "/ca ", args));
    }
    Run(absl::StrCat(script, " ", dir, "/other --ca --client mallory"));
  }
  std::string path(const std::string& file) const {
    return dir_.path() + "/" + file;
  }
  ClientCredentials Client(const std::string& name,
                           const std::string& ca_dir = "ca") const {
    absl::StatusOr<ClientCredentials> credentials =
        ClientCredentials::FromFiles("", path("ca/ca.pem"),
                                     path(ca_dir + "/" + name + ".pem"),
                                     path(ca_dir + "/" + name + ".key"));
    REQUIRE(credentials.ok());
    return *credentials;
  }
  std::unique_ptr<ServerAuth> Auth(bool require_client_cert) const {
    ServerAuthOptions options;
    options.tls_cert_file = path("ca/host0.pem");
    options.tls_key_file = path("ca/host0.key");
    options.tls_ca_file = path("ca/ca.pem");
    options.tls_require_client_cert = require_client_cert;
    options.admins = {"ops"};
    absl::StatusOr<std::unique_ptr<ServerAuth>> auth =
        ServerAuth::Create(options, /*listen_is_loopback=*/false);
    REQUIRE(auth.ok());
    return *std::move(auth);
  }

 private:
  static void Run(const std::string& command) {
    INFO(command);
    REQUIRE(std::system((command + " >/dev/null 2>&1").c_str()) == 0);
  }
  testing::TempDir dir_;
};

TEST_CASE(
    "over TLS a client certificate's CN is the identity, and --admin "
    "makes it an admin") {
  Certs certs;
  Server server(certs.Auth(/*require_client_cert=*/false));
  v1::HostInfo info;
  REQUIRE(WhoIs(server.address(), certs.Client("ops"), &info).ok());
  CHECK(info.hostname() == "ops");
  CHECK(info.version() == "admin");
  REQUIRE(WhoIs(server.address(), certs.Client("alice"), &info).ok());
  CHECK(info.version() == "client");
  CHECK(Shutdown(server.address(), certs.Client("alice")).error_code() ==
        grpc::StatusCode::PERMISSION_DENIED);
}

TEST_CASE(
    "over TLS an expired certificate or one of another CA fails the "
    "handshake, and no certificate is UNAUTHENTICATED") {
  Certs certs;
  Server server(certs.Auth(/*require_client_cert=*/false));
  v1::HostInfo info;
  grpc::Status expired = WhoIs(server.address(), certs.Client("old"), &info);
  CHECK(expired.error_code() == grpc::StatusCode::UNAVAILABLE);
  INFO(expired.error_message());
  grpc::Status foreign =
      WhoIs(server.address(), certs.Client("mallory", "other"), &info);
  CHECK(foreign.error_code() == grpc::StatusCode::UNAVAILABLE);
  ClientCredentials ca_only;
  ca_only.tls_ca_pem = certs.Client("ops").tls_ca_pem;
  grpc::Status none = WhoIs(server.address(), ca_only, &info);
  CHECK(none.error_code() == grpc::StatusCode::UNAUTHENTICATED);
}

TEST_CASE(
    "with --tls-require-client-cert a TLS client without a certificate "
    "fails the handshake") {
  Certs certs;
  Server server(certs.Auth(/*require_client_cert=*/true));
  ClientCredentials ca_only;
  ca_only.tls_ca_pem = certs.Client("ops").tls_ca_pem;
  v1::HostInfo info;
  CHECK(WhoIs(server.address(), ca_only, &info).error_code() ==
        grpc::StatusCode::UNAVAILABLE);
  CHECK(WhoIs(server.address(), certs.Client("ops"), &info).ok());
}

TEST_CASE("a key or token file others can read is refused on the client too") {
  testing::TempDir dir;
  const std::string token = dir.path() + "/token";
  WriteFile(token, "0123456789abcdef0123\n", 0644);
  absl::StatusOr<ClientCredentials> open =
      ClientCredentials::FromFiles(token, "", "", "");
  REQUIRE_FALSE(open.ok());
  CHECK_THAT(std::string(open.status().message()), Catch::Contains("0644"));
  REQUIRE(chmod(token.c_str(), 0600) == 0);
  absl::StatusOr<ClientCredentials> closed =
      ClientCredentials::FromFiles(token, "", "", "");
  REQUIRE(closed.ok());
  CHECK(closed->token == "0123456789abcdef0123");
}

}  // namespace
}  // namespace mesh
