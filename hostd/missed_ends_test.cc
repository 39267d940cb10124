// MissedEnds: what a client missed while it had no stream, and only that,
// bounded.
#include "hostd/missed_ends.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "catch2/catch.hpp"

namespace mesh {
namespace {

v1::ProcExit Exit(const std::string& proc) {
  v1::ProcExit exit;
  exit.set_proc(proc);
  return exit;
}

std::vector<std::string> Procs(const std::vector<v1::ProcExit>& ends) {
  std::vector<std::string> procs;
  for (const v1::ProcExit& exit : ends) procs.push_back(exit.proc());
  return procs;
}

using Names = std::vector<std::string>;

// Records what was delivered (to the router).
struct Ends {
  explicit Ends(size_t per_client = MissedEnds::kMaxPerClient,
                size_t in_all = MissedEnds::kMaxKept)
      : missed(
            [this](const v1::ProcExit& exit) {
              absl::MutexLock lock(&mu);
              delivered.push_back(exit.proc());
            },
            per_client, in_all) {}

  absl::Mutex mu;
  Names delivered ABSL_GUARDED_BY(mu);
  MissedEnds missed;
};

TEST_CASE(
    "a client hears on its next stream only the ends reported while it had "
    "none, once") {
  Ends t;
  // Reported while its stream is routed: delivered, not kept.
  CHECK(t.missed.StreamRouted("client:a", "alice").empty());
  t.missed.Report("client:a", "alice", Exit("live"));
  t.missed.StreamEnded("client:a");
  // Reported while it is away, and a detached proc's: delivered; the
  // client's kept.
  t.missed.Report("client:a", "alice", Exit("away_0"));
  t.missed.Report("", "alice", Exit("detached"));
  t.missed.Report("client:a", "alice", Exit("away_1"));
  {
    absl::MutexLock lock(&t.mu);
    CHECK(t.delivered == Names{"live", "away_0", "detached", "away_1"});
  }
  CHECK(t.missed.kept() == 2);
  CHECK(Procs(t.missed.StreamRouted("client:a", "alice")) ==
        Names{"away_0", "away_1"});
  CHECK(t.missed.kept() == 0);
  // Heard: not again.
  t.missed.StreamEnded("client:a");
  CHECK(t.missed.StreamRouted("client:a", "alice").empty());
}

TEST_CASE("while any stream of the client is routed, nothing is kept") {
  Ends t;
  t.missed.StreamRouted("client:a", "alice");
  t.missed.StreamRouted("client:a", "alice");
  t.missed.StreamEnded("client:a");
  t.missed.Report("client:a", "alice", Exit("p"));
  CHECK(t.missed.kept() == 0);
}

TEST_CASE(
    "a client keeps at most its cap, the oldest dropped, and all clients "
    "together at most theirs") {
  Ends t(/*per_client=*/3, /*in_all=*/5);
  for (int i = 0; i < 5; ++i) {
    t.missed.Report("client:a", "alice", Exit(absl::StrCat("a", i)));
  }
  CHECK(t.missed.kept() == 3);
  for (int i = 0; i < 3; ++i) {
    t.missed.Report("client:b", "bob", Exit(absl::StrCat("b", i)));
  }
  // 6 > 5 in all: a's oldest went.
  CHECK(t.missed.kept() == 5);
  CHECK(Procs(t.missed.StreamRouted("client:a", "alice")) == Names{"a3", "a4"});
  CHECK(Procs(t.missed.StreamRouted("client:b", "bob")) ==
        Names{"b0", "b1", "b2"});
  CHECK(t.missed.kept() == 0);
}

TEST_CASE("what a client missed is not replayed to another identity") {
  Ends t;
  t.missed.Report("client:a", "alice", Exit("p"));
  CHECK(t.missed.StreamRouted("client:a", "mallory").empty());
  CHECK(t.missed.kept() == 0);
  t.missed.StreamEnded("client:a");
  CHECK(t.missed.StreamRouted("client:a", "alice").empty());
}

TEST_CASE("once closed, nothing is delivered or kept") {
  Ends t;
  t.missed.Close();
  t.missed.Report("client:a", "alice", Exit("p"));
  CHECK(t.missed.kept() == 0);
  absl::MutexLock lock(&t.mu);
  CHECK(t.delivered.empty());
}

}  // namespace
}  // namespace mesh
