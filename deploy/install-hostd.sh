#!/usr/bin/env bash
# Installs hostd, procd and meshctl from a Bazel build, the systemd unit and
# (if none exists yet) the config. Idempotent: files already up to date are
# left alone, an existing /etc/hostmesh/hostd.conf is never overwritten, and
# the service is neither enabled nor restarted (the script says how).
#
#   bazel build //hostd //procd //meshctl && sudo deploy/install-hostd.sh
#
# Options:
#   --prefix DIR     binaries go to DIR/bin (default /usr/local); the unit's
#                    ExecStart and the new config's procd path follow it
#   --bazel-bin DIR  where the built binaries are (default: <repo>/bazel-bin)
#   --destdir DIR    stage everything under DIR instead of / (packaging,
#                    testing); implies no systemctl call
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(dirname "$script_dir")"
prefix=/usr/local
bazel_bin="$repo_dir/bazel-bin"
destdir=""

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --prefix=*) prefix="${1#*=}"; shift ;;
    --bazel-bin) bazel_bin="${2:?--bazel-bin needs a directory}"; shift 2 ;;
    --bazel-bin=*) bazel_bin="${1#*=}"; shift ;;
    --destdir) destdir="${2:?--destdir needs a directory}"; shift 2 ;;
    --destdir=*) destdir="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install-hostd: unknown argument \"$1\" (see --help)" >&2; exit 2 ;;
  esac
done

case "$prefix" in
  /*) prefix="${prefix%/}" ;;
  *) echo "install-hostd: --prefix must be an absolute path, got \"$prefix\"" >&2; exit 2 ;;
esac
if [ -n "$destdir" ]; then destdir="$(mkdir -p "$destdir" && cd "$destdir" && pwd)"; fi

bin_dir="$prefix/bin"
unit_path=/etc/systemd/system/hostd.service
conf_path=/etc/hostmesh/hostd.conf

# Everything is checked before anything is installed.
binaries=(hostd/hostd procd/procd meshctl/meshctl)
missing=()
for bin in "${binaries[@]}"; do
  [ -x "$bazel_bin/$bin" ] || missing+=("$bazel_bin/$bin")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-hostd: not built: ${missing[*]}" >&2
  echo "install-hostd: run: bazel build //hostd //procd //meshctl" >&2
  exit 1
fi
if [ -z "$destdir" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install-hostd: must run as root (or stage with --destdir DIR)" >&2
  exit 1
fi

tmp_dir="$(mktemp -d)"
trap 'rm -rf "$tmp_dir"' EXIT

# install_file SRC DEST MODE: puts SRC at DEST (under destdir) unless DEST
# already has the same content and mode. The copy is renamed into place, so
# a running binary is replaced, never written into ("text file busy").
# Sets `changed` to 1 if it installed.
install_file() {
  local src="$1" dest="$destdir$2" mode="$3"
  changed=0
  if [ -f "$dest" ] && cmp -s "$src" "$dest" &&
     [ "$(stat -c %a "$dest")" = "${mode#0}" ]; then
    echo "install-hostd: unchanged $2"
    return
  fi
  mkdir -p "$(dirname "$dest")"
  local new
  new="$(mktemp "$dest.new.XXXXXX")"
  cp "$src" "$new"
  chmod "$mode" "$new"
  mv -f "$new" "$dest"
  changed=1
  echo "install-hostd: installed $2"
}

for bin in "${binaries[@]}"; do
  install_file "$bazel_bin/$bin" "$bin_dir/$(basename "$bin")" 0755
done

# The unit and config name /usr/local/bin; they follow --prefix.
sed "s|/usr/local/bin/|$bin_dir/|g" "$script_dir/hostd.service" > "$tmp_dir/hostd.service"
install_file "$tmp_dir/hostd.service" "$unit_path" 0644
unit_changed=$changed

if [ -e "$destdir$conf_path" ]; then
  echo "install-hostd: kept existing $conf_path (compare with deploy/hostd.conf.example)"
else
  sed "s|/usr/local/bin/|$bin_dir/|g" "$script_dir/hostd.conf.example" > "$tmp_dir/hostd.conf"
  install_file "$tmp_dir/hostd.conf" "$conf_path" 0644
fi

if [ -n "$destdir" ]; then
  echo "install-hostd: staged under $destdir; systemd not touched"
elif [ ! -d /run/systemd/system ]; then
  echo "install-hostd: systemd is not running here; start hostd by hand:"
  echo "  $bin_dir/hostd --config $conf_path"
else
  if [ "$unit_changed" = 1 ]; then
    systemctl daemon-reload
    echo "install-hostd: ran systemctl daemon-reload"
  fi
  if systemctl is-active --quiet hostd.service; then
    echo "install-hostd: hostd is running the old files until: systemctl restart hostd"
    echo "install-hostd: (a restart stops every proc on this machine)"
  else
    echo "install-hostd: to start now and at boot: systemctl enable --now hostd"
  fi
fi
