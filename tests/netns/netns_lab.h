// NetnsLab: a private network of N Linux network namespaces for multi-host
// tests, made with iproute2 (needs root).
//
//   root namespace ── bridge <prefix>.1/24 ─┬─ veth ── namespace 0 <prefix>.11
//                                           ├─ veth ── namespace 1 <prefix>.12
//                                           └─ …
//
// Every name carries the test's pid ("hm<pid>br", "hm<pid>v<i>" and
// "hm<pid>p<i>" links, "hostmesh-<pid>-<i>" namespaces), so parallel runs
// never collide, and the /24 is one of 10.213.0.0/16 that no route or
// address of the root namespace overlaps. Namespaces get no default route:
// traffic to or from them stays on the bridge (the root namespace reaches
// them over the bridge's own address; nothing forwards or NATs it).
//
// Ownership: the lab owns what it made. Create first removes what a lab of a
// process that no longer exists left behind (a test killed by a signal runs
// no destructor). The destructor (also on a failed
// Create) SIGKILLs every process still inside its namespaces (by pid: they
// can only be this test's), deletes the namespaces, veths and bridge, and
// reports nothing: a test's failure must not hide behind a cleanup error.
// Not thread-safe; one thread sets it up and tears it down.
#ifndef HOSTMESH_TESTS_NETNS_NETNS_LAB_H_
#define HOSTMESH_TESTS_NETNS_NETNS_LAB_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mesh::testing {

// Runs `argv` (argv[0] looked up in PATH, then /usr/sbin and /sbin) and
// waits for it; its stdout and stderr together on success. An exit other
// than 0 is an error quoting the command and its output.
absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv);

// Absolute path of executable `name` (PATH, then /usr/sbin, /sbin, /usr/bin,
// /bin), or "" if there is none.
std::string FindExecutable(const std::string& name);

// Absolute path of iproute2's `ip`, or NOT_FOUND naming where it looked.
absl::StatusOr<std::string> FindIp();

class NetnsLab {
 public:
  // FAILED_PRECONDITION (saying why) if this process cannot make namespaces:
  // not root, no `ip`; any other error is a set-up step that failed.
  static absl::StatusOr<std::unique_ptr<NetnsLab>> Create(size_t count);
  ~NetnsLab();
  NetnsLab(const NetnsLab&) = delete;
  NetnsLab& operator=(const NetnsLab&) = delete;

  size_t size() const { return namespaces_.size(); }
  const std::string& ip_binary() const { return ip_; }
  // "hostmesh-<pid>-<i>".
  const std::string& ns(size_t i) const { return namespaces_[i]; }
  // The namespace's address on the bridge, e.g. "10.213.57.11".
  const std::string& address(size_t i) const { return addresses_[i]; }
  // The root namespace's address on the bridge (the client's source).
  const std::string& bridge_address() const { return bridge_address_; }
  const std::string& subnet() const { return subnet_; }  // "10.213.57.0/24"
  const std::string& bridge() const { return bridge_; }
  // The root-namespace end of namespace i's veth.
  const std::string& link(size_t i) const { return host_links_[i]; }

  // argv prefix that runs a command inside namespace i:
  // {ip, "netns", "exec", ns(i)}.
  std::vector<std::string> ExecPrefix(size_t i) const;
  // Sets namespace i's veth down (its hosts unreachable) or up again.
  absl::Status SetLinkUp(size_t i, bool up);
  // Pids of the processes inside namespace i.
  std::vector<pid_t> Pids(size_t i) const;

 private:
  NetnsLab() = default;
  absl::Status SetUp(size_t count);
  void TearDown();
  absl::StatusOr<std::string> Ip(std::vector<std::string> args) const;

  std::string ip_;
  std::string bridge_;
  std::string bridge_address_;
  std::string subnet_;
  std::vector<std::string> namespaces_;
  std::vector<std::string> addresses_;
  std::vector<std::string> host_links_;
  // What exists so far, for TearDown.
  bool bridge_made_ = false;
  std::vector<std::string> made_namespaces_;
  std::vector<std::string> made_links_;
};

}  // namespace mesh::testing

#endif  // HOSTMESH_TESTS_NETNS_NETNS_LAB_H_
