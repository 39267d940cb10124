#include "meshctl/format.h"

#include <string.h>

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
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
#include "lib/status.h"

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

// The command line of a proc's spec.
std::string Command(const v1::ProcSpec& spec) {
  std::vector<std::string> command = {
      spec.command().empty() ? "(hostd's default procd)" : spec.command()};
  command.insert(command.end(), spec.args().begin(), spec.args().end());
  return absl::StrJoin(command, " ");
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
    const google::protobuf::RepeatedPtrField<v1::ProcState>& procs, bool wide) {
  std::vector<std::vector<std::string>> rows;
  rows.reserve(procs.size());
  for (const v1::ProcState& proc : procs) {
    rows.push_back({proc.name(), absl::StrCat(proc.rank()),
                    v1::Status_Name(proc.status()), Number(proc.pid()),
                    proc.host(), ExitText(proc), proc.owner(), Lease(proc)});
    if (wide) {
      rows.back().insert(
          rows.back().end(),
          {absl::StrCat(proc.generation()), proc.stopped_by(),
           Command(proc.spec()), proc.log_dir(), Timestamp(proc.created_at())});
    }
    rows.back().push_back(proc.reason());
  }
  std::vector<std::string> header = {"NAME", "RANK", "STATUS", "PID",
                                     "HOST", "EXIT", "OWNER",  "LEASE"};
  if (wide) {
    header.insert(header.end(), {"GENERATION", "STOPPED-BY", "COMMAND",
                                 "LOG-DIR", "CREATED"});
  }
  header.push_back("REASON");
  return FormatTable(header, rows);
}

std::string FormatProcDetail(const v1::ProcState& proc) {
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
      {"rss",
       proc.has_usage()
           ? absl::StrFormat("%.1f MiB", proc.usage().rss_bytes() / 1048576.0)
           : ""},
      {"threads", proc.has_usage() ? absl::StrCat(proc.usage().threads()) : ""},
      {"host", proc.host()},
      {"exit", ExitText(proc)},
      {"stopped by", proc.stopped_by()},
      {"owner", proc.owner()},
      {"lease", Lease(proc)},
      {"command", Command(proc.spec())},
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
    const google::protobuf::RepeatedPtrField<v1::ActorState>& actors,
    bool wide) {
  std::vector<std::vector<std::string>> rows;
  rows.reserve(actors.size());
  for (const v1::ActorState& actor : actors) {
    rows.push_back({actor.name(), actor.type(), absl::StrCat(actor.rank()),
                    v1::Status_Name(actor.status()),
                    absl::StrCat(actor.messages_handled())});
    if (wide) {
      rows.back().insert(rows.back().end(),
                         {absl::StrCat(actor.generation()), actor.ref().proc(),
                          actor.ref().host(), Timestamp(actor.created_at())});
    }
    rows.back().push_back(actor.reason());
  }
  std::vector<std::string> header = {"NAME", "TYPE", "RANK", "STATUS",
                                     "MESSAGES"};
  if (wide) {
    header.insert(header.end(), {"GENERATION", "PROC", "HOST", "CREATED"});
  }
  header.push_back("REASON");
  return FormatTable(header, rows);
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
      {"queued", absl::StrCat(actor.queue_depth())},
      {"last handler",
       actor.last_handler().empty()
           ? ""
           : absl::StrCat(actor.last_handler(), " (took ",
                          absl::FormatDuration(
                              absl::Microseconds(actor.last_handler_micros())),
                          ")")},
      {"handling now",
       actor.current_handler().empty()
           ? ""
           : absl::StrCat(actor.current_handler(), " since ",
                          Timestamp(actor.current_handler_since()))},
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

std::string FormatHostTable(const std::vector<std::string>& hosts,
                            const std::vector<const v1::HostInfo*>& infos,
                            bool wide) {
  std::vector<std::vector<std::string>> rows;
  for (size_t i = 0; i < hosts.size(); ++i) {
    const v1::HostInfo* info = i < infos.size() ? infos[i] : nullptr;
    if (info == nullptr) {
      rows.push_back({hosts[i], "", "", "unreachable"});
      continue;
    }
    rows.push_back({hosts[i], info->hostname(), info->version(),
                    absl::StrCat(info->num_procs(), "/", info->max_procs()),
                    Number(info->pid()), Timestamp(info->started_at())});
    if (wide) {
      rows.back().insert(
          rows.back().end(),
          {info->state_dir(),
           absl::StrCat(info->held_waits() + info->relayed_calls()),
           absl::StrCat(info->heap_bytes() >> 10, " KiB")});
    }
  }
  std::vector<std::string> header = {"HOST",  "HOSTNAME", "VERSION",
                                     "PROCS", "PID",      "STARTED"};
  if (wide) header.insert(header.end(), {"STATE-DIR", "HELD", "HEAP"});
  return FormatTable(header, rows);
}

std::string FormatOwnerTable(
    const google::protobuf::RepeatedPtrField<v1::OwnerLease>& owners,
    absl::Time now, bool wide) {
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
    if (wide) {
      rows.back().insert(rows.back().end(),
                         {absl::StrCat(owner.lease_ms(), "ms"),
                          absl::StrJoin(owner.procs(), ",")});
    }
  }
  std::vector<std::string> header = {"CLIENT", "IDENTITY", "STATE", "PROCS",
                                     "EXPIRES"};
  if (wide) header.insert(header.end(), {"LEASE", "PROC-NAMES"});
  return FormatTable(header, rows);
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

std::unique_ptr<google::protobuf::Message> UnpackAny(
    const google::protobuf::Any& any,
    const google::protobuf::DescriptorPool* pool,
    google::protobuf::MessageFactory* factory) {
  const std::string& type_url = any.type_url();
  size_t slash = type_url.rfind('/');
  std::string name =
      slash == std::string::npos ? type_url : type_url.substr(slash + 1);
  const google::protobuf::Descriptor* descriptor =
      google::protobuf::DescriptorPool::generated_pool()->FindMessageTypeByName(
          name);
  const google::protobuf::Message* prototype = nullptr;
  if (descriptor != nullptr) {
    prototype =
        google::protobuf::MessageFactory::generated_factory()->GetPrototype(
            descriptor);
  } else if (pool != nullptr && factory != nullptr) {
    descriptor = pool->FindMessageTypeByName(name);
    if (descriptor != nullptr) prototype = factory->GetPrototype(descriptor);
  }
  if (prototype == nullptr) return nullptr;
  std::unique_ptr<google::protobuf::Message> message(prototype->New());
  if (!message->ParseFromString(any.value())) return nullptr;
  return message;
}

absl::StatusOr<std::string> FormatReply(
    const google::protobuf::Any& reply, Output output,
    const google::protobuf::DescriptorPool* pool,
    google::protobuf::MessageFactory* factory) {
  std::unique_ptr<google::protobuf::Message> message =
      UnpackAny(reply, pool, factory);
  if (message == nullptr) {
    std::string type = JsonQuote(reply.type_url());
    std::string value = JsonQuote(absl::Base64Escape(reply.value()));
    switch (output) {
      case Output::kJson:
        return absl::StrCat("{\n  \"@type\": ", type, ",\n  \"value\": ", value,
                            "\n}\n");
      case Output::kYaml:
        return absl::StrCat("'@type': ", type, "\nvalue: ", value, "\n");
      default:
        return absl::StrCat(
            reply.type_url().empty() ? "(no type)" : reply.type_url(),
            ": {\"@type\":", type, ",\"value\":", value, "}\n");
    }
  }
  if (output == Output::kJson) return ToJson(*message);
  if (output == Output::kYaml) return ToYaml(*message);
  absl::StatusOr<std::string> line = ToOneLineJson(*message);
  if (!line.ok()) return line.status();
  return absl::StrCat(message->GetDescriptor()->full_name(), ": ", *line, "\n");
}

// ---- -o ----

std::vector<std::string> OutputNames() {
  return {"table", "wide", "json", "yaml"};
}

absl::StatusOr<Output> ParseOutput(const std::string& name) {
  if (name == "table") return Output::kTable;
  if (name == "wide") return Output::kWide;
  if (name == "json") return Output::kJson;
  if (name == "yaml") return Output::kYaml;
  return absl::InvalidArgumentError(
      absl::StrCat("-o: unknown output format \"", name, "\"; use one of ",
                   absl::StrJoin(OutputNames(), ", ")));
}

bool IsStructured(Output output) {
  return output == Output::kJson || output == Output::kYaml;
}

absl::StatusOr<std::string> Render(const google::protobuf::Message& message,
                                   Output output, const std::string& table,
                                   const std::string& wide) {
  switch (output) {
    case Output::kJson:
      return ToJson(message);
    case Output::kYaml:
      return ToYaml(message);
    case Output::kWide:
      return wide.empty() ? table : wide;
    case Output::kTable:
      break;
  }
  return table;
}

absl::StatusOr<std::string> RenderList(
    const std::vector<const google::protobuf::Message*>& messages,
    Output output, const std::string& table, const std::string& wide) {
  if (!IsStructured(output)) return Render(v1::HostInfo(), output, table, wide);
  std::string text = output == Output::kJson ? "[" : "";
  if (output == Output::kYaml && messages.empty()) return std::string("[]\n");
  for (size_t i = 0; i < messages.size(); ++i) {
    absl::StatusOr<std::string> one = Render(*messages[i], output, "", "");
    if (!one.ok()) return one.status();
    // Each item indented by two, its first line after "- " (YAML).
    std::vector<absl::string_view> lines =
        absl::StrSplit(absl::StripTrailingAsciiWhitespace(*one), '\n');
    if (output == Output::kJson) {
      absl::StrAppend(&text, i == 0 ? "\n" : ",\n");
      for (size_t j = 0; j < lines.size(); ++j) {
        absl::StrAppend(&text, "  ", lines[j],
                        j + 1 < lines.size() ? "\n" : "");
      }
    } else {
      for (size_t j = 0; j < lines.size(); ++j) {
        absl::StrAppend(&text, j == 0 ? "- " : "  ", lines[j], "\n");
      }
    }
  }
  if (output == Output::kJson) {
    absl::StrAppend(&text, messages.empty() ? "]\n" : "\n]\n");
  }
  return text;
}

// ---- YAML ----

namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

bool IsWellKnown(const google::protobuf::Descriptor* descriptor) {
  return absl::StartsWith(descriptor->full_name(), "google.protobuf.");
}

// A string as a YAML scalar: plain when YAML reads it back as the same
// string, else double-quoted with JSON escapes (valid YAML).
std::string YamlString(const std::string& text) {
  bool plain = !text.empty() && text.size() < 256 &&
               (absl::ascii_isalnum(text[0]) || text[0] == '/' ||
                text[0] == '_' || text[0] == '.');
  for (char c : text) {
    if (!plain) break;
    plain = absl::ascii_isalnum(c) || strchr("_-./:@+=,()", c) != nullptr;
  }
  if (plain) {
    // Not a number, boolean or null to a YAML reader; no ": " or " #".
    double unused;
    static const char* const kWords[] = {"true", "false", "yes", "no", "on",
                                         "off",  "null",  "y",   "n"};
    std::string lower = absl::AsciiStrToLower(text);
    for (const char* word : kWords) plain = plain && lower != word;
    // Without a letter it may read as a number, a date or a sexagesimal.
    bool letter = false;
    for (char c : text) letter = letter || absl::ascii_isalpha(c);
    plain = plain && letter && !absl::SimpleAtod(text, &unused) &&
            !absl::StrContains(text, ":/") && text.back() != ':';
  }
  return plain ? text : JsonQuote(text);
}

// A multi-line string as a literal block ("|" or "|-") at `indent`, if it
// can be one; else "".
std::string YamlBlock(const std::string& text, int indent) {
  if (text.find('\n') == std::string::npos || text.front() == ' ' ||
      text.front() == '\n') {
    return "";
  }
  for (char c : text) {
    if ((static_cast<unsigned char>(c) < 0x20 && c != '\n') || c == 0x7f) {
      return "";
    }
  }
  std::string body(absl::StripTrailingAsciiWhitespace(text));
  if (body.size() + 1 != text.size() && body.size() != text.size()) return "";
  std::string block = text.back() == '\n' ? "|" : "|-";
  const std::string pad(indent, ' ');
  for (absl::string_view line : absl::StrSplit(body, '\n')) {
    absl::StrAppend(&block, "\n", line.empty() ? "" : pad, line);
  }
  return block;
}

absl::StatusOr<std::string> YamlScalar(const Message& message,
                                       const FieldDescriptor* field, int index,
                                       int indent) {
  const Reflection* r = message.GetReflection();
  const bool rep = field->is_repeated();
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return absl::StrCat(rep ? r->GetRepeatedInt32(message, field, index)
                              : r->GetInt32(message, field));
    case FieldDescriptor::CPPTYPE_INT64:
      return absl::StrCat(rep ? r->GetRepeatedInt64(message, field, index)
                              : r->GetInt64(message, field));
    case FieldDescriptor::CPPTYPE_UINT32:
      return absl::StrCat(rep ? r->GetRepeatedUInt32(message, field, index)
                              : r->GetUInt32(message, field));
    case FieldDescriptor::CPPTYPE_UINT64:
      return absl::StrCat(rep ? r->GetRepeatedUInt64(message, field, index)
                              : r->GetUInt64(message, field));
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT: {
      double d = field->cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE
                     ? (rep ? r->GetRepeatedDouble(message, field, index)
                            : r->GetDouble(message, field))
                     : (rep ? r->GetRepeatedFloat(message, field, index)
                            : r->GetFloat(message, field));
      if (std::isnan(d)) return std::string(".nan");
      if (std::isinf(d)) return std::string(d > 0 ? ".inf" : "-.inf");
      return absl::StrCat(d);
    }
    case FieldDescriptor::CPPTYPE_BOOL:
      return std::string((rep ? r->GetRepeatedBool(message, field, index)
                              : r->GetBool(message, field))
                             ? "true"
                             : "false");
    case FieldDescriptor::CPPTYPE_ENUM: {
      const google::protobuf::EnumValueDescriptor* value =
          rep ? r->GetRepeatedEnum(message, field, index)
              : r->GetEnum(message, field);
      return YamlString(value->name());
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string text = rep ? r->GetRepeatedString(message, field, index)
                             : r->GetString(message, field);
      if (field->type() == FieldDescriptor::TYPE_BYTES) {
        return YamlString(absl::Base64Escape(text));
      }
      std::string block = YamlBlock(text, indent);
      return block.empty() ? YamlString(text) : block;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      break;
  }
  return absl::InternalError(
      absl::StrCat("no YAML scalar for field ", field->full_name()));
}

absl::Status AppendYamlMessage(const Message& message, int indent,
                               std::string* text);

// A value of `field` (element `index` if repeated) after "key:" or "- ":
// " scalar" on the same line, or a nested block on the next lines.
absl::StatusOr<std::string> YamlValue(const Message& message,
                                      const FieldDescriptor* field, int index,
                                      int indent) {
  if (field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) {
    ASSIGN_OR_RETURN(std::string scalar,
                     YamlScalar(message, field, index, indent));
    return absl::StrCat(" ", scalar);
  }
  const Reflection* r = message.GetReflection();
  const Message& sub = field->is_repeated()
                           ? r->GetRepeatedMessage(message, field, index)
                           : r->GetMessage(message, field);
  if (IsWellKnown(sub.GetDescriptor())) {
    ASSIGN_OR_RETURN(std::string json, ToOneLineJson(sub));
    return absl::StrCat(" ", json);
  }
  std::string block;
  RETURN_IF_ERROR(AppendYamlMessage(sub, indent, &block));
  if (block.empty()) return std::string(" {}");
  return absl::StrCat("\n", absl::StripTrailingAsciiWhitespace(block));
}

absl::Status AppendYamlMessage(const Message& message, int indent,
                               std::string* text) {
  const google::protobuf::Descriptor* descriptor = message.GetDescriptor();
  const Reflection* r = message.GetReflection();
  const std::string pad(indent, ' ');
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const FieldDescriptor* field = descriptor->field(i);
    const std::string key = absl::StrCat(pad, YamlString(field->name()), ":");
    if (field->is_map()) {
      const int size = r->FieldSize(message, field);
      if (size == 0) {
        absl::StrAppend(text, key, " {}\n");
        continue;
      }
      const FieldDescriptor* key_field = field->message_type()->map_key();
      const FieldDescriptor* value_field = field->message_type()->map_value();
      std::vector<std::pair<std::string, std::string>> entries;
      for (int j = 0; j < size; ++j) {
        const Message& entry = r->GetRepeatedMessage(message, field, j);
        ASSIGN_OR_RETURN(std::string k, YamlScalar(entry, key_field, 0, 0));
        ASSIGN_OR_RETURN(std::string v,
                         YamlValue(entry, value_field, 0, indent + 4));
        entries.emplace_back(std::move(k), std::move(v));
      }
      std::sort(entries.begin(), entries.end());
      absl::StrAppend(text, key, "\n");
      for (const auto& [k, v] : entries) {
        absl::StrAppend(text, pad, "  ", k, ":", v, "\n");
      }
    } else if (field->is_repeated()) {
      const int size = r->FieldSize(message, field);
      if (size == 0) {
        absl::StrAppend(text, key, " []\n");
        continue;
      }
      absl::StrAppend(text, key, "\n");
      for (int j = 0; j < size; ++j) {
        ASSIGN_OR_RETURN(std::string value,
                         YamlValue(message, field, j, indent + 2));
        if (absl::StartsWith(value, "\n")) {
          // A nested block at indent + 2: its first line goes after "- ".
          value = absl::StrCat(" ", value.substr(indent + 3));
        }
        absl::StrAppend(text, pad, "-", value, "\n");
      }
    } else {
      // Fields with presence (messages, oneofs, optional) only when set;
      // plain proto3 scalars always, as in the JSON.
      if (field->has_presence() && !r->HasField(message, field)) continue;
      ASSIGN_OR_RETURN(std::string value,
                       YamlValue(message, field, 0, indent + 2));
      absl::StrAppend(text, key, value, "\n");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ToYaml(const google::protobuf::Message& message) {
  if (IsWellKnown(message.GetDescriptor())) {
    ASSIGN_OR_RETURN(std::string json, ToOneLineJson(message));
    return absl::StrCat(json, "\n");
  }
  std::string text;
  RETURN_IF_ERROR(AppendYamlMessage(message, 0, &text));
  if (text.empty()) return std::string("{}\n");
  return text;
}

}  // namespace mesh::meshctl
