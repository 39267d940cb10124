#include "tests/netns/netns_lab.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

extern char** environ;

namespace mesh::testing {
namespace {

bool IsExecutable(const std::string& path) {
  return access(path.c_str(), X_OK) == 0;
}

// argv[0] as an absolute path: as given if it has a '/', else the first hit
// in $PATH, /usr/sbin, /sbin (where iproute2 lives; not always in PATH).
std::string Resolve(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path_env = std::getenv("PATH");
  std::vector<std::string> dirs =
      absl::StrSplit(path_env ? path_env : "", ':', absl::SkipEmpty());
  dirs.push_back("/usr/sbin");
  dirs.push_back("/sbin");
  dirs.push_back("/usr/bin");
  dirs.push_back("/bin");
  for (const std::string& dir : dirs) {
    std::string candidate = absl::StrCat(dir, "/", name);
    if (IsExecutable(candidate)) return candidate;
  }
  return "";
}

// An IPv4 network: address and prefix length.
struct Net {
  uint32_t address = 0;
  int prefix = 32;
};

bool ParseNet(absl::string_view text, Net* net) {
  std::pair<absl::string_view, absl::string_view> parts =
      absl::StrSplit(text, absl::MaxSplits('/', 1));
  std::vector<absl::string_view> octets = absl::StrSplit(parts.first, '.');
  if (octets.size() != 4) return false;
  uint32_t address = 0;
  for (absl::string_view octet : octets) {
    int value = 0;
    if (octet.empty() || !absl::SimpleAtoi(octet, &value) || value < 0 ||
        value > 255) {
      return false;
    }
    address = (address << 8) | static_cast<uint32_t>(value);
  }
  int prefix = 32;
  if (!parts.second.empty() &&
      (!absl::SimpleAtoi(parts.second, &prefix) || prefix < 0 || prefix > 32)) {
    return false;
  }
  net->address = address;
  net->prefix = prefix;
  return true;
}

bool Overlaps(const Net& a, const Net& b) {
  int common = std::min(a.prefix, b.prefix);
  if (common == 0) return true;
  return (a.address >> (32 - common)) == (b.address >> (32 - common));
}

}  // namespace

absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv) {
  if (argv.empty()) return absl::InvalidArgumentError("empty command");
  std::string path = Resolve(argv[0]);
  if (path.empty()) {
    return absl::NotFoundError(
        absl::StrCat(argv[0], " not found in PATH, /usr/sbin or /sbin"));
  }
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", strerror(errno)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, out[1], 2);
  std::vector<char*> args;
  for (const std::string& arg : argv) {
    args.push_back(const_cast<char*>(arg.c_str()));
  }
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc =
      posix_spawn(&pid, path.c_str(), &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  if (rc != 0) {
    close(out[0]);
    return absl::InternalError(
        absl::StrCat("cannot run ", path, ": ", strerror(rc)));
  }
  std::string output;
  char buffer[4096];
  ssize_t n;
  while ((n = read(out[0], buffer, sizeof(buffer))) != 0) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    output.append(buffer, static_cast<size_t>(n));
  }
  close(out[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return output;
  return absl::InternalError(absl::StrCat(
      "`", absl::StrJoin(argv, " "), "` ",
      WIFEXITED(status) ? absl::StrCat("exited ", WEXITSTATUS(status))
                        : absl::StrCat("died of signal ", WTERMSIG(status)),
      ": ", output));
}

std::string FindExecutable(const std::string& name) { return Resolve(name); }

absl::StatusOr<std::string> FindIp() {
  std::string path = Resolve("ip");
  if (path.empty()) {
    return absl::NotFoundError(
        "iproute2's `ip` is not installed (looked in PATH, /usr/sbin, /sbin; "
        "deploy/install-deps.sh installs it)");
  }
  return path;
}

absl::StatusOr<std::unique_ptr<NetnsLab>> NetnsLab::Create(size_t count) {
  if (geteuid() != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("network namespaces need root (this test runs as uid ",
                     geteuid(), ")"));
  }
  absl::StatusOr<std::string> ip = FindIp();
  if (!ip.ok()) return absl::FailedPreconditionError(ip.status().message());
  std::unique_ptr<NetnsLab> lab(new NetnsLab());
  lab->ip_ = *ip;
  absl::Status made = lab->SetUp(count);
  if (!made.ok()) return made;  // ~NetnsLab removes what was made
  return lab;
}

absl::StatusOr<std::string> NetnsLab::Ip(std::vector<std::string> args) const {
  args.insert(args.begin(), ip_);
  return RunCommand(args);
}

absl::Status NetnsLab::SetUp(size_t count) {
  const pid_t pid = getpid();
  const std::string tag = absl::StrCat("hm", pid);  // ≤ 9 of IFNAMSIZ's 15
  bridge_ = tag + "br";
  for (size_t i = 0; i < count; ++i) {
    namespaces_.push_back(absl::StrCat("hostmesh-", pid, "-", i));
    host_links_.push_back(absl::StrCat(tag, "v", i));
  }

  // What a lab of a process that is gone left behind (killed before its
  // destructor ran), our own pid's included: remove it.
  absl::StatusOr<std::string> existing = Ip({"netns", "list"});
  if (!existing.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("`ip netns list` failed: ", existing.status().message()));
  }
  for (absl::string_view line :
       absl::StrSplit(*existing, '\n', absl::SkipWhitespace())) {
    std::string ns(line.substr(0, line.find(' ')));
    std::vector<std::string> parts = absl::StrSplit(ns, '-');
    pid_t owner = 0;
    size_t index = 0;
    if (parts.size() != 3 || parts[0] != "hostmesh" ||
        !absl::SimpleAtoi(parts[1], &owner) ||
        !absl::SimpleAtoi(parts[2], &index) ||
        (owner != pid && (kill(owner, 0) == 0 || errno != ESRCH))) {
      continue;
    }
    fprintf(stderr, "netns lab: removing %s, left by pid %d\n", ns.c_str(),
            owner);
    absl::StatusOr<std::string> pids = Ip({"netns", "pids", ns});
    for (absl::string_view text :
         absl::StrSplit(pids.ok() ? *pids : "", '\n', absl::SkipWhitespace())) {
      pid_t stale = 0;
      if (absl::SimpleAtoi(text, &stale) && stale > 0) kill(stale, SIGKILL);
    }
    (void)Ip({"netns", "delete", ns});
    std::string link = absl::StrCat("hm", owner, "v", index);
    if (Ip({"link", "show", link}).ok()) (void)Ip({"link", "delete", link});
    std::string bridge = absl::StrCat("hm", owner, "br");
    if (Ip({"link", "show", bridge}).ok()) (void)Ip({"link", "delete", bridge});
  }
  for (const std::string& link : host_links_) {
    if (Ip({"link", "show", link}).ok()) (void)Ip({"link", "delete", link});
  }
  if (Ip({"link", "show", bridge_}).ok()) (void)Ip({"link", "delete", bridge_});

  // A /24 of 10.213.0.0/16 that nothing in the root namespace overlaps.
  absl::StatusOr<std::string> routes =
      Ip({"-4", "route", "show", "table", "all"});
  absl::StatusOr<std::string> addrs = Ip({"-4", "-o", "addr", "show"});
  if (!routes.ok()) return routes.status();
  if (!addrs.ok()) return addrs.status();
  std::vector<Net> taken;
  for (const std::string* text : {&*routes, &*addrs}) {
    for (absl::string_view token :
         absl::StrSplit(*text, absl::ByAnyChar(" \n\t"), absl::SkipEmpty())) {
      Net net;
      if (ParseNet(token, &net) && net.prefix > 0) taken.push_back(net);
    }
  }
  // Bridge in the root namespace, with the root namespace's address on it.
  absl::Status status = Ip({"link", "add", bridge_, "type", "bridge"}).status();
  if (!status.ok()) return status;
  bridge_made_ = true;
  // Candidates from pid % 200 on; a lab of another test that took the same
  // /24 between our look and our claim shows up right after the claim (its
  // address on another device), and we move on.
  std::string prefix;
  for (int k = 0; k < 256 && prefix.empty(); ++k) {
    const int third = (pid % 200 + k) % 256;
    Net ours;
    ParseNet(absl::StrCat("10.213.", third, ".0/24"), &ours);
    bool free = true;
    for (const Net& net : taken) free = free && !Overlaps(ours, net);
    if (!free) continue;
    const std::string candidate = absl::StrCat("10.213.", third, ".");
    status = Ip({"addr", "add", candidate + "1/24", "dev", bridge_}).status();
    if (!status.ok()) return status;
    absl::StatusOr<std::string> now = Ip({"-4", "-o", "addr", "show"});
    if (!now.ok()) return now.status();
    bool shared = false;
    for (absl::string_view line :
         absl::StrSplit(*now, '\n', absl::SkipWhitespace())) {
      if (line.find(" " + bridge_ + " ") == absl::string_view::npos &&
          line.find(" inet " + candidate) != absl::string_view::npos) {
        shared = true;
      }
    }
    if (!shared) {
      prefix = candidate;
      break;
    }
    (void)Ip({"addr", "del", candidate + "1/24", "dev", bridge_});
    taken.push_back(ours);
  }
  if (prefix.empty()) {
    return absl::FailedPreconditionError(
        "every /24 of 10.213.0.0/16 overlaps a route or address here");
  }
  subnet_ = prefix + "0/24";
  bridge_address_ = prefix + "1";
  for (size_t i = 0; i < count; ++i) {
    addresses_.push_back(absl::StrCat(prefix, 11 + i));
  }
  status = Ip({"link", "set", bridge_, "up"}).status();
  if (!status.ok()) return status;
  // One namespace per host, on the bridge through a veth pair.
  for (size_t i = 0; i < count; ++i) {
    const std::string& ns = namespaces_[i];
    const std::string inner = absl::StrCat(tag, "p", i);
    status = Ip({"netns", "add", ns}).status();
    if (!status.ok()) return status;
    made_namespaces_.push_back(ns);
    status = Ip({"link", "add", host_links_[i], "type", "veth", "peer", "name",
                 inner, "netns", ns})
                 .status();
    if (!status.ok()) return status;
    made_links_.push_back(host_links_[i]);
    for (std::vector<std::string> args : {
             std::vector<std::string>{"link", "set", host_links_[i], "master",
                                      bridge_, "up"},
             std::vector<std::string>{"-n", ns, "link", "set", "lo", "up"},
             std::vector<std::string>{"-n", ns, "addr", "add",
                                      addresses_[i] + "/24", "dev", inner},
             std::vector<std::string>{"-n", ns, "link", "set", inner, "up"},
         }) {
      status = Ip(args).status();
      if (!status.ok()) return status;
    }
  }
  return absl::OkStatus();
}

std::vector<std::string> NetnsLab::ExecPrefix(size_t i) const {
  return {ip_, "netns", "exec", namespaces_[i]};
}

absl::Status NetnsLab::SetLinkUp(size_t i, bool up) {
  return Ip({"link", "set", host_links_[i], up ? "up" : "down"}).status();
}

std::vector<pid_t> NetnsLab::Pids(size_t i) const {
  std::vector<pid_t> pids;
  absl::StatusOr<std::string> out = Ip({"netns", "pids", namespaces_[i]});
  if (!out.ok()) return pids;
  for (absl::string_view line :
       absl::StrSplit(*out, '\n', absl::SkipWhitespace())) {
    pid_t pid = 0;
    if (absl::SimpleAtoi(line, &pid) && pid > 0) pids.push_back(pid);
  }
  return pids;
}

void NetnsLab::TearDown() {
  // Whatever still runs inside our namespaces was started by this test.
  for (size_t i = 0; i < made_namespaces_.size(); ++i) {
    absl::Time deadline = absl::Now() + absl::Seconds(5);
    for (std::vector<pid_t> pids = Pids(i); !pids.empty(); pids = Pids(i)) {
      for (pid_t pid : pids) kill(pid, SIGKILL);
      if (absl::Now() > deadline) {
        fprintf(stderr, "netns lab: %zu processes linger in %s\n", pids.size(),
                made_namespaces_[i].c_str());
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  for (const std::string& link : made_links_) {
    (void)Ip({"link", "delete", link});
  }
  for (const std::string& ns : made_namespaces_) {
    absl::Status deleted = Ip({"netns", "delete", ns}).status();
    if (!deleted.ok()) {
      fprintf(stderr, "netns lab: %s\n",
              std::string(deleted.message()).c_str());
    }
  }
  if (bridge_made_) {
    absl::Status deleted = Ip({"link", "delete", bridge_}).status();
    if (!deleted.ok()) {
      fprintf(stderr, "netns lab: %s\n",
              std::string(deleted.message()).c_str());
    }
  }
  made_links_.clear();
  made_namespaces_.clear();
  bridge_made_ = false;
}

NetnsLab::~NetnsLab() { TearDown(); }

}  // namespace mesh::testing
