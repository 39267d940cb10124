#include "lib/mailbox/reduce.h"

#include "catch2/catch.hpp"
#include "google/protobuf/wrappers.pb.h"
#include "lib/status.h"
#include "proto/actors.pb.h"

namespace mesh {
namespace {

v1::Envelope CountReply(uint64_t rank, int64_t value) {
  v1::Count count;
  count.set_value(value);
  count.set_rank(rank);
  v1::Envelope reply;
  reply.set_correlation(rank);
  reply.mutable_payload()->PackFrom(count);
  return reply;
}

v1::Envelope ErrorReply(uint64_t rank, const absl::Status& status) {
  v1::Envelope reply;
  reply.set_correlation(rank);
  *reply.mutable_error() = ToErrorProto(status);
  return reply;
}

TEST_CASE("a sum folds the value field of every reply once all are in") {
  ReplyFold fold(v1::REDUCE_SUM, "", {0, 1, 2});
  CHECK_FALSE(fold.Add(CountReply(2, 5)));
  CHECK_FALSE(fold.Add(CountReply(2, 100)));  // a second reply is ignored
  CHECK_FALSE(fold.Add(CountReply(7, 100)));  // not a target
  CHECK_FALSE(fold.Add(CountReply(0, 1)));
  CHECK(fold.Add(CountReply(1, 3)));
  v1::Reduced reduced = std::move(fold).Finish(absl::DeadlineExceededError(""));
  CHECK(reduced.value() == 9);
  CHECK(reduced.ok() == 3);
  CHECK(reduced.failed() == 0);
}

TEST_CASE("min and max read a named field and skip failed ranks") {
  for (auto [reduce, want] :
       {std::pair{v1::REDUCE_MIN, 0.0}, std::pair{v1::REDUCE_MAX, 2.0}}) {
    ReplyFold fold(reduce, "rank", {0, 1, 2, 3});
    fold.Add(CountReply(0, 10));
    fold.Add(CountReply(1, 20));
    fold.Add(CountReply(2, 30));
    CHECK(fold.Fail(3, absl::UnavailableError("proc gone")));
    v1::Reduced reduced = std::move(fold).Finish(absl::OkStatus());
    CHECK(reduced.value() == want);
    CHECK(reduced.failed() == 1);
    CHECK(reduced.first_error_rank() == 3);
  }
}

TEST_CASE("first error names the lowest failing rank, also across hosts") {
  ReplyFold host_a(v1::REDUCE_FIRST_ERROR, "", {0, 1});
  host_a.Add(CountReply(0, 1));
  host_a.Add(ErrorReply(1, absl::InternalError("rank one broke")));
  ReplyFold host_b(v1::REDUCE_FIRST_ERROR, "", {2, 3});
  host_b.Add(ErrorReply(3, absl::InternalError("rank three broke")));
  v1::Reduced b = std::move(host_b).Finish(absl::DeadlineExceededError("late"));
  CHECK(b.first_error_rank() == 2);  // rank 2 never answered
  CHECK(b.first_error().code() == int(absl::StatusCode::kDeadlineExceeded));
  v1::Reduced all = Combine(
      v1::REDUCE_FIRST_ERROR,
      {b, std::move(host_a).Finish(absl::DeadlineExceededError("late"))});
  CHECK(all.failed() == 3);
  CHECK(all.ok() == 1);
  CHECK(all.first_error_rank() == 1);
  CHECK(all.first_error().message() == "rank one broke");
}

TEST_CASE("collect keeps every reply in cast-rank order across hosts") {
  ReplyFold host_a(v1::REDUCE_COLLECT, "", {2, 0});
  host_a.Add(CountReply(2, 22));
  host_a.Add(CountReply(0, 0));
  ReplyFold host_b(v1::REDUCE_COLLECT, "", {1});
  host_b.Add(CountReply(1, 11));
  v1::Reduced all =
      Combine(v1::REDUCE_COLLECT, {std::move(host_a).Finish(absl::OkStatus()),
                                   std::move(host_b).Finish(absl::OkStatus())});
  REQUIRE(all.replies_size() == 3);
  for (int rank = 0; rank < 3; ++rank) {
    CHECK(all.replies(rank).correlation() == uint64_t(rank));
  }
}

TEST_CASE("count counts the replies that are not errors") {
  ReplyFold fold(v1::REDUCE_COUNT, "", {0, 1, 2});
  fold.Add(CountReply(0, 1));
  fold.Add(ErrorReply(1, absl::InternalError("x")));
  v1::Reduced reduced =
      std::move(fold).Finish(absl::DeadlineExceededError("no reply"));
  CHECK(reduced.value() == 1);
  CHECK(reduced.failed() == 2);
  CHECK(Combine(v1::REDUCE_COUNT, {reduced, reduced}).value() == 2);
}

TEST_CASE("a reply of a type the host does not know cannot be summed") {
  v1::Envelope reply;
  reply.mutable_payload()->set_type_url("type.googleapis.com/user.Secret");
  reply.mutable_payload()->set_value("x");
  absl::StatusOr<double> value = NumericField(reply, "");
  CHECK(value.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(value.status().message().find("user.Secret") != std::string::npos);

  google::protobuf::DoubleValue wrapped;
  wrapped.set_value(2.5);
  reply.mutable_payload()->PackFrom(wrapped);
  CHECK(*NumericField(reply, "") == 2.5);
  v1::Echo echo;
  reply.mutable_payload()->PackFrom(echo);
  CHECK(NumericField(reply, "text").status().message().find("not a number") !=
        std::string::npos);
}

TEST_CASE("an unknown reducer is refused naming it") {
  CHECK(ValidateReduce(static_cast<v1::Reduce>(99)).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(ValidateReduce(v1::REDUCE_SUM).ok());
}

}  // namespace
}  // namespace mesh
