#!/usr/bin/env bash
# Regenerate docker/requirements.lock: every Python package of the images (adp's runtime and
# deploy dependencies, transitive ones included) at an exact version. uv resolves it for every
# Python >= 3.11 at once, with markers, so the lock also holds on the base image's Python
# (bookworm's 3.11.2 needs async-timeout, 3.11.7 does not). Run it after changing the
# dependencies in pyproject.toml; tests/test_docker_files.py checks the two agree.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check uv==0.13.9
"$venv/bin/uv" pip compile pyproject.toml --extra deploy --universal --python-version 3.11 \
  --custom-compile-command "make lock" --quiet --output-file docker/requirements.lock
echo "wrote docker/requirements.lock ($(grep -c '==' docker/requirements.lock) pins)"
