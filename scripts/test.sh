#!/usr/bin/env bash
# The test suite, from a fresh machine: installs what it needs, then runs every test (slow ones too).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec python3 -m pytest -p no:cacheprovider "$@"
