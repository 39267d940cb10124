#!/usr/bin/env bash
# Installs hostmesh's C++ SDK from Bazel's outputs: what `make install`
# runs once it has built them (//deploy/sdk:all //hostd //procd //meshctl
# //python:site //python:procd_py).
#
#   PREFIX/bin/               hostd, procd, meshctl, procd_py (the procd of
#                             Python actors)
#   PREFIX/lib/               libhostmesh.so (the client library, an
#                             application links it), libhostmesh_procd.so
#                             (ProcdMain and the actor API, a user's own
#                             procd links it)
#   PREFIX/include/hostmesh/  the public headers (client and procd)
#   PREFIX/include/proto/     the generated message headers they include
#                             (and actors.pb.h, the built-in actors'), with
#                             their .proto files
#   PREFIX/lib/pkgconfig/     hostmesh.pc, hostmesh-procd.pc
#   PREFIX/lib/cmake/hostmesh/  hostmeshConfig.cmake (targets hostmesh::hostmesh
#                             and hostmesh::procd), hostmeshConfigVersion.cmake
#   PREFIX/lib/python3.11/dist-packages/hostmesh/  the Python package, for
#                             Debian's /usr/bin/python3 (3.11, which the
#                             extension is built for): it finds it there
#                             for PREFIX /usr/local; other prefixes need
#                             PYTHONPATH. For PREFIX /usr:
#                             /usr/lib/python3/dist-packages/hostmesh
#
# The installed library finds PREFIX/bin/hostd by its own location (see
# FindBinary, lib/launcher/launcher.h): no environment variable needed.
# Running it again overwrites the same files. Refuses to install a public
# header that includes anything but hostmesh/, proto/, absl/, google/,
# grpcpp/ and the standard library.
#
# Usage: deploy/install-sdk.sh [--prefix DIR] [--destdir DIR] [--bazel-bin DIR]
#   --prefix DIR     where it will live (default /usr/local); written into
#                    hostmesh.pc
#   --destdir DIR    stage under DIR instead (DIR/PREFIX/...), for packaging
#   --bazel-bin DIR  Bazel's output dir (default ./bazel-bin)
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local
destdir=""
bin=bazel-bin
usage() {
  echo "usage: deploy/install-sdk.sh [--prefix DIR] [--destdir DIR] [--bazel-bin DIR]" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || usage; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --destdir) [ $# -ge 2 ] || usage; destdir=$2; shift 2 ;;
    --destdir=*) destdir=${1#--destdir=}; shift ;;
    --bazel-bin) [ $# -ge 2 ] || usage; bin=$2; shift 2 ;;
    --bazel-bin=*) bin=${1#--bazel-bin=}; shift ;;
    -h | --help) usage ;;
    *) echo "install-sdk: unknown argument \"$1\"" >&2; usage ;;
  esac
done
case "$prefix" in
  /*) ;;
  *) echo "install-sdk: --prefix must be an absolute path, not \"$prefix\"" >&2; exit 2 ;;
esac
prefix=${prefix%/}
[ -n "$prefix" ] || prefix=/
case "$destdir" in
  "" | /*) ;;
  *) destdir=$(pwd)/$destdir ;;
esac
root="${destdir%/}${prefix}"

built=(
  "$bin/hostd/hostd" "$bin/procd/procd" "$bin/meshctl/meshctl"
  "$bin/deploy/sdk/libhostmesh.so" "$bin/deploy/sdk/libhostmesh_procd.so"
  "$bin/python/procd_py" "$bin/python/site/hostmesh/__init__.py"
  "$bin/python/site/hostmesh/_hostmesh.so"
)
for file in "${built[@]}"; do
  if [ ! -f "$file" ]; then
    echo "install-sdk: $file is missing; build it first:" \
      "bazel build //deploy/sdk:all //hostd //procd //meshctl //python:site //python:procd_py (make install does)" >&2
    exit 1
  fi
done

version=$(sed -nE 's/.*kHostmeshVersion\[\] = "([^"]+)".*/\1/p' lib/version.h)
[ -n "$version" ] || { echo "install-sdk: no version in lib/version.h" >&2; exit 1; }

# Public headers: source path -> path under include/.
headers=()
for h in client/include/hostmesh/*.h procd/include/hostmesh/*.h; do
  headers+=("$h=hostmesh/$(basename "$h")")
done

# The generated proto headers: those the public headers include, and the
# ones those include, until nothing new; actors.pb.h (the built-in actors'
# messages) too.
declare -A protos=([actors.pb.h]=1)
queue=(actors.pb.h)
for entry in "${headers[@]}"; do
  while read -r p; do
    [ -n "$p" ] && [ -z "${protos[$p]:-}" ] && protos[$p]=1 && queue+=("$p")
  done < <(sed -nE 's|^#include "proto/([^"]+\.pb\.h)".*|\1|p' "${entry%%=*}")
done
while [ ${#queue[@]} -gt 0 ]; do
  p=${queue[0]}
  queue=("${queue[@]:1}")
  if [ ! -f "$bin/proto/$p" ]; then
    echo "install-sdk: $bin/proto/$p is missing (build //proto:all)" >&2
    exit 1
  fi
  while read -r q; do
    [ -n "$q" ] && [ -z "${protos[$q]:-}" ] && protos[$q]=1 && queue+=("$q")
  done < <(sed -nE 's|^#include "proto/([^"]+\.pb\.h)".*|\1|p' "$bin/proto/$p")
done

# Nothing internal may be reachable from an installed header.
bad=0
for entry in "${headers[@]}"; do
  src=${entry%%=*}
  while read -r inc; do
    case "$inc" in
      hostmesh/* | proto/*.pb.h | absl/* | google/protobuf/* | grpcpp/* | glog/*) ;;
      *) echo "install-sdk: $src includes \"$inc\", which is not installed" >&2; bad=1 ;;
    esac
  done < <(sed -nE 's|^#include "([^"]+)".*|\1|p' "$src")
done
[ "$bad" -eq 0 ] || exit 1

install -d "$root/bin" "$root/lib/pkgconfig" "$root/lib/cmake/hostmesh" \
  "$root/include/hostmesh" "$root/include/proto"
install -m 0755 "$bin/hostd/hostd" "$bin/procd/procd" "$bin/meshctl/meshctl" \
  "$bin/python/procd_py" "$root/bin/"
install -m 0755 "$bin/deploy/sdk/libhostmesh.so" "$bin/deploy/sdk/libhostmesh_procd.so" \
  "$root/lib/"
for entry in "${headers[@]}"; do
  install -m 0644 "${entry%%=*}" "$root/include/${entry#*=}"
done
# With their .proto files, for users' own messages that import them
# (protoc -I PREFIX/include).
for p in "${!protos[@]}"; do
  install -m 0644 "$bin/proto/$p" "$root/include/proto/$p"
  install -m 0644 "proto/${p%.pb.h}.proto" "$root/include/proto/${p%.pb.h}.proto"
done

# The Debian pkg-config modules the headers and libraries need.
client_requires="grpc++ protobuf absl_status absl_statusor absl_strings absl_synchronization absl_time"
procd_requires="protobuf absl_status absl_statusor absl_strings absl_flat_hash_map"

write_pc() {  # name description requires lib
  cat >"$root/lib/pkgconfig/$1.pc" <<EOF
prefix=$prefix
exec_prefix=\${prefix}
bindir=\${prefix}/bin
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: $1
Description: $2
Version: $version
Requires: $3
Cflags: -I\${includedir}
Libs: -L\${libdir} -Wl,-rpath,\${libdir} -l$4
EOF
}
write_pc hostmesh "hostmesh client library: host, proc and actor meshes" \
  "$client_requires" hostmesh
write_pc hostmesh-procd "hostmesh procd library: a procd with your own actor types" \
  "$procd_requires" hostmesh_procd

# The CMake package: relocatable (paths relative to this file), its
# dependencies through pkg-config, as the .pc files name them.
cat >"$root/lib/cmake/hostmesh/hostmeshConfig.cmake" <<EOF
# hostmesh's CMake package (deploy/install-sdk.sh). find_package(hostmesh)
# gives two imported targets; use one per program:
#   hostmesh::hostmesh  the client library (libhostmesh.so)
#   hostmesh::procd     a procd with your own actor types (libhostmesh_procd.so)
# and hostmesh_HOSTD_EXECUTABLE, hostmesh_PROCD_EXECUTABLE: the installed
# binaries.
include(CMakeFindDependencyMacro)
find_dependency(PkgConfig)
get_filename_component(_hostmesh_prefix "\${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)

if(NOT TARGET hostmesh::hostmesh)
  pkg_check_modules(_hostmesh_deps REQUIRED IMPORTED_TARGET $client_requires)
  add_library(hostmesh::hostmesh SHARED IMPORTED)
  set_target_properties(hostmesh::hostmesh PROPERTIES
    IMPORTED_LOCATION "\${_hostmesh_prefix}/lib/libhostmesh.so"
    IMPORTED_SONAME "libhostmesh.so"
    INTERFACE_INCLUDE_DIRECTORIES "\${_hostmesh_prefix}/include"
    INTERFACE_LINK_LIBRARIES PkgConfig::_hostmesh_deps
    INTERFACE_COMPILE_FEATURES cxx_std_20)
endif()

if(NOT TARGET hostmesh::procd)
  pkg_check_modules(_hostmesh_procd_deps REQUIRED IMPORTED_TARGET $procd_requires)
  add_library(hostmesh::procd SHARED IMPORTED)
  set_target_properties(hostmesh::procd PROPERTIES
    IMPORTED_LOCATION "\${_hostmesh_prefix}/lib/libhostmesh_procd.so"
    IMPORTED_SONAME "libhostmesh_procd.so"
    INTERFACE_INCLUDE_DIRECTORIES "\${_hostmesh_prefix}/include"
    INTERFACE_LINK_LIBRARIES PkgConfig::_hostmesh_procd_deps
    INTERFACE_COMPILE_FEATURES cxx_std_20)
endif()

set(hostmesh_HOSTD_EXECUTABLE "\${_hostmesh_prefix}/bin/hostd")
set(hostmesh_PROCD_EXECUTABLE "\${_hostmesh_prefix}/bin/procd")
set(hostmesh_VERSION "$version")
EOF
cat >"$root/lib/cmake/hostmesh/hostmeshConfigVersion.cmake" <<EOF
set(PACKAGE_VERSION "$version")
if(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
EOF

# The Python package, as built (bazel-bin/python/site/hostmesh), without
# bytecode caches; what an earlier install left there goes first. The
# package finds PREFIX/bin/hostd and PREFIX/bin/procd_py beside itself.
case "$prefix" in
  /usr) python_dir=lib/python3/dist-packages ;;
  *) python_dir=lib/python3.11/dist-packages ;;
esac
rm -rf -- "$root/$python_dir/hostmesh"
(cd "$bin/python/site" && find hostmesh -name __pycache__ -prune -o -type f -print) |
  while read -r file; do
    mode=0644
    case "$file" in *.so) mode=0755 ;; esac
    install -D -m "$mode" "$bin/python/site/$file" "$root/$python_dir/$file"
  done

echo "install-sdk: installed hostmesh $version into $root" \
  "(bin, lib, include/hostmesh, include/proto, lib/pkgconfig, lib/cmake/hostmesh," \
  "$python_dir/hostmesh)"
