// A small Prometheus metrics registry, transport-free: counters and
// histograms hostd updates as things happen, collectors that write gauges
// when scraped, and the text exposition format 0.0.4 they are rendered in
// (https://prometheus.io/docs/instrumenting/exposition_formats/).
// prometheus-cpp is not packaged in Debian; this is the part hostd needs.
//
// Label cardinality is capped: a family keeps at most kMaxSeries label sets;
// samples for more are dropped and counted in
// hostmesh_metrics_dropped_samples_total. Thread-safe.
#ifndef HOSTMESH_HOSTD_METRICS_H_
#define HOSTMESH_HOSTD_METRICS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace mesh {

// A label's value with `\`, `"` and line feeds escaped (the format's
// rule), so a value cannot end its quotes or its line.
std::string EscapeLabelValue(absl::string_view value);
// A sample value: integers exactly, others with 17 digits; +Inf, -Inf, NaN.
std::string FormatMetricValue(double value);

// Writes families of samples in the text format, one family at a time.
class MetricsWriter {
 public:
  using Labels = std::vector<std::pair<std::string, std::string>>;

  // Starts family `name` ("counter", "gauge" or "histogram") with its help
  // text (line feeds and `\` escaped).
  void Family(absl::string_view name, absl::string_view type,
              absl::string_view help);
  // One sample line: `name{label="value",...} value`. `name` is the
  // family's, or for a histogram its _bucket/_sum/_count.
  void Sample(absl::string_view name, const Labels& labels, double value);

  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

class MetricsRegistry {
 public:
  static constexpr size_t kMaxSeries = 512;

  // A counter family: one value per label set, starting at 0. A family
  // without labels shows 0 before its first Add.
  class Counter {
   public:
    // `values` in the order of the family's label names.
    void Add(const std::vector<std::string>& values, double delta = 1);
    void Add(double delta = 1) { Add({}, delta); }

   private:
    friend class MetricsRegistry;
    Counter(MetricsRegistry* registry, std::vector<std::string> labels)
        : registry_(registry), labels_(std::move(labels)) {}
    MetricsRegistry* const registry_;
    const std::vector<std::string> labels_;
    std::map<std::vector<std::string>, double> values_
        ABSL_GUARDED_BY(registry_->mu_);
  };

  // A histogram family with fixed bucket upper bounds (seconds, bytes...),
  // increasing; +Inf is implied.
  class Histogram {
   public:
    void Observe(const std::vector<std::string>& values, double value);

   private:
    friend class MetricsRegistry;
    struct Series {
      std::vector<uint64_t> buckets;  // per bound, not cumulative; +Inf last
      double sum = 0;
      uint64_t count = 0;
    };
    Histogram(MetricsRegistry* registry, std::vector<std::string> labels,
              std::vector<double> bounds)
        : registry_(registry),
          labels_(std::move(labels)),
          bounds_(std::move(bounds)) {}
    MetricsRegistry* const registry_;
    const std::vector<std::string> labels_;
    const std::vector<double> bounds_;
    std::map<std::vector<std::string>, Series> series_
        ABSL_GUARDED_BY(registry_->mu_);
  };

  // Writes the families it owns when scraped (gauges read at that moment).
  using Collector = std::function<void(MetricsWriter&)>;

  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Families live as long as the registry. `name` of a counter ends in
  // "_total".
  Counter* AddCounter(std::string name, std::string help,
                      std::vector<std::string> labels = {});
  Histogram* AddHistogram(std::string name, std::string help,
                          std::vector<std::string> labels,
                          std::vector<double> bounds);
  void AddCollector(Collector collector);

  // Every family: counters and histograms in the order added, then each
  // collector's, then the dropped-samples counter.
  std::string Render() const;

 private:
  struct Family {
    std::string name;
    std::string help;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Histogram> histogram;
  };
  // Whether one more series fits a family holding `size`; counts a drop.
  bool RoomLocked(size_t size) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::vector<Family> families_ ABSL_GUARDED_BY(mu_);
  std::vector<Collector> collectors_ ABSL_GUARDED_BY(mu_);
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_METRICS_H_
