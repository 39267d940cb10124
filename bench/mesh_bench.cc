// hostmesh benchmarks, each a ratio against a baseline measured in the same
// run on the same machine (so the figures travel between machines):
//
//   call        one actor Call round trip   vs  a bare gRPC unary call to
//                                                the same procd process
//   cast+gather Call on an N-actor mesh      vs  N bare unary calls to the
//                                                same N procds, all at once
//   spawn       N procs RUNNING via hostd    vs  N procd processes started
//                                                directly, in parallel, until
//                                                each serves (no hostd)
//
// Usage: mesh_bench [--procs N] [--calls N]. Prints a table and a JSON line.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/time/clock.h"
#include "hostmesh/hostmesh.h"
#include "lib/launcher/launcher.h"
#include "proto/actors.pb.h"
#include "proto/mailbox.grpc.pb.h"
#include "proto/proc.grpc.pb.h"

namespace mesh {
namespace {

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// Median microseconds for a bare unary gRPC call (Proc.GetProcInfo, which
// procd answers at once on its gRPC thread) to each of `addresses` at once,
// gathering every reply: the floor under a Call to actors in those procs.
double BaselineUnaryUs(const std::vector<std::string>& addresses, int rounds) {
  const size_t n = addresses.size();
  std::vector<std::unique_ptr<v1::Proc::Stub>> stubs;
  for (const auto& address : addresses) {
    stubs.push_back(v1::Proc::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials())));
  }
  std::vector<double> samples;
  for (int round = 0; round < rounds + 10; ++round) {
    std::vector<grpc::ClientContext> contexts(n);
    std::vector<v1::ProcInfo> infos(n);
    v1::GetProcInfoRequest request;
    absl::BlockingCounter pending(static_cast<int>(n));
    absl::Time start = absl::Now();
    for (size_t i = 0; i < n; ++i) {
      contexts[i].set_deadline(std::chrono::system_clock::now() +
                               std::chrono::seconds(10));
      stubs[i]->async()->GetProcInfo(
          &contexts[i], &request, &infos[i],
          [&pending](grpc::Status) { pending.DecrementCount(); });
    }
    pending.Wait();
    if (round >= 10) {
      samples.push_back(absl::ToDoubleMicroseconds(absl::Now() - start));
    }
  }
  return Median(samples);
}

// Milliseconds to start `n` procd processes directly, all at once, until
// each has registered back (i.e. serves): the cost hostd cannot avoid.
double BaselineSpawnMs(int n) {
  char dir[] = "/tmp/hostmesh-bench-XXXXXX";
  if (mkdtemp(dir) == nullptr) return 0;
  Launcher::Options options;
  options.runtime_dir = absl::StrCat(dir, "/run");
  auto launcher = Launcher::Create(options);
  if (!launcher.ok()) return 0;
  absl::StatusOr<std::string> procd = FindBinary("procd");
  absl::Time start = absl::Now();
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      SpawnOptions spawn;
      spawn.path = *procd;
      (*launcher)
          ->Launch(absl::StrCat("b_", i), i, spawn, absl::Seconds(60))
          .IgnoreError();
    });
  }
  for (auto& thread : threads) thread.join();
  double ms = absl::ToDoubleMilliseconds(absl::Now() - start);
  (*launcher)->StopAll(absl::Seconds(2));
  launcher->reset();  // its socket lives in `dir`
  std::error_code error;
  std::filesystem::remove_all(dir, error);
  return ms;
}

struct Row {
  std::string metric;
  double hostmesh;
  double baseline;
  std::string unit;
};

int Run(int procs, int calls) {
  std::vector<Row> rows;
  auto hosts = HostMesh::Local();
  if (!hosts.ok()) {
    std::fprintf(stderr, "%s\n", hosts.status().ToString().c_str());
    return 1;
  }

  // Spawn: N procs RUNNING through hostd (create + server-side wait).
  absl::Time start = absl::Now();
  auto proc_mesh = hosts->Spawn("bench", procs);
  double spawn_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
  if (!proc_mesh.ok()) {
    std::fprintf(stderr, "%s\n", proc_mesh.status().ToString().c_str());
    return 1;
  }
  auto actors = proc_mesh->Spawn("echo", "mesh.echo");
  if (!actors.ok()) return 1;
  auto one = actors->Slice("procs", 0);
  v1::Echo echo;
  echo.set_data(std::string(64, 'x'));

  // Call: one actor, sequential round trips.
  std::vector<double> samples;
  for (int i = 0; i < calls + 100; ++i) {
    absl::Time t = absl::Now();
    auto reply = one->Call<v1::Echo>(echo, absl::Seconds(10));
    if (!reply[0].ok()) return 1;
    if (i >= 100)
      samples.push_back(absl::ToDoubleMicroseconds(absl::Now() - t));
  }
  double call_us = Median(samples);

  // Cast + gather: a Call to all N actors.
  samples.clear();
  int rounds = std::max(20, calls / 10);
  for (int i = 0; i < rounds + 10; ++i) {
    absl::Time t = absl::Now();
    auto replies = actors->Call<v1::Echo>(echo, absl::Seconds(30));
    for (const auto& reply : replies) {
      if (!reply.ok()) return 1;
    }
    if (i >= 10) samples.push_back(absl::ToDoubleMicroseconds(absl::Now() - t));
  }
  double gather_us = Median(samples);
  std::vector<std::string> addresses;
  for (const auto& proc : proc_mesh->procs())
    addresses.push_back(proc.address());
  double unary_one_us = BaselineUnaryUs({addresses[0]}, calls);
  double unary_all_us = BaselineUnaryUs(addresses, rounds);
  if (!hosts->Shutdown().ok()) return 1;

  rows.push_back(
      {"call: 1 actor round trip (median)", call_us, unary_one_us, "us"});
  rows.push_back({absl::StrCat("cast+gather: ", procs, " actors (median)"),
                  gather_us, unary_all_us, "us"});
  rows.push_back({absl::StrCat("spawn: ", procs, " procs to RUNNING"), spawn_ms,
                  BaselineSpawnMs(procs), "ms"});

  std::printf("%-40s %12s %12s %8s\n", "benchmark", "hostmesh", "baseline",
              "ratio");
  std::string json = "{";
  for (const Row& row : rows) {
    double ratio = row.hostmesh / row.baseline;
    std::printf("%-40s %9.1f %-2s %9.1f %-2s %7.2fx\n", row.metric.c_str(),
                row.hostmesh, row.unit.c_str(), row.baseline, row.unit.c_str(),
                ratio);
    absl::StrAppend(&json, json.size() > 1 ? ", " : "", "\"", row.metric,
                    "\": {\"hostmesh\": ", row.hostmesh,
                    ", \"baseline\": ", row.baseline, ", \"ratio\": ", ratio,
                    "}");
  }
  std::printf("%s}\n", json.c_str());
  return 0;
}

}  // namespace
}  // namespace mesh

int main(int argc, char** argv) {
  int procs = 16;
  int calls = 1000;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--procs" && absl::SimpleAtoi(argv[i + 1], &procs)) continue;
    if (flag == "--calls" && absl::SimpleAtoi(argv[i + 1], &calls)) continue;
    std::fprintf(stderr, "usage: mesh_bench [--procs N] [--calls N]\n");
    return 2;
  }
  return mesh::Run(procs, calls);
}
