// `/var/runtime/index.mjs` when the official aws-lambda-ric npm package is installed (registry.py links it as
// /var/runtime/node_modules/aws-lambda-ric): start AWS's own runtime interface client.
//
// It does what the package's bin (`npx aws-lambda-ric <handler>`, bin/index.mjs) does, with the handler from
// `_HANDLER` instead of argv (so a wrapper that changes `_HANDLER` is honoured) and the task root from
// `LAMBDA_TASK_ROOT`: `await run(appRoot, handler)`. The bin's own "Executing '<handler>' in function directory
// '<dir>'" line is left out, as the managed runtime prints no such line.
//
// The client's `run` installs its uncaughtException/unhandledRejection listeners before it loads the handler, so a
// failed load (rejected top-level await) reaches them: it is logged as "Uncaught Exception", posted to
// /runtime/init/error and the process exits 129, as with the bin.

import { run } from "aws-lambda-ric";

const handler = process.env._HANDLER;
if (!handler) {
  throw new Error("No handler specified");
}

await run(process.env.LAMBDA_TASK_ROOT || process.cwd(), handler);
