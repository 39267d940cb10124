// Built-in reducers for the replies of a cast (mesh.v1.Reduce). A host
// folds the replies of its own targets with a ReplyFold and sends one
// mesh.v1.Reduced on; the sender folds the hosts' Reduced with Combine (the
// two levels of the reduction tree). Only these folds exist: a host never
// runs user code.
#ifndef HOSTMESH_LIB_MAILBOX_REDUCE_H_
#define HOSTMESH_LIB_MAILBOX_REDUCE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/mailbox.pb.h"

namespace mesh {

// INVALID_ARGUMENT naming what is wrong if `reduce` is not a known fold.
absl::Status ValidateReduce(v1::Reduce reduce);

// The replies of one cast, by cast rank (the reply's correlation), folded
// when all are in. Not thread-safe.
class ReplyFold {
 public:
  // `ranks`: the cast ranks expected. `field`: the numeric reply field SUM,
  // MIN and MAX read (empty: "value").
  ReplyFold(v1::Reduce reduce, std::string field, std::vector<uint64_t> ranks);

  // Takes the reply (or error reply) of rank envelope.correlation(); a rank
  // not expected or already answered is ignored. True once every rank is in.
  bool Add(v1::Envelope reply);
  // Rank `rank` failed without a reply (its proc is gone, ...), unless it
  // has replied. True once every rank is in.
  bool Fail(uint64_t rank, const absl::Status& error);
  bool done() const { return pending_ == 0; }
  size_t pending() const { return pending_; }
  const std::vector<uint64_t>& ranks() const { return ranks_; }
  v1::Reduce reduce() const { return reduce_; }
  const std::string& field() const { return field_; }

  // The fold; ranks still missing count as failed with `missing`.
  v1::Reduced Finish(const absl::Status& missing) &&;

 private:
  const v1::Reduce reduce_;
  const std::string field_;
  const std::vector<uint64_t> ranks_;
  std::map<uint64_t, v1::Envelope> replies_;  // by rank; errors included
  size_t pending_;
};

// Folds the Reduced of several hosts (each covering other ranks) into one,
// as if one host had folded every reply. COLLECT keeps cast-rank order.
v1::Reduced Combine(v1::Reduce reduce, const std::vector<v1::Reduced>& parts);

// The part of a fold for `ranks` when none of them could answer: each
// fails with why(rank) (a host that could not be reached, say, naming the
// rank). What a sender or a host folds in for a subtree that gave no
// answer.
v1::Reduced FailedPart(v1::Reduce reduce, const std::string& field,
                       const std::vector<uint64_t>& ranks,
                       const std::function<absl::Status(uint64_t)>& why);

// The numeric field `field` (empty: "value") of a reply's payload, read by
// reflection: INVALID_ARGUMENT if the payload's type is not linked into this
// process, has no such field, or the field is not a number.
absl::StatusOr<double> NumericField(const v1::Envelope& reply,
                                    const std::string& field);

}  // namespace mesh

#endif  // HOSTMESH_LIB_MAILBOX_REDUCE_H_
