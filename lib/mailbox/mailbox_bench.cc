// Round trip of a 64-byte message between two mailboxes over loopback: a
// sends to a port in b, whose handler answers to a's port; one message in
// flight at a time. Prints mean, p50 and p99 in microseconds.
//
//   bazel run -c opt //lib/mailbox:mailbox_bench -- [iterations]
#include <glog/logging.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "lib/mailbox/mailbox.h"
#include "proto/actors.pb.h"

namespace mesh {
namespace {

struct Node {
  explicit Node(const std::string& name)
      : mailbox(std::make_unique<Mailbox>(name)) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(mailbox->service());
    server = builder.BuildAndStart();
    CHECK(server != nullptr);
    mailbox->set_address(absl::StrCat("127.0.0.1:", port));
  }
  ~Node() {
    mailbox->Shutdown();
    server->Shutdown();
  }
  std::unique_ptr<Mailbox> mailbox;
  std::unique_ptr<grpc::Server> server;
};

int Run(int iterations) {
  Node a("bench-a");
  Node b("bench-b");
  absl::Mutex mu;
  uint64_t received = 0;
  v1::PortRef a_port = a.mailbox->OpenPort([&](v1::Envelope) {
    absl::MutexLock lock(&mu);
    ++received;
  });
  Mailbox* b_mailbox = b.mailbox.get();
  v1::PortRef b_port = b.mailbox->OpenPort([&](v1::Envelope envelope) {
    v1::Envelope reply;
    reply.set_port(envelope.reply_to().port());
    *reply.mutable_payload() = envelope.payload();
    b_mailbox->Send(envelope.reply_to().address(), std::move(reply));
  });
  v1::Echo echo;
  echo.set_data(std::string(64, 'x'));
  std::vector<double> micros;
  micros.reserve(iterations);
  const int warmup = std::min(1000, iterations / 10);
  for (int i = 0; i < warmup + iterations; ++i) {
    v1::Envelope envelope = EnvelopeToPort(b_port, echo);
    *envelope.mutable_reply_to() = a_port;
    absl::Time start = absl::Now();
    a.mailbox->Send(b_port.address(), std::move(envelope));
    absl::MutexLock lock(&mu);
    auto done = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return received == static_cast<uint64_t>(i + 1);
    };
    if (!mu.AwaitWithTimeout(absl::Condition(&done), absl::Seconds(10))) {
      std::fprintf(stderr, "no reply for message %d\n", i);
      return 1;
    }
    if (i >= warmup) {
      micros.push_back(absl::ToDoubleMicroseconds(absl::Now() - start));
    }
  }
  std::sort(micros.begin(), micros.end());
  double sum = 0;
  for (double m : micros) sum += m;
  std::printf(
      "mailbox round trip, 64 B, loopback: n=%d mean=%.1fus p50=%.1fus "
      "p99=%.1fus\n",
      iterations, sum / micros.size(), micros[micros.size() / 2],
      micros[micros.size() * 99 / 100]);
  return 0;
}

}  // namespace
}  // namespace mesh

int main(int argc, char** argv) {
  google::InitGoogleLogging(argv[0]);
  int iterations = argc > 1 ? std::atoi(argv[1]) : 10000;
  if (iterations <= 0) iterations = 10000;
  return mesh::Run(iterations);
}
