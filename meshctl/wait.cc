#include "meshctl/wait.h"

#include "meshctl/format.h"

namespace mesh::meshctl {

const std::map<std::string, v1::Status>& WaitStatuses() {
  static const auto* statuses = new std::map<std::string, v1::Status>{
      {"initializing", v1::INITIALIZING},
      {"running", v1::RUNNING},
      {"stopping", v1::STOPPING},
      {"stopped", v1::STOPPED},
      {"failed", v1::FAILED},
  };
  return *statuses;
}

bool Satisfies(v1::Status have, v1::Status wanted) {
  if (have == wanted) return true;
  switch (wanted) {
    case v1::INITIALIZING:
      return have == v1::RUNNING;
    case v1::STOPPING:
      return have == v1::STOPPED;
    default:
      return false;
  }
}

std::string Describe(const v1::ProcState& proc) {
  std::string text = absl::StrCat(" is ", v1::Status_Name(proc.status()));
  std::string exit = ExitText(proc);
  if (proc.has_term_signal()) {
    absl::StrAppend(&text, " (killed by ", exit, ")");
  } else if (proc.has_exit_code()) {
    absl::StrAppend(&text, " (exit code ", exit, ")");
  }
  if (!proc.reason().empty()) absl::StrAppend(&text, ": ", proc.reason());
  return text;
}

std::string Describe(const v1::ActorState& actor) {
  std::string text = absl::StrCat(" is ", v1::Status_Name(actor.status()));
  if (!actor.reason().empty()) absl::StrAppend(&text, ": ", actor.reason());
  return text;
}

absl::Status CheckProcWait(const std::vector<std::string>& names,
                           const v1::WaitProcsResponse& response,
                           v1::Status wanted, absl::Duration timeout,
                           const std::string& host) {
  return CheckWait(names, response.procs(), wanted, timeout,
                   [&](const std::string& name) {
                     std::string noun = absl::StrCat("proc \"", name, "\"");
                     if (!host.empty()) {
                       absl::StrAppend(&noun, " on host \"", host, "\"");
                     }
                     return noun;
                   });
}

}  // namespace mesh::meshctl
