#include "python/foreign_types.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/dynamic_message.h>

#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"

namespace mesh::python {
namespace {

bool IsIdentifier(absl::string_view part) {
  if (part.empty() || absl::ascii_isdigit(part[0])) return false;
  for (char c : part) {
    if (!absl::ascii_isalnum(c) && c != '_') return false;
  }
  return true;
}

// One empty message type per full name, each in a pool of its own (so that
// "a.B" and "a.B.C" never clash as message and package). Thread-safe.
class ForeignTypes {
 public:
  static ForeignTypes& Get() {
    static auto* types = new ForeignTypes();  // never destroyed
    return *types;
  }

  // A message of type `type_name` that serializes to `bytes`.
  absl::StatusOr<std::unique_ptr<google::protobuf::Message>> Parse(
      const std::string& type_name, const std::string& bytes) {
    const google::protobuf::Message* prototype;
    {
      absl::MutexLock lock(&mu_);
      auto it = types_.find(type_name);
      if (it == types_.end()) {
        absl::StatusOr<std::unique_ptr<Type>> made = Make(type_name);
        if (!made.ok()) return made.status();
        it = types_.emplace(type_name, *std::move(made)).first;
      }
      prototype = it->second->prototype;
    }
    std::unique_ptr<google::protobuf::Message> message(prototype->New());
    if (!message->ParsePartialFromString(bytes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("the bytes given for a ", type_name,
                       " are not a serialized protobuf message"));
    }
    return message;
  }

 private:
  struct Type {
    google::protobuf::DescriptorPool pool;
    std::unique_ptr<google::protobuf::DynamicMessageFactory> factory;
    const google::protobuf::Message* prototype = nullptr;
  };

  static absl::StatusOr<std::unique_ptr<Type>> Make(
      const std::string& type_name) {
    std::vector<std::string> parts = absl::StrSplit(type_name, '.');
    for (const std::string& part : parts) {
      if (!IsIdentifier(part)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "not a protobuf message type name: \"", type_name, "\""));
      }
    }
    google::protobuf::FileDescriptorProto file;
    file.set_name(absl::StrCat("hostmesh-python/", type_name, ".proto"));
    size_t dot = type_name.rfind('.');
    if (dot != std::string::npos) file.set_package(type_name.substr(0, dot));
    file.add_message_type()->set_name(
        dot == std::string::npos ? type_name : type_name.substr(dot + 1));
    auto type = std::make_unique<Type>();
    const google::protobuf::FileDescriptor* built = type->pool.BuildFile(file);
    if (built == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot describe message type \"", type_name, "\""));
    }
    type->factory =
        std::make_unique<google::protobuf::DynamicMessageFactory>(&type->pool);
    type->prototype = type->factory->GetPrototype(built->message_type(0));
    return type;
  }

  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Type>> types_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<google::protobuf::Message>> ParseForeign(
    const std::string& type_name, const std::string& bytes) {
  return ForeignTypes::Get().Parse(type_name, bytes);
}

}  // namespace mesh::python
