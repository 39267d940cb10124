#include "hostd/peer_hosts.h"

#include <glog/logging.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lib/mailbox/mailbox.h"
#include "lib/time/clock.h"

namespace mesh {

PeerHosts::PeerHosts(
    std::string self_address, ClientCredentials credentials,
    std::function<void(v1::RelayFrame)> on_frame,
    std::function<void(const v1::Envelope&, const absl::Status&)> on_unsent)
    : self_address_(std::move(self_address)),
      credentials_(std::move(credentials)),
      on_frame_(std::move(on_frame)),
      on_unsent_(std::move(on_unsent)) {}

PeerHosts::~PeerHosts() { Shutdown(); }

absl::Status PeerHosts::Send(const std::string& host, v1::Envelope& envelope) {
  // An ended stream is dropped after unlocking: its destructor waits for
  // its callbacks, which may be calling Send.
  std::unique_ptr<RelayStream> ended;
  absl::MutexLock lock(&mu_);
  if (shut_down_) return absl::UnavailableError("hostd is shutting down");
  auto it = streams_.find(host);
  if (it != streams_.end() && !it->second->ended()) {
    RelayStream& stream = *it->second;
    const absl::Duration silent =
        MonotonicClock::Real().Now() - stream.last_frame_at();
    const absl::Duration bound =
        std::max(kUnreachableAfter, 2 * stream.heartbeat_interval());
    if (silent < bound) return stream.Send(envelope);
    // Cut off or stopped: fail now instead of queueing behind it. What the
    // stream holds goes to on_unsent; the next send opens a new stream.
    stream.Cancel();
    return absl::UnavailableError(absl::StrCat(
        "host ", host, " is unreachable: no frame from it for ",
        absl::FormatDuration(absl::Trunc(silent, absl::Milliseconds(1))),
        " (unreachable after ", absl::FormatDuration(bound), ")"));
  }
  if (it != streams_.end()) {
    ended = std::move(it->second);
  } else if (streams_.size() >= kMaxPeers) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "this host already streams to ", kMaxPeers, " other hosts, its limit"));
  }
  std::shared_ptr<grpc::Channel>& channel = channels_[host];
  if (channel == nullptr) channel = NewHostChannel(host, credentials_);
  RelayStream::Options options;
  options.sender = absl::StrCat("host:", self_address_);
  options.peer = host;
  std::unique_ptr<RelayStream> stream = RelayStream::Start(
      channel, options, on_frame_,
      [host, on_unsent = on_unsent_](const absl::Status& status,
                                     std::vector<v1::RelayFrame> unsent) {
        LOG(INFO) << "relay stream to host " << host << " ended: " << status
                  << (unsent.empty() ? ""
                                     : absl::StrCat("; ", unsent.size(),
                                                    " frames not delivered"));
        absl::Status why = absl::UnavailableError(absl::StrCat(
            "the stream to host ", host, " ended: ", status.message()));
        for (const v1::RelayFrame& frame : unsent) {
          if (frame.has_envelope() && on_unsent)
            on_unsent(frame.envelope(), why);
        }
      });
  absl::Status sent = stream->Send(envelope);
  streams_[host] = std::move(stream);
  return sent;
}

void PeerHosts::Shutdown() {
  std::map<std::string, std::unique_ptr<RelayStream>> streams;
  {
    absl::MutexLock lock(&mu_);
    shut_down_ = true;
    streams.swap(streams_);
  }
  for (auto& [host, stream] : streams) stream->Shutdown(absl::Seconds(1));
}

}  // namespace mesh
