#!/bin/bash
# /var/runtime/bootstrap of the .NET runtimes, written for lambdarun after Lambda's .NET bootstrap (SPEC 6.2
# [S-DOTNET]): find the function's <Asm>.deps.json and <Asm>.runtimeconfig.json in the task root and exec
#   dotnet exec --depsfile F --runtimeconfig F /var/runtime/Amazon.Lambda.RuntimeSupport.dll <handler>
# or, for a handler without `::` (an executable assembly), `dotnet exec /var/task/<handler>.dll`; through
# AWS_LAMBDA_EXEC_WRAPPER when it is set. Exit statuses 101-106 and their messages are those of Lambda's script.
# dotnetcore3.1 is assumed to have started the same way [UNCONFIRMED: only the .NET 6/8 script was seen].
@EXPORTS@
runtime_dir=@RUNTIME_DIR@
export "$(grep LAMBDA_RUNTIME_NAME "$runtime_dir/runtime-release" 2>/dev/null || echo LAMBDA_RUNTIME_NAME=dotnet_custom)"
export AWS_EXECUTION_ENV="AWS_Lambda_${LAMBDA_RUNTIME_NAME}"
export DOTNET_ROOT=@LANG_BIN@

if [ -z "$LAMBDA_TASK_ROOT" ]; then
  echo "Error: Environment variable LAMBDA_TASK_ROOT needs to be defined in order for the Lambda Runtime to load the function handler to be executed." >&2
  exit 101
fi
not_installed="Error: .NET binaries for Lambda function are not correctly installed in the $LAMBDA_TASK_ROOT directory of the image when the image was built. The $LAMBDA_TASK_ROOT directory is missing"
if [ ! -d "$LAMBDA_TASK_ROOT" ] || [ -z "$(ls -A "$LAMBDA_TASK_ROOT")" ]; then
  echo "$not_installed." >&2
  exit 102
fi

handler="${1:-$_HANDLER}"  # an argument wins over _HANDLER
if [ -z "$handler" ]; then
  echo "Error: No Lambda Handler function was specified." >&2
  exit 103
fi

# The task root's <name>.<suffix>, else its only *.<suffix>.
find_file() {
  if [ -f "$LAMBDA_TASK_ROOT/$1.$2" ]; then
    echo "$LAMBDA_TASK_ROOT/$1.$2"
    return 0
  fi
  local found=("$LAMBDA_TASK_ROOT"/*."$2")
  [ ${#found[@]} -eq 1 ] && [ -f "${found[0]}" ] && echo "${found[0]}"
}

command=("$DOTNET_ROOT/dotnet" exec)
if [[ "$handler" != *:* ]]; then
  assembly="$LAMBDA_TASK_ROOT/$handler"
  [[ "$assembly" == *.dll ]] || assembly="$assembly.dll"
  if [ -f "$assembly" ]; then
    command+=("$assembly")
  elif [ -f "$LAMBDA_TASK_ROOT/$handler" ]; then
    command=("$LAMBDA_TASK_ROOT/$handler")  # a self-contained executable
  else
    echo "Error: executable assembly $assembly or binary $LAMBDA_TASK_ROOT/$handler not found." >&2
    exit 104
  fi
else
  name="${LAMBDA_DOTNET_MAIN_ASSEMBLY:-${handler%%:*}}"
  name="${name%.dll}"
  if ! deps=$(find_file "$name" deps.json); then
    echo "$not_installed the required .deps.json file." >&2
    exit 105
  fi
  if ! config=$(find_file "$name" runtimeconfig.json); then
    echo "$not_installed the required .runtimeconfig.json file." >&2
    exit 106
  fi
  command+=(--depsfile "$deps" --runtimeconfig "$config" "$runtime_dir/Amazon.Lambda.RuntimeSupport.dll" "$handler")
fi

if [ -z "$AWS_LAMBDA_EXEC_WRAPPER" ]; then
  exec "${command[@]}"
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
exec -- "$wrapper" "${command[@]}"
