#!/usr/bin/env bash
# Installs what lambdarun and its tests need on a fresh Debian machine; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  # bubblewrap and a C compiler build the sandbox (its init is compiled once), passt (pasta) gives it outbound
  # network, e2fsprogs and mount make the ext4 image that is /tmp as root (sandbox/storage.py), mono-mcs compiles
  # the .NET runtime client.
  for pkg in bubblewrap passt gcc libc6-dev curl e2fsprogs mount mono-mcs; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
python3 -m pip install -q --root-user-action=ignore -e '.[dev,trace]'
# The java17/java21 runtimes run the official runtime interface client, fetched from Maven Central.
ric_lib="${LAMBDARUN_CACHE:-$HOME/.cache/lambdarun}/java/lib"
if command -v mvn >/dev/null && ! ls "$ric_lib"/aws-lambda-java-runtime-interface-client-*.jar >/dev/null 2>&1; then
  mvn -q -B -f src/lambdarun/runtimes/java/pom.xml dependency:copy-dependencies -DoutputDirectory="$ric_lib" || true
fi
# Each Python runtime needs awslambdaric in an interpreter of its version (python3.11, 3.12, 3.13).
for version in 3.11 3.12 3.13; do
  for py in "$(command -v "python$version" || true)" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version"*/bin/"python$version"; do
    if [ -x "$py" ] && "$py" -c pass 2>/dev/null; then
      "$py" -c 'import awslambdaric' 2>/dev/null || "$py" -m pip install -q --root-user-action=ignore awslambdaric || true
      break
    fi
  done
done
# The .NET runtimes: the machine's dotnet, else .NET Core 3.1 from PyPI's dotnetcore2 (fetched into the per-user
# cache); lambdarun's runtime client is compiled with mcs. Done now so that no test pays for it.
python3 -m lambdarun.runtimes.dotnet || true
