#include "hostmesh/extent.h"

#include "catch2/catch.hpp"

namespace mesh {
namespace {

TEST_CASE("extents rank row-major with the last label fastest") {
  Extent extent({{"hosts", 2}, {"procs", 4}});
  CHECK(extent.num_ranks() == 8);
  CHECK(extent.RankOf({1, 2}) == 6);
  CHECK(extent.Coordinates(6) == std::vector<size_t>{1, 2});
  CHECK(extent.ToString() == "{hosts: 2, procs: 4}");
  CHECK(Extent::Unity().num_ranks() == 1);
}

TEST_CASE("slices select their subset and renumber view-relatively") {
  View all(Extent({{"hosts", 2}, {"procs", 4}}));
  absl::StatusOr<View> host1 = all.Slice("hosts", 1);
  REQUIRE(host1.ok());
  CHECK(host1->base_ranks() == std::vector<size_t>{4, 5, 6, 7});
  CHECK(host1->extent().ToString() == "{hosts: 1, procs: 4}");

  absl::StatusOr<View> middle = all.Slice("procs", 1, 3);
  REQUIRE(middle.ok());
  CHECK(middle->base_ranks() == std::vector<size_t>{1, 2, 5, 6});
  CHECK(middle->base_rank(2) == 5);

  absl::StatusOr<View> nested = middle->Slice("hosts", 1);
  REQUIRE(nested.ok());
  CHECK(nested->base_ranks() == std::vector<size_t>{5, 6});
}

TEST_CASE("bad slices are INVALID_ARGUMENT naming the label or range") {
  View all(Extent({{"hosts", 2}, {"procs", 4}}));
  absl::StatusOr<View> no_label = all.Slice("gpus", 0);
  CHECK(no_label.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(no_label.status().message().find("gpus") != absl::string_view::npos);
  CHECK(all.Slice("procs", 3, 5).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(all.Slice("procs", 2, 2).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mesh
