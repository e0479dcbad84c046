// check-extension's function: what each scenario of the battery asks of it.
exports.handler = async (event, context) => {
  const op = event.op || "ok";
  if (op === "error") throw new Error("check-extension: a function error, on purpose");
  if (op === "sleep") await new Promise((resolve) => setTimeout(resolve, event.seconds * 1000));
  if (op === "log") {
    const line = "x".repeat(event.width || 100);
    for (let n = 0; n < event.lines; n++) console.log(`${n} ${line}`);
  }
  return { op, requestId: context.awsRequestId };
};
