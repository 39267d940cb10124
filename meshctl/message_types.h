// The message types `meshctl actor send` can build: the built-in ones
// (proto/actors.proto, linked in) and a user's, loaded like grpcurl does
// from .proto sources (--proto, --import-path; parsed by protobuf's
// compiler::Importer) or from a descriptor set (--descriptor-set, as
// `protoc --include_imports --descriptor_set_out` writes it).
#ifndef HOSTMESH_MESHCTL_MESSAGE_TYPES_H_
#define HOSTMESH_MESHCTL_MESSAGE_TYPES_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/any.pb.h"
#include "google/protobuf/compiler/importer.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor_database.h"
#include "google/protobuf/dynamic_message.h"

namespace mesh::meshctl {

class MessageTypes {
 public:
  MessageTypes();
  ~MessageTypes();
  MessageTypes(const MessageTypes&) = delete;
  MessageTypes& operator=(const MessageTypes&) = delete;

  // Loads `proto_files` (paths; each found under one of `import_paths`, or
  // by itself when relative to the current directory or absolute) and the
  // descriptor sets in `descriptor_sets`. Their imports resolve against
  // the import paths, then protobuf's own .proto files (/usr/include), and
  // types meshctl links (google.protobuf.*, mesh.v1.*). INVALID_ARGUMENT
  // naming the file and line of a parse error, or the set that does not
  // parse. Call once, before the rest.
  absl::Status Load(const std::vector<std::string>& proto_files,
                    const std::vector<std::string>& import_paths,
                    const std::vector<std::string>& descriptor_sets);

  // The message `type` (a full name, e.g. mesh.v1.Echo or demo.Greeting)
  // with the fields of `json` (protobuf JSON; none if empty), packed in an
  // Any ("type.googleapis.com/<type>"). INVALID_ARGUMENT for an unknown type
  // (naming the built-in ones and those loaded) or JSON that is not one.
  absl::StatusOr<google::protobuf::Any> Build(const std::string& type,
                                              const std::string& json);

  // For printing replies of loaded types (FormatReply); nullptr before a
  // Load that loaded something.
  const google::protobuf::DescriptorPool* pool() const { return pool_.get(); }
  google::protobuf::MessageFactory* factory() { return &factory_; }

 private:
  class ErrorCollector;
  const google::protobuf::Descriptor* Find(const std::string& type) const;

  // .proto sources.
  google::protobuf::compiler::DiskSourceTree source_tree_;
  std::unique_ptr<ErrorCollector> errors_;
  std::unique_ptr<google::protobuf::compiler::SourceTreeDescriptorDatabase>
      source_db_;
  // Descriptor sets.
  google::protobuf::SimpleDescriptorDatabase set_db_;
  // Types meshctl links.
  google::protobuf::DescriptorPoolDatabase generated_db_;
  std::unique_ptr<google::protobuf::MergedDescriptorDatabase> merged_db_;
  std::unique_ptr<google::protobuf::DescriptorPool> pool_;
  google::protobuf::DynamicMessageFactory factory_;
  std::vector<std::string> loaded_types_;
};

// The messages the built-in actors handle (proto/actors.proto).
std::vector<std::string> BuiltinMessageNames();

}  // namespace mesh::meshctl

#endif  // HOSTMESH_MESHCTL_MESSAGE_TYPES_H_
