#!/usr/bin/env bash
# Installs the Debian packages hostmesh builds and runs with. Idempotent: it
# installs only what is missing, and runs `apt-get update` only then.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap bazel-platforms g++ make
  # `make check-clang` (clang's -Wthread-safety). `make test-asan` uses g++'s
  # own sanitizer runtimes (libasan8, libubsan1: dependencies of gcc).
  clang
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev
  # protobuf's compiler::Importer headers: `meshctl actor send --proto`
  # (the code itself is in libprotobuf).
  libprotoc-dev
  # grpc.health.v1 and grpc.reflection.v1alpha .protos (hostd, tests).
  grpc-proto
  libabsl-dev libgoogle-glog-dev libgflags-dev libsystemd-dev
  catch2 libcli11-dev libbenchmark-dev
  procps
  # deploy/make-certs.sh; the multi-host test's network namespaces; setpriv
  # (procs under another uid: hostd's proc-user, the tests' second uid).
  openssl iproute2 util-linux
  # hostd's metrics endpoint: GNU libmicrohttpd, an embedded HTTP server
  # (TLS through GnuTLS). Not civetweb: Debian 12's crashes on every TLS
  # connection with OpenSSL 3 (it calls SSL_get_peer_certificate, gone).
  libmicrohttpd-dev
  # The Python package (a pybind11 extension over the client library, and
  # procd's embedded interpreter for Python actors): Debian's python3 with
  # the cpp protobuf backend, sharing libprotobuf.so with the extension.
  python3 python3-dev pybind11-dev python3-protobuf
  # The installed C++ SDK: `make install` writes hostmesh.pc and a CMake
  # package; `make test` builds examples/ outside Bazel with both.
  pkg-config cmake
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
