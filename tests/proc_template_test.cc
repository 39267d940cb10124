// Procs forked from hostd's pre-loaded procd (lib/process/process_template.h),
// end to end on a real hostd: they are hostd's own children and come up
// through the usual handshake (which needs the environment hostd gave
// them: the channel's variable exists only there); a killed template is
// started again (procs are exec'd meanwhile); --proc-template=false execs every
// proc; the template ends with hostd.
//
// A fork shows the template's command line (/proc/<pid>/cmdline is set at
// exec): one argument, where an exec'd procd given an argument shows two.
#include <signal.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "lib/process/process_template.h"
#include "lib/process/testing.h"
#include "proto/host.grpc.pb.h"
#include "proto/proc.pb.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using testing::TestHost;

// The template's pid, from hostd's log line saying it started one; 0 if
// there is none.
pid_t TemplatePid(const TestHost& host) {
  const std::string log = host.HostdLog();
  const std::string marker = "forked from a pre-loaded template (pid ";
  const size_t at = log.find(marker);
  if (at == std::string::npos) return 0;
  const size_t start = at + marker.size();
  pid_t pid = 0;
  if (!absl::SimpleAtoi(log.substr(start, log.find(')', start) - start),
                        &pid)) {
    return 0;
  }
  return pid;
}

std::vector<std::string> CommandLine(pid_t pid) {
  const std::string raw =
      testing::ReadFile(absl::StrCat("/proc/", pid, "/cmdline"));
  std::vector<std::string> args = absl::StrSplit(raw, '\0');
  if (!args.empty() && args.back().empty()) args.pop_back();
  return args;
}

pid_t ParentOf(pid_t pid) {
  const std::string status =
      testing::ReadFile(absl::StrCat("/proc/", pid, "/status"));
  const size_t at = status.find("PPid:\t");
  pid_t parent = 0;
  if (at == std::string::npos ||
      !absl::SimpleAtoi(status.substr(at + 6, status.find('\n', at) - at - 6),
                        &parent)) {
    return 0;
  }
  return parent;
}

// Creates `name` running the default procd with one argument; its state
// once RUNNING.
v1::ProcState Running(TestHost& host, const std::string& name) {
  v1::ProcSpec spec;
  spec.add_args("--max-queued-messages=100");
  (*spec.mutable_env())["MESH_TEST_RANK_VALUE"] = name;
  v1::ProcState state;
  grpc::Status created = host.Create(name, 0, spec, &state);
  REQUIRE(created.ok());
  v1::WaitProcsResponse waited = host.Wait({name}, v1::RUNNING);
  REQUIRE(waited.procs_size() == 1);
  REQUIRE(waited.procs(0).status() == v1::RUNNING);
  return waited.procs(0);
}

TEST_CASE(
    "procs of the default procd are forked from hostd's template, are "
    "hostd's children, and the template ends with hostd") {
  auto host = TestHost::Start();
  const pid_t tmpl = TemplatePid(*host);
  REQUIRE(tmpl > 0);
  CHECK(ParentOf(tmpl) == host->pid());
  const int template_pidfd = testing::PidfdOpen(tmpl);
  REQUIRE(template_pidfd >= 0);

  for (const char* name : {"p0", "p1"}) {
    const v1::ProcState state = Running(*host, name);
    CHECK(ParentOf(state.pid()) == host->pid());
    // The template's command line: forked, not exec'd.
    CHECK(CommandLine(state.pid()).size() == 1);
  }
  v1::ProcState stopped;
  REQUIRE(host->Stop("p0", &stopped).ok());
  CHECK(stopped.status() == v1::STOPPED);

  host.reset();
  CHECK(testing::PidfdExited(template_pidfd, absl::Seconds(10)));
  close(template_pidfd);
}

TEST_CASE(
    "when hostd's template is killed, procs still come up, and later ones "
    "are forked from a new template") {
  auto host = TestHost::Start();
  const pid_t tmpl = TemplatePid(*host);
  REQUIRE(tmpl > 0);
  const int template_pidfd = testing::PidfdOpen(tmpl);
  REQUIRE(template_pidfd >= 0);
  REQUIRE(ParentOf(tmpl) == host->pid());
  REQUIRE(kill(tmpl, SIGKILL) == 0);
  REQUIRE(testing::PidfdExited(template_pidfd, absl::Seconds(10)));
  close(template_pidfd);

  // Exec'd, or forked from a template started again (at most once a
  // second): hostd's child either way.
  const v1::ProcState state = Running(*host, "after");
  CHECK(ParentOf(state.pid()) == host->pid());
  absl::SleepFor(ProcessTemplate::kRestartEvery + absl::Milliseconds(100));
  const v1::ProcState later = Running(*host, "later");
  CHECK(ParentOf(later.pid()) == host->pid());
  CHECK(CommandLine(later.pid()).size() == 1);  // forked
}

TEST_CASE("with --proc-template=false every proc is exec'd") {
  auto host = TestHost::Start({"--proc-template=false"});
  CHECK(TemplatePid(*host) == 0);
  const v1::ProcState state = Running(*host, "plain");
  CHECK(CommandLine(state.pid()) ==
        std::vector<std::string>{CommandLine(state.pid()).at(0),
                                 "--max-queued-messages=100"});
}

}  // namespace
}  // namespace mesh
