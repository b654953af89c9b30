#!/usr/bin/env bash
# Copies admin #0 out of a compose stack's state volume for the host CLI:
#   deploy/scripts/compose-admin.sh [project]
# The project is found by itself when one stack of this checkout exists
# (docker-compose.yml is `unibus`, docker-compose.cluster.yml `unibus-cluster`);
# name it when both do. Writes .unibus/docker/admin.id (0600) and
# .unibus/docker/env (.unibus/ is git-ignored) with UNIBUS_IDENTITY and a
# UNIBUS_URL listing every nats node's published client port, read from docker
# itself (so UNIBUS_DOCKER_PORT / UNIBUS_DOCKER_PORT_1..3 are honoured), so the
# CLI fails over when one cluster node stops. When the stack's services trust
# a client CA (the cluster requires client TLS), that CA (public; its key
# stays with cluster-certs.sh) is copied to .unibus/docker/client-ca.pem, the
# URLs become tls:// and UNIBUS_TLS_CA names it. Then:
#   UNIBUS_HOME=.unibus/docker npx unibus micro stats
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=.unibus/docker

# Compose projects with an init container started from this checkout.
projects() {
  docker ps -a --filter label=com.docker.compose.service=init \
    --format '{{.Label "com.docker.compose.project"}}	{{.Label "com.docker.compose.project.working_dir"}}' |
    awk -F'\t' -v here="$PWD" '$2 == here || $2 == "" {print $1}' | sort -u
}

if [ $# -ge 1 ]; then
  project=$1
else
  found=$(projects)
  count=$(printf '%s' "$found" | grep -c . || true)
  if [ "$count" -eq 0 ]; then
    echo "no compose stack of this checkout found: run docker compose up first" >&2
    exit 1
  elif [ "$count" -gt 1 ]; then
    echo "several compose stacks found; name one: $0 <project> (one of: $(printf '%s' "$found" | tr '\n' ' '))" >&2
    exit 1
  fi
  project=$found
fi

init=$(docker ps -aq --filter "label=com.docker.compose.project=$project" --filter label=com.docker.compose.service=init | head -n1)
if [ -z "$init" ]; then
  echo "no init container in compose project $project: run docker compose up first" >&2
  exit 1
fi

# Every container's published 4222 (from its configuration, so a stopped node
# is listed too), as "service host port", one per binding, ordered by service.
bindings=$(docker ps -aq --filter "label=com.docker.compose.project=$project" | while read -r c; do
  docker inspect -f '{{$svc := index .Config.Labels "com.docker.compose.service"}}{{range $p, $b := .HostConfig.PortBindings}}{{if eq $p "4222/tcp"}}{{range $b}}{{$svc}} {{.HostIp}} {{.HostPort}}{{"\n"}}{{end}}{{end}}{{end}}' "$c"
done | awk 'NF >= 2' | sort -u)
# The CA the services are told to trust (NODE_EXTRA_CA_CERTS) means the nodes require TLS.
svc=$(docker ps -aq --filter "label=com.docker.compose.project=$project" --filter label=com.docker.compose.service=auth-callout | head -n1)
ca_path=""
if [ -n "$svc" ]; then
  ca_path=$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$svc" | sed -n 's/^NODE_EXTRA_CA_CERTS=//p' | head -n1)
fi
scheme=nats
if [ -n "$ca_path" ]; then scheme=tls; fi
urls=$(printf '%s\n' "$bindings" | awk -v scheme="$scheme" 'NF == 3 {host = $2; port = $3} NF == 2 {host = ""; port = $2}
  {if (host == "" || host == "0.0.0.0" || host == "::") host = "127.0.0.1"; printf "%s%s://%s:%s", sep, scheme, host, port; sep = ","}')
if [ -z "$urls" ]; then
  echo "compose project $project publishes no nats client port (4222)" >&2
  exit 1
fi

umask 077
mkdir -p "$dir"
chmod 700 .unibus "$dir"
docker cp "$init:/state/admin.id" "$dir/admin.id" >/dev/null
chmod 600 "$dir/admin.id"
printf '# Written by deploy/scripts/compose-admin.sh: compose project %s, as admin #0.\nUNIBUS_URL=%s\nUNIBUS_IDENTITY=%s\n' "$project" "$urls" "$PWD/$dir/admin.id" >"$dir/env"
rm -f "$dir/client-ca.pem"
if [ -n "$ca_path" ]; then
  docker cp "$svc:$ca_path" "$dir/client-ca.pem" >/dev/null
  chmod 644 "$dir/client-ca.pem"
  printf 'UNIBUS_TLS_CA=%s\n' "$PWD/$dir/client-ca.pem" >>"$dir/env"
fi
chmod 600 "$dir/env"
echo "admin #0 identity: $dir/admin.id (project $project, servers $urls)"
echo "try: UNIBUS_HOME=$dir npx unibus micro stats"
