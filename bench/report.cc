#include "bench/report.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace mesh::bench {
namespace {

// A value as the table shows it: about three significant digits.
std::string FormatValue(double value) {
  const double magnitude = std::fabs(value);
  if (magnitude >= 100 || value == std::floor(value)) {
    return absl::StrFormat("%.0f", value);
  }
  if (magnitude >= 10) return absl::StrFormat("%.1f", value);
  return absl::StrFormat("%.2f", value);
}

// A number for JSON (finite; else null).
std::string JsonNumber(double value) {
  if (!std::isfinite(value)) return "null";
  return absl::StrFormat("%.6g", value);
}

std::string JsonString(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppendFormat(&out, "\\u%04x", c);
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

// Milliseconds per `unit` for times; nullopt for other units.
std::optional<double> MsPer(const std::string& unit) {
  if (unit == "us") return 1e-3;
  if (unit == "ms") return 1.0;
  if (unit == "s") return 1e3;
  return std::nullopt;
}

}  // namespace

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::ceil(q * static_cast<double>(values.size()));
  size_t index = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return values[std::min(index, values.size() - 1)];
}

Row& Report::Add(const std::string& id, const std::string& name,
                 const std::string& unit, const std::vector<double>& samples,
                 Stat stat) {
  Row& row = rows_.emplace_back();
  row.set_id(id);
  row.set_name(name);
  row.set_unit(unit);
  row.set_n(static_cast<uint32_t>(samples.size()));
  if (!samples.empty()) {
    row.set_value(Percentile(samples, stat == Stat::kP99 ? 0.99 : 0.5));
    row.set_min(*std::min_element(samples.begin(), samples.end()));
    row.set_max(*std::max_element(samples.begin(), samples.end()));
  }
  return row;
}

Row& Report::AddValue(const std::string& id, const std::string& name,
                      const std::string& unit, double value) {
  return Add(id, name, unit, {value});
}

void Report::Note(std::string note) { notes_.push_back(std::move(note)); }

const Row* Report::Find(const std::string& id) const {
  for (const Row& row : rows_) {
    if (row.id() == id) return &row;
  }
  return nullptr;
}

absl::Status Report::AppendTo(const std::string& path) const {
  std::ofstream out(path, std::ios::app);
  if (!out) return absl::UnavailableError(absl::StrCat("cannot open ", path));
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  auto append = [&](const Record& record) -> absl::Status {
    std::string line;
    auto printed =
        google::protobuf::util::MessageToJsonString(record, &line, options);
    if (!printed.ok()) {
      return absl::InternalError(printed.ToString());
    }
    out << line << "\n";
    return absl::OkStatus();
  };
  for (const Row& row : rows_) {
    Record record;
    *record.mutable_row() = row;
    if (absl::Status status = append(record); !status.ok()) return status;
  }
  for (const std::string& note : notes_) {
    Record record;
    record.set_note(note);
    if (absl::Status status = append(record); !status.ok()) return status;
  }
  out.flush();
  if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::Status Report::ReadFrom(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    Record record;
    auto parsed = google::protobuf::util::JsonStringToMessage(line, &record);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", number, ": not a bench record: ", parsed.ToString()));
    }
    if (record.has_row()) {
      rows_.push_back(record.row());
    } else if (!record.note().empty()) {
      notes_.push_back(record.note());
    }
  }
  return absl::OkStatus();
}

std::optional<double> Report::Ratio(const Row& row) const {
  if (row.floor().empty() || row.n() == 0) return std::nullopt;
  const Row* floor = Find(row.floor());
  if (floor == nullptr || floor->n() == 0 || floor->value() <= 0 ||
      row.value() <= 0) {
    return std::nullopt;
  }
  // Times in different units are compared in one; other units must match.
  double value = row.value();
  double floor_value = floor->value();
  // Rates ("calls/s", "msgs/s") compare as they are.
  const bool rates =
      absl::EndsWith(row.unit(), "/s") && absl::EndsWith(floor->unit(), "/s");
  if (row.unit() != floor->unit() && !rates) {
    std::optional<double> scale = MsPer(row.unit());
    std::optional<double> floor_scale = MsPer(floor->unit());
    if (!scale.has_value() || !floor_scale.has_value()) return std::nullopt;
    value *= *scale;
    floor_value *= *floor_scale;
  }
  return row.higher_is_better() ? floor_value / value : value / floor_value;
}

void Report::PrintTable(std::FILE* out) const {
  std::vector<std::vector<std::string>> cells = {{"id", "figure", "value",
                                                  "unit", "floor (same run)",
                                                  "ratio", "goal", "met?"}};
  for (const Row& row : rows_) {
    std::string floor = "-";
    if (!row.floor().empty()) {
      const Row* found = Find(row.floor());
      floor = found != nullptr && found->n() > 0
                  ? absl::StrCat(row.floor(), " ", FormatValue(found->value()),
                                 " ", found->unit())
                  : absl::StrCat(row.floor(), " (not measured)");
    }
    std::optional<double> ratio = Ratio(row);
    std::string met = "-";
    if (row.n() > 0 && (row.has_goal_max() || row.has_goal_min())) {
      const bool ok = (!row.has_goal_max() || row.value() <= row.goal_max()) &&
                      (!row.has_goal_min() || row.value() >= row.goal_min());
      met = ok ? "yes" : "NO";
    }
    cells.push_back({row.id(), row.name(),
                     row.n() > 0 ? FormatValue(row.value()) : "-", row.unit(),
                     floor,
                     ratio.has_value() ? absl::StrFormat("%.2fx", *ratio) : "-",
                     row.goal().empty() ? "-" : row.goal(), met});
  }
  std::vector<size_t> widths(cells[0].size(), 0);
  for (const auto& line : cells) {
    for (size_t i = 0; i < line.size(); ++i) {
      widths[i] = std::max(widths[i], line[i].size());
    }
  }
  for (const auto& line : cells) {
    std::string text;
    for (size_t i = 0; i < line.size(); ++i) {
      // Values right-aligned, the rest left-aligned; no trailing blanks.
      const bool last = i + 1 == line.size();
      std::string cell =
          i == 2 ? std::string(widths[i] - line[i].size(), ' ') + line[i]
          : last ? line[i]
                 : line[i] + std::string(widths[i] - line[i].size(), ' ');
      absl::StrAppend(&text, i == 0 ? "" : "  ", cell);
    }
    std::fprintf(out, "%s\n", text.c_str());
  }
  for (const Row& row : rows_) {
    if (row.n() == 0) {
      std::fprintf(out, "note: %s (%s) was not measured\n", row.id().c_str(),
                   row.name().c_str());
    }
  }
  for (const std::string& note : notes_) {
    std::fprintf(out, "note: %s\n", note.c_str());
  }
}

absl::Status Report::WriteJson(const std::string& path) const {
  std::ostringstream json;
  json << "[\n";
  for (size_t i = 0; i < rows_.size(); ++i) {
    const Row& row = rows_[i];
    std::optional<double> ratio = Ratio(row);
    const bool measured = row.n() > 0;
    json << "  {\"id\": " << JsonString(row.id())
         << ", \"name\": " << JsonString(row.name())
         << ", \"value\": " << (measured ? JsonNumber(row.value()) : "null")
         << ", \"unit\": " << JsonString(row.unit()) << ", \"floor\": "
         << (row.floor().empty() ? "null" : JsonString(row.floor()))
         << ", \"ratio\": " << (ratio.has_value() ? JsonNumber(*ratio) : "null")
         << ", \"min\": " << (measured ? JsonNumber(row.min()) : "null")
         << ", \"max\": " << (measured ? JsonNumber(row.max()) : "null")
         << ", \"n\": " << row.n() << "}" << (i + 1 < rows_.size() ? "," : "")
         << "\n";
  }
  json << "]\n";
  std::ofstream out(path, std::ios::trunc);
  out << json.str();
  out.flush();
  if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace mesh::bench
