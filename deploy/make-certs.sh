#!/usr/bin/env bash
# Makes the certificates of a hostmesh cluster with openssl, offline: one CA,
# then a certificate per host and per client, signed by it.
#
#   deploy/make-certs.sh DIR --ca                      DIR/ca.pem, DIR/ca.key
#   deploy/make-certs.sh DIR --host NAME --ip IP [--ip IP2] [--dns NAME2]
#                                                      DIR/NAME.pem, DIR/NAME.key
#   deploy/make-certs.sh DIR --client NAME             DIR/NAME.pem, DIR/NAME.key
#
# Options: --days N (validity, default 825; the CA gets 3650), --force (make
# the file again even if it exists), --expired (a certificate that expired
# long ago: for tests of refusal).
#
# The certificate's CN is NAME, the identity hostd gives roles to (`admin`,
# `peer` in hostd's config; any other verified certificate is a `client`).
# A host certificate carries serverAuth and clientAuth (a host serves its
# clients and is a client of its peers) and the subjectAltNames the other
# hosts and the clients dial it by (--ip, --dns); without --dns, NAME itself
# is added as a DNS name. A client certificate carries clientAuth only.
# Keys are EC P-256, written mode 0600; DIR is created mode 0700.
#
# Idempotent: a file that exists is kept (and said so) unless --force. A
# leaf needs the CA in DIR; --ca may come in the same call (it is made first
# if missing).
set -euo pipefail

usage() {
  sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
die() {
  echo "make-certs: $*" >&2
  exit 1
}

command -v openssl >/dev/null || die "openssl is not installed (apt-get install openssl)"

[ $# -ge 1 ] || usage
case "$1" in -h | --help) usage ;; esac
OUT=$1
shift

want_ca=0 kind="" name="" days="" force=0 expired=0
ips=() dnss=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ca) want_ca=1 ;;
    --host | --client)
      [ -z "$kind" ] || die "one --host or --client per call"
      [ $# -ge 2 ] || die "$1 needs a NAME"
      kind=${1#--}
      name=$2
      shift
      ;;
    --ip) [ $# -ge 2 ] || die "--ip needs an address"; ips+=("$2"); shift ;;
    --dns) [ $# -ge 2 ] || die "--dns needs a name"; dnss+=("$2"); shift ;;
    --days) [ $# -ge 2 ] || die "--days needs a number"; days=$2; shift ;;
    --force) force=1 ;;
    --expired) expired=1 ;;
    -h | --help) usage ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

[ "$want_ca" = 1 ] || [ -n "$kind" ] || die "nothing to make: give --ca, --host NAME or --client NAME"
if [ -n "$days" ]; then
  [[ "$days" =~ ^[1-9][0-9]*$ ]] || die "--days must be a positive number of days, not '$days'"
fi
if [ -n "$name" ]; then
  # The name becomes a file name and a CN: keep it plain.
  [[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$ ]] ||
    die "NAME '$name' must be letters, digits, '.', '_' or '-' (at most 63)"
  [ "$name" != ca ] || die "NAME 'ca' is the CA's file name; pick another"
fi
if [ "$kind" = host ] && [ ${#ips[@]} -eq 0 ] && [ ${#dnss[@]} -eq 0 ]; then
  die "--host $name needs the address its peers and clients dial: --ip IP and/or --dns NAME"
fi
if [ "$kind" != host ] && { [ ${#ips[@]} -gt 0 ] || [ ${#dnss[@]} -gt 0 ]; }; then
  die "--ip and --dns are for --host certificates"
fi

umask 077
mkdir -p "$OUT"
chmod 700 "$OUT"
CA_PEM=$OUT/ca.pem
CA_KEY=$OUT/ca.key

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

new_key() { # FILE
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
  chmod 600 "$1"
}

if [ "$want_ca" = 1 ]; then
  if [ -s "$CA_PEM" ] && [ -s "$CA_KEY" ] && [ "$force" = 0 ]; then
    echo "make-certs: kept $CA_PEM ($(openssl x509 -in "$CA_PEM" -noout -subject))"
  else
    new_key "$WORK/ca.key"
    cat >"$WORK/ca.ext" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = hostmesh CA $(hostname -s 2>/dev/null || echo local) $(date -u +%Y%m%d%H%M%S)
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
    openssl req -new -x509 -key "$WORK/ca.key" -config "$WORK/ca.ext" \
      -extensions v3_ca -days "${days:-3650}" -sha256 -out "$WORK/ca.pem"
    mv "$WORK/ca.key" "$CA_KEY"
    mv "$WORK/ca.pem" "$CA_PEM"
    chmod 644 "$CA_PEM"
    echo "make-certs: made $CA_PEM and $CA_KEY"
  fi
fi

[ -n "$kind" ] || exit 0

[ -s "$CA_PEM" ] && [ -s "$CA_KEY" ] ||
  die "no CA in $OUT: make it first with: $0 $OUT --ca"
PEM=$OUT/$name.pem
KEY=$OUT/$name.key
if [ -s "$PEM" ] && [ -s "$KEY" ] && [ "$force" = 0 ]; then
  if [ "$kind" = host ]; then
    # Kept only if it already names every address asked for.
    have=$(openssl x509 -in "$PEM" -noout -ext subjectAltName 2>/dev/null || true)
    for ip in "${ips[@]}"; do
      [[ "$have" == *"IP Address:$ip"* ]] ||
        die "$PEM exists without IP $ip in its subjectAltName; add --force to make it again"
    done
    for dns in "${dnss[@]}"; do
      [[ "$have" == *"DNS:$dns"* ]] ||
        die "$PEM exists without DNS $dns in its subjectAltName; add --force to make it again"
    done
  fi
  echo "make-certs: kept $PEM ($(openssl x509 -in "$PEM" -noout -subject -enddate | paste -sd ' '))"
  exit 0
fi

if [ "$kind" = host ]; then
  eku="serverAuth, clientAuth"
  [ ${#dnss[@]} -gt 0 ] || dnss=("$name")
  sans=()
  for ip in "${ips[@]}"; do sans+=("IP:$ip"); done
  for dns in "${dnss[@]}"; do sans+=("DNS:$dns"); done
  san_line="subjectAltName = $(IFS=,; echo "${sans[*]}")"
else
  eku="clientAuth"
  san_line=""
fi

# `openssl ca` (not `x509 -req`) because OpenSSL 3.0 sets explicit validity
# dates only there (-startdate/-enddate), which --expired needs.
mkdir -p "$WORK/db"
: >"$WORK/db/index.txt"
cat >"$WORK/ca.cnf" <<EOF
[ca]
default_ca = this_ca
[this_ca]
database = $WORK/db/index.txt
serial = $WORK/db/serial
new_certs_dir = $WORK/db
certificate = $CA_PEM
private_key = $CA_KEY
default_md = sha256
policy = any_cn
unique_subject = no
email_in_dn = no
copy_extensions = none
[any_cn]
commonName = supplied
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = $eku
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
$san_line
EOF

new_key "$WORK/leaf.key"
openssl req -new -key "$WORK/leaf.key" -subj "/CN=$name" -out "$WORK/leaf.csr"
if [ "$expired" = 1 ]; then
  validity=(-startdate 20000101000000Z -enddate 20000102000000Z)
else
  validity=(-days "${days:-825}")
fi
# Quiet unless it fails: `openssl ca` narrates every field.
if ! openssl ca -batch -config "$WORK/ca.cnf" -extensions leaf -rand_serial \
  -notext "${validity[@]}" -in "$WORK/leaf.csr" -out "$WORK/leaf.pem" \
  >"$WORK/ca.log" 2>&1; then
  cat "$WORK/ca.log" >&2
  die "openssl could not sign $name's certificate"
fi
mv "$WORK/leaf.key" "$KEY"
mv "$WORK/leaf.pem" "$PEM"
chmod 644 "$PEM"
echo "make-certs: made $PEM and $KEY ($kind, CN=$name${san_line:+, ${san_line#subjectAltName = }}$([ "$expired" = 1 ] && echo ", expired"))"
