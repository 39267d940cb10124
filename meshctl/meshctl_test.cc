#include "meshctl/meshctl.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "catch2/catch.hpp"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "meshctl/format.h"
#include "proto/actors.pb.h"
#include "proto/host.grpc.pb.h"

namespace mesh {
namespace {

using ::mesh::meshctl::CheckProcWait;
using ::mesh::meshctl::FormatOwnerTable;
using ::mesh::meshctl::FormatProcTable;
using ::mesh::meshctl::FormatReply;
using ::mesh::meshctl::ParseDuration;
using ::mesh::meshctl::Satisfies;
using ::mesh::meshctl::ToJson;

struct Result {
  int code;
  std::string out;
  std::string err;
};

Result Run(std::vector<std::string> args) {
  args.insert(args.begin(), "meshctl");
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  std::ostringstream out, err;
  int code = RunMeshctl(static_cast<int>(args.size()), argv.data(), out, err);
  return {code, out.str(), err.str()};
}

// A 127.0.0.1 port nothing listens on: bound once to get a free number, then
// closed.
std::string ClosedAddress() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  close(fd);
  return absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
}

v1::ProcState Proc(const std::string& name, v1::Status status,
                   const std::string& reason = "") {
  v1::ProcState proc;
  proc.set_name(name);
  proc.set_status(status);
  proc.set_reason(reason);
  return proc;
}

// In-memory stand-ins for hostd's Host and Proc services on one real gRPC
// server, so the tests see what meshctl sends and how it treats the
// answers. They spawn nothing; hostd's own behaviour is tested end to end in
// tests/.
class FakeHost final : public v1::Host::CallbackService {
 public:
  explicit FakeHost(std::string* address) : address_(address) {}

  // The status WaitProcs reports for every proc (RUNNING by default).
  void SetWaitResult(v1::Status status, const std::string& reason) {
    absl::MutexLock lock(&mu_);
    wait_status_ = status;
    wait_reason_ = reason;
  }
  std::vector<v1::CreateOrUpdateProcRequest> creates() {
    absl::MutexLock lock(&mu_);
    return creates_;
  }
  v1::WaitProcsRequest last_wait() {
    absl::MutexLock lock(&mu_);
    return last_wait_;
  }
  // NOT_FOUND as hostd says it, unless proc `name` was spawned.
  grpc::Status CheckProc(const std::string& name) {
    absl::MutexLock lock(&mu_);
    if (procs_.count(name) > 0) return grpc::Status::OK;
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("no proc \"", name, "\""));
  }

  grpc::ServerUnaryReactor* CreateOrUpdateProc(
      grpc::CallbackServerContext* context,
      const v1::CreateOrUpdateProcRequest* request,
      v1::ProcState* response) override {
    absl::MutexLock lock(&mu_);
    creates_.push_back(*request);
    v1::ProcState& proc = procs_[request->name()];
    proc = Proc(request->name(), v1::INITIALIZING, "spawned");
    proc.set_rank(request->rank());
    *proc.mutable_spec() = request->spec();
    *response = proc;
    return Finish(context, grpc::Status::OK);
  }

  grpc::ServerUnaryReactor* GetProcState(grpc::CallbackServerContext* context,
                                         const v1::GetProcStateRequest* request,
                                         v1::ProcState* response) override {
    absl::MutexLock lock(&mu_);
    auto it = procs_.find(request->name());
    if (it == procs_.end()) {
      return Finish(context, grpc::Status(grpc::StatusCode::NOT_FOUND,
                                          absl::StrCat("no proc \"",
                                                       request->name(), "\"")));
    }
    *response = it->second;
    return Finish(context, grpc::Status::OK);
  }

  grpc::ServerUnaryReactor* GetHostInfo(grpc::CallbackServerContext* context,
                                        const v1::GetHostInfoRequest*,
                                        v1::HostInfo* response) override {
    absl::MutexLock lock(&mu_);
    response->set_address(*address_);
    response->set_hostname("fake");
    response->set_num_procs(static_cast<uint32_t>(procs_.size()));
    return Finish(context, grpc::Status::OK);
  }

  grpc::ServerUnaryReactor* StopProc(grpc::CallbackServerContext* context,
                                     const v1::StopProcRequest* request,
                                     v1::ProcState* response) override {
    absl::MutexLock lock(&mu_);
    auto it = procs_.find(request->name());
    if (it == procs_.end()) {
      return Finish(context, grpc::Status(grpc::StatusCode::NOT_FOUND,
                                          absl::StrCat("no proc \"",
                                                       request->name(), "\"")));
    }
    it->second.set_status(v1::STOPPED);
    it->second.set_reason(request->reason());
    *response = it->second;
    return Finish(context, grpc::Status::OK);
  }

  grpc::ServerUnaryReactor* ListProcs(
      grpc::CallbackServerContext* context, const v1::ListProcsRequest*,
      v1::ListProcsResponse* response) override {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, proc] : procs_) *response->add_procs() = proc;
    return Finish(context, grpc::Status::OK);
  }

  // What ListOwners answers.
  void SetOwners(v1::ListOwnersResponse owners) {
    absl::MutexLock lock(&mu_);
    owners_ = std::move(owners);
  }

  grpc::ServerUnaryReactor* ListOwners(
      grpc::CallbackServerContext* context, const v1::ListOwnersRequest*,
      v1::ListOwnersResponse* response) override {
    absl::MutexLock lock(&mu_);
    *response = owners_;
    return Finish(context, grpc::Status::OK);
  }

  grpc::ServerUnaryReactor* WaitProcs(
      grpc::CallbackServerContext* context, const v1::WaitProcsRequest* request,
      v1::WaitProcsResponse* response) override {
    absl::MutexLock lock(&mu_);
    last_wait_ = *request;
    for (const std::string& name : request->names()) {
      v1::ProcState& proc = procs_[name];
      proc.set_name(name);
      proc.set_status(wait_status_);
      proc.set_reason(wait_reason_);
      if (wait_status_ == v1::RUNNING) proc.set_host(*address_);
      if (wait_status_ == v1::FAILED) proc.set_exit_code(3);
      if (proc.status() < request->min_status()) response->set_timed_out(true);
      *response->add_procs() = proc;
    }
    return Finish(context, grpc::Status::OK);
  }

 private:
  static grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context,
                                          const grpc::Status& status) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(status);
    return reactor;
  }

  const std::string* address_;
  absl::Mutex mu_;
  std::map<std::string, v1::ProcState> procs_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::CreateOrUpdateProcRequest> creates_ ABSL_GUARDED_BY(mu_);
  v1::WaitProcsRequest last_wait_ ABSL_GUARDED_BY(mu_);
  v1::Status wait_status_ ABSL_GUARDED_BY(mu_) = v1::RUNNING;
  std::string wait_reason_ ABSL_GUARDED_BY(mu_);
  v1::ListOwnersResponse owners_ ABSL_GUARDED_BY(mu_);
};

// The Proc service of the fake host: it answers for procs the FakeHost
// spawned, as if each had every actor asked for.
class FakeProc final : public v1::Proc::CallbackService {
 public:
  explicit FakeProc(FakeHost* host) : host_(host) {}

  v1::CallActorRequest last_call() {
    absl::MutexLock lock(&mu_);
    return last_call_;
  }
  std::vector<std::string> procs_asked() {
    absl::MutexLock lock(&mu_);
    return procs_asked_;
  }

  // Echoes the payload back; actor "ghost" does not exist.
  grpc::ServerUnaryReactor* CallActor(
      grpc::CallbackServerContext* context, const v1::CallActorRequest* request,
      v1::CallActorResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (grpc::Status known = Known(request->proc()); !known.ok()) {
      reactor->Finish(known);
      return reactor;
    }
    absl::MutexLock lock(&mu_);
    last_call_ = *request;
    if (request->actor() == "ghost") {
      reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                   "no actor \"ghost\" on proc \"p\""));
      return reactor;
    }
    *response->mutable_reply() = request->payload();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* CreateOrUpdateActor(
      grpc::CallbackServerContext* context,
      const v1::CreateOrUpdateActorRequest* request,
      v1::ActorState* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (grpc::Status known = Known(request->proc()); !known.ok()) {
      reactor->Finish(known);
      return reactor;
    }
    absl::MutexLock lock(&mu_);
    v1::ActorState& actor = actors_[request->name()];
    actor.set_name(request->name());
    actor.set_type(request->type());
    actor.set_rank(request->rank());
    actor.set_status(v1::RUNNING);
    actor.mutable_ref()->set_proc(request->proc());
    *response = actor;
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* WaitActors(
      grpc::CallbackServerContext* context,
      const v1::WaitActorsRequest* request,
      v1::WaitActorsResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (grpc::Status known = Known(request->proc()); !known.ok()) {
      reactor->Finish(known);
      return reactor;
    }
    absl::MutexLock lock(&mu_);
    for (const std::string& name : request->names()) {
      *response->add_actors() = actors_[name];
    }
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  grpc::Status Known(const std::string& proc) {
    {
      absl::MutexLock lock(&mu_);
      procs_asked_.push_back(proc);
    }
    return host_->CheckProc(proc);
  }

  FakeHost* const host_;
  absl::Mutex mu_;
  std::vector<std::string> procs_asked_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, v1::ActorState> actors_ ABSL_GUARDED_BY(mu_);
  v1::CallActorRequest last_call_ ABSL_GUARDED_BY(mu_);
};

// Both fakes on 127.0.0.1, port 0; shut down when destroyed.
class FakeServer {
 public:
  // On `listen` ("127.0.0.1:0": any port).
  explicit FakeServer(const std::string& listen = "127.0.0.1:0")
      : host_(&address_), proc_(&host_) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&host_);
    builder.RegisterService(&proc_);
    server_ = builder.BuildAndStart();
    REQUIRE(server_ != nullptr);
    address_ = absl::StrCat("127.0.0.1:", port);
  }
  ~FakeServer() {
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
  }

  const std::string& address() const { return address_; }
  FakeHost& host() { return host_; }
  FakeProc& proc() { return proc_; }

 private:
  std::string address_;
  FakeHost host_;
  FakeProc proc_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_CASE("meshctl without a command is a usage error") {
  Result r = Run({});
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("'meshctl' needs a command: host, proc"));
}

TEST_CASE("an unknown command is a usage error") {
  CHECK(Run({"proc", "frobnicate"}).code == 2);
  CHECK(Run({"proc"}).code == 2);
}

TEST_CASE("--help prints the usage to out and exits 0") {
  Result r = Run({"proc", "spawn", "--help"});
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("--count"));
  // What outlives meshctl is said where it is spawned.
  CHECK_THAT(r.out, Catch::Contains("detached"));
  CHECK(r.err.empty());
}

TEST_CASE("a duration without a unit is a usage error naming the forms") {
  Result r = Run({"--timeout", "10", "host", "status"});
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("500ms"));
  CHECK(Run({"proc", "stop", "p0", "--grace", "-5s"}).code == 2);
  CHECK(Run({"proc", "wait", "p0", "--timeout", "soon"}).code == 2);
}

TEST_CASE("bad names, formats and flag combinations are usage errors") {
  Result bad_name = Run({"proc", "spawn", "Bad/Name"});
  CHECK(bad_name.code == 2);
  CHECK_THAT(bad_name.err, Catch::Contains("proc name"));
  CHECK(Run({"proc", "spawn", "w", "--count", "2", "--rank", "1"}).code == 2);
  CHECK(Run({"proc", "spawn", "w", "--count", "0"}).code == 2);
  CHECK(Run({"proc", "spawn", "w", "--env", "NOEQUALS"}).code == 2);
  CHECK(Run({"-o", "xml", "proc", "list"}).code == 2);
  CHECK(Run({"proc", "wait", "p0", "--status", "sleeping"}).code == 2);
  CHECK(Run({"actor", "spawn", "p0", "a0"}).code == 2);  // --type missing.
}

TEST_CASE("a --count whose last derived name is too long is a usage error") {
  std::string name(127, 'a');  // "a..a_9" is 129 characters.
  Result r = Run({"proc", "spawn", name, "--count", "10"});
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("limit"));
}

TEST_CASE("an unreachable host fails the call with exit 1 naming the host") {
  std::string address = ClosedAddress();
  for (std::vector<std::string> command :
       std::vector<std::vector<std::string>>{{"host", "status"},
                                             {"proc", "list"},
                                             {"proc", "get", "p0"},
                                             {"actor", "list", "p0"}}) {
    std::vector<std::string> args = {"--host", address, "--timeout", "2s"};
    args.insert(args.end(), command.begin(), command.end());
    Result r = Run(args);
    INFO(r.err);
    CHECK(r.code == 1);
    CHECK(r.out.empty());
    CHECK_THAT(r.err, Catch::StartsWith("meshctl: UNAVAILABLE: ") ||
                          Catch::StartsWith("meshctl: DEADLINE_EXCEEDED: "));
    CHECK_THAT(r.err, Catch::Contains(absl::StrCat("\"", address, "\"")));
  }
}

TEST_CASE("global flags may follow the command") {
  std::string address = ClosedAddress();
  Result r = Run({"proc", "list", "--host", address, "--timeout", "1s"});
  CHECK(r.code == 1);
  CHECK_THAT(r.err, Catch::Contains(address));
}

TEST_CASE("durations parse as absl::ParseDuration within 1ms..24h") {
  CHECK(*ParseDuration("500ms") == absl::Milliseconds(500));
  CHECK(*ParseDuration("10s") == absl::Seconds(10));
  CHECK(*ParseDuration("2m") == absl::Minutes(2));
  CHECK(*ParseDuration("1m30s") == absl::Seconds(90));
  for (const char* bad :
       {"", "10", "ten", "0s", "-1s", "500us", "inf", "25h"}) {
    INFO(bad);
    CHECK(ParseDuration(bad).status().code() ==
          absl::StatusCode::kInvalidArgument);
  }
}

TEST_CASE("a wait is satisfied by its status or one passed on the way") {
  CHECK(Satisfies(v1::RUNNING, v1::RUNNING));
  CHECK(Satisfies(v1::RUNNING, v1::INITIALIZING));
  CHECK(Satisfies(v1::STOPPED, v1::STOPPING));
  CHECK_FALSE(Satisfies(v1::FAILED, v1::RUNNING));
  CHECK_FALSE(Satisfies(v1::STOPPED, v1::RUNNING));
  CHECK_FALSE(Satisfies(v1::FAILED, v1::STOPPED));
  CHECK_FALSE(Satisfies(v1::INITIALIZING, v1::RUNNING));
  CHECK_FALSE(Satisfies(v1::FAILED, v1::INITIALIZING));
}

TEST_CASE("a proc that failed while waiting for RUNNING fails the wait") {
  v1::WaitProcsResponse response;
  *response.add_procs() = Proc("p0_0", v1::RUNNING);
  v1::ProcState failed =
      Proc("p0_1", v1::FAILED, "did not register within 10s");
  failed.set_term_signal(9);
  *response.add_procs() = failed;
  absl::Status status = CheckProcWait({"p0_0", "p0_1"}, response, v1::RUNNING,
                                      absl::Seconds(10), "h1:7450");
  CHECK(status.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(std::string(status.message()) ==
        "waited for RUNNING, but proc \"p0_1\" on host \"h1:7450\" is FAILED "
        "(killed by SIGKILL): did not register within 10s");
}

TEST_CASE("a wait that timed out names the procs not there yet") {
  v1::WaitProcsResponse response;
  response.set_timed_out(true);
  *response.add_procs() = Proc("a", v1::RUNNING);
  *response.add_procs() = Proc("b", v1::INITIALIZING, "starting");
  // "c" is missing from the answer: it does not exist.
  absl::Status status =
      CheckProcWait({"a", "b", "c"}, response, v1::RUNNING, absl::Seconds(3));
  CHECK(status.code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(std::string(status.message()) ==
        "timed out after 3s waiting for RUNNING: proc \"b\" is INITIALIZING: "
        "starting; proc \"c\" is NOT_EXIST");
  CHECK(CheckProcWait({"a"}, response, v1::RUNNING, absl::Seconds(3)).ok());
}

TEST_CASE("a stopped proc can never satisfy a wait for FAILED") {
  v1::WaitProcsResponse response;
  response.set_timed_out(true);
  *response.add_procs() = Proc("a", v1::STOPPED);
  CHECK(CheckProcWait({"a"}, response, v1::FAILED, absl::Seconds(1)).code() ==
        absl::StatusCode::kFailedPrecondition);
}

TEST_CASE(
    "a proc table has aligned columns and one line per proc, naming its "
    "owner and lease holder") {
  v1::ListProcsResponse list;
  v1::ProcState running = Proc("p0_0", v1::RUNNING);
  running.set_pid(4242);
  running.set_host("10.0.0.5:7450");
  running.set_owner("alice");
  running.set_client("client:3f2a");
  *list.add_procs() = running;
  v1::ProcState failed = Proc("p0_10", v1::FAILED, "exited\nwith status 3");
  failed.set_rank(10);
  failed.set_exit_code(3);
  failed.set_owner("ops");
  *list.add_procs() = failed;
  CHECK(FormatProcTable(list.procs()) ==
        "NAME   RANK  STATUS   PID   HOST           EXIT  OWNER  LEASE        "
        "REASON\n"
        "p0_0   0     RUNNING  4242  10.0.0.5:7450  -     alice  client:3f2a  "
        "-\n"
        "p0_10  10    FAILED   -     -              3     ops    detached     "
        "exited with status 3\n");
}

google::protobuf::Timestamp Timestamp(absl::Time time) {
  google::protobuf::Timestamp ts;
  ts.set_seconds(absl::ToUnixSeconds(time));
  return ts;
}

TEST_CASE(
    "an owner table shows each lease holder's state and when its procs are "
    "stopped") {
  const absl::Time now = absl::FromUnixSeconds(1700000000);
  v1::ListOwnersResponse owners;
  v1::OwnerLease* connected = owners.add_owners();
  connected->set_client("client:aa");
  connected->set_identity("alice");
  connected->set_connected(true);
  connected->add_procs("p_0");
  connected->add_procs("p_1");
  v1::OwnerLease* vanished = owners.add_owners();
  vanished->set_client("client:bb");
  vanished->set_identity("bob");
  vanished->add_procs("q_0");
  *vanished->mutable_vanished_at() = Timestamp(now - absl::Seconds(19));
  *vanished->mutable_expires_at() = Timestamp(now + absl::Seconds(41));
  v1::OwnerLease* expired = owners.add_owners();
  expired->set_client("client:cc");
  expired->set_identity("carol");
  expired->add_procs("r_0");
  *expired->mutable_expires_at() = Timestamp(now - absl::Seconds(3));
  CHECK(FormatOwnerTable(owners.owners(), now) ==
        "CLIENT     IDENTITY  STATE      PROCS  EXPIRES\n"
        "client:aa  alice     connected  2      -\n"
        "client:bb  bob       vanished   1      in 41s\n"
        "client:cc  carol     expired    1      3s ago\n");
}

TEST_CASE("owner list asks the host for its lease holders") {
  FakeServer server;
  v1::ListOwnersResponse owners;
  owners.add_owners()->set_client("client:aa");
  owners.mutable_owners(0)->set_identity("alice");
  owners.mutable_owners(0)->set_connected(true);
  server.host().SetOwners(owners);
  Result table = Run({"--host", server.address(), "owner", "list"});
  INFO(table.err);
  REQUIRE(table.code == 0);
  CHECK_THAT(table.out, Catch::StartsWith("CLIENT "));
  CHECK_THAT(table.out, Catch::Contains("client:aa  alice     connected"));
  Result json =
      Run({"--host", server.address(), "-o", "json", "owner", "list"});
  REQUIRE(json.code == 0);
  v1::ListOwnersResponse printed;
  REQUIRE(google::protobuf::util::JsonStringToMessage(json.out, &printed).ok());
  CHECK(printed.owners(0).client() == "client:aa");
}

TEST_CASE("a proc prints as JSON with proto names and every field") {
  v1::ProcState proc = Proc("p0_0", v1::RUNNING);
  proc.set_host("10.0.0.5:7450");
  absl::StatusOr<std::string> json = ToJson(proc);
  REQUIRE(json.ok());
  CHECK_THAT(*json, Catch::Contains("\"status\": \"RUNNING\""));
  CHECK_THAT(*json, Catch::Contains("\"stderr_tail\": \"\""));
  CHECK_THAT(*json, Catch::Contains("\"pid\": 0"));
  v1::ProcState parsed;
  REQUIRE(google::protobuf::util::JsonStringToMessage(*json, &parsed).ok());
  CHECK(google::protobuf::util::MessageDifferencer::Equals(parsed, proc));
}

TEST_CASE("proc spawn --count spawns NAME_i of rank i and waits for RUNNING") {
  FakeServer server;
  Result r = Run({"--host", server.address(), "proc", "spawn", "w", "--count",
                  "3", "--command", "/bin/worker", "--arg", "x", "--arg=-v",
                  "--env", "A=b=c"});
  INFO(r.err);
  REQUIRE(r.code == 0);
  std::vector<v1::CreateOrUpdateProcRequest> creates = server.host().creates();
  REQUIRE(creates.size() == 3);
  // Sent in parallel: in any order.
  std::sort(creates.begin(), creates.end(),
            [](const auto& a, const auto& b) { return a.rank() < b.rank(); });
  for (uint64_t i = 0; i < 3; ++i) {
    CHECK(creates[i].name() == absl::StrCat("w_", i));
    CHECK(creates[i].rank() == i);
    // Detached: no client's lease holds meshctl's procs.
    CHECK(creates[i].client().empty());
    CHECK(creates[i].spec().command() == "/bin/worker");
    CHECK(creates[i].spec().args().size() == 2);
    CHECK(creates[i].spec().args(1) == "-v");
    CHECK(creates[i].spec().env().at("A") == "b=c");
  }
  v1::WaitProcsRequest wait = server.host().last_wait();
  CHECK(wait.names().size() == 3);
  CHECK(wait.min_status() == v1::RUNNING);
  CHECK(wait.timeout_ms() == 30000);
  CHECK_THAT(r.out, Catch::StartsWith("NAME "));
  CHECK_THAT(r.out, Catch::Contains("w_2   2     RUNNING"));
}

TEST_CASE("proc spawn exits 1 with the reason when a proc fails to start") {
  FakeServer server;
  server.host().SetWaitResult(v1::FAILED, "did not register within 10s");
  Result r = Run({"--host", server.address(), "proc", "spawn", "w"});
  CHECK(r.code == 1);
  CHECK_THAT(r.out, Catch::Contains("FAILED"));
  CHECK_THAT(r.err, Catch::StartsWith("meshctl: FAILED_PRECONDITION: "));
  CHECK_THAT(r.err, Catch::Contains("proc \"w\" on host"));
  CHECK_THAT(r.err, Catch::Contains("(exit code 3): did not register"));
}

TEST_CASE("proc wait asks the server to wait and judges the answer") {
  FakeServer server;
  server.host().SetWaitResult(v1::STOPPED, "stopped by meshctl");
  Result stopped = Run({"--host", server.address(), "proc", "wait", "a", "b",
                        "--status", "STOPPED", "--timeout", "1500ms"});
  INFO(stopped.err);
  CHECK(stopped.code == 0);
  CHECK(server.host().last_wait().timeout_ms() == 1500);
  CHECK(server.host().last_wait().min_status() == v1::STOPPED);

  Result running =
      Run({"--host", server.address(), "proc", "wait", "a", "-o", "json"});
  CHECK(running.code == 1);
  v1::WaitProcsResponse printed;
  REQUIRE(
      google::protobuf::util::JsonStringToMessage(running.out, &printed).ok());
  REQUIRE(printed.procs().size() == 1);
  CHECK(printed.procs(0).status() == v1::STOPPED);
  CHECK_THAT(running.err, Catch::Contains("is STOPPED: stopped by meshctl"));
}

TEST_CASE("a call the host refuses exits 1 with its code and message") {
  FakeServer server;
  Result r = Run({"--host", server.address(), "proc", "get", "nope"});
  CHECK(r.code == 1);
  CHECK(r.err ==
        absl::StrCat("meshctl: NOT_FOUND: get proc \"nope\" on host \"",
                     server.address(), "\": no proc \"nope\"\n"));
}

TEST_CASE("actor commands go to the host's Proc service naming the proc") {
  FakeServer server;
  Result unknown = Run({"--host", server.address(), "actor", "spawn", "p", "a0",
                        "--type", "mesh.echo"});
  CHECK(unknown.code == 1);
  CHECK(unknown.err ==
        absl::StrCat("meshctl: NOT_FOUND: spawn actor \"a0\" on proc \"p\" "
                     "(host \"",
                     server.address(), "\"): no proc \"p\"\n"));

  REQUIRE(Run({"--host", server.address(), "proc", "spawn", "p"}).code == 0);
  Result r = Run({"--host", server.address(), "actor", "spawn", "p", "a0",
                  "--type", "mesh.echo", "--rank", "4"});
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("a0    mesh.echo  4     RUNNING"));
  // The create, then the wait for RUNNING: both name the proc.
  CHECK(server.proc().procs_asked() == std::vector<std::string>{"p", "p", "p"});
}

TEST_CASE("actor send builds the message from --type and --json") {
  FakeServer server;
  REQUIRE(Run({"--host", server.address(), "proc", "spawn", "p"}).code == 0);
  Result r = Run({"--host", server.address(), "actor", "send", "p", "a0",
                  "--type", "mesh.v1.Echo", "--json", R"({"text":"hi"})"});
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(r.out == "mesh.v1.Echo: {\"text\":\"hi\",\"data\":\"\"}\n");
  v1::CallActorRequest call = server.proc().last_call();
  CHECK(call.proc() == "p");
  CHECK(call.actor() == "a0");
  CHECK(call.timeout_ms() == 10000);
  v1::Echo sent;
  REQUIRE(call.payload().UnpackTo(&sent));
  CHECK(sent.text() == "hi");

  Result json =
      Run({"--host", server.address(), "-o", "json", "actor", "send", "p", "a0",
           "--type", "mesh.v1.Increment", "--timeout", "3s"});
  INFO(json.err);
  REQUIRE(json.code == 0);
  CHECK(server.proc().last_call().timeout_ms() == 3000);
  v1::Increment printed;
  REQUIRE(google::protobuf::util::JsonStringToMessage(json.out, &printed).ok());
  CHECK_THAT(json.out, Catch::Contains("\"by\": \"0\""));
}

TEST_CASE("actor send to an actor the proc does not have exits 1") {
  FakeServer server;
  REQUIRE(Run({"--host", server.address(), "proc", "spawn", "p"}).code == 0);
  Result r = Run({"--host", server.address(), "actor", "send", "p", "ghost",
                  "--type", "mesh.v1.GetActorId"});
  CHECK(r.code == 1);
  CHECK(r.out.empty());
  CHECK_THAT(r.err, Catch::StartsWith("meshctl: NOT_FOUND: send "
                                      "mesh.v1.GetActorId to actor \"ghost\""));
}

TEST_CASE("actor send with an unknown --type or bad --json is a usage error") {
  // Checked before any call: no host is needed.
  std::string address = ClosedAddress();
  Result unknown = Run({"--host", address, "actor", "send", "p", "a0", "--type",
                        "mesh.v1.NoSuch"});
  CHECK(unknown.code == 2);
  CHECK_THAT(unknown.err, Catch::Contains("\"mesh.v1.NoSuch\""));
  CHECK_THAT(unknown.err, Catch::Contains("mesh.v1.Echo, mesh.v1.GetActorId"));

  Result bad_json = Run({"--host", address, "actor", "send", "p", "a0",
                         "--type", "mesh.v1.Echo", "--json", "{text: hi"});
  CHECK(bad_json.code == 2);
  CHECK_THAT(bad_json.err, Catch::StartsWith("meshctl: --json: not a valid "
                                             "mesh.v1.Echo: "));
  Result bad_field = Run({"--host", address, "actor", "send", "p", "a0",
                          "--type", "mesh.v1.Echo", "--json", R"({"nope":1})"});
  CHECK(bad_field.code == 2);
  CHECK_THAT(bad_field.err, Catch::Contains("nope"));

  CHECK(Run({"actor", "send", "p", "a0"}).code == 2);  // --type missing.
}

TEST_CASE("a reply of a type meshctl does not know prints as a raw Any") {
  google::protobuf::Any any;
  any.set_type_url("type.googleapis.com/example.Unknown");
  any.set_value(std::string("\x01\x02", 2));
  absl::StatusOr<std::string> table = FormatReply(any, meshctl::Output::kTable);
  REQUIRE(table.ok());
  CHECK(*table ==
        "type.googleapis.com/example.Unknown: "
        "{\"@type\":\"type.googleapis.com/"
        "example.Unknown\",\"value\":\"AQI=\"}\n");
  absl::StatusOr<std::string> json = FormatReply(any, meshctl::Output::kJson);
  REQUIRE(json.ok());
  CHECK_THAT(*json, Catch::Contains("\"value\": \"AQI=\""));
}

// Whether nothing listens on 127.0.0.1:`port` (bound and closed again).
bool PortFree(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  bool free = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return free;
}

TEST_CASE("a host given without a port is dialed on port 7450") {
  if (PortFree(7450)) {
    FakeServer server("127.0.0.1:7450");
    Result r = Run({"--host", "127.0.0.1", "proc", "list"});
    INFO(r.err);
    CHECK(r.code == 0);
    CHECK_THAT(r.out, Catch::StartsWith("NAME "));
  }
  // Nothing there (or whatever is): the call names the port it dialed.
  std::string closed = ClosedAddress();
  std::string host = closed.substr(0, closed.find(':'));
  Result r = Run({"--host", "localhost", "--timeout", "1s", "host", "status"});
  if (r.code != 0) {
    CHECK_THAT(r.err, Catch::Contains("\"localhost:7450\""));
  }
  Result bad = Run({"--host", "localhost:http", "host", "status"});
  CHECK(bad.code == 2);
  CHECK_THAT(bad.err, Catch::Contains("--host"));
}

TEST_CASE(
    "proc list and host status ask every host at once and report a failed one "
    "without hiding the others") {
  FakeServer one;
  FakeServer two;
  REQUIRE(Run({"--host", one.address(), "proc", "spawn", "a"}).code == 0);
  REQUIRE(Run({"--host", two.address(), "proc", "spawn", "b"}).code == 0);
  const std::string closed = ClosedAddress();
  const std::string hosts =
      absl::StrCat(one.address(), ",", closed, ",", two.address());
  Result list = Run({"--hosts", hosts, "--timeout", "2s", "proc", "list"});
  CHECK(list.code == 1);
  CHECK_THAT(list.out, Catch::Contains("\na "));
  CHECK_THAT(list.out, Catch::Contains("\nb "));
  // The fakes leave HOST empty: meshctl fills in the host it asked.
  CHECK_THAT(list.out, Catch::Contains(one.address()));
  CHECK_THAT(list.out, Catch::Contains(two.address()));
  CHECK_THAT(list.err, Catch::Contains(absl::StrCat("\"", closed, "\"")));
  CHECK(std::count(list.err.begin(), list.err.end(), '\n') == 1);

  Result status = Run({"--hosts", hosts, "--timeout", "2s", "host", "status"});
  CHECK(status.code == 1);
  CHECK_THAT(status.out, Catch::StartsWith("HOST "));
  CHECK_THAT(status.out, Catch::Contains("unreachable"));
  CHECK_THAT(status.out,
             Catch::Contains(absl::StrCat(one.address(), "  fake")));
  Result yaml = Run({"--host", one.address(), "--host", two.address(), "-o",
                     "yaml", "host", "status"});
  INFO(yaml.err);
  CHECK(yaml.code == 0);
  CHECK_THAT(yaml.out,
             Catch::StartsWith(absl::StrCat("- address: \"", one.address())));
  CHECK_THAT(yaml.out,
             Catch::Contains(absl::StrCat("\n- address: \"", two.address())));

  // The same hosts from MESH_HOST, one or a comma list.
  setenv("MESH_HOST", absl::StrCat(one.address(), ",", two.address()).c_str(),
         1);
  Result env = Run({"-o", "json", "proc", "list"});
  unsetenv("MESH_HOST");
  REQUIRE(env.code == 0);
  v1::ListProcsResponse both;
  REQUIRE(google::protobuf::util::JsonStringToMessage(env.out, &both).ok());
  CHECK(both.procs_size() == 2);
  // A verb about named procs works on one host only.
  Result two_hosts = Run({"--hosts", hosts, "proc", "get", "a"});
  CHECK(two_hosts.code == 2);
  CHECK_THAT(two_hosts.err, Catch::Contains("works on one host"));
}

TEST_CASE("several names per verb, and the exit code says if any failed") {
  FakeServer server;
  REQUIRE(
      Run({"--host", server.address(), "proc", "spawn", "w", "--count", "2"})
          .code == 0);
  Result get =
      Run({"--host", server.address(), "proc", "get", "w_0", "nope", "w_1"});
  CHECK(get.code == 1);
  CHECK_THAT(get.out, Catch::Contains("name:        w_0"));
  CHECK_THAT(get.out, Catch::Contains("name:        w_1"));
  CHECK_THAT(get.err, Catch::Contains("NOT_FOUND: get proc \"nope\""));
  Result json = Run(
      {"--host", server.address(), "-o", "json", "proc", "get", "w_0", "w_1"});
  CHECK(json.code == 0);
  CHECK_THAT(json.out, Catch::StartsWith("[\n"));
  Result stop = Run({"--host", server.address(), "proc", "stop", "w_0", "w_1",
                     "--reason", "done"});
  INFO(stop.err);
  CHECK(stop.code == 0);
  CHECK_THAT(stop.out, Catch::Contains("w_0   0     STOPPED"));
  CHECK_THAT(stop.out, Catch::Contains("w_1   1     STOPPED"));
  CHECK(
      Run({"--host", server.address(), "proc", "stop", "w_0", "ghost"}).code ==
      1);
}

TEST_CASE("progress shows per-rank counts only when asked or on a terminal") {
  FakeServer server;
  Result quiet =
      Run({"--host", server.address(), "proc", "spawn", "w", "--count", "3"});
  CHECK(quiet.code == 0);
  CHECK(quiet.err.empty());
  Result shown = Run({"--host", server.address(), "--progress", "always",
                      "proc", "spawn", "w", "--count", "3"});
  CHECK(shown.code == 0);
  CHECK_THAT(shown.err, Catch::Contains("\rspawning 3 procs: 1 created"));
  CHECK_THAT(shown.err, Catch::Contains("\rspawning 3 procs: 3 created"));
  // The line is erased at the end; the table is on out.
  CHECK_THAT(shown.err, Catch::EndsWith("\r\x1b[K"));
  CHECK_THAT(shown.out, Catch::StartsWith("NAME "));
}

TEST_CASE("-o wide and -o yaml reach every verb") {
  FakeServer server;
  REQUIRE(Run({"--host", server.address(), "proc", "spawn", "p", "--command",
               "/bin/worker"})
              .code == 0);
  Result wide = Run({"--host", server.address(), "-o", "wide", "proc", "list"});
  CHECK_THAT(wide.out, Catch::Contains("COMMAND"));
  CHECK_THAT(wide.out, Catch::Contains("/bin/worker"));
  Result yaml =
      Run({"--host", server.address(), "-o", "yaml", "proc", "get", "p"});
  CHECK(yaml.code == 0);
  CHECK_THAT(yaml.out, Catch::StartsWith("name: p\n"));
  Result actor = Run({"--host", server.address(), "-o", "yaml", "actor",
                      "spawn", "p", "a0", "--type", "mesh.echo"});
  CHECK(actor.code == 0);
  CHECK_THAT(actor.out, Catch::StartsWith("actors:\n- name: a0\n"));
  Result send =
      Run({"--host", server.address(), "-o", "yaml", "actor", "send", "p", "a0",
           "--type", "mesh.v1.Echo", "--json", R"({"text":"hi"})"});
  CHECK(send.out == "text: hi\ndata: \"\"\n");
  Result owners =
      Run({"--host", server.address(), "-o", "yaml", "owner", "list"});
  CHECK(owners.out == "owners: []\n");
}

TEST_CASE(
    "actor send packs a user's type from --proto or --descriptor-set with its "
    "type URL, and prints the reply as that type") {
  FakeServer server;
  REQUIRE(Run({"--host", server.address(), "proc", "spawn", "p"}).code == 0);
  for (std::vector<std::string> source : std::vector<std::vector<std::string>>{
           {"--proto", "greeting.proto", "--import-path", "meshctl/testdata"},
           {"--proto", "meshctl/testdata/greeting.proto"},
           {"--descriptor-set", "meshctl/testdata/greeting.pb"}}) {
    std::vector<std::string> args = {
        "--host", server.address(),
        "actor",  "send",
        "p",      "a0",
        "--type", "demo.Greeting",
        "--json", R"({"text":"hi","numbers":[7]})"};
    args.insert(args.end(), source.begin(), source.end());
    Result r = Run(args);
    INFO(absl::StrJoin(source, " ") << "\n" << r.err);
    REQUIRE(r.code == 0);
    v1::CallActorRequest call = server.proc().last_call();
    CHECK(call.payload().type_url() == "type.googleapis.com/demo.Greeting");
    // Field 1 (text, "hi"), field 2 (numbers, packed [7]) on the wire.
    CHECK(call.payload().value() == std::string("\x0a\x02hi\x12\x01\x07"));
    // The fake echoes the Any: printed as the user's type.
    CHECK(r.out ==
          "demo.Greeting: {\"text\":\"hi\",\"numbers\":[\"7\"],\"tags\":{}}\n");
  }
  Result bad = Run({"--host", server.address(), "actor", "send", "p", "a0",
                    "--proto", "nope.proto", "--type", "demo.Greeting"});
  CHECK(bad.code == 2);
  CHECK_THAT(bad.err, Catch::Contains("nope.proto"));
}

}  // namespace
}  // namespace mesh
