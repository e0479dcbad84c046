#!/bin/sh
# /var/runtime/bootstrap of a managed runtime: the AWS_LAMBDA_EXEC_WRAPPER contract (SPEC 6.2).
export AWS_EXECUTION_ENV=@EXECUTION_ENV@
@EXPORTS@
memory="${AWS_LAMBDA_FUNCTION_MEMORY_SIZE:-128}"
if [ -z "$AWS_LAMBDA_EXEC_WRAPPER" ]; then
  exec @COMMAND@
fi
wrapper="$AWS_LAMBDA_EXEC_WRAPPER"
if [ ! -f "$wrapper" ]; then
  echo "$wrapper: does not exist"
  exit 127
fi
if [ ! -x "$wrapper" ]; then
  echo "$wrapper: is not an executable"
  exit 126
fi
exec "$wrapper" @COMMAND@
