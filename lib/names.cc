#include "lib/names.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace mesh {
namespace {

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-' || c == '.';
}

}  // namespace

absl::Status ValidateName(absl::string_view name, absl::string_view what) {
  if (name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  }
  if (name.size() > kMaxNameLength) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s is %d characters long; the limit is %d", what,
                        name.size(), kMaxNameLength));
  }
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    if (!IsNameChar(c)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s %s has a character not allowed at offset %d (byte 0x%02x); "
          "allowed are a-z 0-9 _ - .",
          what, QuoteForError(name), i, static_cast<unsigned char>(c)));
    }
  }
  if (name[0] == '.' || name[0] == '-' || name[0] == '_') {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s %s must start with a letter or digit", what, QuoteForError(name)));
  }
  return absl::OkStatus();
}

std::string MemberName(absl::string_view mesh_name, uint64_t rank) {
  return absl::StrCat(mesh_name, "_", rank);
}

std::string QuoteForError(absl::string_view s, size_t max) {
  if (s.size() <= max) return absl::StrCat("\"", absl::CHexEscape(s), "\"");
  return absl::StrCat("\"", absl::CHexEscape(s.substr(0, max)), "...\" (",
                      s.size(), " bytes)");
}

std::string BoundText(absl::string_view s, size_t max) {
  if (s.size() <= max) return std::string(s);
  size_t cut = max;
  // Back to the start of a UTF-8 character (continuation bytes are 10xxxxxx).
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) {
    --cut;
  }
  return absl::StrCat(s.substr(0, cut), "... (", s.size(), " bytes)");
}

}  // namespace mesh
