// hostd end to end: real hostd and procd processes over real sockets.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "catch2/catch.hpp"
#include "lib/names.h"
#include "lib/process/supervisor.h"
#include "lib/testing/sockets.h"
#include "proto/host.grpc.pb.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using testing::Context;
using testing::IsAlive;
using testing::Shell;
using testing::TestHost;

std::vector<std::string> Names(const std::string& mesh, int n) {
  std::vector<std::string> names;
  for (int i = 0; i < n; ++i) names.push_back(MemberName(mesh, i));
  return names;
}

// Spawns procs name_0..name_{n-1} with the default procd and waits for them.
v1::WaitProcsResponse SpawnRunning(TestHost& host, const std::string& mesh,
                                   int n) {
  for (int i = 0; i < n; ++i) {
    v1::ProcState state;
    grpc::Status status = host.Create(MemberName(mesh, i), i, {}, &state);
    REQUIRE(status.ok());
  }
  return host.Wait(Names(mesh, n), v1::RUNNING);
}

TEST_CASE(
    "16 procs spawn, all RUNNING with distinct live pids, each reached only "
    "through its host, and none listens on any socket") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  v1::WaitProcsResponse waited = SpawnRunning(*host, "p0", 16);
  REQUIRE_FALSE(waited.timed_out());
  // The proc-level verbs are served by the host for each of its procs.
  auto procs = v1::Proc::NewStub(host->channel());
  std::set<int> pids;
  for (const v1::ProcState& proc : waited.procs()) {
    INFO(proc.DebugString());
    CHECK(proc.status() == v1::RUNNING);
    CHECK(proc.host() == host->address());
    CHECK(IsAlive(proc.pid()));
    pids.insert(proc.pid());
    v1::GetProcInfoRequest request;
    request.set_proc(proc.name());
    v1::ProcInfo info;
    grpc::Status status = procs->GetProcInfo(Context().get(), request, &info);
    CHECK(status.ok());
    CHECK(info.name() == proc.name());
    CHECK(info.rank() == proc.rank());
    CHECK(info.pid() == proc.pid());
    CHECK(info.host() == host->address());
    // No network port, no Unix socket: its only door is its host's.
    CHECK(testing::ListeningSockets(proc.pid()).empty());
  }
  CHECK(pids.size() == 16);
  CHECK_FALSE(testing::ListeningSockets(host->pid()).empty());
  v1::ListProcsResponse list;
  REQUIRE(host->stub().ListProcs(Context().get(), {}, &list).ok());
  CHECK(list.procs_size() == 16);
}

TEST_CASE(
    "the same CreateOrUpdate twice is one proc; another spec is "
    "FAILED_PRECONDITION") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  v1::ProcState first, second, third;
  REQUIRE(host->Create("same", 0, {}, &first).ok());
  REQUIRE(host->Create("same", 0, {}, &second).ok());
  CHECK(first.pid() == second.pid());
  CHECK(first.created_at().seconds() == second.created_at().seconds());
  CHECK(first.created_at().nanos() == second.created_at().nanos());
  v1::WaitProcsResponse waited = host->Wait({"same"}, v1::RUNNING);
  CHECK(waited.procs(0).status() == v1::RUNNING);
  CHECK(host->Create("same", 0, {}, &third).ok());
  CHECK(third.pid() == first.pid());
  v1::ListProcsResponse list;
  REQUIRE(host->stub().ListProcs(Context().get(), {}, &list).ok());
  CHECK(list.procs_size() == 1);

  grpc::Status other = host->Create("same", 0, Shell("sleep 100"), &third);
  CHECK(other.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK(other.error_message().find("\"same\"") != std::string::npos);
  grpc::Status other_rank = host->Create("same", 7, {}, &third);
  CHECK(other_rank.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_CASE(
    "racing identical creates from many clients make one proc with one pid") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  std::vector<std::thread> threads;
  std::vector<v1::ProcState> states(8);
  std::vector<grpc::Status> statuses(8);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back(
        [&, i] { statuses[i] = host->Create("race", 0, {}, &states[i]); });
  }
  for (auto& thread : threads) thread.join();
  for (int i = 0; i < 8; ++i) {
    REQUIRE(statuses[i].ok());
    CHECK(states[i].created_at().nanos() == states[0].created_at().nanos());
  }
  v1::WaitProcsResponse waited = host->Wait({"race"}, v1::RUNNING);
  CHECK(waited.procs(0).status() == v1::RUNNING);
  for (int i = 0; i < 8; ++i) {
    // Early answers may predate the pid; every pid seen is the one proc's.
    if (states[i].pid() != 0) CHECK(states[i].pid() == waited.procs(0).pid());
  }
  v1::ListProcsResponse list;
  REQUIRE(host->stub().ListProcs(Context().get(), {}, &list).ok());
  CHECK(list.procs_size() == 1);
}

TEST_CASE("a Stop that arrives before the proc registered stops it at once") {
  auto host = TestHost::Start({"--registration-timeout=60s"});
  REQUIRE(host != nullptr);
  v1::ProcState created;
  REQUIRE(host->Create("early", 0, Shell("exec sleep 1000"), &created).ok());
  REQUIRE(created.status() == v1::INITIALIZING);
  v1::ProcState stopped;
  REQUIRE(host->Stop("early", &stopped, absl::Seconds(5)).ok());
  INFO(stopped.DebugString());
  CHECK(stopped.status() == v1::STOPPED);
  CHECK(stopped.stopped_by() == "SIGTERM");
  CHECK(stopped.term_signal() == SIGTERM);
  CHECK_FALSE(IsAlive(created.pid()));
  // The name can be used again: a new generation, a new pid.
  v1::ProcState again;
  REQUIRE(host->Create("early", 0, Shell("exec sleep 1000"), &again).ok());
  CHECK(again.generation() > stopped.generation());
  CHECK(again.pid() != created.pid());
}

TEST_CASE(
    "a command that never registers is FAILED with the timeout reason and is "
    "gone") {
  auto host = TestHost::Start({"--registration-timeout=1s"});
  REQUIRE(host != nullptr);
  v1::ProcState created;
  REQUIRE(host->Create("silent", 0, Shell("exec sleep 1000"), &created).ok());
  CHECK(created.status() == v1::INITIALIZING);
  REQUIRE(created.pid() > 0);
  v1::WaitProcsResponse waited = host->Wait({"silent"}, v1::STOPPED);
  REQUIRE_FALSE(waited.timed_out());
  const v1::ProcState& state = waited.procs(0);
  INFO(state.DebugString());
  CHECK(state.status() == v1::FAILED);
  CHECK(state.reason().find("did not register within 1s") != std::string::npos);
  CHECK(state.term_signal() == SIGKILL);
  CHECK_FALSE(IsAlive(created.pid()));
  CHECK(testing::LiveInGroups({created.pid()}).empty());
}

TEST_CASE(
    "a command that writes to stderr and exits 3 is FAILED with its exit code "
    "and stderr") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  v1::ProcState created;
  REQUIRE(host->Create(
                  "crash", 0,
                  Shell("echo 'fatal: the flux capacitor is gone' >&2; exit 3"),
                  &created)
              .ok());
  v1::WaitProcsResponse waited = host->Wait({"crash"}, v1::STOPPED);
  REQUIRE_FALSE(waited.timed_out());
  const v1::ProcState& state = waited.procs(0);
  INFO(state.DebugString());
  CHECK(state.status() == v1::FAILED);
  CHECK(state.has_exit_code());
  CHECK(state.exit_code() == 3);
  CHECK(state.stderr_tail().find("flux capacitor is gone") !=
        std::string::npos);
  CHECK(state.reason().find("exited with code 3") != std::string::npos);
  // The captured log holds it too.
  CHECK_FALSE(state.log_dir().empty());
}

TEST_CASE(
    "kill -9 of a procd is FAILED with signal 9, seen through the server-side "
    "wait") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  v1::WaitProcsResponse running = SpawnRunning(*host, "victim", 1);
  REQUIRE(running.procs(0).status() == v1::RUNNING);
  pid_t pid = running.procs(0).pid();
  REQUIRE(kill(pid, SIGKILL) == 0);
  // One blocking server-side wait, no polling loop.
  v1::WaitProcsResponse waited = host->Wait({"victim_0"}, v1::STOPPED);
  REQUIRE_FALSE(waited.timed_out());
  const v1::ProcState& state = waited.procs(0);
  INFO(state.DebugString());
  CHECK(state.status() == v1::FAILED);
  CHECK(state.term_signal() == 9);
  CHECK(state.reason().find("SIGKILL") != std::string::npos);
}

TEST_CASE(
    "a proc that ignores stop and SIGTERM is SIGKILLed after the grace; a "
    "second Stop succeeds") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  v1::ProcSpec spec;
  spec.set_command(testing::BinaryPath("stubborn_proc"));
  v1::ProcState created;
  REQUIRE(host->Create("stubborn", 0, spec, &created).ok());
  REQUIRE(host->Wait({"stubborn"}, v1::RUNNING).procs(0).status() ==
          v1::RUNNING);
  v1::ProcState stopped;
  absl::Time start = absl::Now();
  REQUIRE(host->Stop("stubborn", &stopped, absl::Milliseconds(300)).ok());
  INFO(stopped.DebugString());
  CHECK(stopped.status() == v1::STOPPED);
  CHECK(stopped.stopped_by() == "SIGKILL");
  CHECK(stopped.term_signal() == SIGKILL);
  // Asked, then SIGTERM after one grace, then SIGKILL after another.
  CHECK(absl::Now() - start >= absl::Milliseconds(600));
  CHECK(stopped.stderr_tail().find("ignoring stop") != std::string::npos);
  CHECK_FALSE(IsAlive(created.pid()));
  v1::ProcState again;
  REQUIRE(host->Stop("stubborn", &again).ok());
  CHECK(again.status() == v1::STOPPED);
  CHECK(again.generation() == stopped.generation());
}

TEST_CASE("a procd asked to stop exits by itself") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  v1::WaitProcsResponse running = SpawnRunning(*host, "polite", 1);
  REQUIRE(running.procs(0).status() == v1::RUNNING);
  v1::ProcState stopped;
  REQUIRE(host->Stop("polite_0", &stopped, absl::Seconds(10)).ok());
  CHECK(stopped.status() == v1::STOPPED);
  CHECK(stopped.stopped_by() == "exited");
  CHECK(stopped.exit_code() == 0);
}

TEST_CASE(
    "ShutdownHost with 16 procs answers after all are gone and hostd asked to "
    "stay down exits 0") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  v1::WaitProcsResponse waited = SpawnRunning(*host, "s", 16);
  REQUIRE_FALSE(waited.timed_out());
  std::set<pid_t> pids;
  for (const auto& proc : waited.procs()) pids.insert(proc.pid());
  REQUIRE(pids.size() == 16);

  v1::ShutdownHostRequest request;
  request.set_reason("test shutdown");
  request.set_grace_ms(2000);
  // Without it hostd exits 75, for its unit to start it again
  // (notify_test).
  request.set_stay_down(true);
  v1::ShutdownHostResponse response;
  REQUIRE(
      host->stub()
          .ShutdownHost(Context(absl::Seconds(60)).get(), request, &response)
          .ok());
  // The ack arrives only after every proc was reaped.
  CHECK(response.stopped_size() == 16);
  for (const auto& proc : response.stopped()) {
    INFO(proc.DebugString());
    CHECK(proc.status() == v1::STOPPED);
    CHECK((proc.stopped_by() == "exited" || proc.stopped_by() == "SIGTERM" ||
           proc.stopped_by() == "SIGKILL"));
    CHECK_FALSE(IsAlive(proc.pid()));
  }
  absl::StatusOr<ExitInfo> exit = host->WaitExit();
  REQUIRE(exit.ok());
  CHECK(exit->exit_code == std::optional<int>(0));
  // No pid or process group of its procs remains.
  CHECK(testing::LiveInGroups(pids).empty());
}

TEST_CASE("SIGTERM to hostd stops its procs and exits 0") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  v1::WaitProcsResponse waited = SpawnRunning(*host, "t", 4);
  std::set<pid_t> pids;
  for (const auto& proc : waited.procs()) pids.insert(proc.pid());
  REQUIRE(kill(host->pid(), SIGTERM) == 0);
  absl::StatusOr<ExitInfo> exit = host->WaitExit();
  REQUIRE(exit.ok());
  CHECK(exit->exit_code == std::optional<int>(0));
  CHECK(testing::LiveInGroups(pids).empty());
}

// Waits for a process that is not our child to exit, without polling: a
// pidfd becomes readable when the process exits.
bool WaitForExit(pid_t pid, absl::Duration timeout) {
  int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return errno == ESRCH;
  pollfd poll_fd{fd, POLLIN, 0};
  int ready =
      poll(&poll_fd, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
  close(fd);
  return ready == 1;
}

TEST_CASE(
    "a procd outlives a killed hostd, then exits by itself after the orphan "
    "timeout") {
  auto host = TestHost::Start({"--orphan-timeout=1s"});
  REQUIRE(host != nullptr);
  v1::WaitProcsResponse running = SpawnRunning(*host, "orphan", 2);
  REQUIRE_FALSE(running.timed_out());
  REQUIRE(kill(host->pid(), SIGKILL) == 0);
  REQUIRE(host->WaitExit().ok());
  for (const auto& proc : running.procs()) {
    // No PDEATHSIG: hostd's death alone does not kill it...
    CHECK(IsAlive(proc.pid()));
  }
  for (const auto& proc : running.procs()) {
    // ...but with its host channel gone it exits within the orphan timeout.
    CHECK(WaitForExit(proc.pid(), absl::Seconds(20)));
  }
}

TEST_CASE(
    "a proc that speaks another channel protocol version is refused, and "
    "both sides name both versions") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  v1::ProcSpec spec;
  spec.set_command(testing::BinaryPath("future_proc"));
  v1::ProcState created;
  REQUIRE(host->Create("future", 0, spec, &created).ok());
  v1::WaitProcsResponse waited = host->Wait({"future"}, v1::STOPPED);
  REQUIRE_FALSE(waited.timed_out());
  const v1::ProcState& state = waited.procs(0);
  INFO(state.DebugString());
  CHECK(state.status() == v1::FAILED);
  CHECK(state.reason().find("protocol version 999, this hostd version 2") !=
        std::string::npos);
  // The proc was told the same before its channel closed.
  CHECK(state.stderr_tail().find("refused: ") != std::string::npos);
  CHECK(state.stderr_tail().find("999") != std::string::npos);
  CHECK_FALSE(IsAlive(created.pid()));
}

TEST_CASE("proc verbs for a proc the host does not run are refused clearly") {
  auto host = TestHost::Start({"--registration-timeout=60s"});
  REQUIRE(host != nullptr);
  auto procs = v1::Proc::NewStub(host->channel());
  v1::ListActorsRequest request;
  v1::ListActorsResponse response;
  request.set_proc("nobody");
  CHECK(procs->ListActors(Context().get(), request, &response).error_code() ==
        grpc::StatusCode::NOT_FOUND);
  request.set_proc("../etc");
  CHECK(procs->ListActors(Context().get(), request, &response).error_code() ==
        grpc::StatusCode::INVALID_ARGUMENT);
  // Still starting: try again later.
  v1::ProcState created;
  REQUIRE(host->Create("starting", 0, Shell("exec sleep 1000"), &created).ok());
  request.set_proc("starting");
  grpc::Status starting =
      procs->ListActors(Context().get(), request, &response);
  CHECK(starting.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(starting.error_message().find("INITIALIZING") != std::string::npos);
  // Gone: fix the state first.
  v1::ProcState stopped;
  REQUIRE(host->Stop("starting", &stopped, absl::Seconds(2)).ok());
  grpc::Status gone = procs->ListActors(Context().get(), request, &response);
  CHECK(gone.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK(gone.error_message().find("STOPPED") != std::string::npos);
}

TEST_CASE("a relay stream that does not name its sender is refused") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  auto relay = v1::Relay::NewStub(host->channel());
  for (std::string sender : {"", "nobody", "client:", "client:has space"}) {
    auto context = Context(absl::Seconds(10));
    if (!sender.empty()) context->AddMetadata("mesh-sender", sender);
    auto stream = relay->Connect(context.get());
    v1::RelayFrame frame;
    CHECK_FALSE(stream->Read(&frame));
    grpc::Status status = stream->Finish();
    INFO(sender);
    CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK(status.error_message().find("mesh-sender") != std::string::npos);
  }
}

TEST_CASE("bad names are INVALID_ARGUMENT; unknown names are NOT_FOUND") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  for (const std::string& bad :
       {std::string("../x"), std::string(""), std::string(300, 'a'),
        std::string("nul\0x", 5), std::string("a/b"), std::string("UP")}) {
    INFO("name: " << bad);
    v1::ProcState state;
    grpc::Status status = host->Create(bad, 0, {}, &state);
    CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK(status.error_message().find("proc name") != std::string::npos);
  }
  v1::ProcState state;
  CHECK(host->Get("nobody", &state).error_code() ==
        grpc::StatusCode::NOT_FOUND);
  CHECK(host->Stop("nobody", &state).error_code() ==
        grpc::StatusCode::NOT_FOUND);
  // Nothing was lost: the host still serves.
  v1::ListProcsResponse list;
  REQUIRE(host->stub().ListProcs(Context().get(), {}, &list).ok());
  CHECK(list.procs_size() == 0);
}

TEST_CASE("a bad spec is INVALID_ARGUMENT naming the field") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  v1::ProcState state;
  v1::ProcSpec relative;
  relative.set_command("bin/procd");
  grpc::Status status = host->Create("x", 0, relative, &state);
  CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(status.error_message().find("spec.command") != std::string::npos);

  v1::ProcSpec bad_env;
  (*bad_env.mutable_env())["NOT=OK"] = "1";
  status = host->Create("x", 0, bad_env, &state);
  CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(status.error_message().find("spec.env") != std::string::npos);

  v1::ProcSpec missing;
  missing.set_command("/no/such/binary");
  REQUIRE(host->Create("missing", 0, missing, &state).ok());
  v1::WaitProcsResponse waited = host->Wait({"missing"}, v1::STOPPED);
  CHECK(waited.procs(0).status() == v1::FAILED);
  CHECK(waited.procs(0).reason().find("/no/such/binary") != std::string::npos);
}

TEST_CASE("--max-procs is RESOURCE_EXHAUSTED beyond the limit") {
  auto host = TestHost::Start({"--max-procs=2"});
  REQUIRE(host != nullptr);
  v1::ProcState state;
  REQUIRE(host->Create("m0", 0, Shell("exec sleep 1000"), &state).ok());
  REQUIRE(host->Create("m1", 1, Shell("exec sleep 1000"), &state).ok());
  grpc::Status third = host->Create("m2", 2, Shell("exec sleep 1000"), &state);
  CHECK(third.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK(third.error_message().find("max-procs") != std::string::npos);
}

TEST_CASE(
    "a message larger than the limit is refused and the host keeps serving") {
  auto host = TestHost::Start({"--max-message-bytes=65536"});
  REQUIRE(host != nullptr);
  v1::ProcSpec huge;
  huge.set_command("/bin/true");
  huge.add_args(std::string(100000, 'x'));
  v1::ProcState state;
  grpc::Status status = host->Create("huge", 0, huge, &state);
  CHECK(status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  v1::ListProcsResponse list;
  CHECK(host->stub().ListProcs(Context().get(), {}, &list).ok());
}

TEST_CASE(
    "a second hostd on the same state dir, runtime dir or port refuses to "
    "start and names why; the first keeps serving") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  testing::TempDir other;
  ExitInfo same_state = testing::RunHostdToExit(
      {"--listen=127.0.0.1:0", "--state-dir=" + host->state_dir(),
       "--runtime-dir=" + other.path() + "/run"});
  CHECK(same_state.exit_code == std::optional<int>(1));
  CHECK(same_state.stderr_tail.find("state dir " + host->state_dir() +
                                    " is in use by another hostd (pid " +
                                    std::to_string(host->pid()) + ")") !=
        std::string::npos);

  ExitInfo same_runtime = testing::RunHostdToExit(
      {"--listen=127.0.0.1:0", "--state-dir=" + other.path() + "/state",
       "--runtime-dir=" + host->runtime_dir()});
  CHECK(same_runtime.exit_code == std::optional<int>(1));
  CHECK(same_runtime.stderr_tail.find("runtime dir") != std::string::npos);

  // No SO_REUSEPORT: the port is the first hostd's alone.
  ExitInfo same_port = testing::RunHostdToExit(
      {"--listen=" + host->address(), "--state-dir=" + other.path() + "/s2",
       "--runtime-dir=" + other.path() + "/r2"});
  CHECK(same_port.exit_code == std::optional<int>(1));
  CHECK(same_port.stderr_tail.find("cannot listen on") != std::string::npos);

  v1::HostInfo info;
  REQUIRE(host->stub().GetHostInfo(Context().get(), {}, &info).ok());
  CHECK(info.pid() == host->pid());
}

// --- Failures reach their owner: MailboxLost with the cause, owner leases.

// A relay stream as a client opens one ("client:<id>" on the test's admin
// channel, or on `channel`), played by the test with raw gRPC. The
// destructor cancels it if it is still open and waits for its end.
class RawRelay {
 public:
  RawRelay(TestHost& host, const std::string& sender,
           std::shared_ptr<grpc::Channel> channel = nullptr)
      : stub_(
            v1::Relay::NewStub(channel != nullptr ? channel : host.channel())),
        context_(Context(absl::Seconds(120))) {
    context_->AddMetadata("mesh-sender", sender);
    stream_ = stub_->Connect(context_.get());
  }
  ~RawRelay() {
    if (!ended_) {
      context_->TryCancel();
      End();
    }
  }

  bool Read(v1::RelayFrame* frame) { return stream_->Read(frame); }
  bool Write(const v1::RelayFrame& frame) { return stream_->Write(frame); }
  // The next MailboxLost about `proc`, skipping other frames; none if the
  // stream ends first.
  std::optional<v1::MailboxLost> NextLost(const std::string& proc) {
    v1::RelayFrame frame;
    while (Read(&frame)) {
      if (frame.has_lost() && frame.lost().mailbox() == proc) {
        return frame.lost();
      }
    }
    return std::nullopt;
  }
  // The MailboxLost frames that come before the `heartbeats`-th heartbeat
  // (the first is hostd's greeting; what a stream missed follows it).
  std::vector<v1::MailboxLost> LostBeforeHeartbeat(int heartbeats) {
    std::vector<v1::MailboxLost> lost;
    v1::RelayFrame frame;
    while (heartbeats > 0 && Read(&frame)) {
      if (frame.has_heartbeat()) --heartbeats;
      if (frame.has_lost()) lost.push_back(frame.lost());
    }
    return lost;
  }
  // Half-closes (if it can still write), reads what is left and returns how
  // the stream ended.
  grpc::Status End() {
    if (ended_) return status_;
    stream_->WritesDone();
    v1::RelayFrame frame;
    while (Read(&frame)) {
    }
    status_ = stream_->Finish();
    ended_ = true;
    return status_;
  }

 private:
  std::unique_ptr<v1::Relay::Stub> stub_;
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::RelayFrame, v1::RelayFrame>>
      stream_;
  bool ended_ = false;
  grpc::Status status_;
};

// CreateOrUpdateProc of a proc leased to `client` (empty: detached).
grpc::Status CreateLeased(TestHost& host, const std::string& name,
                          const std::string& client, const v1::ProcSpec& spec,
                          v1::ProcState* state) {
  v1::CreateOrUpdateProcRequest request;
  request.set_name(name);
  request.set_client(client);
  *request.mutable_spec() = spec;
  return host.stub().CreateOrUpdateProc(Context().get(), request, state);
}

// The lease of `client` as ListOwners shows it to the admin, if any.
std::optional<v1::OwnerLease> OwnerOf(TestHost& host,
                                      const std::string& client) {
  v1::ListOwnersResponse owners;
  REQUIRE(host.stub().ListOwners(Context().get(), {}, &owners).ok());
  for (const v1::OwnerLease& owner : owners.owners()) {
    if (owner.client() == client) return owner;
  }
  return std::nullopt;
}

// True once `condition` holds, checked every 20ms for up to `timeout`.
bool Eventually(const std::function<bool()>& condition,
                absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

TEST_CASE(
    "a proc killed by a signal is reported to its client once, with the "
    "signal and the stderr lines that explain it; a client that reconnects "
    "hears what ended while it was away, and only that") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  const std::string client = "client:ear";
  auto ear = std::make_unique<RawRelay>(*host, client);
  v1::RelayFrame first;
  REQUIRE(ear->Read(&first));  // hostd's first heartbeat: the stream is up
  v1::ProcState created;
  REQUIRE(CreateLeased(*host, "doomed", client,
                       Shell("echo 'I1202 16:05:19.123456  1234 x.cc:1] noise' "
                             ">&2; echo 'cause: the disk is on fire' >&2; "
                             "exec sleep 1000"),
                       &created)
              .ok());
  CHECK(created.client() == client);
  REQUIRE(Eventually(
      [&] {
        v1::ProcState state;
        return host->Get("doomed", &state).ok() &&
               state.stderr_tail().find("on fire") != std::string::npos;
      },
      absl::Seconds(20)));
  REQUIRE(kill(created.pid(), SIGKILL) == 0);

  std::optional<v1::MailboxLost> lost = ear->NextLost("doomed");
  REQUIRE(lost.has_value());
  INFO(lost->ShortDebugString());
  CHECK(lost->host() == host->address());
  CHECK(lost->reason().code() == int(grpc::StatusCode::UNAVAILABLE));
  const v1::ProcExit& exit = lost->exit();
  CHECK(exit.proc() == "doomed");
  CHECK(exit.host() == host->address());
  CHECK(exit.pid() == created.pid());
  CHECK(exit.status() == v1::FAILED);
  CHECK(exit.term_signal() == SIGKILL);
  CHECK_FALSE(exit.has_exit_code());
  CHECK(exit.stopped_by() == "SIGKILL");
  CHECK_FALSE(exit.requested());
  // glog's INFO line is not a cause.
  REQUIRE(exit.stderr_lines_size() == 1);
  CHECK(exit.stderr_lines(0) == "cause: the disk is on fire");
  CHECK(exit.reason() == absl::StrCat("proc \"doomed\" (pid ", created.pid(),
                                      ") was killed by SIGKILL (stderr: "
                                      "\"cause: the disk is on fire\")"));
  CHECK(lost->reason().message() == exit.reason());
  v1::ProcState state;
  REQUIRE(host->Get("doomed", &state).ok());
  CHECK(state.reason() == exit.reason());

  // A stop that was asked for is not a failure.
  REQUIRE(
      CreateLeased(*host, "asked", client, Shell("exec sleep 1000"), &created)
          .ok());
  REQUIRE(host->Stop("asked", &state, absl::Seconds(5)).ok());
  lost = ear->NextLost("asked");
  REQUIRE(lost.has_value());
  CHECK(lost->exit().status() == v1::STOPPED);
  CHECK(lost->exit().requested());

  // Away and back: the new stream first hears what ended meanwhile, not
  // what the client heard already.
  REQUIRE(
      CreateLeased(*host, "away", client, Shell("exec sleep 1000"), &created)
          .ok());
  CHECK(ear->End().ok());
  ear.reset();
  REQUIRE(Eventually(
      [&] {
        std::optional<v1::OwnerLease> lease = OwnerOf(*host, client);
        return lease.has_value() && !lease->connected();
      },
      absl::Seconds(20)));
  REQUIRE(kill(created.pid(), SIGKILL) == 0);
  REQUIRE_FALSE(host->Wait({"away"}, v1::STOPPED).timed_out());
  REQUIRE(Eventually([&] { return !OwnerOf(*host, client).has_value(); },
                     absl::Seconds(20)));
  RawRelay back(*host, client);
  std::vector<v1::MailboxLost> heard = back.LostBeforeHeartbeat(2);
  REQUIRE(heard.size() == 1);
  CHECK(heard[0].mailbox() == "away");
  CHECK(heard[0].exit().term_signal() == SIGKILL);
  CHECK_FALSE(heard[0].exit().requested());
  // Heard: a stream after that hears nothing again.
  CHECK(back.End().ok());
  RawRelay again(*host, client);
  CHECK(again.LostBeforeHeartbeat(2).empty());
}

TEST_CASE(
    "a proc its owner asked to exit (StopAll with exit_proc) ends as "
    "requested") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  const std::string client = "client:quitter";
  RawRelay ear(*host, client);
  v1::RelayFrame first;
  REQUIRE(ear.Read(&first));  // hostd's first heartbeat: the stream is up
  v1::ProcState created;
  REQUIRE(CreateLeased(*host, "quits", client, v1::ProcSpec(), &created).ok());
  REQUIRE_FALSE(host->Wait({"quits"}, v1::RUNNING).timed_out());
  auto procs = v1::Proc::NewStub(host->channel());
  v1::StopAllRequest stop_all;
  stop_all.set_proc("quits");
  stop_all.set_exit_proc(true);
  v1::StopAllResponse stopped;
  REQUIRE(procs->StopAll(Context().get(), stop_all, &stopped).ok());
  std::optional<v1::MailboxLost> lost = ear.NextLost("quits");
  REQUIRE(lost.has_value());
  INFO(lost->ShortDebugString());
  CHECK(lost->exit().status() == v1::STOPPED);
  CHECK(lost->exit().requested());
}

TEST_CASE(
    "a proc's end is requested only if its owner asked for it, not when an "
    "admin stops another's proc") {
  testing::TempDir dir;
  const std::string tokens = dir.path() + "/tokens";
  std::ofstream(tokens) << "bob client bob-token-0123456789abcdef\n";
  REQUIRE(chmod(tokens.c_str(), 0600) == 0);
  auto host = TestHost::Start({"--tokens-file=" + tokens});
  REQUIRE(host != nullptr);
  ClientCredentials bob;
  bob.token = "bob-token-0123456789abcdef";
  std::shared_ptr<grpc::Channel> bob_channel =
      NewAuthedChannel(host->address(), bob);
  auto bob_host = v1::Host::NewStub(bob_channel);
  RawRelay ear(*host, "client:bob", bob_channel);
  v1::RelayFrame first;
  REQUIRE(ear.Read(&first));
  for (const char* name : {"by_bob", "by_admin"}) {
    v1::CreateOrUpdateProcRequest request;
    request.set_name(name);
    request.set_client("client:bob");
    *request.mutable_spec() = Shell("exec sleep 1000");
    v1::ProcState state;
    REQUIRE(
        bob_host->CreateOrUpdateProc(Context().get(), request, &state).ok());
  }
  v1::StopProcRequest stop;
  stop.set_name("by_bob");
  stop.set_grace_ms(2000);
  v1::ProcState state;
  REQUIRE(bob_host->StopProc(Context().get(), stop, &state).ok());
  std::optional<v1::MailboxLost> lost = ear.NextLost("by_bob");
  REQUIRE(lost.has_value());
  CHECK(lost->exit().status() == v1::STOPPED);
  CHECK(lost->exit().requested());

  REQUIRE(host->Stop("by_admin", &state, absl::Seconds(2)).ok());
  lost = ear.NextLost("by_admin");
  REQUIRE(lost.has_value());
  INFO(lost->ShortDebugString());
  CHECK(lost->exit().status() == v1::STOPPED);
  CHECK_FALSE(lost->exit().requested());
}

TEST_CASE(
    "a client's procs are stopped with the lease as the reason once its "
    "stream has been gone for the lease; detached procs are untouched") {
  constexpr absl::Duration kLease = absl::Milliseconds(500);
  auto host = TestHost::Start({"--owner-lease=500ms"});
  REQUIRE(host != nullptr);
  const std::string client = "client:gone";
  auto stream = std::make_unique<RawRelay>(*host, client);
  v1::RelayFrame first;
  REQUIRE(stream->Read(&first));
  v1::ProcState state;
  for (const char* name : {"leased_0", "leased_1"}) {
    REQUIRE(CreateLeased(*host, name, client, {}, &state).ok());
  }
  REQUIRE(CreateLeased(*host, "free", "", {}, &state).ok());
  v1::WaitProcsResponse running =
      host->Wait({"leased_0", "leased_1", "free"}, v1::RUNNING);
  REQUIRE_FALSE(running.timed_out());
  const pid_t free_pid = running.procs(2).pid();
  std::optional<v1::OwnerLease> lease = OwnerOf(*host, client);
  REQUIRE(lease.has_value());
  CHECK(lease->identity() == "hostd:parent");
  CHECK(lease->connected());
  CHECK(lease->procs_size() == 2);
  CHECK(lease->lease_ms() == 500);

  const absl::Time ended = absl::Now();
  CHECK(stream->End().ok());
  v1::WaitProcsResponse stopped = host->Wait(
      {"leased_0", "leased_1"}, v1::STOPPED, kLease + absl::Seconds(20));
  const absl::Duration took = absl::Now() - ended;
  REQUIRE_FALSE(stopped.timed_out());
  CHECK(took >= kLease);
  for (const v1::ProcState& proc : stopped.procs()) {
    INFO(proc.ShortDebugString());
    CHECK(proc.status() == v1::STOPPED);
    CHECK(proc.stopped_by() == "lease");
    CHECK_THAT(proc.reason(),
               Catch::Contains("owner client:gone (hostd:parent) vanished: "
                               "no relay stream for 500ms (--owner-lease)"));
    CHECK_FALSE(IsAlive(proc.pid()));
  }
  // The lease went with its procs; the detached proc runs on.
  REQUIRE(Eventually([&] { return !OwnerOf(*host, client).has_value(); },
                     absl::Seconds(20)));
  REQUIRE(host->Get("free", &state).ok());
  CHECK(state.status() == v1::RUNNING);
  CHECK(state.client().empty());
  CHECK(IsAlive(free_pid));
  // Back too late: it hears that they ended, stopped by hostd (not asked
  // for by their owner: a failure to the client).
  RawRelay back(*host, client);
  std::vector<v1::MailboxLost> heard = back.LostBeforeHeartbeat(2);
  REQUIRE(heard.size() == 2);
  for (const v1::MailboxLost& lost : heard) {
    INFO(lost.ShortDebugString());
    CHECK(lost.exit().stopped_by() == "lease");
    CHECK_FALSE(lost.exit().requested());
  }
}

TEST_CASE(
    "with a zero lease, procs a client creates before its first stream "
    "live until it had one, and go as soon as it has none") {
  auto host = TestHost::Start({"--owner-lease=0s"});
  REQUIRE(host != nullptr);
  const std::string client = "client:slow";
  v1::ProcState state;
  REQUIRE(CreateLeased(*host, "early", client, {}, &state).ok());
  REQUIRE_FALSE(host->Wait({"early"}, v1::RUNNING).timed_out());
  absl::SleepFor(absl::Seconds(1));  // Lease checks run every 250ms.
  REQUIRE(host->Get("early", &state).ok());
  CHECK(state.status() == v1::RUNNING);

  RawRelay stream(*host, client);
  v1::RelayFrame first;
  REQUIRE(stream.Read(&first));
  CHECK(stream.End().ok());
  v1::WaitProcsResponse stopped = host->Wait({"early"}, v1::STOPPED);
  REQUIRE_FALSE(stopped.timed_out());
  CHECK(stopped.procs(0).stopped_by() == "lease");
}

TEST_CASE("a client that reconnects within its lease keeps its procs") {
  constexpr absl::Duration kLease = absl::Seconds(2);
  auto host = TestHost::Start({"--owner-lease=2s"});
  REQUIRE(host != nullptr);
  const std::string client = "client:back";
  auto stream = std::make_unique<RawRelay>(*host, client);
  v1::RelayFrame first;
  REQUIRE(stream->Read(&first));
  v1::ProcState state;
  REQUIRE(CreateLeased(*host, "kept", client, {}, &state).ok());
  v1::WaitProcsResponse running = host->Wait({"kept"}, v1::RUNNING);
  REQUIRE_FALSE(running.timed_out());

  CHECK(stream->End().ok());
  stream.reset();
  REQUIRE(Eventually(
      [&] {
        std::optional<v1::OwnerLease> lease = OwnerOf(*host, client);
        return lease.has_value() && !lease->connected();
      },
      absl::Seconds(20)));
  RawRelay again(*host, client);
  REQUIRE(again.Read(&first));
  std::optional<v1::OwnerLease> lease = OwnerOf(*host, client);
  REQUIRE(lease.has_value());
  CHECK(lease->connected());
  // Well past the lease the stop would have had.
  absl::SleepFor(kLease + absl::Milliseconds(1500));
  REQUIRE(host->Get("kept", &state).ok());
  INFO(state.ShortDebugString());
  CHECK(state.status() == v1::RUNNING);
  CHECK(state.pid() == running.procs(0).pid());
  CHECK(IsAlive(state.pid()));
}

TEST_CASE(
    "hostd ends a client stream that announced heartbeats and then went "
    "silent; a stream that never announced any stays") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  RawRelay quiet(*host, "client:quiet");
  RawRelay silent(*host, "client:silent");
  v1::RelayFrame frame;
  REQUIRE(quiet.Read(&frame));
  REQUIRE(silent.Read(&frame));
  v1::RelayFrame heartbeat;
  heartbeat.mutable_heartbeat()->set_interval_ms(100);
  const absl::Time sent = absl::Now();
  REQUIRE(silent.Write(heartbeat));
  // Silent for max(3 x 100ms, 1s): hostd cancels it.
  while (silent.Read(&frame)) {
  }
  const absl::Duration took = absl::Now() - sent;
  grpc::Status ended = silent.End();
  CHECK(ended.error_code() == grpc::StatusCode::CANCELLED);
  CHECK(took >= absl::Milliseconds(900));
  CHECK(took < absl::Seconds(10));
  // The quiet one still gets hostd's heartbeats (every 500ms).
  for (int i = 0; i < 3; ++i) {
    REQUIRE(quiet.Read(&frame));
    CHECK(frame.has_heartbeat());
  }
}

TEST_CASE("a proc's client must be a client id, and one of the caller's own") {
  testing::TempDir dir;
  const std::string tokens = dir.path() + "/tokens";
  std::ofstream(tokens) << "bob client bob-token-0123456789abcdef\n";
  REQUIRE(chmod(tokens.c_str(), 0600) == 0);
  auto host = TestHost::Start({"--tokens-file=" + tokens});
  REQUIRE(host != nullptr);
  v1::ProcState state;
  for (const std::string& bad :
       std::vector<std::string>{"host:1.2.3.4:5", "client:", "nope",
                                "client:has space", std::string(400, 'c')}) {
    INFO(bad);
    grpc::Status status = CreateLeased(*host, "p", bad, {}, &state);
    CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(status.error_message(), Catch::Contains("client"));
  }
  // The admin used client:mine first: it is the admin's, not bob's.
  REQUIRE(
      CreateLeased(*host, "p", "client:mine", Shell("exec sleep 1000"), &state)
          .ok());
  ClientCredentials bob;
  bob.token = "bob-token-0123456789abcdef";
  auto bob_host = v1::Host::NewStub(NewAuthedChannel(host->address(), bob));
  v1::CreateOrUpdateProcRequest request;
  request.set_name("q");
  request.set_client("client:mine");
  grpc::Status taken =
      bob_host->CreateOrUpdateProc(Context().get(), request, &state);
  CHECK(taken.error_code() == grpc::StatusCode::PERMISSION_DENIED);
  CHECK_THAT(taken.error_message(), Catch::Contains("another identity"));
  // A request refused (invalid, or by the run policy) claims nothing.
  request.set_client("client:unclaimed");
  request.mutable_spec()->set_command("relative/path");
  CHECK(bob_host->CreateOrUpdateProc(Context().get(), request, &state)
            .error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  request.mutable_spec()->clear_command();
  REQUIRE(CreateLeased(*host, "r", "client:unclaimed", Shell("exec sleep 1000"),
                       &state)
              .ok());
  // Bob sees only his own leases.
  request.set_client("client:bobs");
  REQUIRE(bob_host->CreateOrUpdateProc(Context().get(), request, &state).ok());
  v1::ListOwnersResponse owners;
  REQUIRE(bob_host->ListOwners(Context().get(), {}, &owners).ok());
  REQUIRE(owners.owners_size() == 1);
  CHECK(owners.owners(0).client() == "client:bobs");
  CHECK(owners.owners(0).identity() == "bob");
}

}  // namespace
}  // namespace mesh
