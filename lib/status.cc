#include "lib/status.h"

#include "absl/strings/str_cat.h"
#include "lib/names.h"

namespace mesh {

v1::Error ToErrorProto(const absl::Status& status) {
  v1::Error error;
  error.set_code(static_cast<int>(status.code()));
  error.set_message(BoundText(status.message(), kMaxErrorMessageBytes));
  return error;
}

absl::Status FromErrorProto(const v1::Error& error) {
  if (error.code() == 0) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(error.code()),
                      error.message());
}

absl::Status Annotate(const absl::Status& status, const std::string& context) {
  if (status.ok()) return status;
  return absl::Status(status.code(),
                      absl::StrCat(context, ": ", status.message()));
}

}  // namespace mesh
