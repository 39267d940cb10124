// Judging a wait's answer (proc wait, proc spawn, actor spawn): which named
// resources are where asked, and why the others are not.
#ifndef HOSTMESH_MESHCTL_WAIT_H_
#define HOSTMESH_MESHCTL_WAIT_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "proto/host.pb.h"
#include "proto/proc.pb.h"
#include "proto/resource.pb.h"

namespace mesh::meshctl {

// Statuses a wait may ask for, as typed on the command line ("running").
const std::map<std::string, v1::Status>& WaitStatuses();

// Whether a resource now in status `have` is what a wait for `wanted` asked
// for. A status passed on the normal path (INITIALIZING -> RUNNING ->
// STOPPING -> STOPPED) satisfies a wait for a transitional one: a RUNNING
// proc satisfies INITIALIZING, a STOPPED one satisfies STOPPING. Otherwise
// only the exact status does: waiting for RUNNING, a FAILED or STOPPED proc
// is a failure, and waiting for STOPPED, a FAILED one is.
bool Satisfies(v1::Status have, v1::Status wanted);

// The part of a wait message about one resource that is not where asked:
// ` is FAILED (exit code 1): did not register within 10s`.
std::string Describe(const v1::ProcState& proc);
std::string Describe(const v1::ActorState& actor);

// OK if every resource in `names` satisfies `wanted` in `states`. Otherwise
// FAILED_PRECONDITION if one can no longer get there (it is past `wanted`,
// or ended), else DEADLINE_EXCEEDED (the wait of `timeout` timed out); the
// message names each one not where asked; `noun(name)` names one resource,
// e.g. `proc "p0_1"`.
template <typename State, typename Noun>
absl::Status CheckWait(const std::vector<std::string>& names,
                       const google::protobuf::RepeatedPtrField<State>& states,
                       v1::Status wanted, absl::Duration timeout, Noun noun) {
  std::map<std::string, const State*> by_name;
  for (const State& state : states) by_name[state.name()] = &state;
  std::vector<std::string> problems;
  bool unreachable = false;
  for (const std::string& name : names) {
    auto it = by_name.find(name);
    State missing;
    missing.set_name(name);
    missing.set_status(v1::NOT_EXIST);
    const State& state = it == by_name.end() ? missing : *it->second;
    if (Satisfies(state.status(), wanted)) continue;
    // Past the wanted status, or ended (STOPPED, FAILED): waiting longer
    // cannot help.
    if (state.status() > wanted || state.status() == v1::STOPPED ||
        state.status() == v1::FAILED) {
      unreachable = true;
    }
    problems.push_back(absl::StrCat(noun(name), Describe(state)));
  }
  if (problems.empty()) return absl::OkStatus();
  std::string wanted_name = v1::Status_Name(wanted);
  if (unreachable) {
    return absl::FailedPreconditionError(absl::StrCat(
        "waited for ", wanted_name, ", but ", absl::StrJoin(problems, "; ")));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "timed out after ", absl::FormatDuration(timeout), " waiting for ",
      wanted_name, ": ", absl::StrJoin(problems, "; ")));
}

// CheckWait for procs; each named `proc "NAME"` (and ` on host "HOST"` if
// `host` is not empty).
absl::Status CheckProcWait(const std::vector<std::string>& names,
                           const v1::WaitProcsResponse& response,
                           v1::Status wanted, absl::Duration timeout,
                           const std::string& host = "");

}  // namespace mesh::meshctl

#endif  // HOSTMESH_MESHCTL_WAIT_H_
