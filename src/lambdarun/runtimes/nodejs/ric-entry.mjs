// `/var/runtime/index.mjs` of a Node.js image with the official aws-lambda-ric (at /var/runtime/node_modules):
// start AWS's own runtime interface client.
//
// aws-lambda-ric 4.x starts the runtime as its module loads, reading `_HANDLER` and `LAMBDA_TASK_ROOT` itself, as
// Lambda's own /var/runtime/index.mjs does. 3.x exports `run` instead: this does what its bin (`npx aws-lambda-ric
// <handler>`, bin/index.mjs) does, with the handler from `_HANDLER` instead of argv (so a wrapper that changes
// `_HANDLER` is honoured) and the task root from `LAMBDA_TASK_ROOT`. The bin's own "Executing '<handler>' in
// function directory '<dir>'" line is left out, as the managed runtime prints no such line.
//
// 3.x's `run` installs its uncaughtException/unhandledRejection listeners before it loads the handler, so a failed
// load (rejected top-level await) reaches them: it is logged as "Uncaught Exception", posted to /runtime/init/error
// and the process exits 129, as with the bin.

const ric = await import("aws-lambda-ric");

if (typeof ric.run === "function") {
  const handler = process.env._HANDLER;
  if (!handler) {
    throw new Error("No handler specified");
  }
  await ric.run(process.env.LAMBDA_TASK_ROOT || process.cwd(), handler);
}
