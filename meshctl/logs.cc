// meshctl logs: procs' stdout and stderr from their host (StreamLogs), from
// the start of what is kept, the last N lines or a time ago, and, with -f,
// on as they write until every proc ended (or Ctrl-C).
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "lib/grpc_status.h"
#include "lib/status.h"
#include "meshctl/cli.h"
#include "meshctl/commands.h"
#include "meshctl/format.h"
#include "proto/host.grpc.pb.h"

namespace mesh::meshctl {
namespace {

struct LogsFlags {
  std::vector<std::string> procs;
  bool follow = false;
  int64_t tail = -1;
  std::string since;
  bool stdout_only = false;
  bool stderr_only = false;
};

// Lines out of chunks: each complete line of a (proc, stream) prefixed
// "[proc] " when several procs are shown; a partial line waits for the
// rest (or its file's end), cut every kMaxLine bytes without a newline.
class LinePrinter {
 public:
  static constexpr size_t kMaxLine = 64 << 10;

  LinePrinter(std::ostream& out, std::ostream& err, bool prefix)
      : out_(out), err_(err), prefix_(prefix) {}

  void Add(const v1::LogChunk& chunk) {
    std::ostream& os = chunk.stream() == v1::LOG_STDERR ? err_ : out_;
    std::string& partial = partial_[{chunk.proc(), chunk.stream()}];
    const std::string tag =
        prefix_ ? absl::StrCat("[", chunk.proc(), "] ") : std::string();
    if (chunk.skipped_bytes() > 0) {
      os << tag << "... " << chunk.skipped_bytes()
         << " bytes dropped (rotated away on the host)\n";
    }
    if (!prefix_) {
      os << chunk.data();
    } else {
      partial += chunk.data();
      size_t start = 0;
      for (size_t nl; (nl = partial.find('\n', start)) != std::string::npos;
           start = nl + 1) {
        os << tag << absl::string_view(partial).substr(start, nl + 1 - start);
      }
      partial.erase(0, start);
      while (partial.size() >= kMaxLine) {
        os << tag << absl::string_view(partial).substr(0, kMaxLine) << "\n";
        partial.erase(0, kMaxLine);
      }
      if (chunk.eof() && !partial.empty()) {
        os << tag << partial << "\n";
        partial.clear();
      }
    }
    os.flush();
  }

  void FlushAll() {
    for (auto& [key, partial] : partial_) {
      if (partial.empty()) continue;
      (key.second == v1::LOG_STDERR ? err_ : out_)
          << "[" << key.first << "] " << partial << "\n";
      partial.clear();
    }
    out_.flush();
    err_.flush();
  }

 private:
  std::ostream& out_;
  std::ostream& err_;
  const bool prefix_;
  std::map<std::pair<std::string, int>, std::string> partial_;
};

absl::Status Logs(Cli& cli, const LogsFlags& flags) {
  ASSIGN_OR_RETURN(HostConn * conn, cli.OneHost("logs"));
  if (flags.stdout_only && flags.stderr_only) {
    return UsageError(absl::InvalidArgumentError(
        "--stdout and --stderr exclude each other (neither: both)"));
  }
  if (flags.tail >= 0 && !flags.since.empty()) {
    return UsageError(
        absl::InvalidArgumentError("--tail and --since exclude each other"));
  }
  v1::StreamLogsRequest request;
  for (const std::string& proc : flags.procs) request.add_names(proc);
  request.set_follow(flags.follow);
  request.set_stream(flags.stdout_only   ? v1::LOG_STDOUT
                     : flags.stderr_only ? v1::LOG_STDERR
                                         : v1::LOG_STREAM_UNSPECIFIED);
  if (flags.tail >= 0)
    request.set_tail_lines(static_cast<uint32_t>(flags.tail));
  if (!flags.since.empty()) {
    absl::Duration ago;
    if (!absl::ParseDuration(flags.since, &ago) ||
        ago <= absl::ZeroDuration()) {
      return UsageError(absl::InvalidArgumentError(
          absl::StrCat("--since \"", flags.since,
                       "\" is not a positive duration (e.g. 90s, 5m, 2h)")));
    }
    *request.mutable_since() =
        google::protobuf::util::TimeUtil::NanosecondsToTimestamp(
            absl::ToUnixNanos(absl::Now() - ago));
  }
  grpc::ClientContext context;
  // Following has no end of its own; a plain read gets the usual bound
  // per call, generously (a big log takes a while).
  if (!flags.follow) {
    context.set_deadline(absl::ToChronoTime(
        absl::Now() + std::max(cli.timeout(), absl::Minutes(10))));
  }
  std::unique_ptr<grpc::ClientReader<v1::LogChunk>> reader =
      conn->host().StreamLogs(&context, request);
  const bool structured = IsStructured(cli.output());
  LinePrinter printer(cli.out(), cli.err(), flags.procs.size() != 1);
  v1::LogChunk chunk;
  while (reader->Read(&chunk)) {
    if (structured) {
      ASSIGN_OR_RETURN(std::string line, ToOneLineJson(chunk));
      cli.out() << line << "\n";
      cli.out().flush();
      continue;
    }
    printer.Add(chunk);
  }
  printer.FlushAll();
  absl::Status finished = FromGrpcStatus(reader->Finish());
  return Annotate(finished, absl::StrCat("logs of ",
                                         flags.procs.empty()
                                             ? std::string("every proc")
                                             : absl::StrJoin(flags.procs, ", "),
                                         " ", conn->OnHost()));
}

}  // namespace

void AddLogsCommands(Cli& cli) {
  auto flags = std::make_shared<LogsFlags>();
  CLI::App* logs = cli.Verb(
      &cli.app(), "logs",
      "Print procs' stdout (to stdout) and stderr (to stderr), each line "
      "prefixed [proc] unless one proc is named; -f follows until every "
      "proc ended. With -o json: one LogChunk per line (data in base64)",
      "meshctl logs trainer_0 -f --tail 100\n"
      "meshctl logs p0_0 p0_1 --since 5m --stderr\n"
      "meshctl logs            (every proc you may see)",
      [&cli, flags] { return Logs(cli, *flags); });
  logs->add_option("procs", flags->procs,
                   "Proc names (none: every proc you may see)")
      ->check(NameValidator("proc name"));
  logs->add_flag("-f,--follow", flags->follow,
                 "Keep printing as the procs write, until each ended");
  logs->add_option("--tail", flags->tail,
                   "Only the last N lines of each file (0: only new output)")
      ->check(CLI::Range(int64_t{0}, int64_t{1000000}));
  logs->add_option("--since", flags->since,
                   "Only output written in the last DURATION (e.g. 5m; "
                   "hostd indexes by the second)");
  logs->add_flag("--stdout", flags->stdout_only, "Only stdout");
  logs->add_flag("--stderr", flags->stderr_only, "Only stderr");
}

}  // namespace mesh::meshctl
