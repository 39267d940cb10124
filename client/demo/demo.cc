// The hostmesh demo: hosts → procs → actors from one client process, on an
// embedded local host (a private hostd child on loopback; nothing is
// installed and nothing listens beyond 127.0.0.1; the client and the procs
// listen on nothing and reach each other through the host). Each step
// prints what it did and how long it took; at the end nothing is left
// running.
#include <glog/logging.h>
#include <signal.h>

#include <cstdio>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "hostmesh/hostmesh.h"
#include "proto/actors.pb.h"

namespace {

// Runs one step, printing its time and what it says about itself.
class Stepper {
 public:
  void Step(const std::string& what) {
    now_ = absl::Now();
    std::printf("\n%s\n", what.c_str());
  }
  void Done(const std::string& result) {
    double ms = absl::ToDoubleMilliseconds(absl::Now() - now_);
    std::printf("  [%8.2f ms] %s\n", ms, result.c_str());
  }
  void Line(const std::string& line) {
    std::printf("               %s\n", line.c_str());
  }

 private:
  absl::Time now_;
};

bool Alive(pid_t pid) { return kill(pid, 0) == 0; }

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "\ndemo failed: %s\n", status.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace mesh;
  // The library logs to stderr; the demo shows warnings and errors only.
  FLAGS_logtostderr = true;
  FLAGS_minloglevel = google::GLOG_WARNING;
  google::InitGoogleLogging(argv[0]);
  Stepper s;
  // Step 9's supervision events; declared first, so they outlive every
  // mesh whose handler records into them.
  absl::Mutex mu;
  std::vector<v1::SupervisionEvent> events;
  std::printf("hostmesh demo: one client process -> host -> procs -> actors\n");

  s.Step(
      "1. HostMesh::Local(): start an embedded host (a private hostd child, "
      "registers back)");
  absl::StatusOr<HostMesh> hosts = HostMesh::Local();
  if (!hosts.ok()) return Fail(hosts.status());
  s.Done(absl::StrCat("host up at ", hosts->addresses()[0], "; client mailbox ",
                      hosts->client()->id(), " (reached through the host)"));

  s.Step("2. hosts.Spawn(\"p0\", 4): four procs, each a real procd process");
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("p0", 4);
  if (!procs.ok()) return Fail(procs.status());
  s.Done(absl::StrCat("proc mesh p0 ", procs->extent().ToString(),
                      ": all RUNNING"));
  std::set<pid_t> pids;
  for (const v1::ProcState& proc : procs->procs()) {
    pids.insert(proc.pid());
    s.Line(absl::StrFormat("%-5s rank %d  pid %-7d on host %s", proc.name(),
                           proc.rank(), proc.pid(), proc.host()));
  }

  s.Step("3. procs.Spawn(\"a0\", \"mesh.echo\"): one echo actor in every proc");
  absl::StatusOr<ActorMesh> echo = procs->Spawn("a0", "mesh.echo");
  if (!echo.ok()) return Fail(echo.status());
  s.Done(absl::StrCat("actor mesh a0: ", echo->num_ranks(), " actors RUNNING"));

  s.Step("4. Open a port on the client and cast GetActorId(port) to the mesh");
  Port<v1::ActorIdReply> port = hosts->client()->OpenPort<v1::ActorIdReply>();
  v1::GetActorId get_id;
  *get_id.mutable_port() = port.ref();
  if (absl::Status cast = echo->Cast(get_id); !cast.ok()) return Fail(cast);
  std::vector<std::string> arrived;
  for (size_t i = 0; i < echo->num_ranks(); ++i) {
    absl::StatusOr<v1::ActorIdReply> reply = port.Recv(absl::Seconds(10));
    if (!reply.ok()) return Fail(reply.status());
    arrived.push_back(absl::StrFormat("%s/%s (rank %d, pid %d)",
                                      reply->id().proc(), reply->id().actor(),
                                      reply->rank(), reply->pid()));
  }
  s.Done("4 replies arrived on the port, in arrival order:");
  for (const auto& line : arrived) s.Line(line);

  s.Step("5. echo.Call(Echo{\"hello\"}): one reply per rank, in rank order");
  v1::Echo hello;
  hello.set_text("hello");
  auto echoes = echo->Call<v1::Echo>(hello, absl::Seconds(10));
  std::vector<std::string> texts;
  for (const auto& reply : echoes) {
    if (!reply.ok()) return Fail(reply.status());
    texts.push_back(reply->text());
  }
  s.Done(absl::StrCat("replies: ", absl::StrJoin(texts, ", ")));

  s.Step(
      "6. A counter mesh: cast Increment{by: 5} to procs 1..2 only, then Call "
      "GetCount on all");
  absl::StatusOr<ActorMesh> counters = procs->Spawn("c0", "mesh.counter");
  if (!counters.ok()) return Fail(counters.status());
  absl::StatusOr<ActorMesh> middle = counters->Slice("procs", 1, 3);
  if (!middle.ok()) return Fail(middle.status());
  v1::Increment five;
  five.set_by(5);
  if (absl::Status cast = middle->Cast(five); !cast.ok()) return Fail(cast);
  auto counts = counters->Call<v1::Count>(v1::GetCount(), absl::Seconds(10));
  std::vector<std::string> values;
  for (const auto& count : counts) {
    if (!count.ok()) return Fail(count.status());
    values.push_back(absl::StrCat("rank ", count->rank(), "=", count->value()));
  }
  s.Done(absl::StrCat("counts: ", absl::StrJoin(values, "  ")));

  s.Step(
      "7. echo.Reduce(Echo, COUNT): the host folds its replies, one answer "
      "comes back");
  absl::StatusOr<v1::Reduced> count =
      echo->Reduce(hello, v1::REDUCE_COUNT, absl::Seconds(10));
  if (!count.ok()) return Fail(count.status());
  s.Done(absl::StrFormat("%d of %d ranks replied", count->ok(),
                         echo->num_ranks()));

  s.Step("8. 1,000 calls to one actor, one after another (round-trip time)");
  absl::StatusOr<ActorMesh> first = echo->Slice("procs", 0);
  if (!first.ok()) return Fail(first.status());
  absl::Time start = absl::Now();
  for (int i = 0; i < 1000; ++i) {
    auto reply = first->Call<v1::Echo>(hello, absl::Seconds(10));
    if (!reply[0].ok()) return Fail(reply[0].status());
  }
  s.Done(
      absl::StrFormat("%.1f us per call",
                      absl::ToDoubleMicroseconds(absl::Now() - start) / 1000));

  s.Step(
      "9. Supervision: kill -9 proc p0_3; the owner's handler hears of its "
      "actors, a call to rank 3 fails at once");
  auto record = [&mu, &events](const v1::SupervisionEvent& event) {
    absl::MutexLock lock(&mu);
    events.push_back(event);
  };
  echo->OnSupervisionEvent(record);
  counters->OnSupervisionEvent(record);
  const pid_t victim = procs->procs()[3].pid();
  kill(victim, SIGKILL);
  auto after = echo->Call<v1::Echo>(hello, absl::Seconds(10));
  {
    absl::MutexLock lock(&mu);
    auto both = [&events]() { return events.size() >= 2; };
    mu.AwaitWithTimeout(absl::Condition(&both), absl::Seconds(10));
    s.Done(absl::StrFormat("%d events; the call's rank 3: %s", events.size(),
                           after[3].status().ToString()));
    for (const v1::SupervisionEvent& event : events) s.Line(event.message());
    if (events.size() < 2 || after[3].ok()) {
      return Fail(absl::InternalError("the owner did not hear of the kill"));
    }
  }
  std::printf(
      "               (an unhandled failure would poison the mesh: its calls "
      "would then return it)\n");
  pids.erase(victim);

  s.Step("10. hosts.Shutdown(): stop every proc, reap it, stop the host");
  if (absl::Status shut = hosts->Shutdown(); !shut.ok()) return Fail(shut);
  int alive = 0;
  for (pid_t pid : pids) alive += Alive(pid) ? 1 : 0;
  s.Done(absl::StrFormat("shut down; procs still alive: %d of %d", alive,
                         pids.size()));
  if (alive != 0) return Fail(absl::InternalError("a proc outlived its host"));
  std::printf("\ndone: nothing left running.\n");
  // HostMesh::Local() keeps its hosts' logs (README "Logs").
  std::printf(
      "proc logs kept in %s/host_0/state/procs/<proc>/ (stdout.log, "
      "stderr.log, procd.log); hostd's own in %s/hosts/\n",
      hosts->logs_dir().c_str(), hosts->logs_dir().c_str());
  return 0;
}
