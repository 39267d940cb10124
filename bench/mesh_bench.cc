// hostmesh's figures, each beside a floor that is not our code (issue 12),
// measured in the same run and interleaved with it round by round, so that
// drift on a shared machine hits both alike. Every row is a median over all
// samples of the run (p99 where the id says so).
//
//   B1      N procs -> all RUNNING on one host   F1: N static C children
//                                                started at once with
//                                                posix_spawn until each has
//                                                written a byte to a pipe
//                                                (F1.grpc, for context: N
//                                                gRPC-linked children until
//                                                each registered by a unary
//                                                call to this process)
//   B1b     cold start: a fresh client process   none (goal <= 100 ms)
//           (bench/cold_client) -> local host ->
//           1 proc -> 1 actor -> 1 call, from
//           posix_spawn to its "ok"
//   B2      actor mesh spawn on N warm procs     F4.64B (goal: F4.64B + 2 ms)
//   B3      one actor call, 64 B, p50 and p99    F3r: the same gRPC call to
//                                                a server process that
//                                                relays it to a child over a
//                                                socketpair (F3: a plain
//                                                two-process unary call)
//   B3b     pipelined casts to one actor, the    F3b: one-way gRPC client
//           replies on a port (calls/s)          stream, 64 B messages
//   B4      Call on N actors of one host, 64 B   F4: N parallel unary calls
//           and 64 KiB; Reduce(COUNT), 64 B      to N server processes, one
//                                                each, all gathered
//   B5      ShutdownHost with N procs until      F5: SIGTERM to N
//           all are gone (0 survivors)           protobuf-linked children
//                                                until all are reaped
//   B6      an idle procd with no actor: PSS,    F6: an idle minimal gRPC
//           RSS, threads (median of the N)       server process (median of
//                                                the N of F4)
//   B9      hostd restart (SIGUSR2, a new hostd  none
//           on the same dirs) with N procs,
//           until every proc answers through
//           the new hostd
//   B8      H hosts x K procs (HostMesh::        F4.64B for the gather
//           Process): up time; Call on all
//           actors; TCP data segments the
//           client sends per Call; Reduce
//           (COLLECT) host by host and through
//           trees of 1-3 levels (fan-outs H-1,
//           4, 2), with a note fitting the
//           cost per level and modelling
//           1,024 hosts
//
// Notes beside the table say where B1b's time went (cold_client's steps)
// and what B1, B2 and B5 cost in CPU (client, hostd, procs); with
// $BENCH_PERF_DIR set, B2 and B5 of the first round are recorded with
// `perf record` (PerfRecording).
//
// The floor programs are in bench/floors/. Every process this bench starts
// is ended by the pid (pidfd) it started; the bench is a child subreaper,
// so procs that outlive a restarted hostd are its to reap.
//
// Usage: mesh_bench [--rows FILE] [--rounds R] [--procs N] [--calls C]
//   [--gathers G] [--casts C] [--stream-messages M] [--restarts K]
//   [--b8-hosts H] [--b8-procs K] [--b8-rounds R] [--skip b8,b9]
// (per round: C calls each of B3, F3, F3r; G gathers of B4 and F4 at 64 B,
// a third as many at 64 KiB; C casts of B3b, M messages of F3b). B8 is 16
// hosts x 4 procs by default: 64 hosts x 1 took 18-22 s per round to come
// up on the 2-core VM.
// With --rows it appends its rows to FILE (bench/report.h) for
// bench_table; else it prints the table. Exits 1 if something could not be
// measured (the notes say what).
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/floors/ping.grpc.pb.h"
#include "bench/report.h"
#include "bench/tcp_sent.h"
#include "bench/util.h"
#include "hostmesh/hostmesh.h"
#include "lib/auth/credentials.h"
#include "proto/actors.pb.h"
#include "proto/host.grpc.pb.h"

extern char** environ;

namespace mesh::bench {
namespace {

constexpr size_t kSmall = 64;
constexpr size_t kLarge = 64 * 1024;
// Any one step that takes longer than this counts as failed.
constexpr absl::Duration kStepTimeout = absl::Seconds(30);

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }
double Us(absl::Duration d) { return absl::ToDoubleMicroseconds(d); }

std::chrono::system_clock::time_point Deadline(absl::Duration timeout) {
  return absl::ToChronoTime(absl::Now() + timeout);
}

struct Flags {
  std::string rows;
  int rounds = 5;
  int procs = 64;
  // Per round: sequential calls of B3, F3 and F3r each.
  int calls = 400;
  // Per round: gathers of B4 and F4 at 64 B (and a third as many at 64
  // KiB).
  int gathers = 12;
  // Per round: B3b casts and F3b stream messages.
  int casts = 4000;
  int stream_messages = 20000;
  int restarts = 5;
  int b8_hosts = 16;
  int b8_procs = 4;
  int b8_rounds = 3;
  std::set<std::string> skip;
};

// The bench process's own registration server (F1.grpc): counts the Pings
// of the children.
class RegisterServer {
 public:
  RegisterServer() : service_(this) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    if (server_ != nullptr && port != 0) {
      address_ = absl::StrCat("127.0.0.1:", port);
    }
  }
  ~RegisterServer() {
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now());
      server_->Wait();
    }
  }
  const std::string& address() const { return address_; }

  void Reset() {
    absl::MutexLock lock(&mu_);
    count_ = 0;
  }
  // Whether `n` registrations arrived since Reset within `timeout`.
  bool Wait(int n, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto done = [this, n]()
                    ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return count_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  }

 private:
  class Service final : public Ping::CallbackService {
   public:
    explicit Service(RegisterServer* owner) : owner_(owner) {}
    grpc::ServerUnaryReactor* Ping(grpc::CallbackServerContext* context,
                                   const PingRequest* request,
                                   PingReply* reply) override {
      reply->set_data(request->data());
      {
        absl::MutexLock lock(&owner_->mu_);
        ++owner_->count_;
      }
      grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
      reactor->Finish(grpc::Status::OK);
      return reactor;
    }

   private:
    RegisterServer* const owner_;
  };

  Service service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  absl::Mutex mu_;
  int count_ ABSL_GUARDED_BY(mu_) = 0;
};

// A floor_server process and a stub to it.
struct FloorServer {
  Child child;
  std::string address;
  std::unique_ptr<Ping::Stub> stub;
};

// Starts `count` floor_server processes (each with `args`) at once and
// waits until each serves.
absl::StatusOr<std::vector<FloorServer>> StartFloorServers(
    const std::string& path, const std::vector<std::string>& args, int count,
    int stderr_fd) {
  std::vector<FloorServer> servers(count);
  std::vector<int> reports(count, -1);
  absl::Status status;
  for (int i = 0; i < count && status.ok(); ++i) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) {
      status = absl::ErrnoToStatus(errno, "pipe2");
      break;
    }
    Child::Options options;
    options.path = path;
    options.args = args;
    options.fd3 = report[1];
    options.stderr_fd = stderr_fd;
    absl::StatusOr<Child> child = Child::Spawn(options);
    close(report[1]);
    reports[i] = report[0];
    if (!child.ok()) {
      status = child.status();
      break;
    }
    servers[i].child = *std::move(child);
  }
  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(64 << 20);
  for (int i = 0; i < count; ++i) {
    if (reports[i] < 0) continue;
    if (status.ok()) {
      absl::StatusOr<std::string> port = ReadLine(reports[i], kStepTimeout);
      if (port.ok()) {
        servers[i].address = absl::StrCat("127.0.0.1:", *port);
        servers[i].stub = Ping::NewStub(grpc::CreateCustomChannel(
            servers[i].address, grpc::InsecureChannelCredentials(),
            channel_args));
      } else {
        status = absl::UnavailableError(absl::StrCat(
            "floor_server did not start: ", port.status().message()));
      }
    }
    close(reports[i]);
  }
  if (!status.ok()) return status;
  return servers;
}

// Sequential unary Pings of `bytes` to `stub`, each round trip appended to
// `us`; false if one failed.
bool UnaryRoundTrips(Ping::Stub& stub, int n, size_t bytes,
                     std::vector<double>* us) {
  PingRequest request;
  request.set_data(std::string(bytes, 'x'));
  for (int i = 0; i < n; ++i) {
    grpc::ClientContext context;
    context.set_deadline(Deadline(absl::Seconds(10)));
    PingReply reply;
    absl::Time start = absl::Now();
    grpc::Status status = stub.Ping(&context, request, &reply);
    absl::Duration took = absl::Now() - start;
    if (!status.ok() || reply.data().size() != bytes) return false;
    if (us != nullptr) us->push_back(Us(took));
  }
  return true;
}

// One unary Ping of `bytes` to every server at once, until all replied.
std::optional<double> FanOutMs(std::vector<FloorServer>& servers,
                               size_t bytes) {
  const size_t n = servers.size();
  PingRequest request;
  request.set_data(std::string(bytes, 'x'));
  std::vector<grpc::ClientContext> contexts(n);
  std::vector<PingReply> replies(n);
  std::vector<grpc::Status> statuses(n);
  absl::BlockingCounter pending(static_cast<int>(n));
  absl::Time start = absl::Now();
  for (size_t i = 0; i < n; ++i) {
    contexts[i].set_deadline(Deadline(absl::Seconds(10)));
    servers[i].stub->async()->Ping(&contexts[i], &request, &replies[i],
                                   [&pending, &statuses, i](grpc::Status s) {
                                     statuses[i] = std::move(s);
                                     pending.DecrementCount();
                                   });
  }
  pending.Wait();
  double ms = Ms(absl::Now() - start);
  for (size_t i = 0; i < n; ++i) {
    if (!statuses[i].ok() || replies[i].data().size() != bytes) {
      return std::nullopt;
    }
  }
  return ms;
}

// `n` 64 B messages on one client stream, until the server's count came
// back: messages per second.
std::optional<double> StreamRate(Ping::Stub& stub, int n) {
  PingRequest request;
  request.set_data(std::string(kSmall, 'x'));
  grpc::ClientContext context;
  context.set_deadline(Deadline(kStepTimeout));
  PingReply reply;
  absl::Time start = absl::Now();
  std::unique_ptr<grpc::ClientWriter<PingRequest>> writer =
      stub.Stream(&context, &reply);
  for (int i = 0; i < n; ++i) {
    if (!writer->Write(request)) break;
  }
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (!status.ok() || reply.count() != static_cast<uint64_t>(n)) {
    return std::nullopt;
  }
  return n / seconds;
}

// Starts `n` copies of `path` (argv: path, args) at once, each with stdin
// `stdin_fd` (or /dev/null) and fd 3 `fd3` (if >= 0); their pids.
std::vector<pid_t> SpawnMany(const std::string& path,
                             const std::vector<std::string>& args, int n,
                             int stdin_fd, int fd3) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (stdin_fd >= 0) {
    posix_spawn_file_actions_adddup2(&actions, stdin_fd, 0);
  } else {
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  }
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  if (fd3 >= 0) posix_spawn_file_actions_adddup2(&actions, fd3, 3);
  std::vector<std::string> owned = {path};
  owned.insert(owned.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& arg : owned) argv.push_back(arg.data());
  argv.push_back(nullptr);
  std::vector<pid_t> pids;
  for (int i = 0; i < n; ++i) {
    pid_t pid;
    if (posix_spawn(&pid, path.c_str(), &actions, nullptr, argv.data(),
                    environ) == 0) {
      pids.push_back(pid);
    }
  }
  posix_spawn_file_actions_destroy(&actions);
  return pids;
}

// Reads `n` bytes from `fd` within `timeout`; false if fewer came.
bool ReadBytes(int fd, size_t n, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  size_t got = 0;
  char buffer[256];
  while (got < n) {
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left <= 0) return false;
    pollfd readable = {fd, POLLIN, 0};
    if (poll(&readable, 1, static_cast<int>(left)) <= 0) continue;
    ssize_t r = read(fd, buffer, std::min(sizeof(buffer), n - got));
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
  }
  return true;
}

// Kills (if still running) and reaps children this bench started.
void KillAndReap(const std::vector<pid_t>& pids) {
  for (pid_t pid : pids) {
    if (waitpid(pid, nullptr, WNOHANG) == 0) {
      kill(pid, SIGKILL);  // our unreaped child: the pid is still ours
      waitpid(pid, nullptr, 0);
    }
  }
}

// F1: `n` static children at once until each wrote its byte.
std::optional<double> SpawnStaticMs(const std::string& path, int n) {
  int report[2];  // children write their byte to report[1]
  int hold[2];    // children live until hold[1] closes
  if (pipe2(report, O_CLOEXEC) != 0) return std::nullopt;
  if (pipe2(hold, O_CLOEXEC) != 0) {
    close(report[0]);
    close(report[1]);
    return std::nullopt;
  }
  absl::Time start = absl::Now();
  std::vector<pid_t> pids = SpawnMany(path, {}, n, hold[0], report[1]);
  close(report[1]);
  close(hold[0]);
  bool reported = pids.size() == static_cast<size_t>(n) &&
                  ReadBytes(report[0], pids.size(), kStepTimeout);
  double ms = Ms(absl::Now() - start);
  close(hold[1]);
  close(report[0]);
  if (!reported) {
    KillAndReap(pids);
    return std::nullopt;
  }
  for (pid_t pid : pids) waitpid(pid, nullptr, 0);
  return ms;
}

// F1.grpc: `n` gRPC-linked children at once until each registered with
// `server`.
std::optional<double> SpawnGrpcMs(const std::string& path, int n,
                                  RegisterServer& server) {
  int hold[2];
  if (pipe2(hold, O_CLOEXEC) != 0) return std::nullopt;
  server.Reset();
  absl::Time start = absl::Now();
  std::vector<pid_t> pids = SpawnMany(path, {server.address()}, n, hold[0], -1);
  close(hold[0]);
  bool registered =
      pids.size() == static_cast<size_t>(n) && server.Wait(n, kStepTimeout);
  double ms = Ms(absl::Now() - start);
  close(hold[1]);
  if (!registered) {
    KillAndReap(pids);
    return std::nullopt;
  }
  for (pid_t pid : pids) waitpid(pid, nullptr, 0);
  return ms;
}

// F5: `n` protobuf-linked children with a SIGTERM handler; from SIGTERM to
// all until all are reaped.
std::optional<double> TermReapMs(const std::string& path, int n) {
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) return std::nullopt;
  std::vector<pid_t> pids = SpawnMany(path, {}, n, -1, report[1]);
  close(report[1]);
  bool ready = pids.size() == static_cast<size_t>(n) &&
               ReadBytes(report[0], pids.size(), kStepTimeout);
  close(report[0]);
  if (!ready) {
    KillAndReap(pids);
    return std::nullopt;
  }
  absl::Time start = absl::Now();
  for (pid_t pid : pids) kill(pid, SIGTERM);
  for (pid_t pid : pids) waitpid(pid, nullptr, 0);
  return Ms(absl::Now() - start);
}

// Unary calls to `channels[i]`, all at once; their statuses.
template <typename Service, typename Request, typename Response, typename Call>
std::vector<grpc::Status> Parallel(
    const std::vector<std::shared_ptr<grpc::Channel>>& channels,
    const std::vector<Request>& requests, std::vector<Response>* responses,
    absl::Duration timeout, Call call) {
  const size_t n = requests.size();
  std::vector<std::unique_ptr<typename Service::Stub>> stubs;
  for (size_t i = 0; i < n; ++i) stubs.push_back(Service::NewStub(channels[i]));
  std::vector<grpc::ClientContext> contexts(n);
  std::vector<grpc::Status> statuses(n);
  responses->assign(n, Response());
  absl::BlockingCounter pending(static_cast<int>(n));
  for (size_t i = 0; i < n; ++i) {
    contexts[i].set_deadline(Deadline(timeout));
    call(stubs[i].get(), &contexts[i], &requests[i], &(*responses)[i],
         [&pending, &statuses, i](grpc::Status status) {
           statuses[i] = std::move(status);
           pending.DecrementCount();
         });
  }
  pending.Wait();
  return statuses;
}

// A hostd this bench started itself (B9), on fixed dirs, to restart.
struct Hostd {
  Child child;
  int stdout_fd = -1;  // kept open while hostd lives (it writes a line)
  std::string address;
  std::shared_ptr<grpc::Channel> channel;

  Hostd() = default;
  Hostd(Hostd&& other) noexcept { *this = std::move(other); }
  Hostd& operator=(Hostd&& other) noexcept {
    if (this != &other) {
      Close();
      child = std::move(other.child);
      stdout_fd = std::exchange(other.stdout_fd, -1);
      address = std::move(other.address);
      channel = std::move(other.channel);
    }
    return *this;
  }
  ~Hostd() { Close(); }
  // Waits for hostd's exit (up to `grace`, then SIGKILL by pidfd), reaps
  // it, closes its pipe.
  void End(absl::Duration grace) {
    child.End(grace);
    Close();
  }

 private:
  void Close() {
    if (stdout_fd >= 0) close(stdout_fd);
    stdout_fd = -1;
  }
};

// Starts hostd on `dir`'s state and runtime dirs, listening on `listen` (a
// restarted hostd must keep its address: procs' actors are named by it).
absl::StatusOr<Hostd> StartHostd(const std::string& path,
                                 const std::string& dir,
                                 const std::string& listen, int stderr_fd) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "pipe2");
  Child::Options options;
  options.path = path;
  options.args = {absl::StrCat("--listen=", listen),
                  absl::StrCat("--state-dir=", dir, "/state"),
                  absl::StrCat("--runtime-dir=", dir, "/run")};
  options.stdout_fd = out[1];
  options.stderr_fd = stderr_fd;
  options.hold_stdin = false;
  absl::StatusOr<Child> child = Child::Spawn(options);
  close(out[1]);
  if (!child.ok()) {
    close(out[0]);
    return child.status();
  }
  Hostd hostd;
  hostd.child = *std::move(child);
  hostd.stdout_fd = out[0];
  constexpr absl::string_view kListening = "hostd listening on ";
  const absl::Time deadline = absl::Now() + kStepTimeout;
  while (hostd.address.empty()) {
    absl::StatusOr<std::string> line =
        ReadLine(hostd.stdout_fd,
                 std::max(deadline - absl::Now(), absl::Milliseconds(1)));
    if (!line.ok()) {
      hostd.End(absl::Seconds(1));
      return absl::UnavailableError(
          absl::StrCat("hostd did not serve: ", line.status().message()));
    }
    if (absl::StartsWith(*line, kListening)) {
      hostd.address = line->substr(kListening.size());
    }
  }
  absl::StatusOr<ClientCredentials> credentials = ClientCredentials::FromFiles(
      absl::StrCat(dir, "/run/admin.token"), "", "", "");
  if (!credentials.ok()) {
    hostd.End(absl::Seconds(1));
    return credentials.status();
  }
  hostd.channel = NewAuthedChannel(hostd.address, *credentials);
  return hostd;
}

// With $BENCH_PERF_DIR set: `perf record -g` of some processes (hostd and
// the procs) around one figure of the first round, written to
// $BENCH_PERF_DIR/<id>.perf.data for `perf report -i` (README of the
// bench's notes: where the time goes). Off by default.
class PerfRecording {
 public:
  PerfRecording(const std::string& id, const std::vector<pid_t>& pids) {
    const char* dir = std::getenv("BENCH_PERF_DIR");
    if (dir == nullptr || pids.empty()) return;
    std::string list;
    for (pid_t pid : pids) absl::StrAppend(&list, list.empty() ? "" : ",", pid);
    Child::Options options;
    options.path = "/usr/bin/perf";
    options.args = {"record", "-g", "-F",
                    "4000",   "-o", absl::StrCat(dir, "/", id, ".perf.data"),
                    "-p",     list};
    options.hold_stdin = false;
    absl::StatusOr<Child> perf = Child::Spawn(options);
    if (!perf.ok()) return;
    perf_ = *std::move(perf);
    absl::SleepFor(absl::Milliseconds(500));  // attached to every thread
  }
  // Stops the recording (SIGINT: perf writes its file) and reaps perf.
  ~PerfRecording() {
    if (perf_.pid() == 0) return;
    kill(perf_.pid(), SIGINT);  // our unreaped child
    perf_.End(absl::Seconds(30));
  }

 private:
  Child perf_;
};

class Bench {
 public:
  explicit Bench(Flags flags) : flags_(std::move(flags)) {}

  int Run() {
    if (absl::Status set_up = SetUp(); !set_up.ok()) {
      report_.Note(
          absl::StrCat("mesh_bench could not start: ", set_up.ToString()));
      return Finish(1);
    }
    for (int round = 0; round < flags_.rounds; ++round) {
      std::fprintf(stderr, "mesh_bench: round %d of %d\n", round + 1,
                   flags_.rounds);
      Round(round);
    }
    if (flags_.skip.count("b9") == 0) Restarts();
    if (flags_.skip.count("b8") == 0) HostByHost();
    TearDown();
    Rows();
    return Finish(problems_ ? 1 : 0);
  }

 private:
  // A problem: noted beside the table, and the exit status is 1.
  void Note(std::string note) {
    std::fprintf(stderr, "mesh_bench: %s\n", note.c_str());
    report_.Note(std::move(note));
    problems_ = true;
  }
  void Sample(const std::string& id, std::optional<double> value) {
    if (value.has_value()) samples_[id].push_back(*value);
  }
  std::vector<double>& Samples(const std::string& id) { return samples_[id]; }
  // B8: the fan-out that gave each tree depth measured.
  std::map<int, size_t> tree_fanouts_;

  absl::Status SetUp() {
    // Procs orphaned by a restarted hostd (B9) are reparented to this
    // process, which reaps them.
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    char pattern[] = "/tmp/hostmesh-bench-XXXXXX";
    if (mkdtemp(pattern) == nullptr) {
      return absl::ErrnoToStatus(errno, "mkdtemp");
    }
    dir_ = pattern;
    log_fd_ = open((dir_ + "/children.log").c_str(),
                   O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    for (const char* name :
         {"spawn_floor", "register_child", "term_child", "floor_server",
          "relay_child", "cold_client", "hostd"}) {
      absl::StatusOr<std::string> path = FindBenchBinary(name);
      if (!path.ok()) return path.status();
      binaries_[name] = *path;
    }
    if (register_.address().empty()) {
      return absl::UnavailableError("the registration server did not start");
    }
    const std::string& server = binaries_["floor_server"];
    absl::StatusOr<std::vector<FloorServer>> plain =
        StartFloorServers(server, {}, 1, log_fd_);
    if (!plain.ok()) return plain.status();
    absl::StatusOr<std::vector<FloorServer>> relay = StartFloorServers(
        server, {"--relay", binaries_["relay_child"]}, 1, log_fd_);
    if (!relay.ok()) return relay.status();
    absl::StatusOr<std::vector<FloorServer>> fan =
        StartFloorServers(server, {}, flags_.procs, log_fd_);
    if (!fan.ok()) return fan.status();
    plain_ = std::move((*plain)[0]);
    relay_ = std::move((*relay)[0]);
    fan_ = *std::move(fan);
    // Every channel connected before anything is timed.
    if (!UnaryRoundTrips(*plain_.stub, 20, kSmall, nullptr) ||
        !UnaryRoundTrips(*relay_.stub, 20, kSmall, nullptr)) {
      return absl::UnavailableError("a floor server does not answer");
    }
    for (int i = 0; i < 3; ++i) {
      if (!FanOutMs(fan_, kSmall).has_value()) {
        return absl::UnavailableError(
            "the fan-out floor servers do not answer");
      }
    }
    Client::Options options;
    options.forward_proc_output = false;
    absl::StatusOr<std::shared_ptr<Client>> client =
        Client::Create(std::move(options));
    if (!client.ok()) return client.status();
    client_ = *std::move(client);
    return absl::OkStatus();
  }

  void TearDown() {
    for (FloorServer& server : fan_) server.child.End();
    plain_.child.End();
    relay_.child.End();
    if (log_fd_ >= 0) close(log_fd_);
    log_fd_ = -1;
    std::error_code error;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, error);
  }

  int Finish(int code) {
    if (!flags_.rows.empty()) {
      if (absl::Status written = report_.AppendTo(flags_.rows); !written.ok()) {
        std::fprintf(stderr, "mesh_bench: %s\n", written.ToString().c_str());
        return 1;
      }
    } else {
      report_.PrintTable(stdout);
    }
    return code;
  }

  HostMesh::Options MeshOptions() const {
    HostMesh::Options options;
    options.client = client_;
    options.keep_logs = false;
    return options;
  }

  // B1b: from posix_spawn of a fresh client process to its "ok". Its
  // account of where the time went is kept for a note.
  std::optional<double> ColdStartMs() {
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) return std::nullopt;
    const std::string steps_path = dir_ + "/cold_client.err";
    int steps_fd = open(steps_path.c_str(),
                        O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    Child::Options options;
    options.path = binaries_["cold_client"];
    options.stdout_fd = out[1];
    options.stderr_fd = steps_fd;
    options.hold_stdin = false;
    timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    options.args = {
        "--spawned-at",
        absl::StrCat(int64_t{now.tv_sec} * 1000000000 + now.tv_nsec)};
    absl::Time start = absl::Now();
    absl::StatusOr<Child> child = Child::Spawn(options);
    close(out[1]);
    if (!child.ok()) {
      close(out[0]);
      Note(absl::StrCat("B1b: ", child.status().ToString()));
      return std::nullopt;
    }
    absl::StatusOr<std::string> line = ReadLine(out[0], kStepTimeout);
    double ms = Ms(absl::Now() - start);
    // It shuts its host down and exits by itself.
    child->End(absl::Seconds(10));
    close(out[0]);
    if (steps_fd >= 0) close(steps_fd);
    std::ifstream steps(steps_path);
    for (std::string text; std::getline(steps, text);) {
      if (absl::StartsWith(text, "cold_client: ")) {
        cold_steps_ = absl::StrFormat("%.0f ms:%s", ms, text.substr(12));
      }
    }
    if (!line.ok() || *line != "ok") {
      Note(absl::StrCat("B1b: cold_client said \"",
                        line.ok() ? *line : line.status().ToString(), "\""));
      return std::nullopt;
    }
    return ms;
  }

  // F6 and B6: the median footprint of `pids`.
  void Footprints(const std::string& prefix, const std::vector<pid_t>& pids) {
    std::vector<double> pss, rss, threads;
    for (pid_t pid : pids) {
      absl::StatusOr<Footprint> footprint = ReadFootprint(pid);
      if (!footprint.ok()) continue;
      pss.push_back(footprint->pss_kb / 1024);
      rss.push_back(footprint->rss_kb / 1024);
      threads.push_back(footprint->threads);
    }
    if (pss.empty()) {
      Note(absl::StrCat(prefix, ": no footprint could be read"));
      return;
    }
    Sample(prefix + ".pss", Median(pss));
    Sample(prefix + ".rss", Median(rss));
    Sample(prefix + ".threads", Median(threads));
  }

  // B3b: `casts` GetActorId casts to `one`, at most `window` unanswered,
  // the replies on a port: calls per second.
  std::optional<double> PipelinedRate(const ActorMesh& one, int casts,
                                      int window) {
    auto port = client_->OpenPort<v1::ActorIdReply>();
    v1::GetActorId get;
    *get.mutable_port() = port.ref();
    auto run = [&](int n) -> std::optional<double> {
      int sent = 0;
      int received = 0;
      absl::Time start = absl::Now();
      while (received < n) {
        while (sent < n && sent - received < window) {
          if (absl::Status cast = one.Cast(get); !cast.ok()) {
            Note(absl::StrCat("B3b: ", cast.ToString()));
            return std::nullopt;
          }
          ++sent;
        }
        absl::StatusOr<v1::ActorIdReply> reply = port.Recv(absl::Seconds(10));
        if (!reply.ok()) {
          Note(absl::StrCat("B3b: ", reply.status().ToString()));
          return std::nullopt;
        }
        ++received;
      }
      return n / absl::ToDoubleSeconds(absl::Now() - start);
    };
    if (!run(std::min(casts, 200)).has_value()) return std::nullopt;
    return run(casts);
  }

  // CPU used so far by the client (this process), the host's hostd and its
  // procs (hostd's cgroup subtree; unknown without cgroup v2).
  struct Cpu {
    double client = 0;
    std::optional<double> hostd;
    std::optional<double> procs;
  };
  Cpu ReadCpu(pid_t hostd, const std::string& procs_dir) const {
    Cpu cpu;
    cpu.client = SelfCpuMs();
    cpu.hostd = ProcessCpuMs(hostd);
    if (!procs_dir.empty()) cpu.procs = CgroupCpuMs(procs_dir);
    return cpu;
  }
  // Keeps what figure `id` cost in CPU, for the notes (CpuNotes).
  void SampleCpu(const std::string& id, const Cpu& before, const Cpu& after) {
    Sample("cpu:" + id + ":client", after.client - before.client);
    if (before.hostd.has_value() && after.hostd.has_value()) {
      Sample("cpu:" + id + ":hostd", *after.hostd - *before.hostd);
    }
    if (before.procs.has_value() && after.procs.has_value()) {
      Sample("cpu:" + id + ":procs", *after.procs - *before.procs);
    }
  }
  // The usage of every hostmesh-* cgroup subtree beside `hostd`'s cgroup,
  // by dir (which one is the host's procs' is known once they run).
  std::map<std::string, double> Subtrees(pid_t hostd) const {
    std::map<std::string, double> usage;
    const std::string dir = CgroupDirOf(hostd);
    std::error_code error;
    if (dir.empty()) return usage;
    for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
      if (!absl::StartsWith(entry.path().filename().string(), "hostmesh-")) {
        continue;
      }
      if (std::optional<double> used = CgroupCpuMs(entry.path().string())) {
        usage[entry.path().string()] = *used;
      }
    }
    return usage;
  }

  void Round(int round) {
    const int n = flags_.procs;
    Sample("B1b", ColdStartMs());
    Sample("F1", SpawnStaticMs(binaries_["spawn_floor"], n));
    Sample("F1.grpc", SpawnGrpcMs(binaries_["register_child"], n, register_));

    absl::StatusOr<HostMesh> hosts = HostMesh::Local(MeshOptions());
    if (!hosts.ok()) {
      Note(absl::StrCat("round ", round, ": ", hosts.status().ToString()));
      return;
    }
    auto host = v1::Host::NewStub(client_->Channel(hosts->addresses()[0]));
    pid_t hostd_pid = 0;
    {
      grpc::ClientContext context;
      context.set_deadline(Deadline(kStepTimeout));
      v1::HostInfo info;
      if (host->GetHostInfo(&context, v1::GetHostInfoRequest(), &info).ok()) {
        hostd_pid = info.pid();
      }
    }
    const std::map<std::string, double> subtrees = Subtrees(hostd_pid);
    Cpu before = ReadCpu(hostd_pid, "");
    absl::Time start = absl::Now();
    absl::StatusOr<ProcMesh> procs = hosts->Spawn(absl::StrCat("r", round), n);
    if (!procs.ok()) {
      Note(absl::StrCat("B1: ", procs.status().ToString()));
      return;
    }
    Sample("B1", Ms(absl::Now() - start));
    std::vector<pid_t> proc_pids;
    std::vector<int> pidfds;
    for (const v1::ProcState& proc : procs->procs()) {
      proc_pids.push_back(proc.pid());
      pidfds.push_back(OpenPidfd(proc.pid()));
    }
    // The procs' subtree: the parent of a proc's own cgroup.
    std::string procs_dir;
    if (const std::string leaf = CgroupDirOf(proc_pids[0]); !leaf.empty()) {
      procs_dir = std::filesystem::path(leaf).parent_path().string();
      auto it = subtrees.find(procs_dir);
      before.procs = it != subtrees.end() ? it->second : 0.0;
    }
    SampleCpu("B1", before, ReadCpu(hostd_pid, procs_dir));
    auto close_pidfds = [&pidfds] {
      for (int fd : pidfds) {
        if (fd >= 0) close(fd);
      }
    };

    Footprints("B6", proc_pids);
    std::vector<pid_t> server_pids;
    for (const FloorServer& server : fan_)
      server_pids.push_back(server.child.pid());
    Footprints("F6", server_pids);

    Sample("F4.64B", FanOutMs(fan_, kSmall));
    std::vector<pid_t> host_pids = proc_pids;
    host_pids.push_back(hostd_pid);
    std::optional<PerfRecording> perf;
    if (round == 0) perf.emplace("B2", host_pids);
    before = ReadCpu(hostd_pid, procs_dir);
    start = absl::Now();
    absl::StatusOr<ActorMesh> actors = procs->Spawn("echo", "mesh.echo");
    if (!actors.ok()) {
      Note(absl::StrCat("B2: ", actors.status().ToString()));
      close_pidfds();
      return;
    }
    Sample("B2", Ms(absl::Now() - start));
    SampleCpu("B2", before, ReadCpu(hostd_pid, procs_dir));
    perf.reset();
    absl::StatusOr<ActorMesh> one = actors->Slice("procs", 0);
    if (!one.ok()) {
      Note(absl::StrCat("B3: ", one.status().ToString()));
      close_pidfds();
      return;
    }
    v1::Echo small;
    small.set_data(std::string(kSmall, 'x'));
    v1::Echo large;
    large.set_data(std::string(kLarge, 'x'));

    // B3 / F3 / F3r, in blocks taking turns.
    auto call_one = [&](int calls, std::vector<double>* us) {
      for (int i = 0; i < calls; ++i) {
        absl::Time t = absl::Now();
        auto reply = one->Call<v1::Echo>(small, absl::Seconds(10));
        absl::Duration took = absl::Now() - t;
        if (!reply[0].ok()) {
          Note(absl::StrCat("B3: ", reply[0].status().ToString()));
          return false;
        }
        if (us != nullptr) us->push_back(Us(took));
      }
      return true;
    };
    bool calls_ok = call_one(50, nullptr) &&
                    UnaryRoundTrips(*plain_.stub, 50, kSmall, nullptr) &&
                    UnaryRoundTrips(*relay_.stub, 50, kSmall, nullptr);
    constexpr int kBlocks = 4;
    for (int block = 0; block < kBlocks && calls_ok; ++block) {
      const int calls = flags_.calls / kBlocks;
      calls_ok = call_one(calls, &Samples("B3")) &&
                 UnaryRoundTrips(*plain_.stub, calls, kSmall, &Samples("F3")) &&
                 UnaryRoundTrips(*relay_.stub, calls, kSmall, &Samples("F3r"));
    }
    if (!calls_ok) Note("B3/F3/F3r: a call failed; the round's rest skipped");

    // B3b / F3b.
    Sample("B3b", PipelinedRate(*one, flags_.casts, 256));
    std::optional<double> stream_rate =
        StreamRate(*plain_.stub, flags_.stream_messages);
    if (!stream_rate.has_value()) Note("F3b: the stream failed");
    Sample("F3b", stream_rate);

    // B4 / F4, taking turns.
    auto gather = [&](const v1::Echo& echo, const std::string& id) {
      absl::Time t = absl::Now();
      auto replies = actors->Call<v1::Echo>(echo, kStepTimeout);
      double ms = Ms(absl::Now() - t);
      for (const auto& reply : replies) {
        if (!reply.ok()) {
          Note(absl::StrCat(id, ": ", reply.status().ToString()));
          return;
        }
      }
      Sample(id, ms);
    };
    auto count = [&] {
      absl::Time t = absl::Now();
      absl::StatusOr<v1::Reduced> counted =
          actors->Reduce(small, v1::REDUCE_COUNT, kStepTimeout);
      double ms = Ms(absl::Now() - t);
      if (!counted.ok() || counted->ok() != static_cast<uint64_t>(n)) {
        Note(absl::StrCat(
            "B4.count: ",
            counted.ok() ? absl::StrCat(counted->ok(), " of ", n, " counted")
                         : counted.status().ToString()));
        return;
      }
      Sample("B4.count", ms);
    };
    gather(small, "warm-up");
    gather(large, "warm-up");
    samples_.erase("warm-up");
    for (int i = 0; i < flags_.gathers; ++i) {
      gather(small, "B4.64B");
      Sample("F4.64B", FanOutMs(fan_, kSmall));
      count();
      if (i % 3 == 0) {
        gather(large, "B4.64KiB");
        Sample("F4.64KiB", FanOutMs(fan_, kLarge));
      }
    }

    // F5 / B5.
    Sample("F5", TermReapMs(binaries_["term_child"], n));
    v1::ShutdownHostRequest request;
    request.set_reason("mesh_bench");
    request.set_grace_ms(5000);
    request.set_stay_down(true);
    v1::ShutdownHostResponse response;
    grpc::ClientContext context;
    context.set_deadline(Deadline(kStepTimeout));
    if (round == 0) perf.emplace("B5", host_pids);
    before = ReadCpu(hostd_pid, procs_dir);
    start = absl::Now();
    grpc::Status shut = host->ShutdownHost(&context, request, &response);
    // hostd exits soon after it answered: its CPU is read at once.
    Cpu after = ReadCpu(hostd_pid, "");
    int survivors = 0;
    for (int fd : pidfds) {
      if (fd >= 0 && !PidfdExited(fd)) ++survivors;
    }
    int left = 0;
    for (int fd : pidfds) {
      if (fd >= 0 && !PidfdExited(fd, absl::Seconds(10))) ++left;
    }
    double shutdown_ms = Ms(absl::Now() - start);
    if (!procs_dir.empty()) after.procs = CgroupCpuMs(procs_dir);
    SampleCpu("B5", before, after);
    perf.reset();
    if (!shut.ok()) {
      Note(absl::StrCat("B5: ShutdownHost: ", shut.error_message()));
    } else if (survivors > 0) {
      Note(absl::StrCat(
          "B5: round ", round, ": ", survivors, " of ", n,
          " procs were still alive when ShutdownHost returned",
          left > 0 ? absl::StrCat(", ", left, " after 10 s") : ""));
    } else {
      Sample("B5", shutdown_ms);
    }
    close_pidfds();
    // What is left of the host (it has exited) is reaped.
    hosts->Shutdown(absl::Seconds(1)).IgnoreError();
  }

  // B9: a hostd of this bench's own with N procs, restarted (SIGUSR2, then
  // a new hostd on the same dirs) `restarts` times.
  void Restarts() {
    std::fprintf(stderr, "mesh_bench: B9 (hostd restarts)\n");
    const std::string dir = dir_ + "/restart";
    std::filesystem::create_directories(dir);
    absl::StatusOr<Hostd> hostd =
        StartHostd(binaries_["hostd"], dir, "127.0.0.1:0", log_fd_);
    if (!hostd.ok()) {
      Note(absl::StrCat("B9: ", hostd.status().ToString()));
      return;
    }
    const int n = flags_.procs;
    std::vector<v1::CreateOrUpdateProcRequest> creates(n);
    for (int i = 0; i < n; ++i) {
      creates[i].set_name(absl::StrCat("keep_", i));
      creates[i].set_rank(i);
    }
    std::vector<v1::ProcState> states;
    std::vector<grpc::Status> created = Parallel<v1::Host>(
        std::vector<std::shared_ptr<grpc::Channel>>(n, hostd->channel), creates,
        &states, kStepTimeout,
        [](auto* stub, auto* context, auto* request, auto* response,
           auto done) {
          stub->async()->CreateOrUpdateProc(context, request, response,
                                            std::move(done));
        });
    std::vector<pid_t> pids;
    std::vector<int> pidfds;
    auto cleanup = [&](Hostd& current) {
      auto stub = v1::Host::NewStub(current.channel);
      v1::ShutdownHostRequest request;
      request.set_reason("mesh_bench");
      request.set_grace_ms(2000);
      request.set_stay_down(true);
      v1::ShutdownHostResponse response;
      grpc::ClientContext context;
      context.set_deadline(Deadline(kStepTimeout));
      stub->ShutdownHost(&context, request, &response);
      current.End(absl::Seconds(10));
      // Procs a restart left to this process: end and reap them by pidfd.
      for (size_t i = 0; i < pids.size(); ++i) {
        if (pidfds[i] < 0) continue;
        if (!PidfdExited(pidfds[i], absl::Seconds(5))) {
          syscall(SYS_pidfd_send_signal, pidfds[i], SIGKILL, nullptr, 0);
          PidfdExited(pidfds[i], absl::Seconds(5));
        }
        siginfo_t info = {};
        waitid(static_cast<idtype_t>(3 /* P_PIDFD */), pidfds[i], &info,
               WEXITED | WNOHANG);
        close(pidfds[i]);
      }
    };
    for (int i = 0; i < n; ++i) {
      if (!created[i].ok()) {
        Note(absl::StrCat("B9: create ", creates[i].name(), ": ",
                          created[i].error_message()));
        cleanup(*hostd);
        return;
      }
    }
    {
      v1::WaitProcsRequest wait;
      for (const auto& create : creates) wait.add_names(create.name());
      wait.set_min_status(v1::RUNNING);
      wait.set_timeout_ms(absl::ToInt64Milliseconds(kStepTimeout));
      v1::WaitProcsResponse waited;
      grpc::ClientContext context;
      context.set_deadline(Deadline(kStepTimeout + absl::Seconds(5)));
      grpc::Status status =
          v1::Host::NewStub(hostd->channel)->WaitProcs(&context, wait, &waited);
      if (!status.ok() || waited.timed_out()) {
        Note(absl::StrCat("B9: procs not RUNNING: ", status.error_message()));
        cleanup(*hostd);
        return;
      }
      for (const v1::ProcState& proc : waited.procs()) {
        pids.push_back(proc.pid());
        pidfds.push_back(OpenPidfd(proc.pid()));
      }
    }
    for (int restart = 0; restart < flags_.restarts; ++restart) {
      // SIGUSR2: hostd exits at once, keeping its procs.
      kill(hostd->child.pid(), SIGUSR2);  // our unreaped child
      if (!hostd->child.WaitExited(kStepTimeout)) {
        Note("B9: hostd did not exit on SIGUSR2");
        cleanup(*hostd);
        return;
      }
      hostd->End(absl::ZeroDuration());
      int gone = 0;
      for (int fd : pidfds) {
        if (fd < 0 || PidfdExited(fd)) ++gone;
      }
      if (gone > 0) {
        Note(absl::StrCat("B9: ", gone, " procs ended with their hostd"));
      }
      absl::Time start = absl::Now();
      absl::StatusOr<Hostd> next =
          StartHostd(binaries_["hostd"], dir, hostd->address, log_fd_);
      if (!next.ok()) {
        Note(absl::StrCat("B9: restart: ", next.status().ToString()));
        cleanup(*hostd);
        return;
      }
      *hostd = *std::move(next);
      // Every proc answers through the new hostd with its own pid: it
      // rejoined.
      std::vector<size_t> waiting(n);
      for (int i = 0; i < n; ++i) waiting[i] = i;
      const absl::Time deadline = start + kStepTimeout;
      std::string last;  // the last answer that was not a rejoined proc's
      while (!waiting.empty() && absl::Now() < deadline) {
        std::vector<v1::GetProcInfoRequest> asks(waiting.size());
        for (size_t k = 0; k < waiting.size(); ++k) {
          asks[k].set_proc(creates[waiting[k]].name());
        }
        std::vector<v1::ProcInfo> infos;
        std::vector<grpc::Status> answered = Parallel<v1::Proc>(
            std::vector<std::shared_ptr<grpc::Channel>>(asks.size(),
                                                        hostd->channel),
            asks, &infos, absl::Seconds(5),
            [](auto* stub, auto* context, auto* request, auto* response,
               auto done) {
              stub->async()->GetProcInfo(context, request, response,
                                         std::move(done));
            });
        std::vector<size_t> still;
        for (size_t k = 0; k < waiting.size(); ++k) {
          if (!answered[k].ok() || infos[k].pid() != pids[waiting[k]]) {
            still.push_back(waiting[k]);
            last = answered[k].ok()
                       ? absl::StrCat("pid ", infos[k].pid(), " instead of ",
                                      pids[waiting[k]])
                       : answered[k].error_message();
          }
        }
        waiting = std::move(still);
        if (!waiting.empty()) absl::SleepFor(absl::Milliseconds(2));
      }
      if (!waiting.empty()) {
        Note(absl::StrCat("B9: ", waiting.size(), " of ", n,
                          " procs did not rejoin within ",
                          absl::FormatDuration(kStepTimeout), " (", last, ")"));
        break;
      }
      Sample("B9", Ms(absl::Now() - start));
    }
    cleanup(*hostd);
  }

  // B8: H hosts x K procs, the client casting to each host.
  void HostByHost() {
    const int hosts_n = flags_.b8_hosts;
    const int per_host = flags_.b8_procs;
    std::fprintf(stderr, "mesh_bench: B8 (%d hosts x %d procs)\n", hosts_n,
                 per_host);
    for (int round = 0; round < flags_.b8_rounds; ++round) {
      absl::Time start = absl::Now();
      absl::StatusOr<HostMesh> hosts =
          HostMesh::Process(hosts_n, MeshOptions());
      if (!hosts.ok()) {
        Note(absl::StrCat("B8: ", hosts.status().ToString()));
        return;
      }
      const absl::Time hosts_up = absl::Now();
      absl::StatusOr<ProcMesh> procs = hosts->Spawn("b8", per_host);
      const absl::Time procs_up = absl::Now();
      if (!procs.ok()) {
        Note(absl::StrCat("B8: ", procs.status().ToString()));
        return;
      }
      absl::StatusOr<ActorMesh> actors = procs->Spawn("echo", "mesh.echo");
      if (!actors.ok()) {
        Note(absl::StrCat("B8: ", actors.status().ToString()));
        return;
      }
      Sample("B8.up", Ms(absl::Now() - start));
      std::fprintf(stderr,
                   "mesh_bench: B8 round %d: hosts %.0f ms, procs %.0f ms, "
                   "actors %.0f ms\n",
                   round + 1, Ms(hosts_up - start), Ms(procs_up - hosts_up),
                   Ms(absl::Now() - procs_up));
      v1::Echo small;
      small.set_data(std::string(kSmall, 'x'));
      const std::set<std::string> peers(hosts->addresses().begin(),
                                        hosts->addresses().end());
      bool ok = true;
      auto call_all = [&](std::vector<double>* ms) {
        absl::Time t = absl::Now();
        auto replies = actors->Call<v1::Echo>(small, kStepTimeout);
        double took = Ms(absl::Now() - t);
        for (const auto& reply : replies) {
          if (!reply.ok()) {
            Note(absl::StrCat("B8: ", reply.status().ToString()));
            ok = false;
            return;
          }
        }
        if (ms != nullptr) ms->push_back(took);
      };
      for (int i = 0; i < 3 && ok; ++i) call_all(nullptr);
      const TcpSent before = TcpSentTo(peers);
      int gathered = 0;
      for (int i = 0; i < flags_.gathers && ok; ++i) {
        call_all(&Samples("B8.gather"));
        ++gathered;
      }
      const TcpSent after = TcpSentTo(peers);
      if (ok && gathered > 0) {
        if (after.sockets < hosts_n) {
          Note(absl::StrCat("B8.msgs: found ", after.sockets,
                            " client sockets to the ", hosts_n, " hosts"));
        }
        Sample("B8.msgs",
               static_cast<double>(after.data_segments - before.data_segments) /
                   gathered);
      }
      // Reduce(COLLECT) on all actors, host by host and through trees of
      // 1, 2 and 3 levels (fan-outs of hosts-1, 4, 2): one answer comes
      // back either way, but host by host the client sends one envelope
      // per host and folds H answers.
      const size_t fanout_before = client_->cast_tree_fanout();
      std::vector<std::pair<std::string, size_t>> shapes = {{"hbh", 0}};
      for (int levels = 1; levels <= 3; ++levels) {
        if (std::optional<size_t> fanout = FanoutFor(hosts_n, levels)) {
          shapes.emplace_back(absl::StrCat("tree", levels), *fanout);
          tree_fanouts_[levels] = *fanout;
        }
      }
      for (const auto& shape : shapes) {
        // Not a structured binding: the lambda below captures it.
        const std::string& id = shape.first;
        if (!ok) break;
        client_->SetCastTreeFanout(shape.second);
        auto reduce_all = [&]() -> std::optional<double> {
          absl::Time t = absl::Now();
          absl::StatusOr<v1::Reduced> reduced =
              actors->Reduce(small, v1::REDUCE_COLLECT, kStepTimeout);
          double took = Ms(absl::Now() - t);
          if (!reduced.ok() || reduced->failed() != 0) {
            Note(absl::StrCat("B8.reduce.", id, ": ",
                              reduced.ok() ? reduced->first_error().message()
                                           : reduced.status().ToString()));
            ok = false;
            return std::nullopt;
          }
          return took;
        };
        for (int i = 0; i < 3 && ok; ++i) reduce_all();
        const TcpSent reduce_before = TcpSentTo(peers);
        int reduced = 0;
        for (int i = 0; i < flags_.gathers && ok; ++i) {
          if (std::optional<double> took = reduce_all()) {
            Samples(absl::StrCat("B8.reduce.", id)).push_back(*took);
            ++reduced;
          }
        }
        const TcpSent reduce_after = TcpSentTo(peers);
        if (ok && reduced > 0 && (id == "hbh" || id == "tree2")) {
          Sample(absl::StrCat("B8.msgs.reduce.", id),
                 static_cast<double>(reduce_after.data_segments -
                                     reduce_before.data_segments) /
                     reduced);
        }
        if (ok && id == "tree2") {
          for (int i = 0; i < flags_.gathers && ok; ++i) {
            call_all(&Samples("B8.gather.tree2"));
          }
        }
      }
      client_->SetCastTreeFanout(fanout_before);
      hosts->Shutdown(absl::Seconds(2)).IgnoreError();
    }
  }

  // The levels of the client's tree over `hosts` hosts with `fanout`
  // (client/actor_mesh.cc: host i's children are fanout*i+1 ..
  // fanout*i+fanout); 0 if that many hosts are sent to host by host.
  static int TreeLevels(size_t hosts, size_t fanout) {
    if (fanout < 2 || hosts <= fanout) return 0;
    int levels = 0;
    for (size_t reached = 1, width = 1; reached < hosts; ++levels) {
      width *= fanout;
      reached += width;
    }
    return levels;
  }
  // The smallest fan-out whose tree over `hosts` hosts has `levels` levels.
  static std::optional<size_t> FanoutFor(size_t hosts, int levels) {
    for (size_t fanout = 2; fanout < hosts; ++fanout) {
      if (TreeLevels(hosts, fanout) == levels) return fanout;
    }
    return std::nullopt;
  }

  // B8's model: a Reduce through a tree costs a fixed part plus one hop per
  // level (least squares over the trees of 1-3 levels on the same hosts);
  // host by host costs a part per host (B8.reduce.hbh / H). Both
  // extrapolated to 1,024 hosts (a fan-out of 16: 3 levels).
  void TreeModelNote() {
    std::vector<std::pair<double, double>> points;  // (levels, ms)
    for (int levels = 1; levels <= 3; ++levels) {
      const std::vector<double>& ms =
          samples_[absl::StrCat("B8.reduce.tree", levels)];
      if (!ms.empty()) points.emplace_back(levels, Median(ms));
    }
    if (points.size() < 2 || samples_["B8.reduce.hbh"].empty()) return;
    double mean_x = 0, mean_y = 0;
    for (const auto& [x, y] : points) {
      mean_x += x / points.size();
      mean_y += y / points.size();
    }
    double sxy = 0, sxx = 0;
    std::string fitted;
    for (const auto& [x, y] : points) {
      sxy += (x - mean_x) * (y - mean_y);
      sxx += (x - mean_x) * (x - mean_x);
      absl::StrAppend(&fitted, fitted.empty() ? "" : ", ",
                      absl::StrFormat("%.0f: %.2f ms", x, y));
    }
    const double hop = sxy / sxx;
    const double fixed = mean_y - hop * mean_x;
    const double per_host = Median(samples_["B8.reduce.hbh"]) / flags_.b8_hosts;
    report_.Note(absl::StrFormat(
        "B8 model (%d hosts): a tree level costs %.2f ms (levels %s; fixed "
        "part %.2f ms); host by host costs %.3f ms per host. Extrapolated "
        "to 1,024 hosts (fan-out 16, 3 levels): tree ~%.1f ms with the "
        "client sending 1 envelope, host by host ~%.0f ms with the client "
        "sending 1,024",
        flags_.b8_hosts, hop, fitted, fixed, per_host, fixed + 3 * hop,
        per_host * 1024));
  }

  void Rows() {
    const std::string n = absl::StrCat(flags_.procs);
    auto add = [this](const std::string& id, const std::string& name,
                      const std::string& unit,
                      Report::Stat stat = Report::Stat::kMedian) -> Row& {
      std::string key = id;
      if (absl::EndsWith(id, ".p50") || absl::EndsWith(id, ".p99")) {
        key = id.substr(0, id.size() - 4);
      }
      return report_.Add(id, name, unit, samples_[key], stat);
    };
    // The floors.
    add("F1",
        absl::StrCat(n, " static C children: posix_spawn -> all reported"),
        "ms");
    add("F1.grpc",
        absl::StrCat(n, " gRPC-linked children -> all registered (unary call)"),
        "ms");
    add("F3.p50", "unary gRPC ping-pong 64 B, 2 processes (p50)", "us");
    add("F3.p99", "unary gRPC ping-pong 64 B, 2 processes (p99)", "us",
        Report::Stat::kP99);
    add("F3r.p50", "F3 relayed server -> child over a socketpair (p50)", "us")
        .set_floor("F3.p50");
    add("F3r.p99", "F3 relayed server -> child over a socketpair (p99)", "us",
        Report::Stat::kP99)
        .set_floor("F3.p99");
    add("F3b", "gRPC client stream, 64 B messages, one way", "msgs/s")
        .set_higher_is_better(true);
    add("F4.64B",
        absl::StrCat(n, " servers: parallel unary calls, 64 B, all gathered"),
        "ms");
    add("F4.64KiB",
        absl::StrCat(n, " servers: parallel unary calls, 64 KiB, all gathered"),
        "ms");
    add("F5",
        absl::StrCat("SIGTERM -> all reaped, ", n, " protobuf-linked children"),
        "ms");
    add("F6.pss", "idle minimal gRPC server process: PSS", "MB");
    add("F6.rss", "idle minimal gRPC server process: RSS", "MB");
    add("F6.threads", "idle minimal gRPC server process: threads", "threads");
    // A goal that is a multiple of a floor measured in this run.
    auto floor_goal = [this](Row& row, const std::string& floor,
                             double factor) {
      row.set_floor(floor);
      const std::vector<double>& measured = samples_[floor];
      if (measured.empty()) return;
      const double goal = factor * Median(measured);
      row.set_goal(absl::StrFormat("<= %gx %s (%.3g)", factor, floor, goal));
      row.set_goal_max(goal);
    };
    // The figures.
    floor_goal(
        add("B1", absl::StrCat(n, " procs -> all RUNNING, one host"), "ms"),
        "F1", 2);
    {
      Row& row = add("B1b",
                     "cold start: new client -> local host -> proc -> actor "
                     "-> 1st reply",
                     "ms");
      row.set_goal("<= 100 ms");
      row.set_goal_max(100);
      if (!cold_steps_.empty()) {
        report_.Note(
            absl::StrCat("B1b, the last run's steps (", cold_steps_, ")"));
      }
    }
    {
      Row& row = add(
          "B2", absl::StrCat("actor mesh spawn on ", n, " warm procs"), "ms");
      row.set_floor("F4.64B");
      const std::vector<double>& fan = samples_["F4.64B"];
      if (!fan.empty()) {
        const double goal = Median(fan) + 2;
        row.set_goal(absl::StrFormat("<= F4.64B + 2 ms (%.1f)", goal));
        row.set_goal_max(goal);
      }
    }
    floor_goal(add("B3.p50", "one actor call round trip, 64 B (p50)", "us"),
               "F3r.p50", 1.2);
    add("B3.p99", "one actor call round trip, 64 B (p99)", "us",
        Report::Stat::kP99)
        .set_floor("F3r.p99");
    {
      Row& row = add("B3b", "pipelined casts to one actor, replies on a port",
                     "calls/s");
      row.set_floor("F3b");
      row.set_higher_is_better(true);
      const std::vector<double>& stream = samples_["F3b"];
      const double goal =
          std::max(50000.0, stream.empty() ? 0.0 : Median(stream) / 2);
      row.set_goal(absl::StrFormat(">= 50%% of F3b and >= 50k (%.0f)", goal));
      row.set_goal_min(goal);
    }
    floor_goal(
        add("B4.64B", absl::StrCat("Call on ", n, " actors, one host, 64 B"),
            "ms"),
        "F4.64B", 0.5);
    floor_goal(
        add("B4.64KiB",
            absl::StrCat("Call on ", n, " actors, one host, 64 KiB"), "ms"),
        "F4.64KiB", 0.5);
    add("B4.count",
        absl::StrCat("Reduce(COUNT) over ", n, " actors, one host, 64 B"), "ms")
        .set_floor("F4.64B");
    floor_goal(
        add("B5",
            absl::StrCat("ShutdownHost with ", n, " procs -> 0 survivors"),
            "ms"),
        "F5", 1.3);
    {
      Row& row = add("B6.pss", "idle procd, no actor: PSS", "MB");
      row.set_floor("F6.pss");
      row.set_goal("<= 1.5 MB");
      row.set_goal_max(1.5);
    }
    {
      Row& row = add("B6.rss", "idle procd, no actor: RSS", "MB");
      row.set_floor("F6.rss");
      row.set_goal("<= 8 MB");
      row.set_goal_max(8);
    }
    {
      Row& row = add("B6.threads", "idle procd, no actor: threads", "threads");
      row.set_floor("F6.threads");
      row.set_goal("<= 4");
      row.set_goal_max(4);
    }
    CpuNotes();
    if (flags_.skip.count("b9") == 0) {
      Row& row = add("B9",
                     absl::StrCat("hostd restart with ", n,
                                  " procs -> all answer through it"),
                     "ms");
      row.set_goal("<= 500 ms");
      row.set_goal_max(500);
    }
    if (flags_.skip.count("b8") == 0) {
      const std::string shape =
          absl::StrCat(flags_.b8_hosts, " hosts x ", flags_.b8_procs, " procs");
      add("B8.up", absl::StrCat(shape, ": hosts, procs, actors up"), "ms");
      add("B8.gather", absl::StrCat(shape, ": Call on all actors, 64 B"), "ms")
          .set_floor("F4.64B");
      add("B8.msgs",
          absl::StrCat(shape, ": TCP data segments the client sends per Call"),
          "msgs");
      add("B8.gather.tree2",
          absl::StrCat(shape, ": Call on all actors through a 2-level tree"),
          "ms")
          .set_floor("F4.64B");
      add("B8.reduce.hbh",
          absl::StrCat(shape, ": Reduce(COLLECT), host by host"), "ms");
      for (const auto& [levels, fanout] : tree_fanouts_) {
        add(absl::StrCat("B8.reduce.tree", levels),
            absl::StrCat(shape, ": Reduce(COLLECT), ", levels,
                         "-level tree (fan-out ", fanout, ")"),
            "ms");
      }
      add("B8.msgs.reduce.hbh",
          absl::StrCat(shape,
                       ": TCP data segments the client sends per Reduce, "
                       "host by host"),
          "msgs");
      add("B8.msgs.reduce.tree2",
          absl::StrCat(shape,
                       ": TCP data segments the client sends per Reduce, "
                       "2-level tree"),
          "msgs");
      TreeModelNote();
    }
  }

  // Where B1's, B2's and B5's time went, in CPU: one note each.
  void CpuNotes() {
    for (const char* id : {"B1", "B2", "B5"}) {
      const std::string key = absl::StrCat("cpu:", id, ":");
      if (samples_[key + "client"].empty()) continue;
      std::string text =
          absl::StrFormat("%s, CPU used (median of rounds): client %.1f ms", id,
                          Median(samples_[key + "client"]));
      for (const char* part : {"hostd", "procs"}) {
        const std::vector<double>& used = samples_[key + part];
        absl::StrAppend(
            &text,
            absl::StrFormat(", %s %s", part,
                            used.empty()
                                ? std::string("unknown")
                                : absl::StrFormat("%.1f ms", Median(used))));
      }
      absl::StrAppend(
          &text,
          absl::StrFormat("; wall %.1f ms on %d cores", Median(samples_[id]),
                          static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN))));
      report_.Note(text);
    }
  }

  Flags flags_;
  Report report_;
  // cold_client's account of its last run (B1b).
  std::string cold_steps_;
  bool problems_ = false;
  std::map<std::string, std::vector<double>> samples_;
  std::map<std::string, std::string> binaries_;
  std::string dir_;
  int log_fd_ = -1;
  RegisterServer register_;
  FloorServer plain_;
  FloorServer relay_;
  std::vector<FloorServer> fan_;
  std::shared_ptr<Client> client_;
};

const char kUsage[] =
    "usage: mesh_bench [--rows FILE] [--rounds R] [--procs N] [--calls C] "
    "[--gathers G] [--casts C] [--stream-messages M] [--restarts K] "
    "[--b8-hosts H] [--b8-procs K] [--b8-rounds R] [--skip b8,b9]\n";

bool ParseFlags(int argc, char** argv, Flags* flags) {
  std::map<std::string, int*> ints = {
      {"--rounds", &flags->rounds},
      {"--procs", &flags->procs},
      {"--calls", &flags->calls},
      {"--gathers", &flags->gathers},
      {"--casts", &flags->casts},
      {"--stream-messages", &flags->stream_messages},
      {"--restarts", &flags->restarts},
      {"--b8-hosts", &flags->b8_hosts},
      {"--b8-procs", &flags->b8_procs},
      {"--b8-rounds", &flags->b8_rounds},
  };
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    std::string value;
    if (size_t eq = flag.find('='); eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return false;
    }
    if (flag == "--rows") {
      flags->rows = value;
    } else if (flag == "--skip") {
      for (absl::string_view part : absl::StrSplit(value, ',')) {
        flags->skip.insert(std::string(part));
      }
    } else if (auto it = ints.find(flag); it != ints.end()) {
      if (!absl::SimpleAtoi(value, it->second) || *it->second <= 0) {
        return false;
      }
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace
}  // namespace mesh::bench

int main(int argc, char** argv) {
  mesh::bench::QuietLogging(argv[0]);
  mesh::bench::Flags flags;
  if (!mesh::bench::ParseFlags(argc, argv, &flags)) {
    std::fprintf(stderr, "%s", mesh::bench::kUsage);
    return 2;
  }
  return mesh::bench::Bench(std::move(flags)).Run();
}
