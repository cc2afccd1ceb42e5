#!/usr/bin/env bash
# Build adp's images in order: adp-python (the shared Python environment), then the three
# runtimes, Dagster, Redis, Postgres and Prometheus, all tagged $ADP_IMAGE_TAG (default local).
#
#   BASE_IMAGE=python:3.11-slim-bookworm   the default: any Debian bookworm image with python3
#   BASE_IMAGE=debootstrap                 no registry reachable: build adp-base:bookworm from
#                                          Debian's packages with debootstrap (about 2 minutes)
#
# Extra CA certificates of this host (/usr/local/share/ca-certificates/*.crt) go into the
# images' trust store, for hosts that reach the registries through an intercepting proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${ADP_IMAGE_TAG:-local}
base=${BASE_IMAGE:-python:3.11-slim-bookworm}
log_dir=$(mktemp -d)
trap 'rm -rf "$log_dir"' EXIT

debootstrap_base() {
  local root
  root=$(mktemp -d /var/tmp/adp-base.XXXXXX)
  echo "docker-build: debootstrap bookworm into $root (minbase + python3)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" http://deb.debian.org/debian >"$log_dir/debootstrap.log" 2>&1 || {
    tail -n 30 "$log_dir/debootstrap.log" >&2
    rm -rf "$root"
    echo "docker-build: error: debootstrap failed (log above)" >&2
    exit 1
  }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - adp-base:bookworm >/dev/null
  rm -rf "$root"
}

if [ "$base" = debootstrap ]; then
  base=adp-base:bookworm
  docker image inspect "$base" >/dev/null 2>&1 || debootstrap_base
fi

shopt -s nullglob
for cert in /usr/local/share/ca-certificates/*.crt; do
  cp "$cert" docker/certs/
done

build() {
  local image=$1 dockerfile=$2 started=$SECONDS
  printf 'docker-build: %-32s' "$image:$tag"
  if ! docker build --file "$dockerfile" --tag "$image:$tag" \
    --build-arg BASE_IMAGE="$base" --build-arg ADP_IMAGE="adp-python:$tag" --build-arg ADP_TAG="$tag" . >"$log_dir/build.log" 2>&1; then
    echo " failed"
    tail -n 40 "$log_dir/build.log" >&2
    echo "docker-build: error: building $image from $dockerfile failed (log above)" >&2
    exit 1
  fi
  echo " $((SECONDS - started)) s"
}

echo "docker-build: base image $base"
build adp-python docker/adp.Dockerfile
for image in runtime-code runtime-web runtime-reasoning dagster redis postgres prometheus; do
  build "adp-$image" "docker/$image.Dockerfile"
done
