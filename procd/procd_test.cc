// The real procd binary, run standalone as a child of the test and driven
// over gRPC and its mailbox.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "lib/bootstrap/registrar.h"
#include "lib/mailbox/mailbox.h"
#include "lib/mailbox/testing.h"
#include "lib/testing/temp_dir.h"
#include "proto/actors.pb.h"
#include "proto/proc.grpc.pb.h"

extern char** environ;

namespace mesh {
namespace {

std::string ProcdPath() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  REQUIRE(srcdir != nullptr);
  return absl::StrCat(srcdir, "/hostmesh/procd/procd");
}

// A procd child with its stdout on a pipe. Kills (SIGKILL) and reaps it in
// the destructor if the test did not.
class ProcdChild {
 public:
  // With `bootstrap_fd` >= 0, the child gets it as kBootstrapChildFd and
  // HOSTMESH_BOOTSTRAP_FD names it, as a parent's spawn does.
  explicit ProcdChild(const std::string& name, int bootstrap_fd = -1) {
    int fds[2];
    REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) env_strings.push_back(*e);
    if (bootstrap_fd >= 0) {
      posix_spawn_file_actions_adddup2(&actions, bootstrap_fd,
                                       kBootstrapChildFd);
      env_strings.push_back(
          absl::StrCat(kBootstrapFdEnv, "=", kBootstrapChildFd));
    }
    std::vector<char*> envp;
    for (std::string& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::string path = ProcdPath();
    std::string name_flag = "--name=" + name;
    std::vector<char*> argv = {path.data(), name_flag.data(), nullptr};
    int error = posix_spawn(&pid_, path.c_str(), &actions, nullptr, argv.data(),
                            envp.data());
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    stdout_fd_ = fds[0];
    REQUIRE(error == 0);
  }

  ~ProcdChild() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (stdout_fd_ >= 0) close(stdout_fd_);
  }

  // The first line on stdout, or nullopt at the timeout or EOF.
  std::optional<std::string> ReadLine(absl::Duration timeout) {
    std::string line;
    absl::Time deadline = absl::Now() + timeout;
    while (true) {
      int left =
          static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
      if (left <= 0) return std::nullopt;
      pollfd pfd{stdout_fd_, POLLIN, 0};
      int ready = poll(&pfd, 1, left);
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) return std::nullopt;
      char c;
      ssize_t n = read(stdout_fd_, &c, 1);
      if (n <= 0) return std::nullopt;
      if (c == '\n') return line;
      line.push_back(c);
    }
  }

  // Waits for the child to exit; its wait status, or nullopt at the timeout
  // (the child keeps running and the destructor kills it).
  std::optional<int> WaitExit(absl::Duration timeout) {
    absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      int status = 0;
      pid_t got = waitpid(pid_, &status, WNOHANG);
      if (got == pid_) {
        pid_ = -1;
        return status;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return std::nullopt;
  }

  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
};

// Starts procd `name` and returns its address from its first stdout line.
std::string StartAndGetAddress(ProcdChild& child, const std::string& name) {
  std::optional<std::string> line = child.ReadLine(absl::Seconds(30));
  REQUIRE(line.has_value());
  const std::string prefix = absl::StrCat("procd ", name, " listening on ");
  REQUIRE(absl::StartsWith(*line, prefix));
  return line->substr(prefix.size());
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(30));
  return context;
}

TEST_CASE("a standalone procd serves actors and exits 0 on SIGTERM") {
  ProcdChild child("p7");
  std::string address = StartAndGetAddress(child, "p7");
  auto stub = v1::Proc::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));

  v1::ProcInfo info;
  REQUIRE(
      stub->GetProcInfo(Context().get(), v1::GetProcInfoRequest(), &info).ok());
  CHECK(info.name() == "p7");
  CHECK(info.address() == address);
  CHECK(info.pid() == child.pid());

  v1::CreateOrUpdateActorRequest create;
  create.set_name("a0");
  create.set_type("mesh.echo");
  create.set_rank(1);
  v1::ActorState state;
  REQUIRE(stub->CreateOrUpdateActor(Context().get(), create, &state).ok());

  testing::MailboxNode client("client");
  REQUIRE(client.ok());
  absl::StatusOr<v1::Envelope> reply = testing::Request(
      client.mailbox(), address, EnvelopeToActor("a0", v1::GetActorId()));
  REQUIRE(reply.ok());
  absl::StatusOr<v1::ActorIdReply> id = UnpackPayload<v1::ActorIdReply>(*reply);
  REQUIRE(id.ok());
  CHECK(id->id().actor() == "a0");
  CHECK(id->id().proc() == "p7");
  CHECK(id->rank() == 1);
  CHECK(id->pid() == child.pid());

  REQUIRE(kill(child.pid(), SIGTERM) == 0);
  std::optional<int> status = child.WaitExit(absl::Seconds(30));
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
}

TEST_CASE("a procd asked to StopAll with exit_proc answers and exits 0") {
  ProcdChild child("p8");
  std::string address = StartAndGetAddress(child, "p8");
  auto stub = v1::Proc::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  v1::CreateOrUpdateActorRequest create;
  create.set_name("c0");
  create.set_type("mesh.counter");
  v1::ActorState state;
  REQUIRE(stub->CreateOrUpdateActor(Context().get(), create, &state).ok());

  v1::StopAllRequest stop_all;
  stop_all.set_reason("test done");
  stop_all.set_exit_proc(true);
  v1::StopAllResponse stopped;
  REQUIRE(stub->StopAll(Context().get(), stop_all, &stopped).ok());
  REQUIRE(stopped.stopped_size() == 1);
  CHECK(stopped.stopped(0).status() == v1::STOPPED);

  std::optional<int> status = child.WaitExit(absl::Seconds(30));
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
}

TEST_CASE("a procd spawned by a parent registers back and stops when asked") {
  testing::TempDir dir;
  const std::string runtime_dir = dir.path();
  {
    Registrar::Options options;
    options.runtime_dir = runtime_dir + "/run";
    absl::StatusOr<std::unique_ptr<Registrar>> registrar =
        Registrar::Create(options);
    REQUIRE(registrar.ok());

    absl::Notification registered;
    std::string address;
    pid_t registered_pid = 0;
    Registrar::ChildCallbacks callbacks;
    callbacks.on_registered = [&](const std::string& a, pid_t pid) {
      address = a;
      registered_pid = pid;
      registered.Notify();
    };
    absl::StatusOr<Registrar::Ticket> ticket =
        (*registrar)->Expect("p9_3", 3, std::move(callbacks));
    REQUIRE(ticket.ok());
    // The name on the command line loses to the parent's.
    ProcdChild child("ignored", ticket->read_fd);
    close(ticket->read_fd);
    REQUIRE(registered.WaitForNotificationWithTimeout(absl::Seconds(30)));
    CHECK(registered_pid == child.pid());

    auto stub = v1::Proc::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    v1::ProcInfo info;
    REQUIRE(stub->GetProcInfo(Context().get(), v1::GetProcInfoRequest(), &info)
                .ok());
    CHECK(info.name() == "p9_3");
    CHECK(info.rank() == 3);
    CHECK(info.address() == address);

    REQUIRE((*registrar)
                ->SendStop(ticket->id, "test is done", absl::Seconds(10))
                .ok());
    std::optional<int> status = child.WaitExit(absl::Seconds(30));
    REQUIRE(status.has_value());
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) == 0);
  }
}

}  // namespace
}  // namespace mesh
