#include "lib/nearest_name.h"

#include <algorithm>
#include <limits>

namespace mesh {
namespace {

char Fold(char c) {
  if (c >= 'A' && c <= 'Z') return static_cast<char>(c - 'A' + 'a');
  if (c == '_') return '-';
  return c;
}

size_t MaxEdits(size_t length) {
  if (length <= 4) return 1;
  if (length <= 8) return 2;
  return 3;
}

}  // namespace

size_t NameDistance(std::string_view a, std::string_view b) {
  // Optimal string alignment: Levenshtein plus adjacent transpositions, over
  // three rows (the one before the previous is what a swap looks back to).
  std::vector<size_t> before(b.size() + 1), previous(b.size() + 1),
      current(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) previous[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    current[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const bool same = Fold(a[i - 1]) == Fold(b[j - 1]);
      current[j] = std::min({previous[j] + 1, current[j - 1] + 1,
                             previous[j - 1] + (same ? 0 : 1)});
      if (i > 1 && j > 1 && Fold(a[i - 1]) == Fold(b[j - 2]) &&
          Fold(a[i - 2]) == Fold(b[j - 1])) {
        current[j] = std::min(current[j], before[j - 2] + 1);
      }
    }
    std::swap(before, previous);
    std::swap(previous, current);
  }
  return previous[b.size()];
}

std::optional<std::string> NearestName(
    std::string_view name, const std::vector<std::string>& candidates) {
  const std::string* best = nullptr;
  size_t best_distance = std::numeric_limits<size_t>::max();
  for (const std::string& candidate : candidates) {
    if (candidate == name) continue;
    const size_t distance = NameDistance(name, candidate);
    if (distance < best_distance) {
      best = &candidate;
      best_distance = distance;
    }
  }
  if (best != nullptr && best_distance <= MaxEdits(name.size())) return *best;
  if (name.size() < 2) return std::nullopt;
  const std::string* prefixed = nullptr;
  for (const std::string& candidate : candidates) {
    if (candidate.size() > name.size() &&
        std::string_view(candidate).substr(0, name.size()) == name) {
      if (prefixed != nullptr) return std::nullopt;
      prefixed = &candidate;
    }
  }
  if (prefixed != nullptr) return *prefixed;
  return std::nullopt;
}

std::string DidYouMean(std::string_view name,
                       const std::vector<std::string>& candidates,
                       std::string_view before, std::string_view after) {
  std::optional<std::string> nearest = NearestName(name, candidates);
  if (!nearest.has_value()) return "";
  std::string text(before);
  text += *nearest;
  text += after;
  return text;
}

}  // namespace mesh
