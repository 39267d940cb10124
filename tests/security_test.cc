// Authentication and authorization end to end, on real hostds: who gets in
// on loopback, what each role may do, and what another local user can read.
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"
#include "hostmesh/hostmesh.h"
#include "lib/auth/credentials.h"
#include "lib/relay/relay_stream.h"
#include "lib/testing/skip.h"
#include "lib/testing/temp_dir.h"
#include "proto/actors.pb.h"
#include "proto/host.grpc.pb.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using testing::Context;
using testing::NewClient;
using testing::TestHost;
using testing::WithClient;

constexpr char kAliceToken[] = "alice-token-0123456789abcdef";
constexpr char kBobToken[] = "bob-token-0123456789abcdef";

ClientCredentials Token(const std::string& token) {
  ClientCredentials credentials;
  credentials.token = token;
  return credentials;
}

std::unique_ptr<v1::Host::Stub> HostStub(const std::string& address,
                                         const ClientCredentials& credentials) {
  return v1::Host::NewStub(NewAuthedChannel(address, credentials));
}

TEST_CASE(
    "hostd refuses to listen off loopback without authentication and "
    "says which flags to set") {
  testing::TempDir dir;
  ExitInfo exit = testing::RunHostdToExit(
      {"--listen=0.0.0.0:0", "--state-dir=" + dir.path() + "/state",
       "--runtime-dir=" + dir.path() + "/run"});
  CHECK(exit.exit_code == std::optional<int>(2));
  CHECK_THAT(exit.stderr_tail, Catch::Contains("--tls-cert") &&
                                   Catch::Contains("--tls-ca") &&
                                   Catch::Contains("--tokens-file"));
}

TEST_CASE(
    "a caller without credentials gets UNAUTHENTICATED from a loopback "
    "hostd before any verb runs, and nothing is spawned") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  auto anonymous = HostStub(host->address(), ClientCredentials());
  v1::CreateOrUpdateProcRequest create;
  create.set_name("pwn");
  create.mutable_spec()->set_command("/bin/sh");
  create.mutable_spec()->add_args("-c");
  create.mutable_spec()->add_args("touch " + host->state_dir() + "/pwned");
  v1::ProcState state;
  grpc::Status created =
      anonymous->CreateOrUpdateProc(Context().get(), create, &state);
  CHECK(created.error_code() == grpc::StatusCode::UNAUTHENTICATED);
  v1::ShutdownHostResponse shutdown;
  CHECK(anonymous->ShutdownHost(Context().get(), {}, &shutdown).error_code() ==
        grpc::StatusCode::UNAUTHENTICATED);
  auto forged = HostStub(host->address(), Token("0123456789abcdef0123"));
  CHECK(forged->CreateOrUpdateProc(Context().get(), create, &state)
            .error_code() == grpc::StatusCode::UNAUTHENTICATED);

  v1::ListProcsResponse list;
  REQUIRE(host->stub().ListProcs(Context().get(), {}, &list).ok());
  CHECK(list.procs_size() == 0);
  CHECK(access((host->state_dir() + "/pwned").c_str(), F_OK) != 0);
  v1::HostInfo info;
  CHECK(host->stub().GetHostInfo(Context().get(), {}, &info).ok());
}

TEST_CASE("the runtime dir's admin token lets the same user's tools in") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  const std::string token_file = host->runtime_dir() + "/admin.token";
  struct stat st;
  REQUIRE(stat(token_file.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  absl::StatusOr<ClientCredentials> local =
      ClientCredentials::FromFiles(token_file, "", "", "");
  REQUIRE(local.ok());
  v1::HostInfo info;
  CHECK(HostStub(host->address(), *local)
            ->GetHostInfo(Context().get(), {}, &info)
            .ok());
}

// A host with two client identities (tokens) besides the test's admin one.
std::unique_ptr<TestHost> HostWithClients(const testing::TempDir& dir) {
  const std::string tokens = dir.path() + "/tokens";
  std::ofstream(tokens) << "# identity role token\n"
                        << "alice client " << kAliceToken << "\n"
                        << "bob client " << kBobToken << "\n";
  REQUIRE(chmod(tokens.c_str(), 0600) == 0);
  return TestHost::Start({"--tokens-file=" + tokens});
}

TEST_CASE(
    "a client acts only on the procs and actors it owns, and only an "
    "admin may shut the host down") {
  testing::TempDir dir;
  auto host = HostWithClients(dir);
  REQUIRE(host != nullptr);
  std::shared_ptr<Client> alice = NewClient(Token(kAliceToken));
  std::shared_ptr<Client> bob = NewClient(Token(kBobToken));

  absl::StatusOr<HostMesh> hosts =
      HostMesh::Attach({host->address()}, WithClient(alice));
  REQUIRE(hosts.ok());
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("p", 1);
  REQUIRE(procs.ok());
  absl::StatusOr<ActorMesh> actors = procs->Spawn("a0", "mesh.echo");
  REQUIRE(actors.ok());
  auto replies = actors->Call<v1::ActorIdReply>(v1::GetActorId());
  REQUIRE(replies.size() == 1);
  CHECK(replies[0].ok());

  // The proc is alice's; the admin sees whose.
  v1::ProcState state;
  REQUIRE(host->Get("p_0", &state).ok());
  CHECK(state.owner() == "alice");

  auto bob_host = HostStub(host->address(), Token(kBobToken));
  v1::GetProcStateRequest get;
  get.set_name("p_0");
  grpc::Status got = bob_host->GetProcState(Context().get(), get, &state);
  CHECK(got.error_code() == grpc::StatusCode::PERMISSION_DENIED);
  CHECK_THAT(got.error_message(), Catch::Contains("bob"));
  v1::StopProcRequest stop;
  stop.set_name("p_0");
  CHECK(bob_host->StopProc(Context().get(), stop, &state).error_code() ==
        grpc::StatusCode::PERMISSION_DENIED);
  v1::CreateOrUpdateProcRequest take_over;
  take_over.set_name("p_0");
  CHECK(bob_host->CreateOrUpdateProc(Context().get(), take_over, &state)
            .error_code() == grpc::StatusCode::PERMISSION_DENIED);
  v1::ListProcsResponse bobs;
  REQUIRE(bob_host->ListProcs(Context().get(), {}, &bobs).ok());
  CHECK(bobs.procs_size() == 0);
  // Waiting on everything shows bob none of alice's procs; naming one of
  // them is refused.
  v1::WaitProcsRequest wait_all;
  wait_all.set_min_status(v1::INITIALIZING);
  wait_all.set_timeout_ms(100);
  v1::WaitProcsResponse waited;
  REQUIRE(bob_host->WaitProcs(Context().get(), wait_all, &waited).ok());
  CHECK(waited.procs_size() == 0);
  v1::WaitProcsRequest wait_named = wait_all;
  wait_named.add_names("p_0");
  CHECK(
      bob_host->WaitProcs(Context().get(), wait_named, &waited).error_code() ==
      grpc::StatusCode::PERMISSION_DENIED);
  v1::ShutdownHostResponse shutdown;
  grpc::Status shut = bob_host->ShutdownHost(Context().get(), {}, &shutdown);
  CHECK(shut.error_code() == grpc::StatusCode::PERMISSION_DENIED);
  CHECK_THAT(shut.error_message(), Catch::Contains("needs role admin"));

  // Bob cannot message alice's actor either, though he knows its address.
  ActorMesh stolen(bob, actors->name(), actors->type(), actors->extent(),
                   {actors->actor(0)});
  auto stolen_replies =
      stolen.Call<v1::ActorIdReply>(v1::GetActorId(), absl::Seconds(10));
  REQUIRE(stolen_replies.size() == 1);
  CHECK(stolen_replies[0].status().code() ==
        absl::StatusCode::kPermissionDenied);
  // ...and alice still can.
  CHECK(actors->Call<v1::ActorIdReply>(v1::GetActorId())[0].ok());

  // Nor can bob stream as alice's client id to receive her replies.
  {
    auto relay =
        v1::Relay::NewStub(NewAuthedChannel(host->address(), Token(kBobToken)));
    auto context = Context();
    context->AddMetadata(kRelaySenderMetadata, alice->id());
    auto stream = relay->Connect(context.get());
    v1::RelayFrame frame;
    while (stream->Read(&frame)) {
    }
    grpc::Status taken = stream->Finish();
    CHECK(taken.error_code() == grpc::StatusCode::PERMISSION_DENIED);
    CHECK_THAT(taken.error_message(), Catch::Contains("another identity"));
  }

  // When alice's proc ends, an admin's stream hears of it; bob's does not.
  auto listen = [&](const ClientCredentials& credentials,
                    const std::string& sender) {
    auto context = Context(absl::Seconds(4));
    context->AddMetadata(kRelaySenderMetadata, sender);
    auto relay =
        v1::Relay::NewStub(NewAuthedChannel(host->address(), credentials));
    return std::make_pair(std::move(context), std::move(relay));
  };
  auto [bob_context, bob_relay] = listen(Token(kBobToken), "client:bob-ear");
  auto [admin_context, admin_relay] =
      listen(host->credentials(), "client:admin-ear");
  auto bob_ear = bob_relay->Connect(bob_context.get());
  auto admin_ear = admin_relay->Connect(admin_context.get());
  v1::RelayFrame first;
  REQUIRE(bob_ear->Read(&first));  // Its first heartbeat: the stream is up.
  REQUIRE(admin_ear->Read(&first));
  CHECK(hosts->Shutdown(absl::Seconds(2)).ok());
  auto heard_lost = [](auto& stream) {
    bool lost = false;
    v1::RelayFrame frame;
    while (stream->Read(&frame)) {
      lost = lost || (frame.has_lost() && frame.lost().mailbox() == "p_0");
    }
    stream->Finish();
    return lost;
  };
  // Both read at once, each until its deadline.
  std::future<bool> admin_heard =
      std::async(std::launch::async, [&] { return heard_lost(admin_ear); });
  std::future<bool> bob_heard =
      std::async(std::launch::async, [&] { return heard_lost(bob_ear); });
  CHECK(admin_heard.get());
  CHECK_FALSE(bob_heard.get());
  REQUIRE(host->Get("p_0", &state).ok());
  CHECK(state.status() == v1::STOPPED);
}

// uid and gid of `nobody`, or false.
bool Nobody(uid_t* uid, gid_t* gid) {
  struct passwd* pw = getpwnam("nobody");
  if (pw == nullptr) return false;
  *uid = pw->pw_uid;
  *gid = pw->pw_gid;
  return true;
}

TEST_CASE(
    "another local user gets nothing from a loopback hostd and cannot "
    "read its admin token or its procs' logs") {
  uid_t uid;
  gid_t gid;
  if (geteuid() != 0 || !Nobody(&uid, &gid) ||
      access("/usr/bin/setpriv", X_OK) != 0) {
    HOSTMESH_SKIP("needs root, the user nobody and /usr/bin/setpriv");
  }
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  // The test's own dir is opened up, so only hostd's modes protect what is
  // inside it.
  const std::string root =
      std::filesystem::path(host->state_dir()).parent_path().string();
  REQUIRE(chmod(root.c_str(), 0755) == 0);
  v1::ProcSpec spec;
  spec.set_command("/bin/sh");
  spec.add_args("-c");
  spec.add_args("echo secret-output >&2; exec sleep 600");
  v1::ProcState state;
  REQUIRE(host->Create("p", 0, spec, &state).ok());

  auto as_nobody = [&](std::vector<std::string> command) {
    SpawnOptions spawn;
    spawn.path = "/usr/bin/setpriv";
    spawn.args = {absl::StrCat("--reuid=", uid), absl::StrCat("--regid=", gid),
                  "--clear-groups", "--"};
    spawn.args.insert(spawn.args.end(), command.begin(), command.end());
    return testing::RunToExit(spawn);
  };
  const std::string meshctl = testing::BinaryPath("meshctl");
  ExitInfo status =
      as_nobody({meshctl, "--host", host->address(), "host", "status"});
  CHECK(status.exit_code != std::optional<int>(0));
  CHECK_THAT(status.stderr_tail, Catch::Contains("UNAUTHENTICATED") ||
                                     Catch::Contains("no credentials"));
  ExitInfo token =
      as_nobody({meshctl, "--host", host->address(), "--token-file",
                 host->runtime_dir() + "/admin.token", "host", "status"});
  CHECK(token.exit_code != std::optional<int>(0));
  CHECK_THAT(token.stderr_tail, Catch::Contains("ermission denied"));
  ExitInfo log = as_nobody({"/bin/cat", state.log_dir() + "/stderr.log"});
  CHECK(log.exit_code != std::optional<int>(0));
  CHECK_THAT(log.stderr_tail, !Catch::Contains("secret-output"));
  // The same host still serves its own user.
  v1::HostInfo info;
  CHECK(host->stub().GetHostInfo(Context().get(), {}, &info).ok());
}

}  // namespace
}  // namespace mesh
