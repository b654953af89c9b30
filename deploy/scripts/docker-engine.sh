#!/usr/bin/env bash
# Makes sure a Docker engine and the compose v2 plugin answer on this machine.
# Idempotent: does nothing when both already work; says what it did otherwise.
#   - no engine: installs Debian's docker.io (needs root) and starts dockerd in
#     the background, logging to $DOCKERD_LOG (default /var/log/unibus-dockerd.log);
#   - no `docker compose`: extracts the plugin from Debian trixie's
#     docker-compose package (private apt state: the system's is never touched)
#     into ~/.docker/cli-plugins/.
# No image registry is needed or contacted (nats-notes "Docker, compose, testcontainers").
set -euo pipefail

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/unibus-dockerd.log}
SUITE=trixie
say() { printf '[docker-engine] %s\n' "$*"; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    say "$1 needs root; run this script as root or install it by hand" >&2
    exit 1
  fi
}

engine_up() { docker info >/dev/null 2>&1; }

if engine_up; then
  say "engine: already running ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
else
  if ! command -v dockerd >/dev/null 2>&1; then
    need_root "installing docker.io"
    say "engine: installing Debian's docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends docker.io >/dev/null
  fi
  need_root "starting dockerd"
  say "engine: starting dockerd in the background (log: $DOCKERD_LOG)"
  # setsid: dockerd must outlive the shell (and the CI step) that started it.
  setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  for _ in $(seq 1 120); do
    engine_up && break
    sleep 0.5
  done
  if ! engine_up; then
    say "engine: dockerd did not answer within 60 s; last log lines:" >&2
    tail -n 20 "$DOCKERD_LOG" >&2 || true
    exit 1
  fi
  say "engine: running ($(docker version --format '{{.Server.Version}}'))"
fi

if docker compose version >/dev/null 2>&1; then
  say "compose: already available ($(docker compose version --short))"
else
  say "compose: fetching the v2 plugin from Debian $SUITE's docker-compose package"
  # shellcheck disable=SC2317
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  echo "deb [signed-by=$keyring] $mirror $SUITE main" >"$tmp/$SUITE.list"
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
  apt_opts=(-o "Dir::Etc::SourceList=$tmp/$SUITE.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o Debug::NoLocking=1 -o APT::Sandbox::User=root -q)
  apt-get "${apt_opts[@]}" update >/dev/null
  (cd "$tmp" && apt-get "${apt_opts[@]}" download docker-compose >/dev/null)
  dpkg-deb -x "$tmp"/docker-compose_*.deb "$tmp/root"
  plugins="${HOME:-/root}/.docker/cli-plugins"
  mkdir -p "$plugins"
  install -m 0755 "$tmp/root/usr/libexec/docker/cli-plugins/docker-compose" "$plugins/docker-compose"
  say "compose: installed $(docker compose version --short) into $plugins"
fi
