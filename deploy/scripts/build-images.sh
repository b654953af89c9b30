#!/usr/bin/env bash
# Builds the three local images offline (no registry: FROM scratch + files):
#   unibus/nats-server:<version>    nats-server + nats-launch (static) + passwd
#   unibus/node-services:<version>  node + its shared libs + the repo + runtime node_modules
#   unibus/cluster-node:<version>   node-services + nats-server: runs `unibus node start`
# <version> is the root package.json version (UNIBUS_IMAGE_TAG overrides).
# The build context is assembled in a temp dir from the files git tracks only
# (never .git, .unibus/, .tools/, .ci/reports, untracked files, env files or
# any key file: *.id, *.key, *.pem, *.seed, *.creds are refused even if tracked).
# Both run as the non-root user unibus (uid/gid 10001). Prints image sizes.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
say() { printf '[build-images] %s\n' "$*"; }

version=${UNIBUS_IMAGE_TAG:-$(node -p 'require("./package.json").version')}
uid=10001
node_bin=$(readlink -f "$(command -v node)")
# The same finder as the tests and `unibus up` (NATS_SERVER_BIN, PATH, .tools/,
# else Debian forky's checksum-pinned package), so the image runs exactly the
# nats-server >= 2.15 they were verified on, never an older copy left around.
nats_bin=$(npm run --silent nats-server -- --path) || { say "no usable nats-server (see above)"; exit 1; }
nats_version=$("$nats_bin" --version | awk '{print $2}')
say "nats-server $nats_version from $nats_bin"

if ! command -v gcc >/dev/null 2>&1; then
  say "gcc missing: installing gcc + libc6-dev (to build the static nats-launch)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gcc libc6-dev >/dev/null
fi

ctx=$(mktemp -d /tmp/unibus-image-ctx.XXXXXX)
trap 'rm -rf "$ctx"' EXIT

# The shared libraries `ldd` lists (with the dynamic loader), at their own paths.
copy_libs() {
  local bin=$1 dest=$2
  ldd "$bin" 2>/dev/null | awk '/=> \// {print $3} /^[ \t]*\/lib/ {print $1}' | sort -u | while read -r lib; do
    cp -L --parents "$lib" "$dest/"
  done
}

# docker 20.10's legacy builder warns it is deprecated on every build: keep only real errors.
build() {
  local out
  if ! out=$(docker build -q -t "$1" "$2" 2>&1); then
    printf '%s\n' "$out" >&2
    return 1
  fi
}

passwd_files() {
  local dest=$1
  mkdir -p "$dest/etc"
  printf 'root:x:0:0:root:/:/sbin/nologin\nunibus:x:%s:%s:unibus:/tmp:/sbin/nologin\n' "$uid" "$uid" >"$dest/etc/passwd"
  printf 'root:x:0:\nunibus:x:%s:\n' "$uid" >"$dest/etc/group"
}

# ---- unibus/nats-server -----------------------------------------------------
n="$ctx/nats"
mkdir -p "$n/rootfs"
passwd_files "$n/rootfs"
install -m 0755 "$nats_bin" "$n/rootfs/nats-server"
gcc -static -O2 -s -o "$n/rootfs/nats-launch" deploy/docker/nats-launch.c
copy_libs "$nats_bin" "$n/rootfs"
mkdir -p "$n/owned/data" "$n/owned/etc/unibus"
chmod 0700 "$n/owned/data" "$n/owned/etc/unibus"
cat >"$n/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
COPY --chown=$uid:$uid owned/ /
USER $uid:$uid
EXPOSE 4222 6222
LABEL org.opencontainers.image.title="unibus nats-server" org.opencontainers.image.version="$version" io.unibus.nats-server.version="$nats_version"
ENTRYPOINT ["/nats-launch", "run"]
CMD ["-c", "/etc/unibus/nats.conf"]
HEALTHCHECK --interval=2s --timeout=3s --start-period=30s --retries=30 CMD ["/nats-launch", "probe", "8222", "/healthz?js-enabled-only=true"]
DOCKERFILE
say "building unibus/nats-server:$version (nats-server $nats_version)"
build "unibus/nats-server:$version" "$n"

# ---- unibus/node-services ---------------------------------------------------
s="$ctx/node"
mkdir -p "$s/rootfs/usr/local/bin" "$s/rootfs/tmp" "$s/app"
chmod 1777 "$s/rootfs/tmp"
passwd_files "$s/rootfs"
install -m 0755 "$node_bin" "$s/rootfs/usr/local/bin/node"
copy_libs "$node_bin" "$s/rootfs"
# Source: tracked files only. Untracked files were copied before, and an
# identity file (admin.id) left in the repo root ended up inside the image:
# anyone who can pull the image could then act as that admin.
untracked=$(git ls-files --others --exclude-standard | grep -v -E '^(\.ci/|bench/|docs/|test/)' | head -n 20 || true)
if [ -n "$untracked" ]; then
  say "not in the image (untracked; git add them if the services need them):"
  printf '%s\n' "$untracked" | sed 's/^/  /' >&2
fi
secret_re='(^|/)(\.env[^/]*|[^/]+\.(id|key|pem|seed|nk|creds))$'
tracked_secrets=$(git ls-files | grep -E "$secret_re" || true)
if [ -n "$tracked_secrets" ]; then
  say "refusing to build: key-like files are tracked by git: $tracked_secrets" >&2
  exit 1
fi
git ls-files -z --cached \
  | grep -zv -E '^(\.ci/|\.git|bench/|docs/|test/containers/|.*\.test\.ts$)' \
  | xargs -0 -I{} sh -c '[ -f "{}" ] && printf "%s\0" "{}"' \
  | tar --null -T - -cf - | tar -xf - -C "$s/app"
# Runtime node_modules: tsx stays (services run through it); build/lint/test tools go.
tar -cf - \
  --exclude='node_modules/typescript' --exclude='node_modules/eslint*' --exclude='node_modules/@eslint*' \
  --exclude='node_modules/@typescript-eslint' --exclude='node_modules/typescript-eslint' \
  --exclude='node_modules/vitest' --exclude='node_modules/@vitest' --exclude='node_modules/vite' \
  --exclude='node_modules/rollup' --exclude='node_modules/@rollup' --exclude='node_modules/prettier' \
  --exclude='node_modules/testcontainers' --exclude='node_modules/docker-compose' \
  --exclude='node_modules/dockerode' --exclude='node_modules/docker-modem' --exclude='node_modules/@grpc' \
  --exclude='node_modules/protobufjs' --exclude='node_modules/ssh2' --exclude='node_modules/cpu-features' \
  --exclude='node_modules/json-schema-to-typescript' --exclude='node_modules/@types' --exclude='node_modules/lodash' \
  --exclude='node_modules/.cache' --exclude='node_modules/@unibus/integration-tests' \
  node_modules $(ls -d contracts/node_modules libs/*/node_modules services/*/node_modules 2>/dev/null) \
  | tar -xf - -C "$s/app"
# Mount points of the compose volumes, owned by unibus so a fresh named volume
# takes this ownership (docker copies it on first mount).
owned_dirs=(state state/data out run/unibus out/nats out/nats-1 out/nats-2 out/nats-3 nodes/nats-1 nodes/nats-2 nodes/nats-3 boot)
for svc in auth-callout membership keys blobs healthz replica-gateway; do owned_dirs+=("out/svc-$svc"); done
for d in "${owned_dirs[@]}"; do mkdir -p "$s/owned/$d" && chmod 0700 "$s/owned/$d"; done
cat >"$s/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
COPY app/ /app/
COPY --chown=$uid:$uid owned/ /
ENV NODE_ENV=production UNIBUS_HOME=/state
WORKDIR /app
USER $uid:$uid
LABEL org.opencontainers.image.title="unibus services" org.opencontainers.image.version="$version" io.unibus.node.version="$(node --version)"
ENTRYPOINT ["/usr/local/bin/node", "--import", "tsx", "deploy/docker/service-entry.ts"]
HEALTHCHECK --interval=2s --timeout=3s --start-period=60s --retries=30 CMD ["/usr/local/bin/node", "deploy/docker/healthcheck.mjs"]
DOCKERFILE
say "building unibus/node-services:$version (node $(node --version))"
build "unibus/node-services:$version" "$s"

# ---- unibus/cluster-node ----------------------------------------------------
# A node that joins through the replica gateway derives its store key in the
# CLI (node unlock key + the cluster's) and starts nats-server as a child with
# that key in its environment only, so node and nats-server share one image.
# A layer over node-services: the repo and node are the same bytes, not a copy.
c="$ctx/cluster-node"
mkdir -p "$c/rootfs/usr/local/bin" "$c/owned/node" "$c/owned/data"
install -m 0755 "$nats_bin" "$c/rootfs/usr/local/bin/nats-server"
copy_libs "$nats_bin" "$c/rootfs"
# The node home's mount point (nuk, wrapped CUK, store): 0700, owned by unibus.
# /data: a compose node's bootstrap store until it moves onto its own key (deploy/docker/node-boot.ts).
chmod 0700 "$c/owned/node" "$c/owned/data"
cat >"$c/Dockerfile" <<DOCKERFILE
FROM unibus/node-services:$version
COPY rootfs/ /
COPY --chown=$uid:$uid owned/ /
# NATS_SERVER_BIN: the CLI runs exactly this binary and never looks for or downloads another.
ENV NATS_SERVER_BIN=/usr/local/bin/nats-server UNIBUS_NODE_HOME=/node UNIBUS_HOME=/node UNIBUS_HEALTH_URL=http://127.0.0.1:8222/healthz?js-enabled-only=true
EXPOSE 4222 6222
LABEL org.opencontainers.image.title="unibus cluster node" org.opencontainers.image.version="$version" io.unibus.nats-server.version="$nats_version"
ENTRYPOINT ["/usr/local/bin/node", "libs/cli/bin/unibus.mjs"]
CMD ["node", "start", "--help"]
DOCKERFILE
say "building unibus/cluster-node:$version (node-services + nats-server $nats_version)"
build "unibus/cluster-node:$version" "$c"

for image in "unibus/nats-server:$version" "unibus/node-services:$version" "unibus/cluster-node:$version"; do
  size=$(docker image inspect -f '{{.Size}}' "$image")
  say "$image: $((size / 1024 / 1024)) MiB"
done
