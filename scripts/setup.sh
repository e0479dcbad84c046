#!/usr/bin/env bash
# Installs what lambdarun and its tests need on a fresh Debian machine; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  # bubblewrap and a C compiler build the sandbox (its init is compiled once), passt (pasta) gives it outbound
  # network, e2fsprogs and mount make the ext4 image that is /tmp as root (sandbox/storage.py), mono-mcs compiles
  # the .NET runtime client, curl serves the tests' bash bootstraps; cmake, make, g++, autoconf, automake and libtool
  # build the native addon of the official Node.js runtime client (aws-lambda-ric), which npm builds into the Node.js
  # images.
  for pkg in bubblewrap passt gcc libc6-dev curl e2fsprogs mount mono-mcs cmake make g++ autoconf automake libtool; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
python3 -m pip install -q --root-user-action=ignore -e '.[dev,trace]'
# Nothing goes into this machine's own interpreters: each runtime's client and SDK live in its image. CI proves it
# by removing the runtime client from every Python 3.11-3.13 found here first.
if [ "${CI:-}" = true ]; then
  for version in 3.11 3.12 3.13; do
    for py in "$(command -v "python$version" || true)" "/usr/bin/python$version" \
              "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version"*/bin/"python$version"; do
      if [ -x "$py" ] && "$py" -c 'import awslambdaric' 2>/dev/null; then
        "$py" -m pip uninstall -y -q --root-user-action=ignore awslambdaric \
          || "$py" -m pip uninstall -y -q --break-system-packages awslambdaric
      fi
    done
  done
fi
# The runtime images, from the registries into lambdarun's cache, once per machine, so that no test pays for them:
# every runtime this machine can run (Python and Java need their interpreter here; Node.js comes from the npm
# registry; .NET is the machine's dotnet, else .NET Core 3.1 from PyPI's dotnetcore2, with a client compiled by mcs).
python3 -m lambdarun runtimes install
