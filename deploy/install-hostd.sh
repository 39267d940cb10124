#!/usr/bin/env bash
# Installs hostd, procd and meshctl from a Bazel build, the systemd unit, the
# users it runs as and (if none exists yet) the config. Idempotent: files
# already up to date are left alone, an existing /etc/hostmesh/hostd.conf is
# never overwritten, owners and modes of the secrets under /etc/hostmesh are
# set again on every run, and the service is neither enabled nor restarted
# (the script says how).
#
#   bazel build //hostd //procd //meshctl && sudo deploy/install-hostd.sh
#
# Users and groups (system accounts, no login shell), created if missing:
#   hostmesh       hostd runs as it; owns /var/lib/hostmesh, /run/hostmesh
#                  and the TLS key; its group reads the tokens file
#   hostmesh-proc  procs run as it (hostd.conf: proc-user); home
#                  /var/lib/hostmesh-proc, the one place procs may write
#                  besides their private /tmp; in neither group here
#   hostmesh-ops   operators' group (hostd.conf: operators-group; the unit's
#                  Group=): its members may read proc logs; empty unless
#                  --operator
#
# Files under /etc/hostmesh (the config names these paths):
#   hostd.conf       0640 root:hostmesh   (installed only if missing)
#   tls/             0750 root:hostmesh
#   tls/ca.pem       0644 root:root       the CA certificate (never its key)
#   tls/host.pem     0644 root:root       this host's certificate
#   tls/host.key     0600 hostmesh        this host's private key
#   tokens           0640 root:hostmesh   "<identity> <role> <token>" lines
#   peer.token       0600 hostmesh        the token this host gives its peers
#
# Options:
#   --prefix DIR       binaries go to DIR/bin (default /usr/local); the unit's
#                      ExecStart and the new config's procd path follow it
#   --bazel-bin DIR    where the built binaries are (default: <repo>/bazel-bin)
#   --tls-dir DIR      install DIR/ca.pem, DIR/NAME.pem and DIR/NAME.key (from
#   --tls-name NAME    deploy/make-certs.sh) as tls/ca.pem, tls/host.pem and
#                      tls/host.key; NAME defaults to `hostname -s`
#   --tokens FILE      install FILE as /etc/hostmesh/tokens
#   --peer-token FILE  install FILE as /etc/hostmesh/peer.token
#   --operator USER    add USER to hostmesh-ops (repeatable)
#   --destdir DIR      stage everything under DIR instead of / (packaging,
#                      testing); creates no users, sets no owners and makes
#                      no systemctl call
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(dirname "$script_dir")"
prefix=/usr/local
bazel_bin="$repo_dir/bazel-bin"
destdir=""
tls_dir=""
tls_name=""
tokens_src=""
peer_token_src=""
operators=()

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --prefix=*) prefix="${1#*=}"; shift ;;
    --bazel-bin) bazel_bin="${2:?--bazel-bin needs a directory}"; shift 2 ;;
    --bazel-bin=*) bazel_bin="${1#*=}"; shift ;;
    --destdir) destdir="${2:?--destdir needs a directory}"; shift 2 ;;
    --destdir=*) destdir="${1#*=}"; shift ;;
    --tls-dir) tls_dir="${2:?--tls-dir needs a directory}"; shift 2 ;;
    --tls-dir=*) tls_dir="${1#*=}"; shift ;;
    --tls-name) tls_name="${2:?--tls-name needs a name}"; shift 2 ;;
    --tls-name=*) tls_name="${1#*=}"; shift ;;
    --tokens) tokens_src="${2:?--tokens needs a file}"; shift 2 ;;
    --tokens=*) tokens_src="${1#*=}"; shift ;;
    --peer-token) peer_token_src="${2:?--peer-token needs a file}"; shift 2 ;;
    --peer-token=*) peer_token_src="${1#*=}"; shift ;;
    --operator) operators+=("${2:?--operator needs a user}"); shift 2 ;;
    --operator=*) operators+=("${1#*=}"); shift ;;
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
conf_dir=/etc/hostmesh
conf_path=$conf_dir/hostd.conf
proc_home=/var/lib/hostmesh-proc

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
if [ -n "$tls_dir" ]; then
  tls_name="${tls_name:-$(hostname -s)}"
  for f in ca.pem "$tls_name.pem" "$tls_name.key"; do
    if [ ! -f "$tls_dir/$f" ]; then
      echo "install-hostd: --tls-dir: no $tls_dir/$f (make it with deploy/make-certs.sh)" >&2
      exit 1
    fi
  done
elif [ -n "$tls_name" ]; then
  echo "install-hostd: --tls-name needs --tls-dir" >&2
  exit 2
fi
for f in "$tokens_src" "$peer_token_src"; do
  if [ -n "$f" ] && [ ! -f "$f" ]; then
    echo "install-hostd: no such file: $f" >&2
    exit 1
  fi
done
if [ -z "$destdir" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install-hostd: must run as root (or stage with --destdir DIR)" >&2
  exit 1
fi
if [ -n "$destdir" ] && [ ${#operators[@]} -gt 0 ]; then
  echo "install-hostd: --operator needs a real install, not --destdir" >&2
  exit 2
fi
for user in "${operators[@]}"; do
  if ! getent passwd "$user" >/dev/null; then
    echo "install-hostd: --operator: no user \"$user\"" >&2
    exit 1
  fi
done

tmp_dir="$(mktemp -d)"
trap 'rm -rf "$tmp_dir"' EXIT

# --- Users and groups ------------------------------------------------------
nologin=/usr/sbin/nologin
[ -x "$nologin" ] || nologin=/bin/false
ensure_group() {
  if getent group "$1" >/dev/null; then
    echo "install-hostd: group $1 exists"
  else
    groupadd --system "$1"
    echo "install-hostd: created group $1"
  fi
}
# ensure_user NAME HOME COMMENT: a system user whose primary group is NAME.
ensure_user() {
  if getent passwd "$1" >/dev/null; then
    echo "install-hostd: user $1 exists"
  else
    useradd --system --gid "$1" --home-dir "$2" --no-create-home \
      --shell "$nologin" --comment "$3" "$1"
    echo "install-hostd: created user $1"
  fi
}
if [ -z "$destdir" ]; then
  ensure_group hostmesh
  ensure_user hostmesh /var/lib/hostmesh "hostmesh host daemon"
  ensure_group hostmesh-proc
  ensure_user hostmesh-proc "$proc_home" "hostmesh procs"
  ensure_group hostmesh-ops
  for user in "${operators[@]}"; do
    if id -nG "$user" | tr ' ' '\n' | grep -qx hostmesh-ops; then
      echo "install-hostd: $user is in hostmesh-ops"
    else
      usermod --append --groups hostmesh-ops "$user"
      echo "install-hostd: added $user to hostmesh-ops (from their next login)"
    fi
  done
  # The proc user must not reach hostd's secrets through a group.
  for group in hostmesh hostmesh-ops; do
    if id -nG hostmesh-proc | tr ' ' '\n' | grep -qx "$group"; then
      echo "install-hostd: warning: hostmesh-proc is in group $group; procs could" \
        "read what that group reads (gpasswd -d hostmesh-proc $group)" >&2
    fi
  done
  install -d -m 0750 -o hostmesh-proc -g hostmesh-proc "$proc_home"
else
  echo "install-hostd: --destdir: users hostmesh, hostmesh-proc and group" \
    "hostmesh-ops not created, owners not set"
  mkdir -p "$destdir$proc_home"
  chmod 0750 "$destdir$proc_home"
fi

# --- Files -----------------------------------------------------------------
# set_owner PATH OWNER:GROUP: chown (under destdir: nothing).
set_owner() {
  [ -z "$destdir" ] && chown "$2" "$destdir$1"
  return 0
}
# has_owner PATH OWNER:GROUP: whether PATH has it (under destdir: always).
has_owner() {
  [ -n "$destdir" ] || [ "$(stat -c %U:%G "$destdir$1")" = "$2" ]
}

# install_file SRC DEST MODE [OWNER:GROUP]: puts SRC at DEST (under destdir)
# unless DEST already has the same content, mode and owner. The copy gets its
# mode and owner before it is renamed into place, so a secret is never
# readable by the wrong user, and a running binary is replaced, never written
# into ("text file busy"). Sets `changed` to 1 if it installed.
install_file() {
  local src="$1" dest="$destdir$2" mode="$3" owner="${4:-root:root}"
  changed=0
  if [ -f "$dest" ] && cmp -s "$src" "$dest" &&
     [ "$(stat -c %a "$dest")" = "${mode#0}" ] && has_owner "$2" "$owner"; then
    echo "install-hostd: unchanged $2"
    return
  fi
  mkdir -p "$(dirname "$dest")"
  local new
  new="$(umask 077 && mktemp "$dest.new.XXXXXX")"
  [ -z "$destdir" ] && chown "$owner" "$new"
  chmod "$mode" "$new"
  cat "$src" >"$new"
  mv -f "$new" "$dest"
  changed=1
  if [ -z "$destdir" ]; then
    echo "install-hostd: installed $2 ($mode $owner)"
  else
    echo "install-hostd: installed $2 ($mode)"
  fi
}

# ensure_mode PATH MODE OWNER:GROUP: an existing file gets them back.
ensure_mode() {
  local path="$1" mode="$2" owner="$3"
  [ -e "$destdir$path" ] || return 0
  if [ "$(stat -c %a "$destdir$path")" != "${mode#0}" ] || ! has_owner "$path" "$owner"; then
    set_owner "$path" "$owner"
    chmod "$mode" "$destdir$path"
    if [ -z "$destdir" ]; then
      echo "install-hostd: set $path to $mode $owner"
    else
      echo "install-hostd: set $path to $mode"
    fi
  fi
}

for bin in "${binaries[@]}"; do
  install_file "$bazel_bin/$bin" "$bin_dir/$(basename "$bin")" 0755
done

# The unit and config name /usr/local/bin; they follow --prefix.
sed "s|/usr/local/bin/|$bin_dir/|g" "$script_dir/hostd.service" > "$tmp_dir/hostd.service"
install_file "$tmp_dir/hostd.service" "$unit_path" 0644
unit_changed=$changed

mkdir -p "$destdir$conf_dir/tls"
ensure_mode "$conf_dir" 0755 root:root
ensure_mode "$conf_dir/tls" 0750 root:hostmesh

if [ -e "$destdir$conf_path" ]; then
  echo "install-hostd: kept existing $conf_path (compare with deploy/hostd.conf.example)"
else
  sed "s|/usr/local/bin/|$bin_dir/|g" "$script_dir/hostd.conf.example" > "$tmp_dir/hostd.conf"
  install_file "$tmp_dir/hostd.conf" "$conf_path" 0640 root:hostmesh
fi

if [ -n "$tls_dir" ]; then
  install_file "$tls_dir/ca.pem" "$conf_dir/tls/ca.pem" 0644
  install_file "$tls_dir/$tls_name.pem" "$conf_dir/tls/host.pem" 0644
  install_file "$tls_dir/$tls_name.key" "$conf_dir/tls/host.key" 0600 hostmesh:hostmesh
fi
[ -n "$tokens_src" ] && install_file "$tokens_src" "$conf_dir/tokens" 0640 root:hostmesh
[ -n "$peer_token_src" ] && install_file "$peer_token_src" "$conf_dir/peer.token" 0600 hostmesh:hostmesh

# Secrets placed by hand get the right owner and mode back on every run.
ensure_mode "$conf_path" 0640 root:hostmesh
ensure_mode "$conf_dir/tls/host.key" 0600 hostmesh:hostmesh
ensure_mode "$conf_dir/tokens" 0640 root:hostmesh
ensure_mode "$conf_dir/peer.token" 0600 hostmesh:hostmesh
if [ -e "$destdir$conf_dir/tls/ca.key" ]; then
  echo "install-hostd: warning: $conf_dir/tls/ca.key: a CA's key belongs on no host;" \
    "keep it offline" >&2
fi

# A config whose listen is not loopback needs TLS, or hostd refuses to start.
conf_value() {
  sed -nE "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\"?([^\"#]*)\"?.*/\1/p" \
    "$destdir$conf_path" | tail -1 | sed 's/[[:space:]]*$//'
}
listen="$(conf_value listen)"
case "$listen" in
  "" | 127.* | localhost:* | "[::1]:"*) ;;
  *)
    for key in tls-cert tls-key tls-ca; do
      if [ -z "$(conf_value "$key")" ]; then
        echo "install-hostd: warning: $conf_path: listen = \"$listen\" is not loopback" \
          "but $key is not set: hostd will refuse to start (README \"Multi-host\")" >&2
        break
      fi
    done
    ;;
esac

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
    echo "install-hostd: (a restart keeps this machine's procs: the new hostd re-adopts them;"
    echo "install-hostd:  a changed hostd.conf or tokens file alone: systemctl reload hostd)"
  else
    echo "install-hostd: to start now and at boot: systemctl enable --now hostd"
  fi
fi
