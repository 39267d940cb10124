// Logs (issue 11), end to end with real hostds and procs: a 10 MB burst
// lands whole and never blocks its proc, rotation at a small cap keeps
// offsets monotonic and StreamLogs counts what it skipped, follow sees new
// lines and ends with the proc, tail N, the stream cap freed by a cancel,
// a client's forwarding of its procs' output prefixed by proc, and
// `meshctl logs`.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "catch2/catch.hpp"
#include "hostmesh/hostmesh.h"
#include "lib/auth/credentials.h"
#include "lib/process/proc_log.h"
#include "lib/testing/temp_dir.h"
#include "meshctl/meshctl.h"
#include "proto/host.grpc.pb.h"
#include "tests/testdata/trouble.pb.h"
#include "tests/testing/meshctl_run.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using testing::BinaryPath;
using testing::Shell;
using testing::TestHost;

struct Streamed {
  std::vector<v1::LogChunk> chunks;
  std::vector<absl::Time> arrived;
  grpc::Status status;
  std::string Data(v1::LogStream which) const {
    std::string out;
    for (const auto& c : chunks) {
      if (c.stream() == which) out += c.data();
    }
    return out;
  }
};

Streamed Stream(TestHost& host, const v1::StreamLogsRequest& request,
                absl::Duration timeout = absl::Seconds(60)) {
  auto context = testing::Context(timeout);
  auto reader = host.stub().StreamLogs(context.get(), request);
  Streamed out;
  v1::LogChunk chunk;
  while (reader->Read(&chunk)) {
    out.chunks.push_back(chunk);
    out.arrived.push_back(absl::Now());
  }
  out.status = reader->Finish();
  return out;
}

// Whether files under `dir` can be cut with FALLOC_FL_COLLAPSE_RANGE (else
// rotation falls back to copy-then-truncate).
bool CollapseSupported(const std::string& dir) {
  const std::string path = dir + "/collapse-probe";
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return false;
  struct stat st;
  bool ok = fstat(fd, &st) == 0 && st.st_blksize > 0;
  const std::string block(static_cast<size_t>(ok ? st.st_blksize : 0), 'x');
  ok = ok &&
       write(fd, block.data(), block.size()) ==
           static_cast<ssize_t>(block.size()) &&
       write(fd, block.data(), block.size()) ==
           static_cast<ssize_t>(block.size()) &&
       fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0,
                 static_cast<off_t>(block.size())) == 0;
  close(fd);
  unlink(path.c_str());
  return ok;
}

// Waits until proc `name` has ended.
void WaitEnded(TestHost& host, const std::string& name) {
  v1::WaitProcsResponse waited =
      host.Wait({name}, v1::STOPPED, absl::Seconds(60));
  REQUIRE(waited.procs_size() == 1);
  REQUIRE(waited.procs(0).status() >= v1::STOPPED);
}

// What `seq -w from to` prints.
std::string Seq(int from, int to) {
  const int width = static_cast<int>(absl::StrCat(to).size());
  std::string out;
  for (int i = from; i <= to; ++i) {
    absl::StrAppend(&out, absl::StrFormat("%0*d\n", width, i));
  }
  return out;
}

int64_t Field(const std::string& text, const std::string& key) {
  const size_t at = text.find(key + "=");
  if (at == std::string::npos) return -1;
  int64_t value = -1;
  const size_t start = at + key.size() + 1;
  const size_t end = text.find_first_not_of("0123456789", start);
  if (!absl::SimpleAtoi(text.substr(start, end - start), &value)) return -1;
  return value;
}

TEST_CASE(
    "a 10 MB burst from one proc lands whole in its file and never "
    "blocks it") {
  // A 1 MiB cap: the burst is rotated into copies, none lost.
  auto host =
      TestHost::Start({"--registration-timeout=60s",
                       "--proc-log-max-bytes=1048576", "--proc-log-keep=20"});
  REQUIRE(host != nullptr);
  // The same 10 MiB to /dev/null first (the floor), then to stdout.
  const std::string script =
      "t0=$(date +%s%N); seq -w 1 1310720 >/dev/null; t1=$(date +%s%N); "
      "seq -w 1 1310720; t2=$(date +%s%N); "
      "echo floor_ns=$((t1-t0)) burst_ns=$((t2-t1)) >&2";
  v1::ProcState state;
  REQUIRE(host->Create("burst", 0, Shell(script), &state).ok());
  WaitEnded(*host, "burst");
  v1::StreamLogsRequest request;
  request.add_names("burst");
  request.set_from_offset(0);
  request.set_max_chunk_bytes(1 << 20);
  Streamed got = Stream(*host, request);
  REQUIRE(got.status.ok());
  const std::string expected = Seq(1, 1310720);
  REQUIRE(expected.size() == 10485760);
  const std::string out = got.Data(v1::LOG_STDOUT);
  if (CollapseSupported(host->state_dir())) {
    // Rotation by collapse loses nothing.
    CHECK(out.size() == expected.size());
    CHECK(out == expected);
    for (const auto& chunk : got.chunks) CHECK(chunk.skipped_bytes() == 0);
  } else {
    // Copy-then-truncate (no collapse here) may lose what was written in
    // its window: each byte served is the one written at its offset, and
    // what is missing is counted as skipped.
    uint64_t skipped = 0;
    for (const auto& chunk : got.chunks) {
      if (chunk.stream() != v1::LOG_STDOUT) continue;
      skipped += chunk.skipped_bytes();
      CHECK(chunk.offset() + chunk.data().size() <= expected.size());
      CHECK(chunk.data() ==
            expected.substr(chunk.offset(), chunk.data().size()));
    }
    CHECK(out.size() + skipped == expected.size());
    WARN("no FALLOC_FL_COLLAPSE_RANGE under "
         << host->state_dir() << ": rotation by truncate lost " << skipped
         << " bytes");
  }
  const std::string err = got.Data(v1::LOG_STDERR);
  const int64_t floor_ns = Field(err, "floor_ns");
  const int64_t burst_ns = Field(err, "burst_ns");
  REQUIRE(floor_ns > 0);
  REQUIRE(burst_ns > 0);
  WARN("10 MiB burst: " << burst_ns / 1000000 << " ms to its log file, "
                        << floor_ns / 1000000 << " ms to /dev/null");
  // Never blocked: a file write, not a pipe someone must drain. Generous
  // (2 busy cores): within 5 s and 20 times the floor.
  CHECK(burst_ns < 5000000000);
  CHECK(burst_ns < 20 * floor_ns + 1000000000);
  const LogSpan span = LogSpanOf(host->state_dir() + "/procs/burst/stdout.log");
  CHECK(span.end == expected.size());
  CHECK(span.base > 0);  // It was rotated.
}

TEST_CASE(
    "rotation at a small cap keeps offsets monotonic and a stream from "
    "offset 0 reports the skipped bytes honestly") {
  auto host =
      TestHost::Start({"--registration-timeout=60s",
                       "--proc-log-max-bytes=65536", "--proc-log-keep=1"});
  REQUIRE(host != nullptr);
  // 40 rounds of 6 KB, 50 ms apart: the poller rotates as it goes.
  const std::string script =
      "for r in $(seq 10 49); do seq -w ${r}000 ${r}999; sleep 0.05; done";
  std::string expected;
  for (int r = 10; r <= 49; ++r) expected += Seq(r * 1000, r * 1000 + 999);
  v1::ProcState state;
  REQUIRE(host->Create("rot", 0, Shell(script), &state).ok());
  // A follower from the start while it writes, reading slowly.
  v1::StreamLogsRequest follow;
  follow.add_names("rot");
  follow.set_stream(v1::LOG_STDOUT);
  follow.set_from_offset(0);
  follow.set_follow(true);
  follow.set_max_chunk_bytes(4096);
  Streamed followed = Stream(*host, follow);
  REQUIRE(followed.status.ok());
  uint64_t at = 0;
  uint64_t skipped = 0;
  for (const auto& chunk : followed.chunks) {
    // Monotonic: each chunk starts where the last ended plus what it says
    // it skipped; the bytes are the ones written at those offsets.
    CHECK(chunk.offset() == at + chunk.skipped_bytes());
    skipped += chunk.skipped_bytes();
    CHECK(expected.compare(chunk.offset(), chunk.data().size(), chunk.data()) ==
          0);
    at = chunk.offset() + chunk.data().size();
  }
  CHECK(at == expected.size());
  // After the end, from 0: what is left is the last copy and the file.
  v1::StreamLogsRequest from_zero = follow;
  from_zero.set_follow(false);
  Streamed got = Stream(*host, from_zero);
  REQUIRE(got.status.ok());
  REQUIRE(!got.chunks.empty());
  const uint64_t start = got.chunks[0].skipped_bytes();
  CHECK(start > 0);
  CHECK(got.chunks[0].offset() == start);
  CHECK(got.Data(v1::LOG_STDOUT) == expected.substr(start));
  const LogSpan span = LogSpanOf(host->state_dir() + "/procs/rot/stdout.log");
  CHECK(span.start == start);
  CHECK(span.end == expected.size());
  WARN("rotated away before the end: "
       << span.start << " of " << expected.size()
       << " bytes; the follower skipped " << skipped);
}

TEST_CASE(
    "follow sees new lines as they are written and ends when the proc "
    "ends") {
  auto host = TestHost::Start({"--registration-timeout=60s"});
  REQUIRE(host != nullptr);
  v1::ProcState state;
  REQUIRE(host->Create("talker", 0,
                       Shell("for i in 1 2 3 4 5; do echo line $i; sleep 0.4; "
                             "done; echo bye >&2"),
                       &state)
              .ok());
  v1::StreamLogsRequest request;
  request.add_names("talker");
  request.set_from_spawn(true);
  request.set_follow(true);
  const absl::Time started = absl::Now();
  Streamed got = Stream(*host, request);
  const absl::Time ended = absl::Now();
  CHECK(got.status.ok());
  CHECK(got.Data(v1::LOG_STDOUT) == "line 1\nline 2\nline 3\nline 4\nline 5\n");
  CHECK(got.Data(v1::LOG_STDERR) == "bye\n");
  int eofs = 0;
  for (const auto& chunk : got.chunks) eofs += chunk.eof() ? 1 : 0;
  CHECK(eofs == 2);
  // Live: stdout came as it was written (0.4 s apart), not in one read at
  // the end; generous bounds for busy cores.
  REQUIRE(!got.arrived.empty());
  CHECK(got.arrived.front() - started < absl::Seconds(10));
  int stdout_chunks = 0;
  for (const auto& chunk : got.chunks) {
    if (chunk.stream() == v1::LOG_STDOUT && !chunk.data().empty()) {
      ++stdout_chunks;
    }
  }
  CHECK(stdout_chunks >= 2);
  CHECK(ended > got.arrived.front());
}

TEST_CASE(
    "a client never reads what an earlier owner's proc of the same name "
    "wrote") {
  testing::TempDir dir;
  const std::string tokens = dir.path() + "/tokens";
  const std::string alice_token = "alice-token-0123456789abcdef";
  const std::string bob_token = "bob-token-0123456789abcdef";
  std::ofstream(tokens) << "alice client " << alice_token << "\n"
                        << "bob client " << bob_token << "\n";
  REQUIRE(chmod(tokens.c_str(), 0600) == 0);
  // One finished proc kept: the next one to finish evicts the first.
  auto host =
      TestHost::Start({"--registration-timeout=60s", "--tokens-file=" + tokens,
                       "--max-finished-procs=1"});
  REQUIRE(host != nullptr);
  auto stub_for = [&](const std::string& token) {
    ClientCredentials credentials;
    credentials.token = token;
    return v1::Host::NewStub(NewAuthedChannel(host->address(), credentials));
  };
  auto alice = stub_for(alice_token);
  auto bob = stub_for(bob_token);
  v1::CreateOrUpdateProcRequest create;
  create.set_name("shared");
  *create.mutable_spec() =
      Shell("echo alice-out-secret; echo alice-err-secret >&2");
  v1::ProcState state;
  REQUIRE(alice
              ->CreateOrUpdateProc(testing::Context(absl::Seconds(60)).get(),
                                   create, &state)
              .ok());
  WaitEnded(*host, "shared");
  v1::ProcState other;
  REQUIRE(host->Create("evictor", 0, Shell("true"), &other).ok());
  WaitEnded(*host, "evictor");
  REQUIRE(host->Get("shared", &state).error_code() ==
          grpc::StatusCode::NOT_FOUND);

  create.mutable_spec()->CopyFrom(
      Shell("echo bob-out; echo bob-err >&2; exec sleep 1000"));
  REQUIRE(bob->CreateOrUpdateProc(testing::Context(absl::Seconds(60)).get(),
                                  create, &state)
              .ok());
  auto stream_as = [&](v1::Host::Stub& stub,
                       const v1::StreamLogsRequest& request) {
    auto context = testing::Context(absl::Seconds(60));
    auto reader = stub.StreamLogs(context.get(), request);
    std::string data;
    v1::LogChunk chunk;
    while (reader->Read(&chunk)) data += chunk.data();
    const grpc::Status status = reader->Finish();
    return status.ok() ? data : "error: " + status.error_message();
  };
  v1::StreamLogsRequest from_zero;
  from_zero.add_names("shared");
  from_zero.set_from_offset(0);
  // Until bob's proc wrote both lines.
  std::string got;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  do {
    got = stream_as(*bob, from_zero);
    if (absl::StrContains(got, "bob-err")) break;
    absl::SleepFor(absl::Milliseconds(50));
  } while (absl::Now() < deadline);
  CHECK(got == "bob-out\nbob-err\n");
  v1::StreamLogsRequest tail;
  tail.add_names("shared");
  tail.set_tail_lines(10);
  CHECK(stream_as(*bob, tail) == "bob-out\nbob-err\n");
  v1::StreamLogsRequest since;
  since.add_names("shared");
  since.mutable_since()->set_seconds(0);
  CHECK(stream_as(*bob, since) == "bob-out\nbob-err\n");
  // Every proc bob may see (no names): the same.
  v1::StreamLogsRequest all;
  all.set_from_offset(0);
  CHECK(stream_as(*bob, all) == "bob-out\nbob-err\n");
  // An admin reads the files whole.
  const std::string admin = stream_as(host->stub(), from_zero);
  CHECK_THAT(admin, Catch::Contains("alice-out-secret") &&
                        Catch::Contains("alice-err-secret") &&
                        Catch::Contains("bob-out"));
  v1::ProcState stopped;
  host->Stop("shared", &stopped);
}

TEST_CASE("tail N sends the last N lines of each file") {
  auto host = TestHost::Start({"--registration-timeout=60s"});
  REQUIRE(host != nullptr);
  v1::ProcState state;
  REQUIRE(host->Create("counter", 0, Shell("seq 1 100; echo oops >&2"), &state)
              .ok());
  WaitEnded(*host, "counter");
  v1::StreamLogsRequest request;
  request.add_names("counter");
  request.set_tail_lines(3);
  Streamed got = Stream(*host, request);
  REQUIRE(got.status.ok());
  CHECK(got.Data(v1::LOG_STDOUT) == "98\n99\n100\n");
  CHECK(got.Data(v1::LOG_STDERR) == "oops\n");
  // Only stdout.
  request.set_stream(v1::LOG_STDOUT);
  got = Stream(*host, request);
  CHECK(got.Data(v1::LOG_STDERR).empty());
  // A proc that is not there is NOT_FOUND, by name.
  request.set_names(0, "nobody");
  got = Stream(*host, request);
  CHECK(got.status.error_code() == grpc::StatusCode::NOT_FOUND);
  CHECK_THAT(got.status.error_message(), Catch::Contains("nobody"));
}

TEST_CASE(
    "a stream past the cap is refused, and accepted once a cancel "
    "freed one") {
  auto host =
      TestHost::Start({"--registration-timeout=60s", "--max-log-streams=1"});
  REQUIRE(host != nullptr);
  v1::ProcState state;
  REQUIRE(host->Create("sleeper", 0, Shell("echo hi; exec sleep 1000"), &state)
              .ok());
  v1::StreamLogsRequest follow;
  follow.add_names("sleeper");
  follow.set_follow(true);
  auto holder = testing::Context(absl::Seconds(120));
  auto held = host->stub().StreamLogs(holder.get(), follow);
  v1::LogChunk chunk;
  REQUIRE(held->Read(&chunk));  // The stream is open: "hi".
  CHECK(chunk.data() == "hi\n");
  v1::StreamLogsRequest once;
  once.add_names("sleeper");
  Streamed refused = Stream(*host, once);
  CHECK(refused.status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK_THAT(refused.status.error_message(),
             Catch::Contains("--max-log-streams"));
  holder->TryCancel();
  while (held->Read(&chunk)) {
  }
  CHECK(held->Finish().error_code() == grpc::StatusCode::CANCELLED);
  // The server frees it as it sees the cancel.
  grpc::Status accepted;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  do {
    accepted = Stream(*host, once).status;
    if (!accepted.ok()) absl::SleepFor(absl::Milliseconds(50));
  } while (!accepted.ok() && absl::Now() < deadline);
  CHECK(accepted.ok());
  v1::ProcState stopped;
  host->Stop("sleeper", &stopped);
}

struct Forwarded {
  absl::Mutex mu;
  std::string out;
  std::string err;
  bool Has(v1::LogStream stream, const std::string& text) {
    absl::MutexLock lock(&mu);
    return absl::StrContains(stream == v1::LOG_STDERR ? err : out, text);
  }
};

TEST_CASE(
    "a client forwards its procs' output to the application, each line "
    "prefixed by its proc") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  auto forwarded = std::make_shared<Forwarded>();
  Client::Options options;
  options.credentials = host->credentials();
  options.proc_output_sink = [forwarded](v1::LogStream stream,
                                         absl::string_view text) {
    absl::MutexLock lock(&forwarded->mu);
    absl::StrAppend(
        stream == v1::LOG_STDERR ? &forwarded->err : &forwarded->out, text);
  };
  std::shared_ptr<Client> client = testing::NewClient(options);
  absl::StatusOr<HostMesh> hosts =
      HostMesh::Attach({host->address()}, testing::WithClient(client));
  REQUIRE(hosts.ok());
  // The proc says hello on both streams before procd runs.
  v1::ProcSpec spec =
      Shell(absl::StrCat("echo hello from a proc; echo a warning >&2; "
                         "printf 'no newline at the end'; exec ",
                         BinaryPath("trouble_procd")));
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("fw", 2, spec);
  REQUIRE(procs.ok());
  absl::StatusOr<ActorMesh> talkers = procs->Spawn("t", "test.trouble");
  REQUIRE(talkers.ok());
  test::Say say;
  say.set_text("said while running");
  for (const auto& said : talkers->Call<test::Said>(say)) REQUIRE(said.ok());
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (!(forwarded->Has(v1::LOG_STDERR, "[fw_1] said while running\n") &&
           forwarded->Has(v1::LOG_STDERR, "[fw_0] said while running\n")) &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  CHECK(forwarded->Has(v1::LOG_STDERR, "[fw_0] said while running\n"));
  CHECK(forwarded->Has(v1::LOG_STDERR, "[fw_1] said while running\n"));
  CHECK(forwarded->Has(v1::LOG_STDERR, "[fw_0] a warning\n"));
  CHECK(forwarded->Has(v1::LOG_STDERR, "[fw_1] a warning\n"));
  CHECK(forwarded->Has(v1::LOG_STDOUT, "[fw_0] hello from a proc\n"));
  CHECK(forwarded->Has(v1::LOG_STDOUT, "[fw_1] hello from a proc\n"));
  // A partial last line is held until the proc ends, then shown.
  CHECK_FALSE(forwarded->Has(v1::LOG_STDOUT, "no newline at the end"));
  REQUIRE(procs->Stop().ok());
  REQUIRE(hosts->Shutdown().ok());
  CHECK(forwarded->Has(v1::LOG_STDOUT, "[fw_0] no newline at the end\n"));
  // Nothing on the wrong stream.
  CHECK_FALSE(forwarded->Has(v1::LOG_STDOUT, "a warning"));
  CHECK_FALSE(forwarded->Has(v1::LOG_STDERR, "hello from"));
  absl::MutexLock lock(&forwarded->mu);
  INFO("forwarded stdout:\n"
       << forwarded->out << "\nstderr:\n"
       << forwarded->err);
}

TEST_CASE("forwarding is switched off by the client's options") {
  auto host = TestHost::Start();
  REQUIRE(host != nullptr);
  auto forwarded = std::make_shared<Forwarded>();
  Client::Options options;
  options.credentials = host->credentials();
  options.forward_proc_output = false;
  options.proc_output_sink = [forwarded](v1::LogStream stream,
                                         absl::string_view text) {
    absl::MutexLock lock(&forwarded->mu);
    absl::StrAppend(&forwarded->out, text);
  };
  std::shared_ptr<Client> client = testing::NewClient(options);
  absl::StatusOr<HostMesh> hosts =
      HostMesh::Attach({host->address()}, testing::WithClient(client));
  REQUIRE(hosts.ok());
  v1::ProcSpec spec =
      Shell(absl::StrCat("echo quiet please; exec ", BinaryPath("procd")));
  absl::StatusOr<ProcMesh> procs = hosts->Spawn("off", 1, spec);
  REQUIRE(procs.ok());
  absl::SleepFor(absl::Milliseconds(500));
  REQUIRE(hosts->Shutdown().ok());
  absl::MutexLock lock(&forwarded->mu);
  CHECK(forwarded->out.empty());
}

using Result = testing::MeshctlResult;

// meshctl as the test host's admin (tests/testing/meshctl_run.h).
Result Meshctl(const testing::TestHost& host, std::vector<std::string> args) {
  return testing::RunMeshctlAs(host, std::move(args));
}

TEST_CASE("meshctl logs prints, tails and follows procs' output") {
  auto host = TestHost::Start({"--registration-timeout=60s"});
  REQUIRE(host != nullptr);
  v1::ProcState state;
  REQUIRE(host->Create("w0", 0,
                       Shell("for i in 1 2 3; do echo step $i; sleep 0.3; "
                             "done; echo done >&2"),
                       &state)
              .ok());
  REQUIRE(host->Create("w1", 1, Shell("echo only line"), &state).ok());
  // -f on one proc: raw lines, until it ends.
  Result followed = Meshctl(*host, {"logs", "w0", "-f"});
  CHECK(followed.code == 0);
  CHECK(followed.out == "step 1\nstep 2\nstep 3\n");
  CHECK(followed.err == "done\n");
  // Several: each line prefixed by its proc.
  Result both = Meshctl(*host, {"logs", "w0", "w1", "--stdout"});
  CHECK(both.code == 0);
  CHECK_THAT(both.out, Catch::Contains("[w0] step 3\n") &&
                           Catch::Contains("[w1] only line\n"));
  CHECK(both.err.empty());
  Result tail = Meshctl(*host, {"logs", "w0", "--tail", "1", "--stdout"});
  CHECK(tail.out == "step 3\n");
  Result since = Meshctl(*host, {"logs", "w1", "--since", "10m"});
  CHECK(since.out == "only line\n");
  Result missing = Meshctl(*host, {"logs", "nope"});
  CHECK(missing.code == 1);
  CHECK_THAT(missing.err, Catch::Contains("nope"));
  Result bad = Meshctl(*host, {"logs", "w0", "--since", "yesterday"});
  CHECK(bad.code == 2);
  CHECK_THAT(bad.err, Catch::Contains("--since"));
}

}  // namespace
}  // namespace mesh
