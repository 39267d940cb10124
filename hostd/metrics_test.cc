#include "hostd/metrics.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "catch2/catch.hpp"

namespace mesh {
namespace {

TEST_CASE(
    "a counter without labels shows 0 before its first add, then "
    "its sum") {
  MetricsRegistry registry;
  MetricsRegistry::Counter* spawns =
      registry.AddCounter("hostmesh_proc_spawns_total", "Procs spawned");
  std::string text = registry.Render();
  CHECK(absl::StrContains(text,
                          "# HELP hostmesh_proc_spawns_total Procs "
                          "spawned\n# TYPE hostmesh_proc_spawns_total "
                          "counter\nhostmesh_proc_spawns_total 0\n"));
  spawns->Add();
  spawns->Add(2);
  CHECK(absl::StrContains(registry.Render(), "hostmesh_proc_spawns_total 3\n"));
}

TEST_CASE("labelled counters keep one series per label set") {
  MetricsRegistry registry;
  MetricsRegistry::Counter* calls =
      registry.AddCounter("rpcs_total", "Calls", {"method", "code"});
  calls->Add({"/mesh.v1.Host/StopProc", "OK"});
  calls->Add({"/mesh.v1.Host/StopProc", "OK"});
  calls->Add({"/mesh.v1.Host/StopProc", "NOT_FOUND"});
  const std::string text = registry.Render();
  CHECK(absl::StrContains(
      text, "rpcs_total{method=\"/mesh.v1.Host/StopProc\",code=\"OK\"} 2\n"));
  CHECK(absl::StrContains(
      text,
      "rpcs_total{method=\"/mesh.v1.Host/StopProc\",code=\"NOT_FOUND\"} 1\n"));
}

TEST_CASE("a histogram's buckets are cumulative with sum and count") {
  MetricsRegistry registry;
  MetricsRegistry::Histogram* latency = registry.AddHistogram(
      "rpc_duration_seconds", "Latency", {"method"}, {0.005, 0.1, 1});
  latency->Observe({"Get"}, 0.001);
  latency->Observe({"Get"}, 0.05);
  latency->Observe({"Get"}, 0.1);  // on a bound: that bucket
  latency->Observe({"Get"}, 7);
  const std::string text = registry.Render();
  CHECK(absl::StrContains(text, "# TYPE rpc_duration_seconds histogram\n"));
  CHECK(absl::StrContains(
      text, "rpc_duration_seconds_bucket{method=\"Get\",le=\"0.005\"} 1\n"));
  CHECK(absl::StrContains(
      text, "rpc_duration_seconds_bucket{method=\"Get\",le=\"0.1\"} 3\n"));
  CHECK(absl::StrContains(
      text, "rpc_duration_seconds_bucket{method=\"Get\",le=\"1\"} 3\n"));
  CHECK(absl::StrContains(
      text, "rpc_duration_seconds_bucket{method=\"Get\",le=\"+Inf\"} 4\n"));
  CHECK(absl::StrContains(text,
                          "rpc_duration_seconds_sum{method=\"Get\"} "
                          "7.15"));
  CHECK(absl::StrContains(text,
                          "rpc_duration_seconds_count{method=\"Get\"} "
                          "4\n"));
}

TEST_CASE("label values cannot end their quotes or their line") {
  CHECK(EscapeLabelValue("a\"b\\c\nd") == "a\\\"b\\\\c\\nd");
  MetricsWriter out;
  out.Family("procs", "gauge", "Help with a \\ and a\nline feed");
  out.Sample("procs", {{"proc", "p\"} 1\nforged 2"}}, 1);
  const std::string text = out.text();
  CHECK(text ==
        "# HELP procs Help with a \\\\ and a\\nline feed\n"
        "# TYPE procs gauge\n"
        "procs{proc=\"p\\\"} 1\\nforged 2\"} 1\n");
  // Every line is a comment or one sample of family procs.
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    CHECK((absl::StartsWith(line, "# ") || absl::StartsWith(line, "procs{")));
  }
}

TEST_CASE("values print exactly or in the shortest form that reads back") {
  CHECK(FormatMetricValue(0) == "0");
  CHECK(FormatMetricValue(12345678901) == "12345678901");
  CHECK(FormatMetricValue(0.25) == "0.25");
  CHECK(FormatMetricValue(0.005) == "0.005");
  CHECK(FormatMetricValue(1.0 / 0.0) == "+Inf");
}

TEST_CASE("collectors write their families at each render") {
  MetricsRegistry registry;
  int scrapes = 0;
  registry.AddCollector([&](MetricsWriter& out) {
    ++scrapes;
    out.Family("hostmesh_held_waits", "gauge", "Held waits");
    out.Sample("hostmesh_held_waits", {}, scrapes);
  });
  CHECK(absl::StrContains(registry.Render(), "hostmesh_held_waits 1\n"));
  CHECK(absl::StrContains(registry.Render(), "hostmesh_held_waits 2\n"));
}

TEST_CASE(
    "a family keeps at most its cap of label sets and counts the "
    "samples dropped") {
  MetricsRegistry registry;
  MetricsRegistry::Counter* calls =
      registry.AddCounter("calls_total", "Calls", {"name"});
  for (size_t i = 0; i < MetricsRegistry::kMaxSeries + 10; ++i) {
    calls->Add({std::to_string(i)});
  }
  calls->Add({"0"});  // an existing series still counts
  const std::string text = registry.Render();
  CHECK(absl::StrContains(text, "calls_total{name=\"0\"} 2\n"));
  CHECK_FALSE(absl::StrContains(
      text, "calls_total{name=\"" +
                std::to_string(MetricsRegistry::kMaxSeries) + "\"}"));
  CHECK(absl::StrContains(text, "hostmesh_metrics_dropped_samples_total 10\n"));
}

}  // namespace
}  // namespace mesh
