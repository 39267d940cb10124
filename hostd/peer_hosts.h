// PeerHosts: this hostd's relay streams to other hosts, for envelopes whose
// destination is a proc (or client) reached through another host. One
// stream per peer host, opened on first use (sender "host:<our address>"),
// reopened on the next send after it broke; envelopes to one peer go out in
// the order sent. Frames the peer sends back on it are handed to `on_frame`;
// envelopes that could not be sent when a stream broke go to `on_unsent`
// (which answers their reply_to). At most kMaxPeers peers; a stream that
// ended is replaced on the next send. Peers send heartbeats: a stream that
// read nothing for kUnreachableAfter (or two of the peer's heartbeat
// intervals, if longer) is cut, and the send fails at once (UNAVAILABLE
// naming the host) instead of queueing behind a host that is cut off or
// stopped. Thread-safe; never blocks.
// Shutdown() ends every stream.
#ifndef HOSTMESH_HOSTD_PEER_HOSTS_H_
#define HOSTMESH_HOSTD_PEER_HOSTS_H_

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "lib/relay/relay_stream.h"
#include "proto/mailbox.pb.h"

namespace mesh {

class PeerHosts {
 public:
  static constexpr size_t kMaxPeers = 1024;
  static constexpr absl::Duration kUnreachableAfter = absl::Seconds(2);

  // Dials peers presenting `credentials` (this host's peer identity).
  PeerHosts(
      std::string self_address, ClientCredentials credentials,
      std::function<void(v1::RelayFrame)> on_frame,
      std::function<void(const v1::Envelope&, const absl::Status&)> on_unsent);
  ~PeerHosts();

  // Queues `envelope` (moved from on success) for host `host`.
  absl::Status Send(const std::string& host, v1::Envelope& envelope);
  void Shutdown();

 private:
  const std::string self_address_;
  const ClientCredentials credentials_;
  const std::function<void(v1::RelayFrame)> on_frame_;
  const std::function<void(const v1::Envelope&, const absl::Status&)>
      on_unsent_;
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, std::unique_ptr<RelayStream>> streams_
      ABSL_GUARDED_BY(mu_);
  // One channel per peer, kept for the peer's life here: a channel's last
  // reference must not drop on one of its own callback threads.
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace mesh

#endif  // HOSTMESH_HOSTD_PEER_HOSTS_H_
