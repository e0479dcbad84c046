#!/usr/bin/env bash
# The demo, from a fresh machine: a Python function run by the real awslambdaric, with an external extension that
# subscribes to the Telemetry API and an internal extension started through AWS_LAMBDA_EXEC_WRAPPER.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${LAMBDARUN_SKIP_SETUP:-}" ] || bash scripts/setup.sh  # the demo test skips it: CI ran it already
exec lambdarun invoke examples/hello --runtime python3.11 --handler app.handler \
  --layer examples/demo-layer --env AWS_LAMBDA_EXEC_WRAPPER=/opt/wrapper.sh \
  --event '{"name": "lambdarun"}' --repeat 2
