#!/usr/bin/env bash
# Install what the container build and `make e2e-docker` need on a Debian bookworm machine, as
# root: Debian's Docker engine, debootstrap (the offline base image) and the Compose v2 plugin.
# Bookworm ships only Compose v1, so the plugin comes out of trixie's docker-compose package,
# fetched with a private apt state (the machine's sources are left as they are). Idempotent.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "install-docker: error: run as root (it installs Debian packages)" >&2
  exit 1
fi

missing=()
for package in docker.io debootstrap; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "install-docker: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

plugins=/usr/local/lib/docker/cli-plugins
if ! docker compose version >/dev/null 2>&1; then
  echo "install-docker: installing the Compose v2 plugin from trixie's docker-compose package"
  state=$(mktemp -d)
  trap 'rm -rf "$state"' EXIT
  mkdir -p "$state/lists/partial" "$state/archives/partial"
  echo "deb http://deb.debian.org/debian trixie main" >"$state/sources.list"
  apt_private=(-o "Dir::Etc::SourceList=$state/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$state/lists" -o "Dir::Cache::Archives=$state/archives" -o APT::Sandbox::User=root)
  apt-get "${apt_private[@]}" update -qq
  (cd "$state" && apt-get "${apt_private[@]}" download -qq docker-compose)
  dpkg-deb -x "$state"/docker-compose_*.deb "$state/root"
  install -D -m 0755 "$state/root/usr/libexec/docker/cli-plugins/docker-compose" "$plugins/docker-compose"
  docker compose version
fi
