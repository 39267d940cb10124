#include "hostd/hostd.h"

#include <glog/logging.h>
#include <grpcpp/grpcpp.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "hostd/host_service.h"
#include "hostd/proc_manager.h"
#include "lib/bootstrap/parent_channel.h"
#include "lib/bootstrap/registrar.h"
#include "lib/process/signals.h"
#include "lib/process/supervisor.h"

namespace mesh {
namespace {

// The host part of "host:port" or "[v6]:port".
std::string HostPart(const std::string& address) {
  size_t colon = address.rfind(':');
  std::string host =
      colon == std::string::npos ? address : address.substr(0, colon);
  return host;
}

std::string ThisHostname() {
  char name[HOST_NAME_MAX + 1] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "localhost";
  return name;
}

// procd beside this binary (installed layout) or in Bazel's output tree.
std::string DefaultProcdPath() {
  std::error_code error;
  std::filesystem::path self =
      std::filesystem::read_symlink("/proc/self/exe", error);
  if (error) return "procd";
  std::filesystem::path dir = self.parent_path();
  for (const auto& candidate :
       {dir / "procd", dir / ".." / "procd" / "procd"}) {
    if (access(candidate.c_str(), X_OK) == 0) {
      return std::filesystem::weakly_canonical(candidate).string();
    }
  }
  return (dir / "procd").string();
}

}  // namespace

int RunHostd(HostdOptions options) {
  // Before any thread starts: SIGTERM/SIGINT go to one thread (below).
  StopSignals::Block();

  if (options.procd_path.empty()) options.procd_path = DefaultProcdPath();
  std::error_code error;
  std::filesystem::create_directories(options.state_dir, error);
  if (error) {
    LOG(ERROR) << "cannot create state dir " << options.state_dir << ": "
               << error.message();
    return 1;
  }
  std::string advertise = options.advertise;
  if (advertise.empty()) {
    advertise = HostPart(options.listen);
    if (advertise == "0.0.0.0" || advertise == "[::]" || advertise.empty()) {
      advertise = ThisHostname();
    }
  }

  absl::StatusOr<std::unique_ptr<ProcessSupervisor>> supervisor =
      ProcessSupervisor::Create();
  if (!supervisor.ok()) {
    LOG(ERROR) << "cannot start the process supervisor: "
               << supervisor.status();
    return 1;
  }
  Registrar::Options registrar_options;
  registrar_options.runtime_dir = options.runtime_dir;
  registrar_options.advertise_host = advertise;
  registrar_options.orphan_timeout = options.orphan_timeout;
  absl::StatusOr<std::unique_ptr<Registrar>> registrar =
      Registrar::Create(registrar_options);
  if (!registrar.ok()) {
    LOG(ERROR) << "cannot start the register-back service in "
               << options.runtime_dir << ": " << registrar.status();
    return 1;
  }

  ProcManager::Options manager_options;
  manager_options.procd_path = options.procd_path;
  manager_options.state_dir = options.state_dir;
  manager_options.registration_timeout = options.registration_timeout;
  manager_options.stop_grace = options.stop_grace;
  manager_options.max_procs = options.max_procs;
  auto manager = std::make_unique<ProcManager>(
      manager_options, supervisor->get(), registrar->get());

  absl::Notification exit_requested;
  std::once_flag exit_once;
  auto request_exit = [&] {
    std::call_once(exit_once, [&] { exit_requested.Notify(); });
  };
  // Shuts down once, whichever of signal or parent asks first: stops every
  // proc, then lets main return.
  std::atomic<bool> shutdown_started{false};
  auto shutdown = [&](const std::string& reason) {
    if (shutdown_started.exchange(true)) return;
    sd_notify(0, "STOPPING=1");
    manager->Shutdown(reason, options.stop_grace,
                      [&](v1::ShutdownHostResponse) { request_exit(); });
  };
  HostService::Info info;
  info.state_dir = options.state_dir;
  info.max_procs = options.max_procs;
  info.stop_grace = options.stop_grace;
  // ShutdownHost stops the procs through the manager itself; the service
  // calls back once its answer is on its way.
  HostService service(manager.get(), info, [&] {
    shutdown_started = true;
    request_exit();
  });
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(),
                           &port);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    LOG(ERROR) << "cannot listen on " << options.listen;
    return 1;
  }
  std::string address = absl::StrCat(advertise, ":", port);
  service.set_address(address);
  LOG(INFO) << "hostd listening on " << address << " (state "
            << options.state_dir << ", runtime " << options.runtime_dir
            << ", procd " << options.procd_path << ")";
  std::printf("hostd listening on %s\n", address.c_str());
  std::fflush(stdout);

  std::unique_ptr<ParentChannel> parent;
  absl::StatusOr<std::optional<v1::BootstrapInfo>> bootstrap =
      ParentChannel::ReadFromEnv();
  if (!bootstrap.ok()) {
    LOG(ERROR) << "bad bootstrap info: " << bootstrap.status();
    return 1;
  }
  if (bootstrap->has_value()) {
    ParentChannel::Callbacks callbacks;
    callbacks.on_stop = [&](const std::string& reason, absl::Duration) {
      shutdown(absl::StrCat("parent asked: ", reason));
    };
    callbacks.on_orphaned = [&] { shutdown("parent is gone"); };
    absl::StatusOr<std::unique_ptr<ParentChannel>> channel =
        ParentChannel::Register(**bootstrap, address, std::move(callbacks));
    if (!channel.ok()) {
      LOG(ERROR) << "register-back with parent failed: " << channel.status();
      return 1;
    }
    parent = *std::move(channel);
  }
  sd_notify(0, "READY=1");

  auto signals = std::make_unique<StopSignals>([&](const std::string& name) {
    LOG(INFO) << "received " << name << "; shutting down";
    shutdown(absl::StrCat("hostd received ", name));
  });

  exit_requested.WaitForNotification();
  manager->AnswerAllWaits();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  signals.reset();
  parent.reset();
  manager.reset();
  server.reset();
  registrar->reset();
  supervisor->reset();
  LOG(INFO) << "hostd exiting";
  return 0;
}

}  // namespace mesh
