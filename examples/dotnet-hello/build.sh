#!/usr/bin/env bash
# Build the example into a function directory: bash build.sh OUT_DIR (default ./build).
# Needs `mcs` (apt-get install mono-mcs); lambdarun compiles its Amazon.Lambda.Core on first use.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/build}"
mkdir -p "$out"
core="$(python3 -m lambdarun.runtimes.dotnet --core)"
mcs -nologo -target:library -r:"$core" -out:"$out/Hello.dll" "$here/Function.cs"
# Lambda's .NET bootstrap looks for <Assembly>.runtimeconfig.json and <Assembly>.deps.json beside the assembly.
cp "$here/Hello.runtimeconfig.json" "$here/Hello.deps.json" "$out/"
echo "$out"
