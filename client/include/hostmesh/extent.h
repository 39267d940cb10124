// Extents and views: the shape of a mesh and selections of it.
//
// An Extent is a list of labelled dimensions, e.g. {hosts: 2, procs: 4},
// ranked row-major (the last label varies fastest): rank = host × 4 + proc.
// A View is a set of a mesh's ranks with an extent of its own; slicing a
// view keeps its labels and renumbers the selected ranks view-relatively
// from 0, row-major. Values; not thread-safe for concurrent mutation.
#ifndef HOSTMESH_CLIENT_INCLUDE_HOSTMESH_EXTENT_H_
#define HOSTMESH_CLIENT_INCLUDE_HOSTMESH_EXTENT_H_

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace mesh {

class Extent {
 public:
  using Dim = std::pair<std::string, size_t>;

  // The unity extent: no dimensions, one rank.
  Extent() = default;
  explicit Extent(std::vector<Dim> dims) : dims_(std::move(dims)) {}
  static Extent Unity() { return Extent(); }

  const std::vector<Dim>& dims() const { return dims_; }
  size_t num_ranks() const;
  // Size of dimension `label`; NOT_FOUND if there is none.
  absl::StatusOr<size_t> size(const std::string& label) const;
  // Coordinates of `rank` (one per dimension) and back.
  std::vector<size_t> Coordinates(size_t rank) const;
  size_t RankOf(const std::vector<size_t>& coordinates) const;
  // "{hosts: 2, procs: 4}".
  std::string ToString() const;

  bool operator==(const Extent& other) const { return dims_ == other.dims_; }

 private:
  std::vector<Dim> dims_;
};

class View {
 public:
  // The whole of a mesh with extent `extent`.
  explicit View(Extent extent);

  const Extent& extent() const { return extent_; }
  size_t num_ranks() const { return ranks_.size(); }
  // The mesh rank behind view rank `view_rank`.
  size_t base_rank(size_t view_rank) const { return ranks_[view_rank]; }
  const std::vector<size_t>& base_ranks() const { return ranks_; }

  // Ranks [begin, end) of dimension `label`, keeping the dimension (its size
  // becomes end - begin). INVALID_ARGUMENT naming the label or the range.
  absl::StatusOr<View> Slice(const std::string& label, size_t begin,
                             size_t end) const;
  // The single index `index` of dimension `label`.
  absl::StatusOr<View> Slice(const std::string& label, size_t index) const {
    return Slice(label, index, index + 1);
  }

 private:
  View(Extent extent, std::vector<size_t> ranks)
      : extent_(std::move(extent)), ranks_(std::move(ranks)) {}
  Extent extent_;
  std::vector<size_t> ranks_;
};

}  // namespace mesh

#endif  // HOSTMESH_CLIENT_INCLUDE_HOSTMESH_EXTENT_H_
