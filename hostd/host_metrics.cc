#include "hostd/host_metrics.h"

#include <fcntl.h>
#include <glog/logging.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/time_util.h>
#include <malloc.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "hostd/proc_channels.h"
#include "hostd/proc_manager.h"
#include "hostd/router.h"
#include "lib/process/process_identity.h"
#include "lib/resource/status_waiters.h"
#include "lib/time/clock.h"

namespace mesh {
namespace {

using google::protobuf::util::TimeUtil;

// RPC latency buckets, in seconds: 1 ms to 30 s (WaitProcs and CallActor
// may wait that long by design).
const std::vector<double>& RpcBuckets() {
  static const auto* buckets =
      new std::vector<double>{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                              0.25,  0.5,    1,     2.5,  5,     10,   30};
  return *buckets;
}

// A method hostd serves ("/mesh.v1.Host/StopProc"): known to the
// descriptor pool, so a caller cannot make series of its own names.
bool KnownMethod(const char* method) {
  if (method == nullptr || method[0] != '/') return false;
  std::string name = absl::StrReplaceAll(method + 1, {{"/", "."}});
  return google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(
             name) != nullptr;
}

// hostd's starts so far, this one included, kept in <state_dir>/hostd.starts
// (0 if it cannot be kept).
uint64_t CountStart(const std::string& state_dir) {
  if (state_dir.empty()) return 0;
  const std::filesystem::path path =
      std::filesystem::path(state_dir) / "hostd.starts";
  uint64_t starts = 0;
  {
    std::ifstream in(path);
    std::string text((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &starts)) {
      starts = 0;
    }
  }
  ++starts;
  const std::string temp = path.string() + ".tmp";
  const std::string line = absl::StrCat(starts, "\n");
  int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  bool written = fd >= 0 && write(fd, line.data(), line.size()) ==
                                static_cast<ssize_t>(line.size());
  if (fd >= 0) close(fd);
  if (!written || rename(temp.c_str(), path.c_str()) != 0) {
    LOG(WARNING) << "cannot keep hostd's start count in " << path;
    unlink(temp.c_str());
    return 0;
  }
  return starts;
}

class RpcTimer final : public grpc::experimental::Interceptor {
 public:
  RpcTimer(MetricsRegistry::Counter* rpcs, MetricsRegistry::Histogram* seconds,
           std::string method, bool unary)
      : rpcs_(rpcs),
        seconds_(seconds),
        method_(std::move(method)),
        unary_(unary),
        start_(std::chrono::steady_clock::now()) {}

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      rpcs_->Add(
          {method_, absl::StatusCodeToString(
                        static_cast<absl::StatusCode>(status.error_code()))});
      if (unary_) {
        seconds_->Observe({method_},
                          std::chrono::duration<double>(
                              std::chrono::steady_clock::now() - start_)
                              .count());
      }
    }
    methods->Proceed();
  }

 private:
  MetricsRegistry::Counter* const rpcs_;
  MetricsRegistry::Histogram* const seconds_;
  const std::string method_;
  const bool unary_;
  const std::chrono::steady_clock::time_point start_;
};

class RpcTimerFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  RpcTimerFactory(MetricsRegistry::Counter* rpcs,
                  MetricsRegistry::Histogram* seconds)
      : rpcs_(rpcs), seconds_(seconds) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    if (!KnownMethod(info->method())) return nullptr;
    // Not the relay stream (Relay.Connect): an interceptor there costs every
    // relayed message an extra trip through gRPC's completion queue, and a
    // stream's one count at its end says little.
    if (info->type() ==
        grpc::experimental::ServerRpcInfo::Type::BIDI_STREAMING) {
      return nullptr;
    }
    return new RpcTimer(
        rpcs_, seconds_, info->method(),
        info->type() == grpc::experimental::ServerRpcInfo::Type::UNARY);
  }

 private:
  MetricsRegistry::Counter* const rpcs_;
  MetricsRegistry::Histogram* const seconds_;
};

}  // namespace

uint64_t HeapBytes() {
  static absl::Mutex mu(absl::kConstInit);
  static absl::Duration read_at ABSL_GUARDED_BY(mu) = -absl::InfiniteDuration();
  static uint64_t bytes ABSL_GUARDED_BY(mu) = 0;
  absl::MutexLock lock(&mu);
  const absl::Duration now = MonotonicClock::Real().Now();
  if (now - read_at >= absl::Milliseconds(250)) {
    const struct mallinfo2 heap = mallinfo2();
    bytes = heap.uordblks + heap.hblkhd;
    read_at = now;
  }
  return bytes;
}

void AddProcUsage(v1::ProcState* state) {
  if (IsTerminal(state->status()) || state->pid() <= 0) return;
  absl::StatusOr<ProcStat> stat = ReadProcStat(state->pid());
  if (!stat.ok()) return;
  v1::ProcUsage* usage = state->mutable_usage();
  usage->set_rss_bytes(static_cast<uint64_t>(stat->resident_pages) *
                       static_cast<uint64_t>(sysconf(_SC_PAGESIZE)));
  usage->set_threads(static_cast<uint32_t>(stat->num_threads));
}

HostMetrics::HostMetrics(const std::string& state_dir)
    : spawns_(registry_.AddCounter(
          "hostmesh_proc_spawns_total",
          "Procs this hostd spawned (re-adopted ones are not spawns)")),
      failures_(registry_.AddCounter(
          "hostmesh_proc_failures_total",
          "Procs that ended FAILED (did not register, exited non-zero, "
          "killed by a signal nobody asked for, lost)")),
      readopted_(registry_.AddCounter(
          "hostmesh_procs_readopted_total",
          "Procs an earlier hostd left running that this one took over at "
          "start")),
      starts_(registry_.AddCounter(
          "hostmesh_hostd_starts_total",
          "Starts of hostd on this state dir, this one included "
          "(<state-dir>/hostd.starts)")),
      rpcs_(registry_.AddCounter("hostmesh_rpcs_total",
                                 "gRPC calls answered, by method and status "
                                 "code",
                                 {"method", "code"})),
      rpc_seconds_(registry_.AddHistogram(
          "hostmesh_rpc_duration_seconds",
          "Time from a unary call's arrival to its status, by method",
          {"method"}, RpcBuckets())),
      started_at_(absl::Now()) {
  starts_->Add(static_cast<double>(CountStart(state_dir)));
  registry_.AddCollector([this](MetricsWriter& out) { Collect(out); });
}

void HostMetrics::SetSources(ProcManager* manager, ProcChannels* channels,
                             Router* router, int max_procs) {
  absl::MutexLock lock(&mu_);
  manager_ = manager;
  channels_ = channels;
  router_ = router;
  max_procs_ = max_procs;
}

void HostMetrics::ProcSpawned() { spawns_->Add(); }

void HostMetrics::ProcEnded(const v1::ProcState& state) {
  if (state.status() == v1::FAILED) failures_->Add();
}

void HostMetrics::ProcsReadopted(int count) {
  readopted_->Add(static_cast<double>(count));
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
HostMetrics::NewRpcInterceptor() {
  return std::make_unique<RpcTimerFactory>(rpcs_, rpc_seconds_);
}

void HostMetrics::Collect(MetricsWriter& out) const {
  ProcManager* manager;
  ProcChannels* channels;
  Router* router;
  int max_procs;
  {
    absl::MutexLock lock(&mu_);
    manager = manager_;
    channels = channels_;
    router = router_;
    max_procs = max_procs_;
  }
  out.Family("hostmesh_hostd_start_time_seconds", "gauge",
             "When this hostd started (Unix time)");
  out.Sample("hostmesh_hostd_start_time_seconds", {},
             static_cast<double>(absl::ToUnixSeconds(started_at_)));
  out.Family("hostmesh_heap_bytes", "gauge",
             "Bytes hostd has allocated on its heap (glibc mallinfo2)");
  out.Sample("hostmesh_heap_bytes", {}, static_cast<double>(HeapBytes()));
  if (manager == nullptr) return;
  const v1::ListProcsResponse procs = manager->List();
  std::map<v1::Status, int> by_status;
  for (v1::Status status :
       {v1::INITIALIZING, v1::RUNNING, v1::STOPPING, v1::STOPPED, v1::FAILED}) {
    by_status[status] = 0;
  }
  for (const v1::ProcState& state : procs.procs()) ++by_status[state.status()];
  out.Family("hostmesh_procs", "gauge",
             "Procs by status (STOPPED and FAILED: those still remembered, "
             "at most --max-finished-procs)");
  for (const auto& [status, count] : by_status) {
    out.Sample("hostmesh_procs", {{"status", v1::Status_Name(status)}}, count);
  }
  out.Family("hostmesh_procs_max", "gauge", "Live procs at most (--max-procs)");
  out.Sample("hostmesh_procs_max", {}, max_procs);
  out.Family("hostmesh_held_waits", "gauge",
             "WaitProcs calls held open now (HostInfo.held_waits)");
  out.Sample("hostmesh_held_waits", {}, manager->HeldWaits());
  if (channels != nullptr) {
    out.Family("hostmesh_relayed_calls", "gauge",
               "Actor verbs relayed to procs and not answered yet "
               "(HostInfo.relayed_calls)");
    out.Sample("hostmesh_relayed_calls", {},
               static_cast<double>(channels->PendingRequests()));
  }
  if (router != nullptr) {
    out.Family("hostmesh_router_held_envelopes", "gauge",
               "Envelopes held for procs whose channel is gone until their "
               "end is known (at most 1024)");
    out.Sample("hostmesh_router_held_envelopes", {},
               static_cast<double>(router->HeldEnvelopes()));
  }
  const bool procs_cut = CollectProcs(out, procs);
  const bool actors_cut = channels != nullptr && CollectActors(out, procs);
  out.Family("hostmesh_metrics_truncated", "gauge",
             "1 if per-proc (what=procs) or per-actor (what=actors) series "
             "were left out by their cap");
  out.Sample("hostmesh_metrics_truncated", {{"what", "procs"}},
             procs_cut ? 1 : 0);
  out.Sample("hostmesh_metrics_truncated", {{"what", "actors"}},
             actors_cut ? 1 : 0);
}

bool HostMetrics::CollectProcs(MetricsWriter& out,
                               const v1::ListProcsResponse& procs) const {
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  std::vector<std::pair<std::string, ProcStat>> stats;
  bool cut = false;
  for (const v1::ProcState& state : procs.procs()) {
    if (IsTerminal(state.status()) || state.pid() <= 0) continue;
    if (stats.size() == kMaxProcSeries) {
      cut = true;
      break;
    }
    absl::StatusOr<ProcStat> stat = ReadProcStat(state.pid());
    if (stat.ok()) stats.emplace_back(state.name(), *stat);
  }
  out.Family("hostmesh_proc_resident_bytes", "gauge",
             "A live proc's resident set size (first 64 live procs)");
  for (const auto& [name, stat] : stats) {
    out.Sample("hostmesh_proc_resident_bytes", {{"proc", name}},
               static_cast<double>(stat.resident_pages) * page);
  }
  out.Family("hostmesh_proc_threads", "gauge",
             "A live proc's threads (first 64 live procs)");
  for (const auto& [name, stat] : stats) {
    out.Sample("hostmesh_proc_threads", {{"proc", name}},
               static_cast<double>(stat.num_threads));
  }
  return cut;
}

bool HostMetrics::CollectActors(MetricsWriter& out,
                                const v1::ListProcsResponse& procs) const {
  ProcChannels* channels;
  {
    absl::MutexLock lock(&mu_);
    channels = channels_;
  }
  std::vector<std::string> asked;
  bool cut = false;
  for (const v1::ProcState& state : procs.procs()) {
    if (state.status() != v1::RUNNING) continue;
    if (asked.size() == kMaxProcsAsked) {
      cut = true;
      break;
    }
    asked.push_back(state.name());
  }
  // Every proc at once; each callback runs exactly once (an answer, the
  // deadline, the proc gone).
  struct Answers {
    absl::Mutex mu;
    size_t pending ABSL_GUARDED_BY(mu) = 0;
    std::vector<std::pair<std::string, v1::ActorState>> actors
        ABSL_GUARDED_BY(mu);
  };
  auto answers = std::make_shared<Answers>();
  {
    absl::MutexLock lock(&answers->mu);
    answers->pending = asked.size();
  }
  const absl::Time deadline = absl::Now() + kActorStatsTimeout;
  for (const std::string& proc : asked) {
    v1::ProcRequest request;
    request.mutable_list_actors();
    channels->Request(
        proc, std::move(request), deadline,
        [answers, proc](absl::StatusOr<v1::ProcResponse> response) {
          absl::MutexLock lock(&answers->mu);
          --answers->pending;
          if (!response.ok() || !response->has_list_actors()) return;
          for (const v1::ActorState& actor : response->list_actors().actors()) {
            answers->actors.emplace_back(proc, actor);
          }
        });
  }
  std::vector<std::pair<std::string, v1::ActorState>> actors;
  {
    absl::MutexLock lock(&answers->mu);
    answers->mu.Await(absl::Condition(
        +[](Answers* a)
             ABSL_EXCLUSIVE_LOCKS_REQUIRED(a->mu) { return a->pending == 0; },
        answers.get()));
    actors = std::move(answers->actors);
  }
  if (actors.size() > kMaxActorSeries) {
    actors.resize(kMaxActorSeries);
    cut = true;
  }
  const auto now = google::protobuf::util::TimeUtil::GetCurrentTime();
  auto labels = [](const std::pair<std::string, v1::ActorState>& entry) {
    return MetricsWriter::Labels{{"proc", entry.first},
                                 {"actor", entry.second.name()}};
  };
  out.Family("hostmesh_actor_messages_handled_total", "counter",
             "Messages an actor has handled (first 256 actors of the first "
             "32 running procs)");
  for (const auto& entry : actors) {
    out.Sample("hostmesh_actor_messages_handled_total", labels(entry),
               static_cast<double>(entry.second.messages_handled()));
  }
  out.Family("hostmesh_actor_queue_depth", "gauge",
             "Messages waiting in an actor's queue");
  for (const auto& entry : actors) {
    out.Sample("hostmesh_actor_queue_depth", labels(entry),
               entry.second.queue_depth());
  }
  out.Family("hostmesh_actor_last_handler_seconds", "gauge",
             "How long an actor's last finished handler ran");
  for (const auto& entry : actors) {
    out.Sample("hostmesh_actor_last_handler_seconds", labels(entry),
               static_cast<double>(entry.second.last_handler_micros()) / 1e6);
  }
  out.Family("hostmesh_actor_handler_running_seconds", "gauge",
             "How long the handler an actor runs now has run (0: none)");
  for (const auto& entry : actors) {
    double running = 0;
    if (entry.second.has_current_handler_since()) {
      running = static_cast<double>(TimeUtil::DurationToMicroseconds(
                    now - entry.second.current_handler_since())) /
                1e6;
      if (running < 0) running = 0;
    }
    out.Sample("hostmesh_actor_handler_running_seconds", labels(entry),
               running);
  }
  return cut;
}

}  // namespace mesh
