#!/usr/bin/env bash
# Copies admin #0 out of the compose stack's state volume for the host CLI:
#   deploy/scripts/compose-admin.sh [project]        (default project: unibus)
# Writes .unibus/docker/admin.id (0600) and .unibus/docker/env (UNIBUS_URL +
# UNIBUS_IDENTITY; .unibus/ is git-ignored), then:
#   UNIBUS_HOME=.unibus/docker npx unibus micro stats
set -euo pipefail
cd "$(dirname "$0")/../.."
project=${1:-unibus}
dir=.unibus/docker
port=${UNIBUS_DOCKER_PORT:-4222}
init=$(docker ps -aq --filter "label=com.docker.compose.project=$project" --filter label=com.docker.compose.service=init | head -n1)
if [ -z "$init" ]; then
  echo "no init container in compose project $project: run docker compose up first" >&2
  exit 1
fi
umask 077
mkdir -p "$dir"
chmod 700 .unibus "$dir"
docker cp "$init:/state/admin.id" "$dir/admin.id" >/dev/null
chmod 600 "$dir/admin.id"
printf '# Written by deploy/scripts/compose-admin.sh: the compose stack, as admin #0.\nUNIBUS_URL=nats://127.0.0.1:%s\nUNIBUS_IDENTITY=%s\n' "$port" "$PWD/$dir/admin.id" >"$dir/env"
chmod 600 "$dir/env"
echo "admin #0 identity: $dir/admin.id"
echo "try: UNIBUS_HOME=$dir npx unibus micro stats"
