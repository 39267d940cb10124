#include "hostmesh/extent.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace mesh {

size_t Extent::num_ranks() const {
  size_t n = 1;
  for (const auto& [label, size] : dims_) n *= size;
  return n;
}

absl::StatusOr<size_t> Extent::size(const std::string& label) const {
  for (const auto& [name, size] : dims_) {
    if (name == label) return size;
  }
  return absl::NotFoundError(
      absl::StrFormat("extent %s has no dimension \"%s\"", ToString(), label));
}

std::vector<size_t> Extent::Coordinates(size_t rank) const {
  std::vector<size_t> coordinates(dims_.size());
  for (size_t i = dims_.size(); i-- > 0;) {
    coordinates[i] = rank % dims_[i].second;
    rank /= dims_[i].second;
  }
  return coordinates;
}

size_t Extent::RankOf(const std::vector<size_t>& coordinates) const {
  size_t rank = 0;
  for (size_t i = 0; i < dims_.size(); ++i) {
    rank = rank * dims_[i].second + coordinates[i];
  }
  return rank;
}

std::string Extent::ToString() const {
  return absl::StrCat("{",
                      absl::StrJoin(dims_, ", ",
                                    [](std::string* out, const Dim& dim) {
                                      absl::StrAppend(out, dim.first, ": ",
                                                      dim.second);
                                    }),
                      "}");
}

View::View(Extent extent) : extent_(std::move(extent)) {
  ranks_.resize(extent_.num_ranks());
  for (size_t i = 0; i < ranks_.size(); ++i) ranks_[i] = i;
}

absl::StatusOr<View> View::Slice(const std::string& label, size_t begin,
                                 size_t end) const {
  std::vector<Extent::Dim> dims = extent_.dims();
  size_t axis = dims.size();
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i].first == label) axis = i;
  }
  if (axis == dims.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cannot slice \"%s\": the view %s has no such dimension", label,
        extent_.ToString()));
  }
  if (begin >= end || end > dims[axis].second) {
    return absl::InvalidArgumentError(
        absl::StrFormat("slice %s[%d:%d] is out of range for the view %s",
                        label, begin, end, extent_.ToString()));
  }
  dims[axis].second = end - begin;
  Extent sliced(dims);
  std::vector<size_t> ranks(sliced.num_ranks());
  for (size_t view_rank = 0; view_rank < ranks.size(); ++view_rank) {
    std::vector<size_t> coordinates = sliced.Coordinates(view_rank);
    coordinates[axis] += begin;
    ranks[view_rank] = ranks_[extent_.RankOf(coordinates)];
  }
  return View(std::move(sliced), std::move(ranks));
}

}  // namespace mesh
