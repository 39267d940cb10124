#include "meshctl/format.h"

#include <string.h>

#include <algorithm>
#include <cstddef>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/timestamp.pb.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "lib/process/signals.h"

namespace mesh::meshctl {
namespace {

// Table cells are one line each, so a multi-line reason cannot break the
// columns.
std::string Cell(const std::string& text) {
  std::string cell =
      absl::StrReplaceAll(absl::StripAsciiWhitespace(text),
                          {{"\r\n", " "}, {"\n", " "}, {"\t", " "}});
  return cell.empty() ? "-" : cell;
}

std::string Timestamp(const google::protobuf::Timestamp& ts) {
  if (ts.seconds() == 0 && ts.nanos() == 0) return "";
  return google::protobuf::util::TimeUtil::ToString(ts);
}

std::string Number(int64_t n) { return n == 0 ? "" : absl::StrCat(n); }

// The client whose lease keeps the proc alive, or "detached".
std::string Lease(const v1::ProcState& proc) {
  return proc.client().empty() ? "detached" : proc.client();
}

absl::Time ToTime(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

}  // namespace

std::string FormatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::vector<std::string>> cells;
  cells.reserve(rows.size() + 1);
  cells.push_back(header);
  for (const auto& row : rows) {
    std::vector<std::string> line;
    line.reserve(header.size());
    for (size_t i = 0; i < header.size(); ++i) {
      line.push_back(Cell(i < row.size() ? row[i] : ""));
    }
    cells.push_back(std::move(line));
  }
  std::vector<size_t> widths(header.size(), 0);
  for (const auto& line : cells) {
    for (size_t i = 0; i < line.size(); ++i) {
      widths[i] = std::max(widths[i], line[i].size());
    }
  }
  std::string text;
  for (const auto& line : cells) {
    std::string row;
    for (size_t i = 0; i < line.size(); ++i) {
      absl::StrAppend(&row, line[i]);
      if (i + 1 < line.size()) {
        row.append(widths[i] - line[i].size() + 2, ' ');
      }
    }
    absl::StrAppend(&text, absl::StripTrailingAsciiWhitespace(row), "\n");
  }
  return text;
}

std::string FormatFields(
    const std::vector<std::pair<std::string, std::string>>& fields) {
  size_t width = 0;
  for (const auto& [key, value] : fields) width = std::max(width, key.size());
  std::string text;
  for (const auto& [key, value] : fields) {
    absl::StrAppend(&text, key, ":", std::string(width - key.size() + 2, ' '),
                    Cell(value), "\n");
  }
  return text;
}

std::string ExitText(const v1::ProcState& proc) {
  if (proc.has_term_signal()) return SignalName(proc.term_signal());
  if (proc.has_exit_code()) return absl::StrCat(proc.exit_code());
  return "";
}

std::string FormatProcTable(
    const google::protobuf::RepeatedPtrField<v1::ProcState>& procs) {
  std::vector<std::vector<std::string>> rows;
  rows.reserve(procs.size());
  for (const v1::ProcState& proc : procs) {
    rows.push_back({proc.name(), absl::StrCat(proc.rank()),
                    v1::Status_Name(proc.status()), Number(proc.pid()),
                    proc.host(), ExitText(proc), proc.owner(), Lease(proc),
                    proc.reason()});
  }
  return FormatTable({"NAME", "RANK", "STATUS", "PID", "HOST", "EXIT", "OWNER",
                      "LEASE", "REASON"},
                     rows);
}

std::string FormatProcDetail(const v1::ProcState& proc) {
  std::vector<std::string> command = {proc.spec().command().empty()
                                          ? "(hostd's default procd)"
                                          : proc.spec().command()};
  command.insert(command.end(), proc.spec().args().begin(),
                 proc.spec().args().end());
  std::vector<std::string> env;
  for (const auto& [key, value] : proc.spec().env()) {
    env.push_back(absl::StrCat(key, "=", value));
  }
  std::sort(env.begin(), env.end());  // The map's order is unspecified.
  std::string text = FormatFields({
      {"name", proc.name()},
      {"rank", absl::StrCat(proc.rank())},
      {"status", v1::Status_Name(proc.status())},
      {"reason", proc.reason()},
      {"generation", absl::StrCat(proc.generation())},
      {"pid", Number(proc.pid())},
      {"host", proc.host()},
      {"exit", ExitText(proc)},
      {"stopped by", proc.stopped_by()},
      {"owner", proc.owner()},
      {"lease", Lease(proc)},
      {"command", absl::StrJoin(command, " ")},
      {"env", absl::StrJoin(env, " ")},
      {"log dir", proc.log_dir()},
      {"created", Timestamp(proc.created_at())},
      {"updated", Timestamp(proc.updated_at())},
  });
  if (!proc.stderr_tail().empty()) {
    absl::StrAppend(&text, "stderr tail:\n");
    for (absl::string_view line : absl::StrSplit(
             absl::StripTrailingAsciiWhitespace(proc.stderr_tail()), '\n')) {
      absl::StrAppend(&text, "  ", line, "\n");
    }
  }
  return text;
}

std::string FormatActorTable(
    const google::protobuf::RepeatedPtrField<v1::ActorState>& actors) {
  std::vector<std::vector<std::string>> rows;
  rows.reserve(actors.size());
  for (const v1::ActorState& actor : actors) {
    rows.push_back({actor.name(), actor.type(), absl::StrCat(actor.rank()),
                    v1::Status_Name(actor.status()),
                    absl::StrCat(actor.messages_handled()), actor.reason()});
  }
  return FormatTable({"NAME", "TYPE", "RANK", "STATUS", "MESSAGES", "REASON"},
                     rows);
}

std::string FormatActorDetail(const v1::ActorState& actor) {
  return FormatFields({
      {"name", actor.name()},
      {"type", actor.type()},
      {"rank", absl::StrCat(actor.rank())},
      {"status", v1::Status_Name(actor.status())},
      {"reason", actor.reason()},
      {"generation", absl::StrCat(actor.generation())},
      {"proc", actor.ref().proc()},
      {"host", actor.ref().host()},
      {"messages", absl::StrCat(actor.messages_handled())},
      {"created", Timestamp(actor.created_at())},
      {"updated", Timestamp(actor.updated_at())},
  });
}

std::string FormatHostInfo(const v1::HostInfo& info) {
  return FormatFields({
      {"address", info.address()},
      {"hostname", info.hostname()},
      {"pid", Number(info.pid())},
      {"version", info.version()},
      {"started", Timestamp(info.started_at())},
      {"procs",
       absl::StrCat(info.num_procs(), " of at most ", info.max_procs())},
      {"state dir", info.state_dir()},
      {"held calls", absl::StrCat(info.held_waits(), " waits, ",
                                  info.relayed_calls(), " relayed to procs")},
      {"heap", absl::StrCat(info.heap_bytes() >> 10, " KiB")},
  });
}

std::string FormatOwnerTable(
    const google::protobuf::RepeatedPtrField<v1::OwnerLease>& owners,
    absl::Time now) {
  std::vector<std::vector<std::string>> rows;
  rows.reserve(owners.size());
  for (const v1::OwnerLease& owner : owners) {
    std::string state = owner.connected() ? "connected" : "vanished";
    std::string expires;
    if (!owner.connected() && owner.has_expires_at()) {
      const absl::Duration left = absl::Trunc(ToTime(owner.expires_at()) - now,
                                              absl::Milliseconds(100));
      if (left > absl::ZeroDuration()) {
        expires = absl::StrCat("in ", absl::FormatDuration(left));
      } else {
        state = "expired";
        expires = absl::StrCat(absl::FormatDuration(-left), " ago");
      }
    }
    rows.push_back({owner.client(), owner.identity(), state,
                    absl::StrCat(owner.procs_size()), expires});
  }
  return FormatTable({"CLIENT", "IDENTITY", "STATE", "PROCS", "EXPIRES"}, rows);
}

namespace {

absl::StatusOr<std::string> PrintJson(const google::protobuf::Message& message,
                                      bool whitespace) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = whitespace;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  auto status =
      google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat("cannot print ",
                                            message.GetTypeName(),
                                            " as JSON: ", status.ToString()));
  }
  return json;
}

// `text` as a JSON string literal.
std::string JsonQuote(const std::string& text) {
  std::string quoted = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      quoted.push_back('\\');
      quoted.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppendFormat(&quoted, "\\u%04x", static_cast<int>(c));
    } else {
      quoted.push_back(c);
    }
  }
  quoted.push_back('"');
  return quoted;
}

}  // namespace

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message) {
  absl::StatusOr<std::string> json = PrintJson(message, /*whitespace=*/true);
  if (json.ok() && (json->empty() || json->back() != '\n')) {
    json->push_back('\n');
  }
  return json;
}

absl::StatusOr<std::string> ToOneLineJson(
    const google::protobuf::Message& message) {
  absl::StatusOr<std::string> json = PrintJson(message, /*whitespace=*/false);
  if (json.ok()) {
    while (!json->empty() && json->back() == '\n') json->pop_back();
  }
  return json;
}

std::unique_ptr<google::protobuf::Message> UnpackGenerated(
    const google::protobuf::Any& any) {
  const std::string& type_url = any.type_url();
  size_t slash = type_url.rfind('/');
  std::string name =
      slash == std::string::npos ? type_url : type_url.substr(slash + 1);
  const google::protobuf::Descriptor* descriptor =
      google::protobuf::DescriptorPool::generated_pool()->FindMessageTypeByName(
          name);
  if (descriptor == nullptr) return nullptr;
  const google::protobuf::Message* prototype =
      google::protobuf::MessageFactory::generated_factory()->GetPrototype(
          descriptor);
  if (prototype == nullptr) return nullptr;
  std::unique_ptr<google::protobuf::Message> message(prototype->New());
  if (!message->ParseFromString(any.value())) return nullptr;
  return message;
}

absl::StatusOr<std::string> FormatReply(const google::protobuf::Any& reply,
                                        bool json) {
  std::unique_ptr<google::protobuf::Message> message = UnpackGenerated(reply);
  if (message == nullptr) {
    std::string type = JsonQuote(reply.type_url());
    std::string value = JsonQuote(absl::Base64Escape(reply.value()));
    if (json) {
      return absl::StrCat("{\n  \"@type\": ", type, ",\n  \"value\": ", value,
                          "\n}\n");
    }
    return absl::StrCat(
        reply.type_url().empty() ? "(no type)" : reply.type_url(),
        ": {\"@type\":", type, ",\"value\":", value, "}\n");
  }
  if (json) return ToJson(*message);
  absl::StatusOr<std::string> line = ToOneLineJson(*message);
  if (!line.ok()) return line.status();
  return absl::StrCat(message->GetDescriptor()->full_name(), ": ", *line, "\n");
}

}  // namespace mesh::meshctl
