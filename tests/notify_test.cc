// systemd done right (issue 11), end to end: the test plays systemd's side
// of NOTIFY_SOCKET (a Unix datagram socket it binds in a temp dir) for a
// real hostd started as a plain process (tests/testing/restartable_host.h)
// with NOTIFY_SOCKET, WATCHDOG_USEC=400000 (a keep-alive every 200 ms) and
// WATCHDOG_PID, as a Type=notify unit with WatchdogSec= would start it.
// It checks READY=1 only once hostd serves, WATCHDOG=1 coming while hostd
// is healthy and stopping once its event loop is wedged (a test hook),
// STATUS= with the live proc count, the notify variables kept from procs,
// STOPPING=1 on SIGTERM and on ShutdownHost, and ShutdownHost's exit status
// with and without stay_down.
//
// Bounds are generous (2 busy cores); figures are printed with INFO.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "lib/auth/credentials.h"
#include "lib/testing/collected.h"
#include "lib/testing/temp_dir.h"
#include "proto/host.grpc.pb.h"
#include "tests/testing/restartable_host.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using testing::Context;
using testing::ReadText;
using testing::RestartableHost;
using testing::TempDir;

// One datagram hostd sent, and when it arrived.
struct Message {
  absl::Time at;
  std::string text;
};

bool HasLine(const Message& message, const std::string& line) {
  for (absl::string_view l : absl::StrSplit(message.text, '\n')) {
    if (l == line) return true;
  }
  return false;
}

// The value of the message's `KEY=` line, or "" if none.
std::string LineValue(const Message& message, const std::string& key) {
  for (absl::string_view l : absl::StrSplit(message.text, '\n')) {
    if (absl::ConsumePrefix(&l, key + "=")) return std::string(l);
  }
  return "";
}

// systemd's side of NOTIFY_SOCKET: a datagram socket bound at
// <temp dir>/notify.sock and a thread that keeps what arrives. `on_ready`
// runs on that thread when READY=1 arrives, before the message is kept.
class NotifySocket {
 public:
  explicit NotifySocket(std::function<void()> on_ready = nullptr)
      : path_(dir_.path() + "/notify.sock"), on_ready_(std::move(on_ready)) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    REQUIRE(path_.size() < sizeof(address.sun_path));
    path_.copy(address.sun_path, path_.size());
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) ==
            0);
    // recv wakes up now and then to see whether the test is done.
    timeval timeout{0, 100 * 1000};
    REQUIRE(setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout,
                       sizeof(timeout)) == 0);
    thread_ = std::thread([this] { Read(); });
  }
  ~NotifySocket() {
    done_ = true;
    thread_.join();
    close(fd_);
  }

  const std::string& path() const { return path_; }
  std::vector<Message> messages() { return messages_.items(); }
  // Messages with line `line` (e.g. "WATCHDOG=1").
  std::vector<Message> With(const std::string& line) {
    std::vector<Message> out;
    for (const Message& m : messages()) {
      if (HasLine(m, line)) out.push_back(m);
    }
    return out;
  }
  // Waits until `done` holds for the messages so far; false after
  // `timeout`.
  bool WaitUntil(const std::function<bool(const std::vector<Message>&)>& done,
                 absl::Duration timeout = absl::Seconds(30)) {
    const absl::Time deadline = absl::Now() + timeout;
    while (!done(messages())) {
      if (absl::Now() > deadline) return false;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return true;
  }
  // Waits until `n` messages have line `line`.
  bool WaitForLine(const std::string& line, size_t n = 1,
                   absl::Duration timeout = absl::Seconds(30)) {
    return WaitUntil(
        [&](const std::vector<Message>&) { return With(line).size() >= n; },
        timeout);
  }
  // Every message, one per line, for INFO.
  std::string Transcript() {
    std::vector<std::string> lines;
    for (const Message& m : messages()) {
      lines.push_back(absl::StrCat(
          absl::FormatTime("%H:%M:%E3S", m.at, absl::LocalTimeZone()), " ",
          absl::CEscape(m.text)));
    }
    return absl::StrJoin(lines, "\n");
  }

 private:
  void Read() {
    char buffer[4096];
    while (!done_) {
      ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
      if (n < 0) continue;  // The timeout (or EINTR).
      Message message{absl::Now(), std::string(buffer, static_cast<size_t>(n))};
      if (on_ready_ && HasLine(message, "READY=1")) on_ready_();
      messages_.Add(std::move(message));
    }
  }

  TempDir dir_;
  std::string path_;
  std::function<void()> on_ready_;
  int fd_ = -1;
  std::atomic<bool> done_{false};
  testing::Collected<Message> messages_;
  std::thread thread_;
};

// What GetHostInfo said when READY=1 arrived (set on the socket's thread).
struct AtReady {
  absl::Mutex mu;
  bool called ABSL_GUARDED_BY(mu) = false;
  std::string status ABSL_GUARDED_BY(mu);  // "OK" or the error.
  int pid ABSL_GUARDED_BY(mu) = 0;
};

// Calls GetHostInfo on `address` with the runtime dir's admin token, at
// once (no waiting for the server to come up): what a unit ordered after
// hostd would do once systemd saw READY=1. Only at the first READY=1.
void CallAtReady(const std::string& address, const std::string& runtime_dir,
                 AtReady* at_ready) {
  {
    absl::MutexLock lock(&at_ready->mu);
    if (at_ready->called) return;
  }
  ClientCredentials credentials;
  credentials.token = std::string(
      absl::StripAsciiWhitespace(ReadText(runtime_dir + "/admin.token")));
  auto stub = v1::Host::NewStub(NewAuthedChannel(address, credentials));
  v1::HostInfo info;
  grpc::Status status = stub->GetHostInfo(Context(absl::Seconds(10)).get(),
                                          v1::GetHostInfoRequest(), &info);
  absl::MutexLock lock(&at_ready->mu);
  at_ready->called = true;
  at_ready->status = status.ok() ? "OK"
                                 : absl::StrCat(status.error_code(), " ",
                                                status.error_message());
  at_ready->pid = info.pid();
}

// WATCHDOG_USEC for every hostd here: a keep-alive every 200 ms.
constexpr char kWatchdogUsec[] = "400000";

RestartableHost::Options NotifyOptions(const NotifySocket& notify) {
  RestartableHost::Options options;
  options.cgroup = false;
  options.env["NOTIFY_SOCKET"] = notify.path();
  options.env["WATCHDOG_USEC"] = kWatchdogUsec;
  options.watchdog_pid = true;
  return options;
}

TEST_CASE(
    "hostd sends READY once it serves, WATCHDOG every half interval, STATUS "
    "with its live procs, keeps the notify variables from them, and STOPPING "
    "on SIGTERM") {
  AtReady at_ready;
  std::string address;
  std::string runtime_dir;
  NotifySocket notify([&] { CallAtReady(address, runtime_dir, &at_ready); });
  RestartableHost::Options options = NotifyOptions(notify);
  // Variables of systemd's socket activation, and one that must reach the
  // procs (so the environ read below is the right one).
  options.env["LISTEN_PID"] = "1";
  options.env["LISTEN_FDS"] = "1";
  options.env["LISTEN_FDNAMES"] = "hostd";
  options.env["HOSTMESH_NOTIFY_TEST"] = "kept";
  auto host = RestartableHost::Create(options);
  address = host->address();
  runtime_dir = host->runtime_dir();
  REQUIRE(host->Start().ok());

  const bool ready_arrived = notify.WaitForLine("READY=1");
  INFO("hostd log:\n" << host->HostdLog());
  REQUIRE(ready_arrived);
  {
    absl::MutexLock lock(&at_ready.mu);
    CHECK(at_ready.called);
    CHECK(at_ready.status == "OK");
    CHECK(at_ready.pid == host->pid());
  }
  const Message ready = notify.With("READY=1").front();
  CHECK(absl::StartsWith(LineValue(ready, "STATUS"), "0 live procs (max "));
  CHECK(notify.With("READY=1").size() == 1);

  // Keep-alives: several, paced at about half the interval (not flooded).
  const bool kept_alive =
      notify.WaitForLine("WATCHDOG=1", 6, absl::Seconds(20));
  INFO("notify socket:\n" << notify.Transcript());
  REQUIRE(kept_alive);
  std::vector<Message> keepalives = notify.With("WATCHDOG=1");
  const absl::Duration mean_gap =
      (keepalives.back().at - keepalives.front().at) /
      static_cast<int>(keepalives.size() - 1);
  INFO("mean gap between WATCHDOG=1: " << absl::FormatDuration(mean_gap));
  CHECK(mean_gap >= absl::Milliseconds(150));
  CHECK(keepalives.front().at >= ready.at);

  // A proc: STATUS= counts it; its environment has none of systemd's
  // variables meant for hostd.
  v1::ProcState state;
  REQUIRE(host->Create("p_0", 0, v1::ProcSpec(), &state).ok());
  v1::WaitProcsResponse running = host->Wait({"p_0"}, v1::RUNNING);
  REQUIRE_FALSE(running.timed_out());
  const pid_t proc_pid = running.procs(0).pid();
  const bool status_counted = notify.WaitUntil(
      [](const std::vector<Message>& messages) {
        for (const Message& m : messages) {
          if (absl::StartsWith(LineValue(m, "STATUS"), "1 live proc (max ")) {
            return true;
          }
        }
        return false;
      },
      absl::Seconds(20));
  {
    INFO("notify socket:\n" << notify.Transcript());
    CHECK(status_counted);
  }
  std::string environ_text =
      ReadText(absl::StrCat("/proc/", proc_pid, "/environ"));
  std::vector<std::string> environ =
      absl::StrSplit(environ_text, '\0', absl::SkipEmpty());
  INFO("proc environment:\n" << absl::StrJoin(environ, "\n"));
  REQUIRE_FALSE(environ.empty());
  CHECK(std::find(environ.begin(), environ.end(),
                  "HOSTMESH_NOTIFY_TEST=kept") != environ.end());
  for (const std::string variable :
       {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID",
        "LISTEN_FDS", "LISTEN_FDNAMES"}) {
    INFO(variable);
    CHECK(std::none_of(environ.begin(), environ.end(),
                       [&](const std::string& entry) {
                         return absl::StartsWith(entry, variable + "=");
                       }));
  }

  // SIGTERM (systemctl stop): STOPPING=1, every proc stopped, exit 0.
  REQUIRE(host->Signal(SIGTERM).ok());
  const bool stopping_arrived = notify.WaitForLine("STOPPING=1");
  absl::StatusOr<ExitInfo> exit = host->WaitExit(absl::Seconds(60));
  INFO("notify socket:\n" << notify.Transcript());
  REQUIRE(stopping_arrived);
  REQUIRE(exit.ok());
  CHECK(exit->exit_code == std::optional<int>(0));
  const Message stopping = notify.With("STOPPING=1").front();
  CHECK(absl::StrContains(LineValue(stopping, "STATUS"), "SIGTERM"));
}

TEST_CASE(
    "a wedged event loop stops the WATCHDOG keep-alives while hostd lives "
    "on") {
  NotifySocket notify;
  auto host = RestartableHost::Create(NotifyOptions(notify));
  REQUIRE(host->Start({"--test-wedge-loop-after=1s"}).ok());
  REQUIRE(notify.WaitForLine("READY=1"));
  // Healthy first.
  CHECK(notify.WaitForLine("WATCHDOG=1", 2, absl::Seconds(20)));
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (!absl::StrContains(host->HostdLog(), "wedged for good") &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  INFO("hostd log:\n" << host->HostdLog());
  REQUIRE(absl::StrContains(host->HostdLog(), "wedged for good"));
  // A round whose loop check ran just before the wedge may still pass once.
  absl::SleepFor(absl::Milliseconds(1500));
  const size_t before = notify.With("WATCHDOG=1").size();
  // 15 keep-alive periods of silence: systemd (WatchdogSec=400ms) would
  // have killed hostd long ago.
  absl::SleepFor(absl::Seconds(3));
  INFO("notify socket:\n" << notify.Transcript());
  CHECK(notify.With("WATCHDOG=1").size() == before);
  CHECK(host->running());
  CHECK(absl::StrContains(host->HostdLog(),
                          "withholding WATCHDOG=1: the proc manager's event "
                          "loop has not answered"));
  // ShutdownHost would wait on the wedged loop: end it as systemd would.
  REQUIRE(host->Kill9().ok());
}

TEST_CASE(
    "a remote ShutdownHost exits 75 for the unit to restart hostd and 0 when "
    "asked to stay down; WATCHDOG_PID of another process means no "
    "keep-alives") {
  NotifySocket notify;
  RestartableHost::Options options = NotifyOptions(notify);
  options.watchdog_pid = false;
  options.env["WATCHDOG_PID"] = "1";
  auto host = RestartableHost::Create(options);

  for (bool stay_down : {false, true}) {
    INFO("stay_down " << stay_down);
    const size_t stopping = notify.With("STOPPING=1").size();
    REQUIRE(host->Start().ok());
    REQUIRE(notify.WaitForLine("READY=1", stopping + 1));
    // Long enough for several keep-alives had they been due.
    absl::SleepFor(absl::Seconds(1));
    v1::ShutdownHostRequest request;
    request.set_reason("notify test");
    request.set_grace_ms(500);
    request.set_stay_down(stay_down);
    v1::ShutdownHostResponse response;
    REQUIRE(
        host->stub()
            .ShutdownHost(Context(absl::Seconds(30)).get(), request, &response)
            .ok());
    CHECK(notify.WaitForLine("STOPPING=1", stopping + 1));
    absl::StatusOr<ExitInfo> exit = host->WaitExit(absl::Seconds(30));
    REQUIRE(exit.ok());
    CHECK(exit->exit_code.value_or(-1) == (stay_down ? 0 : 75));
  }
  INFO("notify socket:\n" << notify.Transcript());
  CHECK(notify.With("WATCHDOG=1").empty());
}

}  // namespace
}  // namespace mesh
