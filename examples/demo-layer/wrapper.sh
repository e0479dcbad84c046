#!/bin/bash
# AWS_LAMBDA_EXEC_WRAPPER: called as `wrapper.sh <python> /var/runtime/bootstrap.py`. It puts /opt/internal on
# PYTHONPATH, whose sitecustomize.py starts an internal extension inside the runtime process, then execs the runtime.
echo "[wrapper] starting: $*"
export PYTHONPATH="/opt/internal${PYTHONPATH:+:$PYTHONPATH}"
exec "$@"
