#include "meshctl/message_types.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/util/json_util.h"
#include "lib/status.h"
#include "proto/actors.pb.h"

namespace mesh::meshctl {

// Where protobuf's own .proto files are (libprotobuf-dev).
constexpr char kProtobufIncludes[] = "/usr/include/google/protobuf";

std::vector<std::string> BuiltinMessageNames() {
  // Naming the classes also links their descriptors into the generated
  // pool, where Build looks types up first.
  std::vector<std::string> names;
  for (const google::protobuf::Descriptor* descriptor :
       {v1::Echo::descriptor(), v1::GetActorId::descriptor(),
        v1::Increment::descriptor(), v1::GetCount::descriptor(),
        v1::Fail::descriptor(), v1::Seq::descriptor(),
        v1::GetSeqReport::descriptor()}) {
    names.push_back(descriptor->full_name());
  }
  return names;
}

// Parse and build errors, "file:line:column: message", kept in order.
class MessageTypes::ErrorCollector
    : public google::protobuf::compiler::MultiFileErrorCollector,
      public google::protobuf::DescriptorPool::ErrorCollector {
 public:
  void AddError(const std::string& filename, int line, int column,
                const std::string& message) override {
    if (line < 0) {
      errors_.push_back(absl::StrCat(filename, ": ", message));
    } else {
      errors_.push_back(absl::StrCat(filename, ":", line + 1, ":", column + 1,
                                     ": ", message));
    }
  }
  void AddError(const std::string& filename, const std::string& element_name,
                const google::protobuf::Message*,
                google::protobuf::DescriptorPool::ErrorCollector::ErrorLocation,
                const std::string& message) override {
    errors_.push_back(
        absl::StrCat(filename, ": ", element_name, ": ", message));
  }
  // Every error so far, "; "-joined; then forgets them.
  std::string Take() {
    std::string text = absl::StrJoin(errors_, "; ");
    errors_.clear();
    return text;
  }

 private:
  std::vector<std::string> errors_;
};

MessageTypes::MessageTypes()
    : errors_(std::make_unique<ErrorCollector>()),
      generated_db_(*google::protobuf::DescriptorPool::generated_pool()) {}

MessageTypes::~MessageTypes() = default;

absl::Status MessageTypes::Load(
    const std::vector<std::string>& proto_files,
    const std::vector<std::string>& import_paths,
    const std::vector<std::string>& descriptor_sets) {
  if (proto_files.empty() && descriptor_sets.empty()) return absl::OkStatus();
  for (const std::string& path : descriptor_sets) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    google::protobuf::FileDescriptorSet set;
    if (!in || !set.ParseFromString(bytes.str())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--descriptor-set: \"", path,
          "\" cannot be read or is not a FileDescriptorSet (write one with "
          "protoc --include_imports --descriptor_set_out=FILE)"));
    }
    for (const google::protobuf::FileDescriptorProto& file : set.file()) {
      // The same file in two sets (or one linked in) is fine; a different
      // one of the same name is refused by Add.
      google::protobuf::FileDescriptorProto known;
      if (set_db_.FindFileByName(file.name(), &known)) continue;
      if (!set_db_.Add(file)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--descriptor-set: \"", path, "\": file \"",
                         file.name(), "\" conflicts with one loaded before"));
      }
    }
  }
  for (const std::string& dir : import_paths) {
    struct stat st;
    if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--import-path: \"", dir, "\" is not a directory"));
    }
    source_tree_.MapPath("", dir);
  }
  if (import_paths.empty()) source_tree_.MapPath("", ".");
  source_tree_.MapPath("google/protobuf", kProtobufIncludes);
  // The .proto files' virtual names (as an import would name them).
  std::vector<std::string> virtual_files;
  for (const std::string& file : proto_files) {
    std::string disk;
    std::string virtual_file;
    std::string shadowing;
    if (source_tree_.VirtualFileToDiskFile(file, &disk)) {
      virtual_files.push_back(file);
      continue;
    }
    if (source_tree_.DiskFileToVirtualFile(file, &virtual_file, &shadowing) ==
        google::protobuf::compiler::DiskSourceTree::SUCCESS) {
      virtual_files.push_back(virtual_file);
      continue;
    }
    struct stat st;
    if (stat(file.c_str(), &st) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--proto: \"", file, "\" is not a file, nor one under ",
                       import_paths.empty()
                           ? std::string("the current directory")
                           : absl::StrCat("--import-path ",
                                          absl::StrJoin(import_paths, ", "))));
    }
    // Outside every import path: its own directory is one.
    const size_t slash = file.rfind('/');
    if (slash == std::string::npos) {
      source_tree_.MapPath("", ".");
      virtual_files.push_back(file);
    } else {
      source_tree_.MapPath("", slash == 0 ? "/" : file.substr(0, slash));
      virtual_files.push_back(file.substr(slash + 1));
    }
  }

  merged_db_ = std::make_unique<google::protobuf::MergedDescriptorDatabase>(
      &set_db_, &generated_db_);
  source_db_ = std::make_unique<
      google::protobuf::compiler::SourceTreeDescriptorDatabase>(
      &source_tree_, merged_db_.get());
  source_db_->RecordErrorsTo(errors_.get());
  pool_ = std::make_unique<google::protobuf::DescriptorPool>(source_db_.get(),
                                                             errors_.get());

  auto note = [this](const google::protobuf::FileDescriptor* file) {
    // Files meshctl links (google/protobuf/timestamp.proto, ...) are not
    // the user's.
    if (google::protobuf::DescriptorPool::generated_pool()->FindFileByName(
            file->name()) != nullptr) {
      return;
    }
    for (int i = 0; i < file->message_type_count(); ++i) {
      loaded_types_.push_back(file->message_type(i)->full_name());
    }
  };
  for (const std::string& name : virtual_files) {
    const google::protobuf::FileDescriptor* file = pool_->FindFileByName(name);
    if (file == nullptr) {
      std::string errors = errors_->Take();
      return absl::InvalidArgumentError(
          absl::StrCat("--proto: cannot load \"", name,
                       "\": ", errors.empty() ? "not found" : errors));
    }
    note(file);
  }
  std::vector<std::string> set_files;
  set_db_.FindAllFileNames(&set_files);
  for (const std::string& name : set_files) {
    const google::protobuf::FileDescriptor* file = pool_->FindFileByName(name);
    if (file == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("--descriptor-set: file \"", name,
                       "\" does not build: ", errors_->Take()));
    }
    note(file);
  }
  return absl::OkStatus();
}

const google::protobuf::Descriptor* MessageTypes::Find(
    const std::string& type) const {
  const google::protobuf::Descriptor* descriptor =
      google::protobuf::DescriptorPool::generated_pool()->FindMessageTypeByName(
          type);
  if (descriptor == nullptr && pool_ != nullptr) {
    descriptor = pool_->FindMessageTypeByName(type);
  }
  return descriptor;
}

absl::StatusOr<google::protobuf::Any> MessageTypes::Build(
    const std::string& type, const std::string& json) {
  const google::protobuf::Descriptor* descriptor = Find(type);
  if (descriptor == nullptr) {
    std::string known = absl::StrCat(
        "the built-in ones: ", absl::StrJoin(BuiltinMessageNames(), ", "));
    if (!loaded_types_.empty()) {
      absl::StrAppend(&known, "; loaded: ", absl::StrJoin(loaded_types_, ", "));
    } else {
      absl::StrAppend(&known,
                      "; a type of your own needs --proto FILE or "
                      "--descriptor-set FILE");
    }
    return absl::InvalidArgumentError(
        absl::StrCat("--type: unknown message type \"", type,
                     "\"; give a message's full name, e.g. one of ", known));
  }
  const google::protobuf::Message* prototype =
      descriptor->file()->pool() ==
              google::protobuf::DescriptorPool::generated_pool()
          ? google::protobuf::MessageFactory::generated_factory()->GetPrototype(
                descriptor)
          : factory_.GetPrototype(descriptor);
  std::unique_ptr<google::protobuf::Message> message(prototype->New());
  if (!json.empty()) {
    google::protobuf::util::JsonParseOptions options;
    auto status = google::protobuf::util::JsonStringToMessage(
        json, message.get(), options);
    if (!status.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--json: not a valid ", type, ": ", status.message().ToString()));
    }
  }
  google::protobuf::Any any;
  any.PackFrom(*message);
  return any;
}

}  // namespace mesh::meshctl
