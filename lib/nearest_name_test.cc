#include "lib/nearest_name.h"

#include <optional>
#include <string>
#include <vector>

#include "catch2/catch.hpp"

namespace mesh {
namespace {

const std::vector<std::string> kKeys = {
    "listen",    "advertise",          "state-dir",         "runtime-dir",
    "max-procs", "max-finished-procs", "max-message-bytes", "log-level",
    "v",         "tokens-file",        "peer-token-file",   "allow-command"};

TEST_CASE("edits count inserts, deletes, substitutions and adjacent swaps") {
  CHECK(NameDistance("listen", "listen") == 0);
  CHECK(NameDistance("lisen", "listen") == 1);
  CHECK(NameDistance("listten", "listen") == 1);
  CHECK(NameDistance("lusten", "listen") == 1);
  CHECK(NameDistance("litsen", "listen") == 1);
  CHECK(NameDistance("", "abc") == 3);
  CHECK(NameDistance("abc", "") == 3);
  CHECK(NameDistance("kitten", "sitting") == 3);
}

TEST_CASE("case and underscores against dashes cost nothing") {
  CHECK(NameDistance("MAX_PROCS", "max-procs") == 0);
  CHECK(NameDistance("Listen", "listen") == 0);
}

TEST_CASE("a near misspelling finds the name it meant") {
  CHECK(NearestName("lisen", kKeys) == std::optional<std::string>("listen"));
  CHECK(NearestName("max_procs", kKeys) ==
        std::optional<std::string>("max-procs"));
  CHECK(NearestName("maxprocs", kKeys) ==
        std::optional<std::string>("max-procs"));
  CHECK(NearestName("state_dir", kKeys) ==
        std::optional<std::string>("state-dir"));
  CHECK(NearestName("allow-commands", kKeys) ==
        std::optional<std::string>("allow-command"));
  CHECK(NearestName("lsit", {"list", "get", "stop"}) ==
        std::optional<std::string>("list"));
  CHECK(NearestName("vv", kKeys) == std::optional<std::string>("v"));
}

TEST_CASE("a name near nothing gets no suggestion") {
  CHECK_FALSE(NearestName("frobnicate", kKeys).has_value());
  CHECK_FALSE(NearestName("bogus", {"host", "proc", "owner", "actor"}));
  CHECK_FALSE(NearestName("x", {"host", "proc"}).has_value());
  CHECK_FALSE(NearestName("lisen", {}).has_value());
}

TEST_CASE("a prefix of exactly one name suggests it, of several none") {
  CHECK(NearestName("adv", kKeys) == std::optional<std::string>("advertise"));
  CHECK_FALSE(NearestName("max", kKeys).has_value());
}

TEST_CASE("ties go to the earliest candidate") {
  CHECK(NearestName("cat", {"bat", "hat"}) ==
        std::optional<std::string>("bat"));
  CHECK(NearestName("cat", {"hat", "bat"}) ==
        std::optional<std::string>("hat"));
}

TEST_CASE("did-you-mean text wraps the nearest name or is empty") {
  CHECK(DidYouMean("lisen", kKeys, "; did you mean \"", "\"?") ==
        "; did you mean \"listen\"?");
  CHECK(DidYouMean("frobnicate", kKeys, "; did you mean \"", "\"?").empty());
}

}  // namespace
}  // namespace mesh
