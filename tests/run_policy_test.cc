// What a caller may run on a host, and as whom, end to end on real hostds:
// allow rules for commands and env, procs under another uid, private logs,
// and a hostd its procs cannot read. Tests that need root and the user
// `nobody` skip outside CI (with the reason) and fail under CI=true.
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "catch2/catch.hpp"
#include "lib/auth/credentials.h"
#include "lib/launcher/launcher.h"
#include "lib/testing/skip.h"
#include "lib/testing/temp_dir.h"
#include "proto/host.grpc.pb.h"
#include "tests/testing/test_host.h"

namespace mesh {
namespace {

using testing::Shell;
using testing::TestHost;

constexpr char kSetpriv[] = "/usr/bin/setpriv";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& text, mode_t mode) {
  std::ofstream(path) << text;
  REQUIRE(chmod(path.c_str(), mode) == 0);
}

mode_t ModeOf(const std::string& path) {
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

// Live processes whose parent is `pid`.
std::vector<pid_t> ChildrenOf(pid_t pid) {
  std::vector<pid_t> children;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return children;
  while (struct dirent* entry = readdir(proc)) {
    int child = 0;
    if (!absl::SimpleAtoi(entry->d_name, &child)) continue;
    std::string stat = ReadFile(absl::StrCat("/proc/", child, "/stat"));
    // pid (comm) state ppid ...: comm may hold spaces, so parse after ')'.
    size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::vector<std::string> fields =
        absl::StrSplit(stat.substr(close + 2), ' ');
    int ppid = 0;
    if (fields.size() > 1 && fields[0] != "Z" &&
        absl::SimpleAtoi(fields[1], &ppid) && ppid == pid) {
      children.push_back(child);
    }
  }
  closedir(proc);
  return children;
}

// The "Uid:" line's real uid of a live process, or -1.
long UidOf(pid_t pid) {
  std::istringstream status(ReadFile(absl::StrCat("/proc/", pid, "/status")));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Uid:", 0) != 0) continue;
    std::vector<std::string> fields =
        absl::StrSplit(line.substr(4), '\t', absl::SkipWhitespace());
    long uid = -1;
    if (!fields.empty() && absl::SimpleAtoi(fields[0], &uid)) return uid;
  }
  return -1;
}

struct Nobody {
  uid_t uid = 0;
  gid_t gid = 0;
};

// Why this test cannot run here (root, the user nobody, setpriv), or "".
std::string MissingForOtherUid(Nobody* nobody) {
  if (geteuid() != 0) return "needs root (to start hostd with --proc-user)";
  struct passwd* pw = getpwnam("nobody");
  if (pw == nullptr) return "needs the user nobody";
  if (access(kSetpriv, X_OK) != 0) return "needs /usr/bin/setpriv";
  nobody->uid = pw->pw_uid;
  nobody->gid = pw->pw_gid;
  return "";
}

// Runs `command` as nobody (and nobody's primary group only).
ExitInfo AsNobody(const Nobody& nobody, std::vector<std::string> command) {
  SpawnOptions spawn;
  spawn.path = kSetpriv;
  spawn.args = {absl::StrCat("--reuid=", nobody.uid),
                absl::StrCat("--regid=", nobody.gid), "--clear-groups", "--"};
  spawn.args.insert(spawn.args.end(), command.begin(), command.end());
  return testing::RunToExit(spawn);
}

// A TempDir every user may traverse (not list), so what is inside is
// protected only by its own modes.
struct OpenTempDir {
  testing::TempDir temp;
  std::string path = temp.path();
  OpenTempDir() { REQUIRE(chmod(path.c_str(), 0711) == 0); }
};

// The directory holding a TestHost's state dir, opened up likewise.
std::string OpenHostDir(TestHost& host) {
  std::string dir =
      std::filesystem::path(host.state_dir()).parent_path().string();
  REQUIRE(chmod(dir.c_str(), 0711) == 0);
  return dir;
}

v1::ProcState WaitTerminal(TestHost& host, const std::string& name) {
  v1::WaitProcsResponse waited = host.Wait({name}, v1::STOPPED);
  REQUIRE_FALSE(waited.timed_out());
  REQUIRE(waited.procs_size() == 1);
  return waited.procs(0);
}

TEST_CASE(
    "a command outside the allow rules is PERMISSION_DENIED naming the rule, "
    "and nothing is spawned: no process, no state, no log dir") {
  auto host = TestHost::Start({}, /*allow_any_command=*/false);
  REQUIRE(host != nullptr);
  // hostd's proc template (a procd waiting to fork procs), no proc.
  const std::vector<pid_t> idle = ChildrenOf(host->pid());
  CHECK(idle.size() == 1);
  v1::ProcState state;
  grpc::Status status =
      host->Create("p", 0, Shell("touch /tmp/should-not-exist"), &state);
  REQUIRE(status.error_code() == grpc::StatusCode::PERMISSION_DENIED);
  INFO(status.error_message());
  CHECK_THAT(status.error_message(),
             Catch::StartsWith("command \"/bin/sh\"") &&
                 Catch::Contains("is not allowed: hostd runs only "
                                 "--allow-command entries (") &&
                 Catch::Contains("procd"));
  CHECK(host->Get("p", &state).error_code() == grpc::StatusCode::NOT_FOUND);
  CHECK(ChildrenOf(host->pid()) == idle);
  CHECK_FALSE(std::filesystem::exists(host->state_dir() + "/procs/p"));
  // The default procd is allowed without any rule.
  REQUIRE(host->Create("ok", 0, {}, &state).ok());
  CHECK(host->Wait({"ok"}, v1::RUNNING).procs(0).status() == v1::RUNNING);
}

TEST_CASE(
    "a file under an allowed directory runs by its resolved path; a symlink "
    "out of it or a .. does not") {
  OpenTempDir tools;
  const std::string bin = tools.path + "/bin";
  REQUIRE(mkdir(bin.c_str(), 0755) == 0);
  WriteFile(bin + "/tool", "#!/bin/sh\necho tool-ran \"$0\"\n", 0755);
  REQUIRE(symlink("/bin/sh", (bin + "/shell").c_str()) == 0);
  REQUIRE(symlink((bin + "/tool").c_str(), (tools.path + "/alias").c_str()) ==
          0);
  auto host = TestHost::Start({"--allow-command=" + bin + "/"}, false);
  REQUIRE(host != nullptr);

  v1::ProcState state;
  v1::ProcSpec tool;
  tool.set_command(bin + "/tool");
  REQUIRE(host->Create("tool", 0, tool, &state).ok());
  v1::ProcState done = WaitTerminal(*host, "tool");
  CHECK(done.status() == v1::STOPPED);
  CHECK(ReadFile(done.log_dir() + "/stdout.log") ==
        absl::StrCat("tool-ran ", bin, "/tool\n"));

  // A name outside that resolves inside runs the resolved file.
  v1::ProcSpec alias;
  alias.set_command(tools.path + "/alias");
  REQUIRE(host->Create("alias", 0, alias, &state).ok());
  done = WaitTerminal(*host, "alias");
  CHECK(ReadFile(done.log_dir() + "/stdout.log") ==
        absl::StrCat("tool-ran ", bin, "/tool\n"));

  for (const std::string& escape :
       {bin + "/shell", bin + "/../bin/../../x", bin + "/../../../bin/sh"}) {
    INFO(escape);
    v1::ProcSpec spec;
    spec.set_command(escape);
    grpc::Status status = host->Create("escape", 0, spec, &state);
    CHECK(status.error_code() == grpc::StatusCode::PERMISSION_DENIED);
    CHECK_THAT(status.error_message(), Catch::Contains(bin + "/"));
  }
  grpc::Status missing = host->Create(
      "missing", 0,
      [&] {
        v1::ProcSpec spec;
        spec.set_command(bin + "/missing");
        return spec;
      }(),
      &state);
  CHECK(missing.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK_FALSE(std::filesystem::exists(host->state_dir() + "/procs/escape"));
  CHECK_FALSE(std::filesystem::exists(host->state_dir() + "/procs/missing"));
}

TEST_CASE(
    "LD_PRELOAD and hostd's own variables are refused unless --allow-env "
    "names them") {
  v1::ProcSpec spec = Shell("echo \"preload=$LD_PRELOAD\"");
  (*spec.mutable_env())["LD_PRELOAD"] = "/nonexistent-hostmesh.so";
  (*spec.mutable_env())["RANK"] = "3";
  v1::ProcState state;
  {
    auto strict = TestHost::Start({"--allow-command=/bin/sh"}, false);
    REQUIRE(strict != nullptr);
    const std::vector<pid_t> idle = ChildrenOf(strict->pid());
    grpc::Status status = strict->Create("p", 0, spec, &state);
    REQUIRE(status.error_code() == grpc::StatusCode::PERMISSION_DENIED);
    CHECK_THAT(status.error_message(),
               Catch::Contains("spec.env sets \"LD_PRELOAD\"") &&
                   Catch::Contains("--allow-env LD_PRELOAD"));
    v1::ProcSpec own = Shell("true");
    (*own.mutable_env())["HOSTMESH_PARENT_FD"] = "3";
    CHECK(strict->Create("own", 0, own, &state).error_code() ==
          grpc::StatusCode::PERMISSION_DENIED);
    CHECK(ChildrenOf(strict->pid()) == idle);
    // Harmless variables pass.
    v1::ProcSpec rank = Shell("echo rank=$RANK");
    (*rank.mutable_env())["RANK"] = "3";
    REQUIRE(strict->Create("rank", 0, rank, &state).ok());
    v1::ProcState done = WaitTerminal(*strict, "rank");
    CHECK(ReadFile(done.log_dir() + "/stdout.log") == "rank=3\n");
  }
  auto relaxed = TestHost::Start(
      {"--allow-command=/bin/sh", "--allow-env=LD_PRELOAD"}, false);
  REQUIRE(relaxed != nullptr);
  REQUIRE(relaxed->Create("p", 0, spec, &state).ok());
  v1::ProcState done = WaitTerminal(*relaxed, "p");
  CHECK(ReadFile(done.log_dir() + "/stdout.log") ==
        "preload=/nonexistent-hostmesh.so\n");
}

TEST_CASE(
    "proc logs are hostd's user's alone (another uid cannot read them); "
    "with --operators-group that group reads them too") {
  Nobody nobody;
  std::string missing = MissingForOtherUid(&nobody);
  if (!missing.empty()) HOSTMESH_SKIP(missing);
  struct group* nobody_group = getgrgid(nobody.gid);
  REQUIRE(nobody_group != nullptr);
  const std::string group_name = nobody_group->gr_name;
  for (bool operators : {false, true}) {
    INFO("--operators-group " << (operators ? group_name : "unset"));
    std::vector<std::string> args;
    if (operators) {
      // nobody's primary group stands for the operators here.
      args.push_back("--operators-group=" + group_name);
    }
    auto host = TestHost::Start(args);
    REQUIRE(host != nullptr);
    const std::string dir = OpenHostDir(*host);
    // What stands between nobody and the logs is only hostd's modes: a
    // world-readable file beside the state dir is readable.
    const std::string control = dir + "/control";
    WriteFile(control, "control-text\n", 0644);
    ExitInfo read_control = AsNobody(nobody, {"/bin/cat", control});
    REQUIRE(read_control.exit_code == std::optional<int>(0));

    v1::ProcState state;
    REQUIRE(host->Create("p", 0, Shell("echo secret-output; echo secret >&2"),
                         &state)
                .ok());
    v1::ProcState done = WaitTerminal(*host, "p");
    const std::string log = done.log_dir() + "/stdout.log";
    REQUIRE(ReadFile(log) == "secret-output\n");
    CHECK(ModeOf(host->state_dir()) == (operators ? 0750 : 0700));
    CHECK(ModeOf(host->state_dir() + "/procs") == (operators ? 0750 : 0700));
    CHECK(ModeOf(done.log_dir()) == (operators ? 0750 : 0700));
    struct stat st;
    REQUIRE(stat(log.c_str(), &st) == 0);
    CHECK(st.st_gid == (operators ? nobody.gid : getegid()));
    CHECK(ModeOf(log) == (operators ? 0640 : 0600));
    CHECK(ModeOf(done.log_dir() + "/stderr.log") == (operators ? 0640 : 0600));
    ExitInfo read_log = AsNobody(nobody, {"/bin/cat", log});
    if (operators) {
      CHECK(read_log.exit_code == std::optional<int>(0));
    } else {
      CHECK(read_log.exit_code != std::optional<int>(0));
      CHECK_THAT(read_log.stderr_tail, Catch::Contains("Permission denied"));
    }
    // The runtime dir stays private either way.
    CHECK(ModeOf(host->runtime_dir()) == 0700);
  }
}

TEST_CASE(
    "with --proc-user nobody a proc runs as nobody with no capabilities, "
    "cannot read hostd's 0600 tokens file or its environ, and hostd still "
    "stops it") {
  Nobody nobody;
  std::string missing = MissingForOtherUid(&nobody);
  if (!missing.empty()) HOSTMESH_SKIP(missing);
  OpenTempDir files;
  const std::string tokens = files.path + "/tokens";
  WriteFile(tokens, "alice client alice-secret-token-0123456789abcdef\n", 0600);
  const std::string control = files.path + "/control";
  WriteFile(control, "control-text\n", 0644);
  auto host = TestHost::Start({"--proc-user=nobody", "--tokens-file=" + tokens,
                               "--allow-command=/bin/sh"},
                              false);
  REQUIRE(host != nullptr);
  const std::string script = absl::StrCat(
      "echo uid=$(id -u) gid=$(id -g) groups=$(id -G) user=$USER home=$HOME; "
      "grep -E '^(Cap(Inh|Prm|Eff|Amb)|NoNewPrivs):' /proc/self/status; "
      "cat ",
      control, "; cat ", tokens, "; cat /proc/", host->pid(),
      "/environ; cat /proc/", host->pid(),
      "/mem; echo checked; exec sleep 600");
  v1::ProcState state;
  REQUIRE(host->Create("p", 0, Shell(script), &state).ok());
  // The shell prints, then sleeps (it never registers).
  std::string out;
  for (int i = 0; i < 200 && out.find("checked") == std::string::npos; ++i) {
    usleep(50 * 1000);
    out = ReadFile(state.log_dir() + "/stdout.log");
  }
  REQUIRE_THAT(out, Catch::Contains("checked"));
  INFO(out);
  CHECK(UidOf(state.pid()) == static_cast<long>(nobody.uid));
  CHECK_THAT(out, Catch::Contains(
                      absl::StrCat("uid=", nobody.uid, " gid=", nobody.gid,
                                   " groups=", nobody.gid, " user=nobody")));
  for (const char* caps :
       {"CapInh:\t0000000000000000", "CapPrm:\t0000000000000000",
        "CapEff:\t0000000000000000", "CapAmb:\t0000000000000000",
        "NoNewPrivs:\t1"}) {
    CHECK_THAT(out, Catch::Contains(caps));
  }
  CHECK_THAT(out, Catch::Contains("control-text"));
  CHECK_THAT(out, !Catch::Contains("alice-secret-token"));
  std::string err = ReadFile(state.log_dir() + "/stderr.log");
  INFO(err);
  CHECK_THAT(err, Catch::Contains(tokens + ": Permission denied"));
  CHECK_THAT(err, Catch::Contains(absl::StrCat("/proc/", host->pid(),
                                               "/environ: Permission denied")));
  CHECK_THAT(err, Catch::Contains(absl::StrCat("/proc/", host->pid(),
                                               "/mem: Permission denied")));
  // The logs stay hostd's, not the proc user's.
  struct stat st;
  REQUIRE(stat((state.log_dir() + "/stdout.log").c_str(), &st) == 0);
  CHECK(st.st_uid == geteuid());
  CHECK((st.st_mode & 07777) == 0600);
  // hostd signals a proc of another uid.
  v1::ProcState stopped;
  REQUIRE(host->Stop("p", &stopped).ok());
  CHECK(stopped.status() == v1::STOPPED);
  CHECK(stopped.stopped_by() == "SIGTERM");
}

TEST_CASE(
    "a procd under --proc-user registers over its inherited channel and runs "
    "as that user") {
  Nobody nobody;
  std::string missing = MissingForOtherUid(&nobody);
  if (!missing.empty()) HOSTMESH_SKIP(missing);
  // Bazel's output tree is not nobody's to read: a copy it may run.
  OpenTempDir files;
  const std::string bin = files.path + "/bin";
  REQUIRE(mkdir(bin.c_str(), 0755) == 0);
  std::filesystem::copy_file(testing::BinaryPath("procd"), bin + "/procd");
  REQUIRE(chmod((bin + "/procd").c_str(), 0755) == 0);
  auto host = TestHost::Start(
      {"--proc-user=nobody", "--allow-command=" + bin + "/"}, false);
  REQUIRE(host != nullptr);
  v1::ProcSpec spec;
  spec.set_command(bin + "/procd");
  v1::ProcState state;
  REQUIRE(host->Create("p", 0, spec, &state).ok());
  v1::WaitProcsResponse waited = host->Wait({"p"}, v1::RUNNING);
  REQUIRE(waited.procs_size() == 1);
  INFO(waited.procs(0).DebugString());
  REQUIRE(waited.procs(0).status() == v1::RUNNING);
  CHECK(UidOf(waited.procs(0).pid()) == static_cast<long>(nobody.uid));
  v1::ProcState stopped;
  REQUIRE(host->Stop("p", &stopped).ok());
  CHECK(stopped.status() == v1::STOPPED);
  CHECK(stopped.stopped_by() == "exited");
}

// A hostd running as nobody (through setpriv with `setpriv_args`, e.g.
// ambient capabilities), from copies of hostd and procd nobody may run, with
// state and runtime dirs nobody owns; the test is its parent (admin token).
// Shut down and reaped when it goes.
struct NobodyHost {
  NobodyHost(const Nobody& nobody, std::vector<std::string> setpriv_args,
             std::vector<std::string> hostd_args) {
    REQUIRE(mkdir(bin.c_str(), 0755) == 0);
    for (const char* name : {"hostd", "procd"}) {
      std::string copy = absl::StrCat(bin, "/", name);
      std::filesystem::copy_file(testing::BinaryPath(name), copy);
      REQUIRE(chmod(copy.c_str(), 0755) == 0);
    }
    for (const std::string& dir : {state, run}) {
      REQUIRE(mkdir(dir.c_str(), 0700) == 0);
      REQUIRE(chown(dir.c_str(), nobody.uid, nobody.gid) == 0);
    }
    Launcher::Options options;
    options.log_root = files.path + "/logs";
    absl::StatusOr<std::unique_ptr<Launcher>> created =
        Launcher::Create(options);
    REQUIRE(created.ok());
    launcher = *std::move(created);
    SpawnOptions spawn;
    spawn.path = kSetpriv;
    spawn.args = {absl::StrCat("--reuid=", nobody.uid),
                  absl::StrCat("--regid=", nobody.gid), "--clear-groups"};
    spawn.args.insert(spawn.args.end(), setpriv_args.begin(),
                      setpriv_args.end());
    for (const std::string& arg :
         {std::string("--"), bin + "/hostd",
          std::string("--listen=127.0.0.1:0"), "--state-dir=" + state,
          "--runtime-dir=" + run, "--procd=" + bin + "/procd",
          std::string("--allow-command=/bin/sh")}) {
      spawn.args.push_back(arg);
    }
    spawn.args.insert(spawn.args.end(), hostd_args.begin(), hostd_args.end());
    absl::StatusOr<Launcher::Child> hostd =
        launcher->Launch("hostd", 0, spawn, absl::Seconds(30));
    REQUIRE(hostd.ok());
    pid = hostd->pid;
    CHECK(UidOf(pid) == static_cast<long>(nobody.uid));
    ClientCredentials credentials;
    credentials.token = launcher->admin_token();
    stub = v1::Host::NewStub(NewAuthedChannel(hostd->address, credentials));
  }
  ~NobodyHost() {
    v1::ShutdownHostRequest shutdown;
    shutdown.set_grace_ms(1000);
    v1::ShutdownHostResponse response;
    stub->ShutdownHost(testing::Context().get(), shutdown, &response);
    launcher->StopAll(absl::Seconds(5));
  }
  OpenTempDir files;
  std::string bin = files.path + "/bin";
  std::string state = files.path + "/state";
  std::string run = files.path + "/run";
  std::unique_ptr<Launcher> launcher;
  pid_t pid = 0;
  std::unique_ptr<v1::Host::Stub> stub;
};

// Runs `script` as a proc of `stub`'s host and returns its stdout and
// stderr once it ended.
std::string RunScript(v1::Host::Stub& stub, const std::string& name,
                      const std::string& script) {
  v1::CreateOrUpdateProcRequest create;
  create.set_name(name);
  *create.mutable_spec() = Shell(script);
  v1::ProcState state;
  grpc::Status created =
      stub.CreateOrUpdateProc(testing::Context().get(), create, &state);
  REQUIRE(created.ok());
  v1::WaitProcsRequest wait;
  wait.add_names(name);
  wait.set_min_status(v1::STOPPED);
  wait.set_timeout_ms(30000);
  v1::WaitProcsResponse waited;
  REQUIRE(
      stub.WaitProcs(testing::Context(absl::Seconds(40)).get(), wait, &waited)
          .ok());
  REQUIRE(waited.procs_size() == 1);
  return ReadFile(state.log_dir() + "/stdout.log") + "\n" +
         ReadFile(state.log_dir() + "/stderr.log");
}

// What a proc of hostd's own uid and capabilities (none) sees: it reads
// another such process's environ (the control), not hostd's.
void CheckHostdUnreadable(v1::Host::Stub& stub, pid_t hostd) {
  const std::string script = absl::StrCat(
      "sleep 30 & control=$!; ",
      "cat /proc/$control/environ >/dev/null && echo control-readable; ",
      "true </proc/$control/mem && echo control-mem-opened; ",
      "kill $control; ", "cat /proc/", hostd,
      "/environ >/dev/null && echo hostd-readable; ", "true </proc/", hostd,
      "/mem && echo hostd-mem-opened; ", "echo done");
  std::string out = RunScript(stub, "peek", script);
  INFO(out);
  REQUIRE_THAT(out, Catch::Contains("done"));
  CHECK_THAT(out, Catch::Contains("control-readable"));
  CHECK_THAT(out, Catch::Contains("control-mem-opened"));
  CHECK_THAT(out, !Catch::Contains("hostd-readable"));
  CHECK_THAT(out, !Catch::Contains("hostd-mem-opened"));
}

TEST_CASE(
    "hostd is non-dumpable: a proc of its own uid cannot read its environ "
    "or memory, though it reads another process of that uid") {
  if (geteuid() != 0) {
    // hostd, its procs and this test share one unprivileged uid.
    auto host = TestHost::Start();
    REQUIRE(host != nullptr);
    CheckHostdUnreadable(host->stub(), host->pid());
    return;
  }
  // As root, a proc would override non-dumpable with CAP_SYS_PTRACE: run
  // hostd itself as nobody.
  Nobody nobody;
  std::string missing = MissingForOtherUid(&nobody);
  if (!missing.empty()) HOSTMESH_SKIP(missing);
  NobodyHost host(nobody, {}, {});
  CheckHostdUnreadable(*host.stub, host.pid);
}

TEST_CASE(
    "a hostd set up like the systemd unit (an unprivileged user with ambient "
    "CAP_SETUID, CAP_SETGID, CAP_KILL and no_new_privs) runs procs as "
    "--proc-user with no capabilities, and stops them") {
  Nobody nobody;
  std::string missing = MissingForOtherUid(&nobody);
  if (!missing.empty()) HOSTMESH_SKIP(missing);
  struct passwd* daemon = getpwnam("daemon");
  if (daemon == nullptr) HOSTMESH_SKIP("needs the user daemon (procs' user)");
  const uid_t daemon_uid = daemon->pw_uid;
  NobodyHost host(nobody,
                  {"--no-new-privs", "--inh-caps=+setuid,+setgid,+kill",
                   "--ambient-caps=+setuid,+setgid,+kill"},
                  {"--proc-user=daemon"});
  v1::CreateOrUpdateProcRequest create;
  create.set_name("p");
  *create.mutable_spec() = Shell(
      "id -u; grep -E '^Cap(Inh|Prm|Eff|Amb):' /proc/self/status; echo "
      "checked; exec sleep 600");
  v1::ProcState state;
  REQUIRE(
      host.stub->CreateOrUpdateProc(testing::Context().get(), create, &state)
          .ok());
  std::string out;
  for (int i = 0; i < 200 && out.find("checked") == std::string::npos; ++i) {
    usleep(50 * 1000);
    out = ReadFile(state.log_dir() + "/stdout.log");
  }
  INFO(out);
  REQUIRE_THAT(out, Catch::Contains("checked"));
  CHECK(UidOf(state.pid()) == static_cast<long>(daemon_uid));
  CHECK_THAT(out, Catch::StartsWith(absl::StrCat(daemon_uid, "\n")));
  for (const char* caps :
       {"CapInh:\t0000000000000000", "CapPrm:\t0000000000000000",
        "CapEff:\t0000000000000000", "CapAmb:\t0000000000000000"}) {
    CHECK_THAT(out, Catch::Contains(caps));
  }
  // The logs are hostd's user's (nobody here), not the proc user's.
  struct stat st;
  REQUIRE(stat((state.log_dir() + "/stdout.log").c_str(), &st) == 0);
  CHECK(st.st_uid == nobody.uid);
  v1::StopProcRequest stop;
  stop.set_name("p");
  stop.set_grace_ms(2000);
  v1::ProcState stopped;
  REQUIRE(
      host.stub
          ->StopProc(testing::Context(absl::Seconds(30)).get(), stop, &stopped)
          .ok());
  CHECK(stopped.status() == v1::STOPPED);
  CHECK(stopped.stopped_by() == "SIGTERM");
  // Without those capabilities hostd refuses --proc-user at start.
  OpenTempDir dir;
  for (const char* sub : {"/state", "/run"}) {
    REQUIRE(mkdir((dir.path + sub).c_str(), 0700) == 0);
    REQUIRE(chown((dir.path + sub).c_str(), nobody.uid, nobody.gid) == 0);
  }
  ExitInfo refused = AsNobody(
      nobody, {host.bin + "/hostd", "--listen=127.0.0.1:0",
               "--state-dir=" + dir.path + "/state",
               "--runtime-dir=" + dir.path + "/run", "--proc-user=daemon"});
  CHECK(refused.exit_code == std::optional<int>(2));
  CHECK_THAT(refused.stderr_tail,
             Catch::Contains("missing CAP_SETUID CAP_SETGID CAP_KILL") &&
                 Catch::Contains("AmbientCapabilities="));
}

TEST_CASE("bad run-policy flags stop hostd at start with exit 2, naming them") {
  testing::TempDir dir;
  std::vector<std::string> base = {"--listen=127.0.0.1:0",
                                   "--state-dir=" + dir.path() + "/state",
                                   "--runtime-dir=" + dir.path() + "/run"};
  struct Case {
    std::string flag;
    std::string says;
  };
  for (const Case& c :
       {Case{"--allow-command=bin/procd", "--allow-command"},
        Case{"--allow-env=NOT=OK", "--allow-env"},
        Case{"--proc-user=root", "is root"},
        Case{"--proc-user=no-such-user-hostmesh", "no such user"},
        Case{"--operators-group=no-such-group-hostmesh",
             "--operators-group"}}) {
    INFO(c.flag);
    std::vector<std::string> args = base;
    args.push_back(c.flag);
    ExitInfo exit = testing::RunHostdToExit(args);
    CHECK(exit.exit_code == std::optional<int>(2));
    CHECK_THAT(exit.stderr_tail, Catch::Contains(c.says));
  }
}

}  // namespace
}  // namespace mesh
