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
  # A real one-node Slurm cluster for tests (issue 14,
  # tests/testing/slurm_cluster.h): the controller, the node daemon, the
  # clients (srun, sbatch, salloc, scancel, squeue, sinfo) and munge. The
  # tests start private copies of the daemons; the machine's own services
  # are left disabled and stopped (see "Slurm and munge" below).
  munge slurmctld slurmd slurm-client
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

# --- Slurm and munge: installed, never enabled or left running -------------
# The postinst scripts of munge, slurmctld and slurmd run `update-rc.d <name>
# defaults` and `invoke-rc.d <name> start`. Running this script must not turn
# a developer machine or a CI runner into a Slurm node (nor start a munged
# with Debian's key): the tests start private daemons in a temp dir
# (tests/testing/slurm_cluster.h). So, for those of them that this run
# installs (a machine that already has them, a real Slurm node say, is left
# as it is):
#  1. while apt-get runs, /usr/sbin/policy-rc.d answers 101 ("forbidden by
#     local policy"), so invoke-rc.d and deb-systemd-invoke start nothing; a
#     policy-rc.d that was there before is put back afterwards, else ours is
#     removed;
#  2. afterwards their boot links are disabled: `update-rc.d <name> disable`
#     (sysv rc links) and `deb-systemd-helper disable <name>.service`
#     (systemd's wants links, and its record, so a later upgrade does not
#     enable them again), so nothing starts at the next boot either;
#  3. should a daemon have been started anyway, the process its package's
#     pid file names is sent SIGTERM: only that pid, only if /proc says it is
#     that daemon and it was not the one running before. Never by name.
quiet_services=()
for pkg in "${missing[@]}"; do
  case "$pkg" in munge | slurmctld | slurmd) quiet_services+=("$pkg") ;; esac
done

# The live pid that <name>'s pid file names, if /proc says it is <name>'s
# daemon (e.g. munged; slurmd may run as slurmd-wlm); else nothing.
service_pid() {
  local name="$1" file daemon pid comm
  case "$name" in
    munge) file=/run/munge/munged.pid daemon=munged ;;
    *) file="/run/$name.pid" daemon="$name" ;;
  esac
  [ -r "$file" ] || return 0
  read -r pid <"$file" || true
  case "$pid" in '' | *[!0-9]*) return 0 ;; esac
  comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
  if [ "$comm" = "$daemon" ] || [ "$comm" = "$daemon-wlm" ]; then
    echo "$pid"
  fi
}

policy=/usr/sbin/policy-rc.d
policy_saved=""
declare -A running_before=()

quiet_services_after_install() {
  local status=$? name pid
  if [ -n "$policy_saved" ]; then
    $SUDO mv -f "$policy_saved" "$policy"
  else
    $SUDO rm -f "$policy"
  fi
  for name in "${quiet_services[@]}"; do
    if [ -x "/etc/init.d/$name" ]; then
      $SUDO update-rc.d "$name" disable >/dev/null 2>&1 || true
    fi
    if command -v deb-systemd-helper >/dev/null 2>&1; then
      $SUDO deb-systemd-helper disable "$name.service" >/dev/null 2>&1 || true
    fi
    pid=$(service_pid "$name")
    if [ -n "$pid" ] && [ "$pid" != "${running_before[$name]:-}" ]; then
      echo "install-deps: stopping $name (pid $pid), started by its package"
      $SUDO kill -TERM "$pid" || true
    fi
  done
  exit "$status"
}

if [ ${#quiet_services[@]} -gt 0 ]; then
  for name in "${quiet_services[@]}"; do
    running_before[$name]=$(service_pid "$name")
  done
  if [ -e "$policy" ]; then
    policy_saved=$(mktemp)
    $SUDO cp -p "$policy" "$policy_saved"
  fi
  trap quiet_services_after_install EXIT
  printf '#!/bin/sh\n# deploy/install-deps.sh: no service starts while it installs.\nexit 101\n' |
    $SUDO tee "$policy" >/dev/null
  $SUDO chmod 0755 "$policy"
fi
# --- end of Slurm and munge -------------------------------------------------
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
