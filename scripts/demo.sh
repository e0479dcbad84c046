#!/usr/bin/env bash
# The demo, from a fresh machine: a real Python function run by the real awslambdaric in a Lambda environment.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec lambdarun invoke examples/hello --runtime python3.11 --handler app.handler --event '{"name": "lambdarun"}' --repeat 2
