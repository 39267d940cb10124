#include "meshctl/meshctl.h"

#include <algorithm>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/nearest_name.h"
#include "meshctl/commands.h"

namespace mesh {
namespace meshctl {
namespace {

// After a failed parse (`e`): if a word where a command belongs is none of
// that command group's, "unknown command 'lsit' for 'meshctl proc', did you
// mean 'list'?" (or naming the commands there are); if no command came,
// "'meshctl proc' needs a command: spawn, list, ..."; else "" (CLI11's
// message).
std::string CommandError(CLI::App& app, const CLI::ParseError& e) {
  CLI::App* group = &app;
  std::string path = app.get_name();
  while (!group->get_subcommands().empty()) {
    group = group->get_subcommands().front();
    absl::StrAppend(&path, " ", group->get_name());
  }
  std::vector<std::string> commands;
  for (const CLI::App* command : group->get_subcommands(
           [](const CLI::App* sub) { return !sub->get_name().empty(); })) {
    commands.push_back(command->get_name());
  }
  const std::vector<std::string> words = app.remaining(/*recurse=*/true);
  if (!commands.empty() && words.empty() && e.get_name() == "RequiredError" &&
      absl::StrContains(e.what(), "subcommand")) {
    return absl::StrCat("'", path,
                        "' needs a command: ", absl::StrJoin(commands, ", "));
  }
  // An unknown flag before it: CLI11 says so.
  if (commands.empty() || words.empty() || words.front().empty() ||
      words.front()[0] == '-') {
    return "";
  }
  const std::string& word = words.front();
  std::string text = absl::StrCat("unknown command '", word, "'");
  if (group != &app) absl::StrAppend(&text, " for '", path, "'");
  std::string meant = DidYouMean(word, commands, ", did you mean '", "'?");
  if (meant.empty()) {
    meant = absl::StrCat(" (commands: ", absl::StrJoin(commands, ", "), ")");
  }
  return text + meant;
}

}  // namespace

int Cli::Main(int argc, char** argv) {
  try {
    app_.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (std::string unknown = CommandError(app_, e); !unknown.empty()) {
      err_ << "meshctl: " << unknown << "\n"
           << "Run with --help for more information." << std::endl;
      return 2;
    }
    // --help and --version are "parse errors" with exit code 0, printed to
    // `out`.
    return app_.exit(e, out_, err_) == 0 ? 0 : 2;
  }
  for (const auto& [verb, run] : verbs_) {
    if (!verb->parsed()) continue;
    const bool hosts =
        std::find(no_hosts_.begin(), no_hosts_.end(), verb) == no_hosts_.end();
    absl::Status status = Setup(hosts);
    if (!status.ok()) status = UsageError(status);
    if (status.ok()) status = run();
    if (!status.ok()) {
      if (IsUsageError(status)) {
        err_ << "meshctl: " << status.message() << "\n"
             << "Run with --help for more information." << std::endl;
        return 2;
      }
      Fail(status);
    }
    return failures_ > 0 ? 1 : 0;
  }
  err_ << "meshctl: INTERNAL: no command was selected" << std::endl;
  return 1;
}

}  // namespace meshctl

int RunMeshctl(int argc, char** argv, std::ostream& out, std::ostream& err) {
  meshctl::Cli cli(out, err);
  meshctl::AddAllCommands(cli);
  return cli.Main(argc, argv);
}

}  // namespace mesh
