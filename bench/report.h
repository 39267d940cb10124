// The benches' one way to report (`make bench`, bench/run.sh): each bench
// binary collects Rows (bench/report.proto) in a Report and appends them to
// a rows file (JSON lines); bench_table reads every rows file of the run,
// prints one table (id, figure, value, unit, floor, ratio, goal, met) and
// writes the JSON list ($BENCH_OUT). A row's floor is named by id and
// looked up among all rows when the table is made, so a figure and its
// floor may come from different rows files of one run.
#ifndef HOSTMESH_BENCH_REPORT_H_
#define HOSTMESH_BENCH_REPORT_H_

#include <cstdio>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/report.pb.h"

namespace mesh::bench {

// Nearest-rank percentile (q in [0, 1]) of `values`; 0 if empty.
double Percentile(std::vector<double> values, double q);
inline double Median(std::vector<double> values) {
  return Percentile(std::move(values), 0.5);
}

class Report {
 public:
  enum class Stat { kMedian, kP99 };

  // A row summarizing `samples` (value = their median or p99; min, max, n).
  // No samples: n = 0, shown as not measured. The reference is valid until
  // the next Add.
  Row& Add(const std::string& id, const std::string& name,
           const std::string& unit, const std::vector<double>& samples,
           Stat stat = Stat::kMedian);
  // A row with a single value (n = 1).
  Row& AddValue(const std::string& id, const std::string& name,
                const std::string& unit, double value);
  void Note(std::string note);

  const std::deque<Row>& rows() const { return rows_; }
  const std::vector<std::string>& notes() const { return notes_; }
  // The row with `id`, or null.
  const Row* Find(const std::string& id) const;

  // Appends every row and note to `path`, one JSON Record a line.
  absl::Status AppendTo(const std::string& path) const;
  // Adds the records of a rows file.
  absl::Status ReadFrom(const std::string& path);

  // The table (see the file comment), then the notes.
  void PrintTable(std::FILE* out) const;
  // Writes the JSON list: one {"id", "name", "value", "unit", "floor",
  // "ratio", "min", "max", "n"} per row ("floor" is the floor's id; floor
  // and ratio are null without one).
  absl::Status WriteJson(const std::string& path) const;

 private:
  // value against its floor, in times the floor's cost; nullopt without a
  // measured floor.
  std::optional<double> Ratio(const Row& row) const;

  std::deque<Row> rows_;
  std::vector<std::string> notes_;
};

}  // namespace mesh::bench

#endif  // HOSTMESH_BENCH_REPORT_H_
