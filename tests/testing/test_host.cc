#include "tests/testing/test_host.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "catch2/catch.hpp"
#include "lib/process/process_identity.h"

namespace mesh::testing {

std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() +
                        absl::ToChronoMilliseconds(timeout));
  return context;
}

std::string BinaryPath(const std::string& name) {
  // Test-only binaries live in this package's runfiles.
  if (const char* srcdir = std::getenv("TEST_SRCDIR")) {
    for (const char* package : {"tests", "examples/greeter"}) {
      std::string local =
          absl::StrCat(srcdir, "/hostmesh/", package, "/", name);
      if (access(local.c_str(), X_OK) == 0) return local;
    }
  }
  absl::StatusOr<std::string> path = FindBinary(name);
  return path.ok() ? *path : name;
}

v1::ProcSpec Shell(const std::string& script) {
  v1::ProcSpec spec;
  spec.set_command("/bin/sh");
  spec.add_args("-c");
  spec.add_args(script);
  return spec;
}

std::vector<uint64_t> RanksOf(
    const std::vector<absl::StatusOr<v1::ActorIdReply>>& replies) {
  std::vector<uint64_t> ranks;
  for (const auto& reply : replies) {
    INFO(reply.status().ToString());
    REQUIRE(reply.ok());
    ranks.push_back(reply->rank());
  }
  return ranks;
}

std::shared_ptr<Client> NewClient(Client::Options options) {
  absl::StatusOr<std::shared_ptr<Client>> client =
      Client::Create(std::move(options));
  REQUIRE(client.ok());
  return *client;
}

std::shared_ptr<Client> NewClient(ClientCredentials credentials) {
  Client::Options options;
  options.credentials = std::move(credentials);
  return NewClient(std::move(options));
}

HostMesh::Options WithClient(std::shared_ptr<Client> client,
                             absl::Duration timeout) {
  HostMesh::Options options;
  options.client = std::move(client);
  options.timeout = timeout;
  return options;
}

std::unique_ptr<TestHost> TestHost::Start(std::vector<std::string> args,
                                          bool allow_any_command,
                                          const std::string& listen) {
  std::unique_ptr<TestHost> host(new TestHost());
  host->state_dir_ = host->dir_.path() + "/state";
  host->runtime_dir_ = host->dir_.path() + "/run";
  Launcher::Options options;
  options.log_root = host->dir_.path() + "/logs";
  absl::StatusOr<std::unique_ptr<Launcher>> launcher =
      Launcher::Create(options);
  if (!launcher.ok()) return nullptr;
  host->launcher_ = *std::move(launcher);
  SpawnOptions spawn;
  spawn.path = BinaryPath("hostd");
  spawn.args = {"--listen=" + listen, "--state-dir=" + host->state_dir_,
                "--runtime-dir=" + host->runtime_dir_,
                "--procd=" + BinaryPath("procd")};
  if (allow_any_command) spawn.args.push_back("--allow-any-command");
  spawn.args.insert(spawn.args.end(), args.begin(), args.end());
  absl::StatusOr<Launcher::Child> child =
      host->launcher_->Launch("hostd", 0, spawn, absl::Seconds(30));
  if (!child.ok()) {
    fprintf(stderr, "hostd did not start: %s\n",
            std::string(child.status().message()).c_str());
    return nullptr;
  }
  host->address_ = child->address;
  host->pid_ = child->pid;
  host->credentials_.token = host->launcher_->admin_token();
  host->channel_ = NewAuthedChannel(host->address_, host->credentials_);
  host->stub_ = v1::Host::NewStub(host->channel_);
  // For tools that read a token file (meshctl --token-file).
  host->token_file_ = host->dir_.path() + "/admin.token";
  int fd = open(host->token_file_.c_str(),
                O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || write(fd, host->credentials_.token.data(),
                      host->credentials_.token.size()) < 0) {
    fprintf(stderr, "cannot write %s\n", host->token_file_.c_str());
  }
  if (fd >= 0) close(fd);
  return host;
}

TestHost::~TestHost() {
  if (IsAlive(pid_)) {
    v1::ShutdownHostRequest request;
    request.set_grace_ms(1000);
    request.set_stay_down(true);
    v1::ShutdownHostResponse response;
    stub_->ShutdownHost(Context(absl::Seconds(30)).get(), request, &response);
  }
  launcher_->StopAll(absl::Seconds(5));
}

std::string TestHost::HostdLog() const {
  std::ifstream in(dir_.path() + "/logs/hostd/stderr.log");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<ExitInfo> TestHost::WaitExit(absl::Duration timeout) {
  return launcher_->WaitExit("hostd", timeout);
}

grpc::Status TestHost::Create(const std::string& name, uint64_t rank,
                              const v1::ProcSpec& spec, v1::ProcState* state) {
  v1::CreateOrUpdateProcRequest request;
  request.set_name(name);
  request.set_rank(rank);
  *request.mutable_spec() = spec;
  return stub_->CreateOrUpdateProc(Context().get(), request, state);
}

grpc::Status TestHost::Get(const std::string& name, v1::ProcState* state) {
  v1::GetProcStateRequest request;
  request.set_name(name);
  return stub_->GetProcState(Context().get(), request, state);
}

grpc::Status TestHost::Stop(const std::string& name, v1::ProcState* state,
                            absl::Duration grace) {
  v1::StopProcRequest request;
  request.set_name(name);
  request.set_reason("test stop");
  request.set_grace_ms(absl::ToInt64Milliseconds(grace));
  return stub_->StopProc(Context(absl::Seconds(60)).get(), request, state);
}

v1::WaitProcsResponse TestHost::Wait(const std::vector<std::string>& names,
                                     v1::Status min_status,
                                     absl::Duration timeout) {
  v1::WaitProcsRequest request;
  for (const auto& name : names) request.add_names(name);
  request.set_min_status(min_status);
  request.set_timeout_ms(absl::ToInt64Milliseconds(timeout));
  v1::WaitProcsResponse response;
  stub_->WaitProcs(Context(timeout + absl::Seconds(5)).get(), request,
                   &response);
  return response;
}

bool IsAlive(pid_t pid) {
  absl::StatusOr<ProcStat> stat = ReadProcStat(pid);
  return stat.ok() && stat->state != 'Z' && stat->state != 'X';
}

std::vector<pid_t> LiveInGroups(const std::set<pid_t>& pgids) {
  std::vector<pid_t> found;
  DIR* dir = opendir("/proc");
  if (dir == nullptr) return found;
  while (dirent* entry = readdir(dir)) {
    pid_t pid = 0;
    if (!absl::SimpleAtoi(entry->d_name, &pid)) continue;
    absl::StatusOr<ProcStat> stat = ReadProcStat(pid);
    if (stat.ok() && stat->state != 'Z' && pgids.count(stat->pgrp)) {
      found.push_back(pid);
    }
  }
  closedir(dir);
  return found;
}

ExitInfo RunToExit(SpawnOptions spawn, absl::Duration timeout) {
  absl::StatusOr<std::unique_ptr<ProcessSupervisor>> supervisor =
      ProcessSupervisor::Create();
  REQUIRE(supervisor.ok());
  absl::Notification exited;
  ExitInfo info;
  absl::StatusOr<pid_t> pid =
      (*supervisor)->Spawn(spawn, [&](const ExitInfo& exit) {
        info = exit;
        exited.Notify();
      });
  REQUIRE(pid.ok());
  if (!exited.WaitForNotificationWithTimeout(timeout)) {
    (*supervisor)->SignalGroup(*pid, SIGKILL).IgnoreError();
    exited.WaitForNotification();
    FAIL(spawn.path << " did not exit");
  }
  return info;
}

ExitInfo RunHostdToExit(std::vector<std::string> args) {
  SpawnOptions spawn;
  spawn.path = BinaryPath("hostd");
  spawn.args = std::move(args);
  return RunToExit(std::move(spawn));
}

}  // namespace mesh::testing
