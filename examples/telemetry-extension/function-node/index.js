exports.handler = async (event, context) => {
  for (let n = 0; n < (event.lines || 1); n++) console.log(`line ${n}`);
  if (event.fail) throw new Error("asked to fail");
  return { requestId: context.awsRequestId };
};
