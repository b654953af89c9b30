#!/usr/bin/env bash
# Route and client TLS material for docker-compose.cluster.yml (architecture §7),
# made on the HOST with the `openssl` binary (the images are FROM scratch and
# node:crypto cannot issue X.509 certificates):
#   deploy/scripts/cluster-certs.sh [dir]     (default: .unibus/cluster-tls, git-ignored)
#
#   <dir>/ca/route-ca.key          the route CA's key: stays here, never mounted (0600)
#   <dir>/ca/route-ca.pem          the route CA (only for routes; no client CA is trusted on 6222)
#   <dir>/ca/client-ca.key         the client CA's key: stays here, never mounted (0600)
#   <dir>/client-ca/ca.pem         the client CA (public): what services and the host CLI
#                                  trust on the client port 4222; mounted into the services
#   <dir>/nats-N/route-ca.pem      what node N trusts on its route port
#   <dir>/nats-N/node.pem, node.key  node N's cert (SAN DNS:nats-N, serverAuth+clientAuth:
#                                  routes are mutual TLS, each node is client and server)
#   <dir>/nats-N/client.pem, client.key  node N's client-port cert, signed by the client CA
#                                  (SAN DNS:nats-N, DNS:localhost, IP:127.0.0.1; serverAuth)
#   <dir>/recovery/                where the compose cluster's recovery secret is written
#                                  once (uid 10001, 0700): move it offline
# Two CAs: a client-port certificate can never pass as a route peer, and the
# client CA can be handed to every client without opening the route port.
# Node dirs are 0700 and keys 0600, owned by the containers' uid 10001 so the
# read-only bind mount is readable by nats-server and nobody else. Idempotent:
# existing material is kept; `--force` (first argument) makes everything anew.
# Keys are ECDSA P-256; nothing secret is printed. Must run as root (chown).
set -euo pipefail
cd "$(dirname "$0")/../.."
force=0
if [ "${1:-}" = "--force" ]; then force=1; shift; fi
dir=${1:-${UNIBUS_CLUSTER_TLS_DIR:-.unibus/cluster-tls}}
nodes=${UNIBUS_CLUSTER_NODES:-nats-1,nats-2,nats-3}
uid=10001
days=${UNIBUS_CERT_DAYS:-365}
say() { printf '[cluster-certs] %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  say "must run as root: node keys are handed to uid $uid (the containers' user)" >&2
  exit 1
fi
command -v openssl >/dev/null || { say "openssl is missing" >&2; exit 1; }

umask 077
if [ "$force" = 1 ]; then rm -rf "$dir"; fi
mkdir -p "$dir/ca"
chmod 700 "$dir" "$dir/ca"
ca_key="$dir/ca/route-ca.key"
ca_pem="$dir/ca/route-ca.pem"
if [ ! -s "$ca_key" ] || [ ! -s "$ca_pem" ]; then
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$ca_key" 2>/dev/null
  openssl req -x509 -new -key "$ca_key" -sha256 -days "$days" -subj "/O=unibus/CN=unibus route CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$ca_pem" 2>/dev/null
  say "route CA made: $ca_pem"
fi
chmod 600 "$ca_key"
chmod 644 "$ca_pem"

client_ca_key="$dir/ca/client-ca.key"
client_ca_pem="$dir/ca/client-ca.pem"
if [ ! -s "$client_ca_key" ] || [ ! -s "$client_ca_pem" ]; then
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$client_ca_key" 2>/dev/null
  openssl req -x509 -new -key "$client_ca_key" -sha256 -days "$days" -subj "/O=unibus/CN=unibus client CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$client_ca_pem" 2>/dev/null
  say "client CA made: $client_ca_pem"
fi
chmod 600 "$client_ca_key"
chmod 644 "$client_ca_pem"
# Public: services (uid 10001) and the host CLI read it; the key stays in ca/.
mkdir -p "$dir/client-ca"
cp "$client_ca_pem" "$dir/client-ca/ca.pem"
chmod 755 "$dir/client-ca"
chmod 644 "$dir/client-ca/ca.pem"

IFS=, read -r -a names <<<"$nodes"
for n in "${names[@]}"; do
  d="$dir/$n"
  mkdir -p "$d"
  if [ ! -s "$d/node.key" ] || [ ! -s "$d/node.pem" ] || ! openssl verify -CAfile "$ca_pem" "$d/node.pem" >/dev/null 2>&1; then
    ext=$(mktemp)
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:%s\n' "$n" >"$ext"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/node.key" 2>/dev/null
    openssl req -new -key "$d/node.key" -subj "/O=unibus/CN=$n" 2>/dev/null \
      | openssl x509 -req -CA "$ca_pem" -CAkey "$ca_key" -CAcreateserial -sha256 -days "$days" -extfile "$ext" -out "$d/node.pem" 2>/dev/null
    rm -f "$ext"
    say "$n: route cert made (SAN DNS:$n, serverAuth+clientAuth)"
  fi
  if [ ! -s "$d/client.key" ] || [ ! -s "$d/client.pem" ] || ! openssl verify -CAfile "$client_ca_pem" "$d/client.pem" >/dev/null 2>&1; then
    ext=$(mktemp)
    # serverAuth only: this cert answers clients on 4222 and is useless as a route peer's.
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\n' "$n" >"$ext"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/client.key" 2>/dev/null
    openssl req -new -key "$d/client.key" -subj "/O=unibus/CN=$n" 2>/dev/null \
      | openssl x509 -req -CA "$client_ca_pem" -CAkey "$client_ca_key" -CAcreateserial -sha256 -days "$days" -extfile "$ext" -out "$d/client.pem" 2>/dev/null
    rm -f "$ext"
    say "$n: client-port cert made (SAN DNS:$n, DNS:localhost, IP:127.0.0.1, serverAuth)"
  fi
  cp "$ca_pem" "$d/route-ca.pem"
  chown -R "$uid:$uid" "$d"
  chmod 700 "$d"
  chmod 600 "$d/node.key" "$d/client.key"
  chmod 644 "$d/node.pem" "$d/route-ca.pem" "$d/client.pem"
done
rm -f "$dir/ca/route-ca.srl" "$dir/ca/client-ca.srl"
# Where the compose `enroll` one-shot writes the cluster's recovery secret once
# (0600): the operator moves it offline. Owned by uid 10001 so the container can
# write it; 0700 so nobody else on the host reads it meanwhile.
mkdir -p "$dir/recovery"
chown "$uid:$uid" "$dir/recovery"
chmod 700 "$dir/recovery"
say "route and client TLS material in $dir (mount $dir/<node> read-only at /etc/unibus-routes, $dir/client-ca at /etc/unibus-client-ca)"
