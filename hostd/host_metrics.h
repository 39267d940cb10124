// HostMetrics: what hostd's metrics endpoint shows (README "Metrics" has
// the table): procs by status, spawns, failures, restarts, RPC latency per
// method, queue depths, hostd's heap, and per proc and per actor usage.
// Counters are bumped as things happen (the proc manager's hooks, a gRPC
// server interceptor); the rest is read when scraped. Transport-free: the
// HTTP side is hostd/metrics_http.h.
//
// Cardinality: per-proc series for at most kMaxProcSeries live procs and
// per-actor series for at most kMaxActorSeries actors (of at most
// kMaxProcsAsked running procs, each asked with a deadline of
// kActorStatsTimeout); hostmesh_metrics_truncated says when a cap cut.
#ifndef HOSTMESH_HOSTD_HOST_METRICS_H_
#define HOSTMESH_HOSTD_HOST_METRICS_H_

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/server_interceptor.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "hostd/metrics.h"
#include "proto/host.pb.h"

namespace mesh {

class ProcManager;
class ProcChannels;
class Router;

// malloc's count of bytes in use (glibc mallinfo2). It walks every arena
// under that arena's lock, so it runs at most 4 times a second whoever asks.
uint64_t HeapBytes();

// Sets `state`'s usage (RSS, threads) from /proc/<pid>/stat while the proc
// lives and has a pid; leaves it unset otherwise.
void AddProcUsage(v1::ProcState* state);

class HostMetrics {
 public:
  static constexpr size_t kMaxProcSeries = 64;
  static constexpr size_t kMaxProcsAsked = 32;
  static constexpr size_t kMaxActorSeries = 256;
  static constexpr absl::Duration kActorStatsTimeout = absl::Seconds(1);

  // `state_dir` keeps hostd's start count (hostd.starts) across restarts;
  // empty: not kept.
  explicit HostMetrics(const std::string& state_dir);

  // The sources read at scrape time (not owned; they outlive every scrape:
  // set once, before the endpoint serves).
  void SetSources(ProcManager* manager, ProcChannels* channels, Router* router,
                  int max_procs);

  // The proc manager's hooks: a proc was spawned (after Recover: a
  // re-adopted one is not a spawn); a proc ended (FAILED counts as a
  // failure).
  void ProcSpawned();
  void ProcEnded(const v1::ProcState& state);
  // Procs an earlier hostd left that this one took over (after Recover).
  void ProcsReadopted(int count);

  // Counts every call by method and code, and times unary ones.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
  NewRpcInterceptor();

  std::string Render() const { return registry_.Render(); }

 private:
  void Collect(MetricsWriter& out) const;
  // Each true if its cap left series out.
  bool CollectProcs(MetricsWriter& out,
                    const v1::ListProcsResponse& procs) const;
  bool CollectActors(MetricsWriter& out,
                     const v1::ListProcsResponse& procs) const;

  MetricsRegistry registry_;
  MetricsRegistry::Counter* const spawns_;
  MetricsRegistry::Counter* const failures_;
  MetricsRegistry::Counter* const readopted_;
  MetricsRegistry::Counter* const starts_;
  MetricsRegistry::Counter* const rpcs_;
  MetricsRegistry::Histogram* const rpc_seconds_;
  const absl::Time started_at_;

  mutable absl::Mutex mu_;
  ProcManager* manager_ ABSL_GUARDED_BY(mu_) = nullptr;
  ProcChannels* channels_ ABSL_GUARDED_BY(mu_) = nullptr;
  Router* router_ ABSL_GUARDED_BY(mu_) = nullptr;
  int max_procs_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_HOST_METRICS_H_
