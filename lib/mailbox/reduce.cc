#include "lib/mailbox/reduce.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/message.h"
#include "lib/names.h"
#include "lib/status.h"

namespace mesh {
namespace {

// Folds `value` into `reduced` by `reduce` (SUM, MIN, MAX).
void FoldValue(v1::Reduce reduce, double value, v1::Reduced* reduced) {
  if (!reduced->has_value()) {
    reduced->set_value(value);
    return;
  }
  switch (reduce) {
    case v1::REDUCE_SUM:
      reduced->set_value(reduced->value() + value);
      break;
    case v1::REDUCE_MIN:
      reduced->set_value(std::min(reduced->value(), value));
      break;
    case v1::REDUCE_MAX:
      reduced->set_value(std::max(reduced->value(), value));
      break;
    default:
      break;
  }
}

bool FoldsValues(v1::Reduce reduce) {
  return reduce == v1::REDUCE_SUM || reduce == v1::REDUCE_MIN ||
         reduce == v1::REDUCE_MAX;
}

// Records a failure of `rank` in `reduced` if it is the lowest so far.
void NoteFailure(uint64_t rank, const v1::Error& error, v1::Reduced* reduced) {
  reduced->set_failed(reduced->failed() + 1);
  if (!reduced->has_first_error() || rank < reduced->first_error_rank()) {
    *reduced->mutable_first_error() = error;
    reduced->set_first_error_rank(rank);
  }
}

}  // namespace

absl::Status ValidateReduce(v1::Reduce reduce) {
  if (!v1::Reduce_IsValid(reduce)) {
    return absl::InvalidArgumentError(
        absl::StrCat("envelope.reduce: unknown reducer ", reduce));
  }
  return absl::OkStatus();
}

absl::StatusOr<double> NumericField(const v1::Envelope& reply,
                                    const std::string& field) {
  const std::string name = field.empty() ? "value" : field;
  const std::string& url = reply.payload().type_url();
  std::string type = url.substr(url.rfind('/') + 1);
  const google::protobuf::Descriptor* descriptor =
      google::protobuf::DescriptorPool::generated_pool()->FindMessageTypeByName(
          type);
  if (descriptor == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot reduce a reply of type ", QuoteForError(type),
        ": the type is not known to the host (only its own and protobuf's "
        "well-known types are)"));
  }
  const google::protobuf::FieldDescriptor* fd =
      descriptor->FindFieldByName(name);
  if (fd == nullptr || fd->is_repeated()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot reduce a reply of type ", QuoteForError(type),
                     ": it has no field ", QuoteForError(name),
                     fd != nullptr ? " that is a single number" : ""));
  }
  std::unique_ptr<google::protobuf::Message> message(
      google::protobuf::MessageFactory::generated_factory()
          ->GetPrototype(descriptor)
          ->New());
  if (!message->ParseFromString(reply.payload().value())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot reduce: the payload is not a valid ", QuoteForError(type)));
  }
  const google::protobuf::Reflection* reflection = message->GetReflection();
  using FD = google::protobuf::FieldDescriptor;
  switch (fd->cpp_type()) {
    case FD::CPPTYPE_INT32:
      return reflection->GetInt32(*message, fd);
    case FD::CPPTYPE_INT64:
      return static_cast<double>(reflection->GetInt64(*message, fd));
    case FD::CPPTYPE_UINT32:
      return reflection->GetUInt32(*message, fd);
    case FD::CPPTYPE_UINT64:
      return static_cast<double>(reflection->GetUInt64(*message, fd));
    case FD::CPPTYPE_FLOAT:
      return reflection->GetFloat(*message, fd);
    case FD::CPPTYPE_DOUBLE:
      return reflection->GetDouble(*message, fd);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("cannot reduce a reply of type ", QuoteForError(type),
                       ": field ", QuoteForError(name), " is not a number"));
  }
}

ReplyFold::ReplyFold(v1::Reduce reduce, std::string field,
                     std::vector<uint64_t> ranks)
    : reduce_(reduce),
      field_(std::move(field)),
      ranks_(std::move(ranks)),
      pending_(ranks_.size()) {
  for (uint64_t rank : ranks_) replies_.emplace(rank, v1::Envelope());
  pending_ = replies_.size();  // duplicates count once
}

bool ReplyFold::Add(v1::Envelope reply) {
  auto it = replies_.find(reply.correlation());
  if (it == replies_.end() || it->second.has_payload() ||
      it->second.has_error()) {
    return done();
  }
  if (!reply.has_payload() && !CarriesError(reply)) {
    *reply.mutable_error() = ToErrorProto(absl::InvalidArgumentError(
        "the reply carries neither payload nor error"));
  }
  it->second = std::move(reply);
  --pending_;
  return done();
}

bool ReplyFold::Fail(uint64_t rank, const absl::Status& error) {
  v1::Envelope failed;
  failed.set_correlation(rank);
  *failed.mutable_error() = ToErrorProto(error);
  return Add(std::move(failed));
}

v1::Reduced ReplyFold::Finish(const absl::Status& missing) && {
  v1::Reduced reduced;
  reduced.set_reduce(reduce_);
  for (auto& [rank, reply] : replies_) {
    if (!reply.has_payload() && !reply.has_error()) {
      reply.set_correlation(rank);
      *reply.mutable_error() = ToErrorProto(missing);
    }
    if (CarriesError(reply)) {
      NoteFailure(rank, reply.error(), &reduced);
    } else if (FoldsValues(reduce_)) {
      absl::StatusOr<double> value = NumericField(reply, field_);
      if (value.ok()) {
        reduced.set_ok(reduced.ok() + 1);
        FoldValue(reduce_, *value, &reduced);
      } else {
        NoteFailure(rank, ToErrorProto(value.status()), &reduced);
      }
    } else {
      reduced.set_ok(reduced.ok() + 1);
    }
    if (reduce_ == v1::REDUCE_COLLECT) {
      *reduced.add_replies() = std::move(reply);
    }
  }
  if (reduce_ == v1::REDUCE_COUNT) reduced.set_value(reduced.ok());
  return reduced;
}

v1::Reduced Combine(v1::Reduce reduce, const std::vector<v1::Reduced>& parts) {
  v1::Reduced combined;
  combined.set_reduce(reduce);
  std::map<uint64_t, const v1::Envelope*> collected;
  for (const v1::Reduced& part : parts) {
    combined.set_ok(combined.ok() + part.ok());
    uint64_t failed_before = combined.failed();
    if (part.failed() > 0) {
      NoteFailure(part.first_error_rank(), part.first_error(), &combined);
      combined.set_failed(failed_before + part.failed());
    }
    if (FoldsValues(reduce) && part.has_value()) {
      FoldValue(reduce, part.value(), &combined);
    }
    for (const v1::Envelope& reply : part.replies()) {
      collected.emplace(reply.correlation(), &reply);
    }
  }
  for (const auto& [rank, reply] : collected) *combined.add_replies() = *reply;
  if (reduce == v1::REDUCE_COUNT) combined.set_value(combined.ok());
  return combined;
}

v1::Reduced FailedPart(v1::Reduce reduce, const std::string& field,
                       const std::vector<uint64_t>& ranks,
                       const std::function<absl::Status(uint64_t)>& why) {
  ReplyFold fold(reduce, field, ranks);
  for (uint64_t rank : ranks) fold.Fail(rank, why(rank));
  return std::move(fold).Finish(absl::OkStatus());
}

}  // namespace mesh
