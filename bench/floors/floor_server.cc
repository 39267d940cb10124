// The floors' gRPC server process (F3, F3r, F3b, F4, F6): a minimal
// server served with the callback API (CallbackService, DefaultReactor), as
// hostd serves, on 127.0.0.1 with an ephemeral port.
//
//   floor_server                      Ping answers at once with its data;
//                                     Stream counts what it reads.
//   floor_server --relay RELAY_CHILD  Ping is relayed to a child process
//                                     (RELAY_CHILD, bench/floors/relay_child)
//                                     over a socketpair, as hostd relays a
//                                     call to a proc: length-prefixed
//                                     frames, one reader thread, replies
//                                     matched by call id, the reply
//                                     finishing the reactor.
//
// Once serving it writes its port and a newline to fd 3 and closes it; it
// serves until its stdin closes (EOF), then shuts down, closes the relay
// (the child exits on EOF) and reaps the child it started. Exits 1 if it
// cannot start.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "bench/floors/ping.grpc.pb.h"

extern char** environ;

namespace mesh::bench {
namespace {

// One relayed call waiting for its reply.
struct Pending {
  PingReply* reply;
  grpc::ServerUnaryReactor* reactor;
};

// The server's end of the socketpair to its relay child. Thread-safe.
class Relay {
 public:
  // Starts `child_path` with its end of a socketpair as fd 3; null on
  // failure.
  static std::unique_ptr<Relay> Start(const char* child_path) {
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
      return nullptr;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 3);
    char* argv[] = {const_cast<char*>(child_path), nullptr};
    pid_t pid = 0;
    int spawned =
        posix_spawn(&pid, child_path, &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    if (spawned != 0) {
      close(fds[0]);
      return nullptr;
    }
    return std::unique_ptr<Relay>(new Relay(fds[0], pid));
  }

  // Closes the socket (the child sees EOF and exits), then joins the
  // reader and reaps the child.
  ~Relay() {
    shutdown(fd_, SHUT_RDWR);
    reader_.join();
    close(fd_);
    waitpid(child_, nullptr, 0);
  }

  // Sends `request` to the child; the reader fills `reply` and finishes
  // `reactor` when the child's answer comes.
  void Call(const PingRequest& request, PingReply* reply,
            grpc::ServerUnaryReactor* reactor) {
    uint64_t id;
    {
      std::lock_guard<std::mutex> lock(mu_);
      id = next_id_++;
      pending_[id] = {reply, reactor};
    }
    const std::string& data = request.data();
    const uint32_t length = static_cast<uint32_t>(sizeof(id) + data.size());
    char header[sizeof(length) + sizeof(id)];
    std::memcpy(header, &length, sizeof(length));
    std::memcpy(header + sizeof(length), &id, sizeof(id));
    iovec parts[2] = {{header, sizeof(header)},
                      {const_cast<char*>(data.data()), data.size()}};
    std::lock_guard<std::mutex> lock(write_mu_);
    size_t left = sizeof(header) + data.size();
    int first = 0;
    while (left > 0) {
      ssize_t wrote = writev(fd_, parts + first, 2 - first);
      if (wrote <= 0) return;  // the child is gone: the call stays pending
      left -= static_cast<size_t>(wrote);
      size_t advance = static_cast<size_t>(wrote);
      while (first < 2 && advance >= parts[first].iov_len) {
        advance -= parts[first].iov_len;
        ++first;
      }
      if (first < 2) {
        parts[first].iov_base = static_cast<char*>(parts[first].iov_base) +
                                static_cast<ptrdiff_t>(advance);
        parts[first].iov_len -= advance;
      }
    }
  }

 private:
  Relay(int fd, pid_t child) : fd_(fd), child_(child) {
    reader_ = std::thread([this] { ReadLoop(); });
  }

  void ReadLoop() {
    std::string buffer;
    char chunk[64 * 1024];
    for (;;) {
      ssize_t got = read(fd_, chunk, sizeof(chunk));
      if (got <= 0) return;
      buffer.append(chunk, static_cast<size_t>(got));
      size_t used = 0;
      while (buffer.size() - used >= sizeof(uint32_t) + sizeof(uint64_t)) {
        uint32_t length;
        std::memcpy(&length, buffer.data() + used, sizeof(length));
        if (buffer.size() - used - sizeof(length) < length) break;
        uint64_t id;
        std::memcpy(&id, buffer.data() + used + sizeof(length), sizeof(id));
        const char* payload =
            buffer.data() + used + sizeof(length) + sizeof(id);
        Pending pending{nullptr, nullptr};
        {
          std::lock_guard<std::mutex> lock(mu_);
          auto it = pending_.find(id);
          if (it != pending_.end()) {
            pending = it->second;
            pending_.erase(it);
          }
        }
        if (pending.reactor != nullptr) {
          pending.reply->set_data(payload, length - sizeof(id));
          pending.reactor->Finish(grpc::Status::OK);
        }
        used += sizeof(length) + length;
      }
      buffer.erase(0, used);
    }
  }

  const int fd_;
  const pid_t child_;
  std::thread reader_;
  std::mutex mu_;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, Pending> pending_;
  std::mutex write_mu_;
};

// Reads a client's stream to its end and answers with the count.
class CountingReader final : public grpc::ServerReadReactor<PingRequest> {
 public:
  explicit CountingReader(PingReply* reply) : reply_(reply) {
    StartRead(&request_);
  }
  void OnReadDone(bool ok) override {
    if (!ok) {
      reply_->set_count(count_);
      Finish(grpc::Status::OK);
      return;
    }
    ++count_;
    StartRead(&request_);
  }
  void OnDone() override { delete this; }

 private:
  PingReply* reply_;
  PingRequest request_;
  uint64_t count_ = 0;
};

class PingService final : public Ping::CallbackService {
 public:
  explicit PingService(Relay* relay) : relay_(relay) {}

  grpc::ServerUnaryReactor* Ping(grpc::CallbackServerContext* context,
                                 const PingRequest* request,
                                 PingReply* reply) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (relay_ != nullptr) {
      relay_->Call(*request, reply, reactor);
      return reactor;
    }
    reply->set_data(request->data());
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerReadReactor<PingRequest>* Stream(grpc::CallbackServerContext*,
                                               PingReply* reply) override {
    return new CountingReader(reply);
  }

 private:
  Relay* const relay_;
};

int Run(int argc, char** argv) {
  std::unique_ptr<Relay> relay;
  if (argc == 3 && std::strcmp(argv[1], "--relay") == 0) {
    relay = Relay::Start(argv[2]);
    if (relay == nullptr) {
      std::fprintf(stderr, "floor_server: cannot start %s\n", argv[2]);
      return 1;
    }
  } else if (argc != 1) {
    std::fprintf(stderr, "usage: floor_server [--relay RELAY_CHILD]\n");
    return 2;
  }
  PingService service(relay.get());
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  // 64 KiB payloads and more pass.
  builder.SetMaxReceiveMessageSize(64 << 20);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "floor_server: cannot serve\n");
    return 1;
  }
  std::string line = std::to_string(port) + "\n";
  if (write(3, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    return 1;
  }
  close(3);
  char buffer[64];
  while (read(0, buffer, sizeof(buffer)) > 0) {
  }
  server->Shutdown(std::chrono::system_clock::now());
  server->Wait();
  relay.reset();
  return 0;
}

}  // namespace
}  // namespace mesh::bench

int main(int argc, char** argv) { return mesh::bench::Run(argc, argv); }
