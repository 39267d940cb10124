// hostmesh benchmarks, each a median set against a floor measured in the
// same run on the same machine (so the ratios travel between machines):
//
//   call        one actor Call round trip     vs  one plain unary gRPC call
//                (client -> host -> proc -> actor     to a trivial server in
//                 and back)                           this process
//   cast+gather Call on an N-actor mesh        vs  N such unary calls, all
//                                                   in flight at once
//   reduce      Reduce(COUNT) on the N actors  vs  the same N unary calls
//                (the host folds; one answer)
//   spawn       N procs RUNNING via hostd      vs  N minimal static children
//                                                   started with posix_spawn,
//                                                   until each reported over
//                                                   a pipe
//
// Usage: mesh_bench [--procs N] [--calls N] [--spawn-rounds N]. Prints a
// table and a JSON line.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/time/clock.h"
#include "bench/ping.grpc.pb.h"
#include "hostmesh/hostmesh.h"
#include "lib/launcher/launcher.h"
#include "proto/actors.pb.h"

extern char** environ;

namespace mesh {
namespace {

// Requests and replies of the same size as the Echo the actors get.
constexpr size_t kPayloadBytes = 64;

double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// The floor server: answers each Ping at once, on gRPC's thread.
class PingService final : public bench::Ping::CallbackService {
  grpc::ServerUnaryReactor* Ping(grpc::CallbackServerContext* context,
                                 const bench::PingRequest* request,
                                 bench::PingReply* reply) override {
    reply->set_data(request->data());
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

class PingServer {
 public:
  PingServer() {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    if (server_ != nullptr) address_ = absl::StrCat("127.0.0.1:", port);
  }
  ~PingServer() {
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now());
      server_->Wait();
    }
  }
  const std::string& address() const { return address_; }

 private:
  PingService service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

// Median microseconds for `n` unary Pings in flight at once (one channel, as
// the client has one stream per host), gathering every reply; 0 if a call
// failed.
double FloorUnaryUs(const std::string& address, size_t n, int rounds) {
  auto stub = bench::Ping::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  bench::PingRequest request;
  request.set_data(std::string(kPayloadBytes, 'x'));
  std::vector<double> samples;
  const int warmup = std::max(10, rounds / 10);
  for (int round = 0; round < rounds + warmup; ++round) {
    std::vector<grpc::ClientContext> contexts(n);
    std::vector<bench::PingReply> replies(n);
    std::vector<grpc::Status> statuses(n);
    absl::BlockingCounter pending(static_cast<int>(n));
    absl::Time start = absl::Now();
    for (size_t i = 0; i < n; ++i) {
      contexts[i].set_deadline(std::chrono::system_clock::now() +
                               std::chrono::seconds(10));
      stub->async()->Ping(&contexts[i], &request, &replies[i],
                          [&pending, &statuses, i](grpc::Status status) {
                            statuses[i] = std::move(status);
                            pending.DecrementCount();
                          });
    }
    pending.Wait();
    double us = absl::ToDoubleMicroseconds(absl::Now() - start);
    for (const grpc::Status& status : statuses) {
      if (!status.ok()) return 0;
    }
    if (round >= warmup) samples.push_back(us);
  }
  return Median(samples);
}

// Milliseconds to start `n` minimal static children at once until each has
// reported (written its byte to the shared pipe): the cost of processes
// themselves, which hostd cannot avoid. Median of `rounds`; 0 on failure.
double FloorSpawnMs(int n, int rounds) {
  absl::StatusOr<std::string> child = FindBinary("spawn_floor");
  if (!child.ok()) {
    std::fprintf(stderr, "%s\n", child.status().ToString().c_str());
    return 0;
  }
  std::vector<double> samples;
  for (int round = 0; round < rounds; ++round) {
    int report[2];  // children write their byte to report[1]
    int hold[2];    // children live until hold[1] closes
    if (pipe2(report, O_CLOEXEC) != 0 || pipe2(hold, O_CLOEXEC) != 0) return 0;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, report[1], 3);
    posix_spawn_file_actions_adddup2(&actions, hold[0], 0);
    char* argv[] = {child->data(), nullptr};
    std::vector<pid_t> pids;
    absl::Time start = absl::Now();
    for (int i = 0; i < n; ++i) {
      pid_t pid;
      if (posix_spawn(&pid, child->c_str(), &actions, nullptr, argv, environ) ==
          0) {
        pids.push_back(pid);
      }
    }
    close(report[1]);
    close(hold[0]);
    size_t reported = 0;
    char buffer[256];
    while (reported < pids.size()) {
      ssize_t got = read(report[0], buffer, sizeof(buffer));
      if (got <= 0) break;
      reported += static_cast<size_t>(got);
    }
    double ms = absl::ToDoubleMilliseconds(absl::Now() - start);
    close(hold[1]);
    close(report[0]);
    for (pid_t pid : pids) waitpid(pid, nullptr, 0);
    posix_spawn_file_actions_destroy(&actions);
    if (pids.size() != static_cast<size_t>(n) || reported != pids.size()) {
      return 0;
    }
    samples.push_back(ms);
  }
  return Median(samples);
}

struct Row {
  std::string metric;
  double hostmesh;
  double floor;
  std::string unit;
};

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "mesh_bench: %s\n", status.ToString().c_str());
  return 1;
}

int Run(int procs, int calls, int spawn_rounds) {
  PingServer ping;
  if (ping.address().empty()) {
    return Fail(absl::UnavailableError("the floor server did not start"));
  }
  auto hosts = HostMesh::Local();
  if (!hosts.ok()) return Fail(hosts.status());

  // Spawn: N procs RUNNING through hostd (create + server-side wait); each
  // round but the last is stopped again.
  std::vector<double> spawn_samples;
  std::optional<ProcMesh> proc_mesh;
  for (int round = 0; round < spawn_rounds; ++round) {
    absl::Time start = absl::Now();
    auto spawned = hosts->Spawn(absl::StrCat("bench", round), procs);
    spawn_samples.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
    if (!spawned.ok()) return Fail(spawned.status());
    if (round + 1 < spawn_rounds) {
      absl::Status stopped = spawned->Stop();
      if (!stopped.ok()) return Fail(stopped);
    } else {
      proc_mesh = *std::move(spawned);
    }
  }
  auto actors = proc_mesh->Spawn("echo", "mesh.echo");
  if (!actors.ok()) return Fail(actors.status());
  auto one = actors->Slice("procs", 0);
  if (!one.ok()) return Fail(one.status());
  v1::Echo echo;
  echo.set_data(std::string(kPayloadBytes, 'x'));

  // Call: one actor, sequential round trips.
  std::vector<double> samples;
  for (int i = 0; i < calls + 100; ++i) {
    absl::Time t = absl::Now();
    auto reply = one->Call<v1::Echo>(echo, absl::Seconds(10));
    if (!reply[0].ok()) return Fail(reply[0].status());
    if (i >= 100) {
      samples.push_back(absl::ToDoubleMicroseconds(absl::Now() - t));
    }
  }
  const double call_us = Median(samples);

  // Cast + gather: a Call to all N actors.
  samples.clear();
  const int rounds = std::max(20, calls / 10);
  for (int i = 0; i < rounds + 10; ++i) {
    absl::Time t = absl::Now();
    auto replies = actors->Call<v1::Echo>(echo, absl::Seconds(30));
    for (const auto& reply : replies) {
      if (!reply.ok()) return Fail(reply.status());
    }
    if (i >= 10) samples.push_back(absl::ToDoubleMicroseconds(absl::Now() - t));
  }
  const double gather_us = Median(samples);

  // Reduce: COUNT over the N actors, folded by the host.
  samples.clear();
  for (int i = 0; i < rounds + 10; ++i) {
    absl::Time t = absl::Now();
    absl::StatusOr<v1::Reduced> count =
        actors->Reduce(echo, v1::REDUCE_COUNT, absl::Seconds(30));
    if (!count.ok()) return Fail(count.status());
    if (count->ok() != static_cast<uint64_t>(procs)) {
      return Fail(absl::InternalError(
          absl::StrCat("Reduce(COUNT) counted ", count->ok(), " of ", procs,
                       " ranks: ", count->first_error().message())));
    }
    if (i >= 10) samples.push_back(absl::ToDoubleMicroseconds(absl::Now() - t));
  }
  const double reduce_us = Median(samples);
  if (absl::Status shut = hosts->Shutdown(); !shut.ok()) return Fail(shut);

  const double unary_one_us = FloorUnaryUs(ping.address(), 1, calls);
  const double unary_all_us = FloorUnaryUs(ping.address(), procs, rounds);
  const double floor_spawn_ms = FloorSpawnMs(procs, spawn_rounds);
  if (unary_one_us == 0 || unary_all_us == 0 || floor_spawn_ms == 0) {
    return Fail(absl::InternalError("a floor could not be measured"));
  }

  std::vector<Row> rows = {
      {"call: 1 actor round trip (median)", call_us, unary_one_us, "us"},
      {absl::StrCat("cast+gather: ", procs, " actors (median)"), gather_us,
       unary_all_us, "us"},
      {absl::StrCat("reduce: COUNT over ", procs, " actors (median)"),
       reduce_us, unary_all_us, "us"},
      {absl::StrCat("spawn: ", procs, " procs to RUNNING (median)"),
       Median(spawn_samples), floor_spawn_ms, "ms"},
  };
  std::printf("%-42s %12s %12s %8s\n", "benchmark", "hostmesh", "floor",
              "ratio");
  std::string json = "{";
  for (const Row& row : rows) {
    double ratio = row.hostmesh / row.floor;
    std::printf("%-42s %9.1f %-2s %9.1f %-2s %7.2fx\n", row.metric.c_str(),
                row.hostmesh, row.unit.c_str(), row.floor, row.unit.c_str(),
                ratio);
    absl::StrAppend(&json, json.size() > 1 ? ", " : "", "\"", row.metric,
                    "\": {\"hostmesh\": ", row.hostmesh,
                    ", \"baseline\": ", row.floor, ", \"ratio\": ", ratio, "}");
  }
  std::printf("%s}\n", json.c_str());
  return 0;
}

}  // namespace
}  // namespace mesh

int main(int argc, char** argv) {
  int procs = 16;
  int calls = 1000;
  int spawn_rounds = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--procs" && absl::SimpleAtoi(argv[i + 1], &procs) &&
        procs > 0) {
      continue;
    }
    if (flag == "--calls" && absl::SimpleAtoi(argv[i + 1], &calls) &&
        calls > 0) {
      continue;
    }
    if (flag == "--spawn-rounds" &&
        absl::SimpleAtoi(argv[i + 1], &spawn_rounds) && spawn_rounds > 0) {
      continue;
    }
    std::fprintf(stderr,
                 "usage: mesh_bench [--procs N] [--calls N] "
                 "[--spawn-rounds N]\n");
    return 2;
  }
  if (argc % 2 == 0) {
    std::fprintf(stderr,
                 "usage: mesh_bench [--procs N] [--calls N] "
                 "[--spawn-rounds N]\n");
    return 2;
  }
  return mesh::Run(procs, calls, spawn_rounds);
}
