// ProcdMain: the procd process around ProcRuntime.
//
// Start-up order:
//   1. block SIGTERM/SIGINT (before any thread exists, so every thread
//      inherits the mask and only the signal thread sees them);
//   2. parse flags, init logging;
//   3. read the BootstrapInfo, if a parent spawned us (it closes the fd);
//   4. build the mailbox, the runtime and one gRPC server on <host>:0 with
//      the Proc and Mailbox services; learn the port;
//   5. register back with the parent (or, standalone, print the address);
//   6. wait for a stop request: the parent's Stop, StopAll with exit_proc,
//      SIGTERM/SIGINT, or the parent being gone past the orphan timeout;
//   7. stop every actor, the mailbox, the server, within the grace.
#include <glog/logging.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "hostmesh/procd.h"
#include "lib/bootstrap/parent_channel.h"
#include "lib/mailbox/mailbox.h"
#include "lib/names.h"
#include "lib/process/signals.h"
#include "procd/proc_runtime.h"
#include "procd/proc_service.h"

namespace mesh {
namespace {

// Grace for stops that do not name one (signals, StopAll, orphaned).
constexpr absl::Duration kDefaultGrace = absl::Seconds(10);

// The first stop request wins. Thread-safe.
class StopRequest {
 public:
  void Request(const std::string& reason, absl::Duration grace) {
    absl::MutexLock lock(&mu_);
    if (requested_) {
      LOG(INFO) << "already stopping; ignoring: " << reason;
      return;
    }
    requested_ = true;
    reason_ = reason;
    grace_ = grace > absl::ZeroDuration() ? grace : kDefaultGrace;
  }

  // Blocks until a stop is requested; returns its reason and grace.
  std::pair<std::string, absl::Duration> Wait() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&requested_));
    return {reason_, grace_};
  }

 private:
  absl::Mutex mu_;
  bool requested_ ABSL_GUARDED_BY(mu_) = false;
  std::string reason_ ABSL_GUARDED_BY(mu_);
  absl::Duration grace_ ABSL_GUARDED_BY(mu_);
};

std::string JoinHostPort(const std::string& host, int port) {
  if (host.find(':') != std::string::npos && host.front() != '[') {
    return absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat(host, ":", port);
}

}  // namespace

int ProcdMain(int argc, char** argv, ActorRegistry registry) {
  // Before any thread starts: SIGTERM/SIGINT go to one thread (below).
  StopSignals::Block();

  std::string name = "proc";
  uint64_t rank = 0;
  std::string listen_host = "127.0.0.1";
  std::string orphan_timeout_flag;
  CLI::App app{"procd: a hostmesh proc, an actor runtime"};
  app.add_option("--name", name,
                 "Proc name (standalone; a parent's bootstrap info wins)")
      ->capture_default_str();
  app.add_option("--rank", rank, "Proc rank (standalone)")
      ->capture_default_str();
  CLI::Option* listen_option =
      app.add_option("--listen-host", listen_host,
                     "Host or IP to listen on, port chosen by the system "
                     "(default: the parent's advertise host, else 127.0.0.1)");
  app.add_option("--orphan-timeout", orphan_timeout_flag,
                 "How long to outlive a broken channel to the parent, e.g. "
                 "30s (default: what the parent says)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  if (!google::IsGoogleLoggingInitialized()) {
    google::InitGoogleLogging(argv[0]);
  }
  FLAGS_logtostderr = true;

  std::optional<absl::Duration> orphan_timeout;
  if (!orphan_timeout_flag.empty()) {
    absl::Duration parsed;
    if (!absl::ParseDuration(orphan_timeout_flag, &parsed) ||
        parsed < absl::ZeroDuration()) {
      std::cerr << "procd: --orphan-timeout: not a duration: "
                << orphan_timeout_flag << "\n";
      return 2;
    }
    orphan_timeout = parsed;
  }

  absl::StatusOr<std::optional<v1::BootstrapInfo>> bootstrap =
      ParentChannel::ReadFromEnv();
  if (!bootstrap.ok()) {
    LOG(ERROR) << "procd: cannot read bootstrap info: " << bootstrap.status();
    return 1;
  }
  std::optional<v1::BootstrapInfo>& info = *bootstrap;
  std::string advertise_host = listen_host;
  if (info.has_value()) {
    name = info->name();
    rank = info->rank();
    if (!info->advertise_host().empty()) {
      advertise_host = info->advertise_host();
      if (listen_option->count() == 0) listen_host = advertise_host;
    }
    if (orphan_timeout.has_value()) {
      info->set_orphan_timeout_ms(
          static_cast<uint32_t>(absl::ToInt64Milliseconds(*orphan_timeout)));
    }
  }
  if (absl::Status valid = ValidateName(name, "proc name"); !valid.ok()) {
    LOG(ERROR) << "procd: " << valid.message();
    return 2;
  }

  // Declared in this order so they are destroyed in reverse: the server
  // first, the mailbox (which the others use) last.
  StopRequest stop;
  Mailbox mailbox(name);
  ProcRuntime runtime(ProcRuntime::Options{name, rank, std::move(registry)},
                      &mailbox);
  ProcService::Options service_options;
  service_options.on_exit_requested = [&stop] {
    stop.Request("StopAll with exit_proc", kDefaultGrace);
  };
  ProcService service(&runtime, std::move(service_options));

  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(JoinHostPort(listen_host, 0),
                           grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  builder.RegisterService(mailbox.service());
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    LOG(ERROR) << "procd " << name << ": cannot listen on "
               << JoinHostPort(listen_host, 0);
    mailbox.Shutdown();
    return 1;
  }
  const std::string address = JoinHostPort(advertise_host, port);
  mailbox.set_address(address);

  // SIGTERM/SIGINT become a stop request (nothing runs in a handler).
  auto signals =
      std::make_unique<StopSignals>([&stop](const std::string& name) {
        stop.Request(absl::StrCat("received ", name), kDefaultGrace);
      });

  std::unique_ptr<ParentChannel> parent;
  if (info.has_value()) {
    ParentChannel::Callbacks callbacks;
    callbacks.on_stop = [&stop](const std::string& reason,
                                absl::Duration grace) {
      stop.Request(absl::StrCat("parent asked to stop: ", reason), grace);
    };
    callbacks.on_orphaned = [&stop] {
      stop.Request("orphaned: the parent is gone", kDefaultGrace);
    };
    absl::StatusOr<std::unique_ptr<ParentChannel>> registered =
        ParentChannel::Register(*info, address, std::move(callbacks));
    if (registered.ok()) {
      parent = std::move(registered).value();
      LOG(INFO) << "procd " << name << " (rank " << rank
                << ") registered with its parent; serving on " << address;
    } else {
      LOG(ERROR) << "procd " << name << ": cannot register with the parent: "
                 << registered.status();
      stop.Request("registration failed", kDefaultGrace);
    }
  } else {
    std::cout << "procd " << name << " listening on " << address << std::endl;
    LOG(INFO) << "procd " << name << " (rank " << rank << ") serving on "
              << address;
  }

  auto [reason, grace] = stop.Wait();
  const int exit_code = info.has_value() && parent == nullptr ? 1 : 0;
  LOG(INFO) << "procd " << name << " stopping (" << reason << "), grace "
            << grace;
  absl::Notification stopped;
  std::thread watchdog([&stopped, grace = grace, name] {
    if (!stopped.WaitForNotificationWithTimeout(grace)) {
      LOG(ERROR) << "procd " << name << " did not stop within " << grace
                 << "; exiting now";
      _exit(1);
    }
  });
  runtime.Shutdown();  // Stops actors; their last replies go out.
  mailbox.Shutdown();  // Flushes and ends the mailbox streams.
  // Calls still running now are quick unary ones. The deadline also bounds
  // the wait for idle client connections to go (a client process that polls
  // nothing reads our GOAWAY late), after which they are cut.
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(500));
  parent.reset();  // The parent sees the channel close.
  stopped.Notify();
  watchdog.join();
  signals.reset();
  LOG(INFO) << "procd " << name << " stopped";
  return exit_code;
}

}  // namespace mesh
