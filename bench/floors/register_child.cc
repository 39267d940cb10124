// F1.grpc's child: a minimal gRPC-linked (dynamic) process that registers
// with its parent the way a gRPC-speaking proc would: one unary Ping (its
// pid as the data) to the parent's server at argv[1]. Then it lives until
// its stdin closes. Exits 1 if the call fails.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "bench/floors/ping.grpc.pb.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  auto stub = mesh::bench::Ping::NewStub(
      grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(30));
  mesh::bench::PingRequest request;
  request.set_data(std::to_string(getpid()));
  mesh::bench::PingReply reply;
  if (!stub->Ping(&context, request, &reply).ok()) return 1;
  char buffer[64];
  while (read(0, buffer, sizeof(buffer)) > 0) {
  }
  return 0;
}
