#include "hostd/metrics.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace mesh {
namespace {

// HELP text: `\` and line feeds escaped (quotes are allowed there).
std::string EscapeHelp(absl::string_view help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

constexpr char kDroppedName[] = "hostmesh_metrics_dropped_samples_total";

}  // namespace

std::string EscapeLabelValue(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatMetricValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::floor(value) && std::fabs(value) < 9007199254740992.0) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  // The shortest of 15 to 17 digits that reads back as `value` (so a
  // bucket bound of 0.005 is "0.005").
  for (int digits = 15; digits < 17; ++digits) {
    std::string text = absl::StrFormat("%.*g", digits, value);
    if (std::strtod(text.c_str(), nullptr) == value) return text;
  }
  return absl::StrFormat("%.17g", value);
}

void MetricsWriter::Family(absl::string_view name, absl::string_view type,
                           absl::string_view help) {
  absl::StrAppend(&text_, "# HELP ", name, " ", EscapeHelp(help), "\n",
                  "# TYPE ", name, " ", type, "\n");
}

void MetricsWriter::Sample(absl::string_view name, const Labels& labels,
                           double value) {
  absl::StrAppend(&text_, name);
  if (!labels.empty()) {
    text_ += '{';
    bool first = true;
    for (const auto& [label, label_value] : labels) {
      absl::StrAppend(&text_, first ? "" : ",", label, "=\"",
                      EscapeLabelValue(label_value), "\"");
      first = false;
    }
    text_ += '}';
  }
  absl::StrAppend(&text_, " ", FormatMetricValue(value), "\n");
}

bool MetricsRegistry::RoomLocked(size_t size) {
  if (size < kMaxSeries) return true;
  ++dropped_;
  return false;
}

void MetricsRegistry::Counter::Add(const std::vector<std::string>& values,
                                   double delta) {
  absl::MutexLock lock(&registry_->mu_);
  auto it = values_.find(values);
  if (it == values_.end()) {
    if (values.size() != labels_.size() ||
        !registry_->RoomLocked(values_.size())) {
      return;
    }
    it = values_.emplace(values, 0).first;
  }
  it->second += delta;
}

void MetricsRegistry::Histogram::Observe(const std::vector<std::string>& values,
                                         double value) {
  absl::MutexLock lock(&registry_->mu_);
  auto it = series_.find(values);
  if (it == series_.end()) {
    if (values.size() != labels_.size() ||
        !registry_->RoomLocked(series_.size())) {
      return;
    }
    it = series_.emplace(values, Series{}).first;
    it->second.buckets.assign(bounds_.size() + 1, 0);
  }
  Series& series = it->second;
  size_t bucket = 0;
  while (bucket < bounds_.size() && value > bounds_[bucket]) ++bucket;
  ++series.buckets[bucket];
  series.sum += value;
  ++series.count;
}

MetricsRegistry::Counter* MetricsRegistry::AddCounter(
    std::string name, std::string help, std::vector<std::string> labels) {
  absl::MutexLock lock(&mu_);
  const bool unlabelled = labels.empty();
  Family family{std::move(name), std::move(help)};
  family.counter.reset(new Counter(this, std::move(labels)));
  // Its registry_ is this (the analysis cannot tell).
  family.counter->registry_->mu_.AssertHeld();
  if (unlabelled) family.counter->values_[{}] = 0;
  families_.push_back(std::move(family));
  return families_.back().counter.get();
}

MetricsRegistry::Histogram* MetricsRegistry::AddHistogram(
    std::string name, std::string help, std::vector<std::string> labels,
    std::vector<double> bounds) {
  absl::MutexLock lock(&mu_);
  Family family{std::move(name), std::move(help)};
  family.histogram.reset(
      new Histogram(this, std::move(labels), std::move(bounds)));
  families_.push_back(std::move(family));
  return families_.back().histogram.get();
}

void MetricsRegistry::AddCollector(Collector collector) {
  absl::MutexLock lock(&mu_);
  collectors_.push_back(std::move(collector));
}

std::string MetricsRegistry::Render() const {
  MetricsWriter out;
  std::vector<Collector> collectors;
  {
    absl::MutexLock lock(&mu_);
    for (const Family& family : families_) {
      if (family.counter != nullptr) {
        const Counter& counter = *family.counter;
        counter.registry_->mu_.AssertHeld();  // this registry's mu_
        out.Family(family.name, "counter", family.help);
        for (const auto& [values, value] : counter.values_) {
          MetricsWriter::Labels labels;
          for (size_t i = 0; i < values.size(); ++i) {
            labels.emplace_back(counter.labels_[i], values[i]);
          }
          out.Sample(family.name, labels, value);
        }
        continue;
      }
      const Histogram& histogram = *family.histogram;
      histogram.registry_->mu_.AssertHeld();  // this registry's mu_
      out.Family(family.name, "histogram", family.help);
      for (const auto& [values, series] : histogram.series_) {
        MetricsWriter::Labels labels;
        for (size_t i = 0; i < values.size(); ++i) {
          labels.emplace_back(histogram.labels_[i], values[i]);
        }
        uint64_t cumulative = 0;
        for (size_t b = 0; b <= histogram.bounds_.size(); ++b) {
          cumulative += series.buckets[b];
          MetricsWriter::Labels with_le = labels;
          with_le.emplace_back("le",
                               b < histogram.bounds_.size()
                                   ? FormatMetricValue(histogram.bounds_[b])
                                   : std::string("+Inf"));
          out.Sample(absl::StrCat(family.name, "_bucket"), with_le,
                     static_cast<double>(cumulative));
        }
        out.Sample(absl::StrCat(family.name, "_sum"), labels, series.sum);
        out.Sample(absl::StrCat(family.name, "_count"), labels,
                   static_cast<double>(series.count));
      }
    }
    collectors = collectors_;
  }
  // Outside the lock: a collector may take its time (asking procs).
  for (const Collector& collect : collectors) collect(out);
  uint64_t dropped;
  {
    absl::MutexLock lock(&mu_);
    dropped = dropped_;
  }
  out.Family(kDroppedName, "counter",
             "Samples not recorded because their family had reached its cap "
             "of label sets (cardinality)");
  out.Sample(kDroppedName, {}, static_cast<double>(dropped));
  return out.text();
}

}  // namespace mesh
