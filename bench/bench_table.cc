// Merges the rows files of one `make bench` run (bench/report.h): prints
// the table to stdout and writes the JSON list to --out.
//
// Usage: bench_table --out JSON_PATH ROWS_FILE...
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench/report.h"

int main(int argc, char** argv) {
  std::string out;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
      out = argv[++i];
    } else {
      files.push_back(argv[i]);
    }
  }
  if (out.empty() || files.empty()) {
    std::fprintf(stderr, "usage: bench_table --out JSON_PATH ROWS_FILE...\n");
    return 2;
  }
  mesh::bench::Report report;
  for (const std::string& file : files) {
    if (absl::Status read = report.ReadFrom(file); !read.ok()) {
      report.Note(std::string(read.message()));
    }
  }
  report.PrintTable(stdout);
  if (absl::Status written = report.WriteJson(out); !written.ok()) {
    std::fprintf(stderr, "bench_table: %s\n", written.ToString().c_str());
    return 1;
  }
  return 0;
}
