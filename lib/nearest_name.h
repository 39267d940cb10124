// The nearest name: what a mistyped key, flag or command most likely meant
// ("lisen" -> "listen", "max_procs" -> "max-procs", "lsit" -> "list"), for
// errors that name both ("did you mean ...?").
#ifndef HOSTMESH_LIB_NEAREST_NAME_H_
#define HOSTMESH_LIB_NEAREST_NAME_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mesh {

// Edits (insert, delete, substitute a character, or swap two adjacent ones)
// from `a` to `b`, ignoring ASCII case, with '_' and '-' taken as equal.
size_t NameDistance(std::string_view a, std::string_view b);

// The candidate `name` most likely meant, or nullopt if none is near
// enough: the fewest edits (NameDistance), at most 1 for names of up to 4
// characters, 2 up to 8, 3 beyond; ties go to the earliest candidate. With
// none that near, the only candidate that starts with `name` (2 characters
// or more), if exactly one does. Never `name` itself spelt identically.
std::optional<std::string> NearestName(
    std::string_view name, const std::vector<std::string>& candidates);

// " (did you mean \"X\"?)"-style tail for an error: `before` + the nearest
// candidate + `after` (e.g. "; did you mean \"", "\"?"), or "" if none.
std::string DidYouMean(std::string_view name,
                       const std::vector<std::string>& candidates,
                       std::string_view before, std::string_view after);

}  // namespace mesh

#endif  // HOSTMESH_LIB_NEAREST_NAME_H_
