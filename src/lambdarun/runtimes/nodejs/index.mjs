// lambdarun's Node.js runtime interface client: `/var/runtime/index.mjs` of the nodejs runtimes.
//
// Written for lambdarun, with the observable behaviour of AWS's aws-lambda-ric 3.x (SPEC 1, 3.5, 4.3 and 10):
// handler strings and module resolution, the init and invoke error bodies, the console log line format,
// callback/async/sync handler semantics (including `callbackWaitsForEmptyEventLoop`), response streaming, and the
// exit codes after an uncaught exception (129) or an unhandled rejection (128). Plain modern JavaScript, node:
// built-ins only.

import fs from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import net from "node:net";
import path from "node:path";
import { pathToFileURL } from "node:url";
import util from "node:util";

const require = createRequire(import.meta.url);
const API_PREFIX = "/2018-06-01/runtime";
const ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type";
const EXIT_UNCAUGHT = 129;
const EXIT_REJECTION = 128;

// ---------------------------------------------------------------------------------------------------------------
// Errors: the runtime's own types carry their Lambda name (`Runtime.X`) as `error.name`.

function runtimeError(shortName, makeMessage = (value) => value) {
  const type = class extends Error {
    constructor(value) {
      super(makeMessage(value));
    }
  };
  Object.defineProperty(type, "name", { value: shortName });
  type.prototype.name = `Runtime.${shortName}`;
  return type;
}

// The wrapping types take the original error; their message is its string form, e.g. "Error: Cannot find module".
const ImportModuleError = runtimeError("ImportModuleError", String);
const UserCodeSyntaxError = runtimeError("UserCodeSyntaxError", String);
const HandlerNotFound = runtimeError("HandlerNotFound");
const MalformedHandlerName = runtimeError("MalformedHandlerName");
const MalformedStreamingHandler = runtimeError("MalformedStreamingHandler");
const InvalidStreamingOperation = runtimeError("InvalidStreamingOperation");
// An async handler whose promise was still pending when nothing else was left to run (newer aws-lambda-ric;
// message as the managed runtime prints it [UNCONFIRMED wording]).
const NodeJsExit = runtimeError(
  "NodeJsExit",
  () =>
    "The Lambda runtime client detected an unexpected Node.js exit code. This is most commonly caused by a " +
    "Promise that was never settled. For more information, see " +
    "https://nodejs.org/docs/latest/api/process.html#exit-codes",
);

class UnhandledPromiseRejection extends Error {
  constructor(reason, promise) {
    super(reason);
    this.reason = reason; // enumerable on purpose: the logged error shows the reason and the promise
    this.promise = promise;
  }
}
UnhandledPromiseRejection.prototype.name = "Runtime.UnhandledPromiseRejection";

function looksLikeError(value) {
  return (
    value !== null &&
    typeof value === "object" &&
    typeof value.name === "string" &&
    typeof value.message === "string" &&
    typeof value.stack === "string" &&
    value.name !== "" &&
    value.message !== "" &&
    value.stack !== ""
  );
}

const escapeDel = (text) => (typeof text === "string" ? text.replaceAll("\x7f", "%7F") : text);

/** The error body the Runtime API receives: `{errorType, errorMessage, trace}`. */
function errorBody(error) {
  try {
    if (util.types.isNativeError(error) || looksLikeError(error)) {
      return {
        errorType: escapeDel(error.name),
        errorMessage: escapeDel(error.message),
        trace: escapeDel(error.stack).split("\n"),
      };
    }
    return { errorType: typeof error, errorMessage: error.toString(), trace: [] };
  } catch {
    return {
      errorType: "handled",
      errorMessage:
        "callback called with Error argument, but there was a problem while retrieving one or more of its " +
        "message, name, and stack",
    };
  }
}

const asError = (value) => (value instanceof Error ? value : new Error(value));

/** An error for a text log line: a tab, then JSON with its type, message, code, own properties and stack lines. */
function formatForLog(error) {
  const expand = (_key, value) => {
    if (!(value instanceof Error)) return value;
    const shown = { errorType: value.name, errorMessage: value.message, code: value.code, ...value };
    if (typeof value.stack === "string") shown.stack = value.stack.split("\n");
    return shown;
  };
  try {
    return `\t${JSON.stringify(error, expand)}`;
  } catch {
    return `\t${JSON.stringify(errorBody(error))}`;
  }
}

/** The X-Ray cause of an invocation error (`Lambda-Runtime-Function-XRay-Error-Cause`), or "" when not renderable. */
function xrayCause(error) {
  try {
    const stack = [];
    if (typeof error.stack === "string") {
      for (const raw of escapeDel(error.stack).split("\n").slice(1)) {
        let frame = raw.trim().replace(/[()]/g, "");
        frame = frame.slice(frame.indexOf(" ") + 1); // drop "at"
        const space = frame.lastIndexOf(" ");
        const label = space >= 0 ? frame.slice(0, space) : "";
        const [file, line] = (label ? frame.slice(space + 1) : frame).split(":");
        stack.push({ path: file, line: Number.parseInt(line, 10), label: label || "anonymous" });
      }
    }
    return JSON.stringify({
      working_directory: process.cwd(),
      exceptions: [{ type: escapeDel(error.name), message: escapeDel(error.message), stack }],
      paths: [...new Set(stack.map((entry) => entry.path))],
    });
  } catch {
    return "";
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Logging: console.* become one record per call, `<ISO time>\t<request id>\t<LEVEL>\t<message>` (or JSON with
// AWS_LAMBDA_LOG_FORMAT=JSON), filtered by AWS_LAMBDA_LOG_LEVEL. On stdout a multi-line message keeps its line
// breaks as "\r" so that it stays one record; with _LAMBDA_TELEMETRY_LOG_FD each record is a frame (SPEC 3.5).

const REQUEST_ID = Symbol.for("aws.lambda.runtime.requestId"); // shared with libraries that read it
const TENANT_ID = Symbol.for("aws.lambda.runtime.tenantId");
const LEVELS = {
  TRACE: { name: "TRACE", rank: 1, mask: 0b00100 },
  DEBUG: { name: "DEBUG", rank: 2, mask: 0b01000 },
  INFO: { name: "INFO", rank: 3, mask: 0b01100 },
  WARN: { name: "WARN", rank: 4, mask: 0b10000 },
  ERROR: { name: "ERROR", rank: 5, mask: 0b10100 },
  FATAL: { name: "FATAL", rank: 6, mask: 0b11000 },
};

function setRequestId(id, tenantId) {
  globalThis[REQUEST_ID] = id;
  globalThis[TENANT_ID] = tenantId;
}

function errorFields(value) {
  return {
    errorType: value?.constructor?.name ?? "UnknownError",
    errorMessage: value.message,
    stackTrace: typeof value.stack === "string" ? value.stack.split("\n") : value.stack,
  };
}

function jsonRecord(time, level, params) {
  const record = { timestamp: time, level: level.name, requestId: globalThis[REQUEST_ID] };
  const tenantId = globalThis[TENANT_ID];
  if (tenantId !== undefined && tenantId !== null) record.tenantId = tenantId;
  if (params.length === 1) {
    record.message = params[0];
    try {
      return JSON.stringify(record, (_key, value) =>
        value instanceof Error ? { ...errorFields(value), ...value } : value,
      );
    } catch {
      record.message = util.format(record.message);
      return JSON.stringify(record);
    }
  }
  record.message = util.format(...params);
  const error = params.find((param) => param instanceof Error);
  if (error !== undefined) {
    Object.assign(record, errorFields(error));
    if (!Array.isArray(record.stackTrace)) record.stackTrace = [];
  }
  return JSON.stringify(record);
}

function patchConsole() {
  const json = process.env.AWS_LAMBDA_LOG_FORMAT?.toUpperCase() === "JSON";
  const render = json
    ? (time, level, params) => jsonRecord(time, level, params)
    : (time, level, params) => `${time}\t${globalThis[REQUEST_ID]}\t${level.name}\t${util.format(...params)}`;

  let write;
  const fdSetting = process.env._LAMBDA_TELEMETRY_LOG_FD;
  if (fdSetting !== undefined) {
    delete process.env._LAMBDA_TELEMETRY_LOG_FD;
    const fd = Number.parseInt(fdSetting, 10);
    const header = Buffer.alloc(16);
    const frameType = json ? 0xa55a0002 : 0xa55a0003;
    write = (level, params) => {
      const now = new Date();
      const message = Buffer.from(`${render(now.toISOString(), level, params)}${json ? "" : "\n"}`, "utf8");
      header.writeUInt32BE((frameType | level.mask) >>> 0, 0);
      header.writeUInt32BE(message.length, 4);
      header.writeBigUInt64BE(BigInt(now.getTime()) * 1000n, 8);
      fs.writeSync(fd, header);
      fs.writeSync(fd, message);
    };
  } else {
    write = (level, params) => {
      const line = render(new Date().toISOString(), level, params).replaceAll("\n", "\r");
      process.stdout.write(`${line}\n`);
    };
  }

  const threshold = LEVELS[process.env.AWS_LAMBDA_LOG_LEVEL?.toUpperCase()] ?? LEVELS.TRACE;
  const method = (level) => (level.rank >= threshold.rank ? (...params) => write(level, params) : () => {});
  console.trace = method(LEVELS.TRACE);
  console.debug = method(LEVELS.DEBUG);
  console.info = method(LEVELS.INFO);
  console.log = console.info;
  console.warn = method(LEVELS.WARN);
  console.error = method(LEVELS.ERROR);
  console.fatal = (...params) => write(LEVELS.FATAL, params);

  // How the runtime itself reports an error it caught ("Invoke Error", "Uncaught Exception", ...).
  return json
    ? (_label, error) => console.error(asError(error))
    : (label, error) => console.error(label, formatForLog(asError(error)));
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP/1.1 requests over one keep-alive connection, one at a time. Answers are read as libcurl reads them: a header
// repeated with the same Content-Length is one Content-Length; different ones are an error; a chunked body is
// joined; a body with neither ends with the connection.

const HEAD_END = Buffer.from("\r\n\r\n");
const CRLF = Buffer.from("\r\n");

class Connection {
  constructor(host, port) {
    this.host = host;
    this.port = port;
    this.socket = null;
    this.queue = Promise.resolve(); // requests wait for the one before them, as with a one-socket agent
  }

  request(method, path, headers, body) {
    const result = this.queue.then(() => this.exchange(method, path, headers, body));
    this.queue = result.catch(() => {});
    return result;
  }

  exchange(method, path, headers, body) {
    return new Promise((resolve, reject) => {
      const socket = this.socket ?? this.connect();
      let buffer = Buffer.alloc(0);
      let ended = false;
      const done = (error, answer) => {
        socket.off("data", onData);
        socket.off("end", onEnd);
        socket.off("error", onError);
        if (error || ended || answer.headers.connection?.toLowerCase() === "close") this.drop(socket);
        if (error) reject(error);
        else resolve(answer);
      };
      const attempt = () => {
        let answer;
        try {
          answer = parseAnswer(buffer, ended);
        } catch (error) {
          done(error);
          return;
        }
        if (answer !== null) done(null, answer);
        else if (ended) done(new Error("the Runtime API closed the connection before answering"));
      };
      const onData = (chunk) => {
        buffer = Buffer.concat([buffer, chunk]);
        attempt();
      };
      const onEnd = () => {
        ended = true;
        attempt();
      };
      const onError = (error) => done(error);
      socket.on("data", onData);
      socket.on("end", onEnd);
      socket.on("error", onError);
      const payload = body === undefined ? Buffer.alloc(0) : Buffer.from(body);
      const lines = [`${method} ${path} HTTP/1.1`, `Host: ${this.host}:${this.port}`];
      for (const [name, value] of Object.entries(headers)) {
        if (name.toLowerCase() !== "content-length") lines.push(`${name}: ${value}`);
      }
      if (method !== "GET" || payload.length > 0) lines.push(`Content-Length: ${payload.length}`);
      socket.write(Buffer.concat([Buffer.from(`${lines.join("\r\n")}\r\n\r\n`), payload]));
    });
  }

  connect() {
    const socket = net.connect({ host: this.host, port: this.port, noDelay: true });
    socket.on("error", () => {}); // each exchange listens for its own errors; this only keeps an idle one quiet
    socket.on("close", () => this.drop(socket));
    this.socket = socket;
    return socket;
  }

  drop(socket) {
    if (this.socket === socket) this.socket = null;
    socket.destroy();
  }
}

/** `{status, headers, body}` once `buffer` holds a whole answer, else null; throws on a malformed one. */
function parseAnswer(buffer, ended) {
  const headEnd = buffer.indexOf(HEAD_END);
  if (headEnd < 0) return null;
  const [statusLine, ...headerLines] = buffer.subarray(0, headEnd).toString("latin1").split("\r\n");
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
  if (!status) throw new Error(`malformed answer from the Runtime API: ${JSON.stringify(statusLine)}`);
  const headers = {};
  for (const line of headerLines) {
    const colon = line.indexOf(":");
    if (colon <= 0) throw new Error(`malformed header from the Runtime API: ${JSON.stringify(line)}`);
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === "content-length" && name in headers && headers[name] !== value) {
      throw new Error(`the Runtime API sent different Content-Length headers: ${headers[name]} and ${value}`);
    }
    headers[name] = name in headers && name !== "content-length" ? `${headers[name]}, ${value}` : value;
  }
  const rest = buffer.subarray(headEnd + HEAD_END.length);
  const code = Number(status[1]);
  if (code === 204 || code === 304) return { status: code, headers, body: Buffer.alloc(0) };
  if (headers["transfer-encoding"]?.toLowerCase().includes("chunked")) {
    const body = joinChunks(rest);
    return body === null ? null : { status: code, headers, body };
  }
  if ("content-length" in headers) {
    const length = Number(headers["content-length"]);
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new Error(`malformed Content-Length from the Runtime API: ${headers["content-length"]}`);
    }
    return rest.length >= length ? { status: code, headers, body: rest.subarray(0, length) } : null;
  }
  return ended ? { status: code, headers, body: rest } : null;
}

/** A chunked body's data once its last chunk (and trailers) arrived, else null. */
function joinChunks(data) {
  const parts = [];
  let at = 0;
  for (;;) {
    const lineEnd = data.indexOf(CRLF, at);
    if (lineEnd < 0) return null;
    const size = Number.parseInt(data.subarray(at, lineEnd).toString("latin1").split(";")[0], 16);
    if (Number.isNaN(size)) throw new Error("malformed chunked body from the Runtime API");
    at = lineEnd + CRLF.length;
    if (size === 0) return data.indexOf(HEAD_END, at - CRLF.length) < 0 ? null : Buffer.concat(parts);
    if (data.length < at + size + CRLF.length) return null;
    parts.push(data.subarray(at, at + size));
    at += size + CRLF.length;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The Runtime API. The buffered calls (next, response, errors) go over one keep-alive connection of this client's own
// (`Connection`): Node's HTTP parsers (node:http and fetch alike) refuse a response that repeats its Content-Length,
// which libcurl, the official client's HTTP library, accepts and Runtime API proxy extensions send (SPEC 10.10).
// Streamed responses, which need chunked bodies and trailers, use node:http.

class RuntimeApi {
  constructor(address) {
    if (!address) throw new Error("AWS_LAMBDA_RUNTIME_API is not set");
    const colon = address.lastIndexOf(":");
    this.host = address.slice(0, colon);
    this.port = Number.parseInt(address.slice(colon + 1), 10);
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    this.connection = new Connection(this.host, this.port);
  }

  request(method, route, headers, body) {
    return this.connection.request(method, `${API_PREFIX}${route}`, headers, body);
  }

  async next() {
    const answer = await this.request("GET", "/invocation/next", {});
    if (answer.status !== 200) {
      throw new Error(`Failed to get the next invocation: HTTP ${answer.status} ${answer.body.toString()}`);
    }
    return { body: answer.body.toString("utf8"), headers: answer.headers };
  }

  postJson(route, text, extraHeaders = {}) {
    const headers = { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text), ...extraHeaders };
    return this.request("POST", route, headers, text);
  }

  postResponse(id, text) {
    return this.postJson(`/invocation/${encodeURIComponent(id)}/response`, text);
  }

  postError(id, error) {
    // The error type travels in the body only, as the official client sends it (SPEC 10.4).
    const headers = {};
    const cause = xrayCause(error);
    if (cause && cause.length < 1024 * 1024 && /^[\x20-\x7e]*$/.test(cause)) {
      headers["Lambda-Runtime-Function-XRay-Error-Cause"] = cause;
    }
    return this.postJson(`/invocation/${encodeURIComponent(id)}/error`, serialize(errorBody(error)), headers);
  }

  postInitError(error) {
    const body = errorBody(error);
    return this.postJson("/init/error", serialize(body), { [ERROR_TYPE_HEADER]: headerSafe(body.errorType) });
  }

  /** A streamed `/response` (SPEC 1.7): a writable request with error trailers. */
  openStream(id, highWaterMark) {
    return new ResponseStream(this, id, highWaterMark);
  }
}

function headerSafe(value) {
  return String(value ?? "").replace(/[^\x20-\x7e]/g, "?");
}

function serialize(value) {
  try {
    return JSON.stringify(value === undefined ? null : value);
  } catch {
    throw new Error("Unable to stringify response body");
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Response streaming: `awslambda.streamifyResponse(handler)` handlers get a writable stream posted chunked.

const STREAMING = Symbol.for("aws.lambda.runtime.handler.streaming");
const HIGH_WATER_MARK = Symbol.for("aws.lambda.runtime.handler.streaming.highWaterMark");
const HTTP_INTEGRATION_TYPE = "application/vnd.awslambda.http-integration-response";

class ResponseStream {
  constructor(api, id, highWaterMark) {
    this.started = false;
    this.beforeFirstWrite = undefined;
    this.done = new Promise((resolve, reject) => {
      this.request = http.request(
        {
          host: api.host,
          port: api.port,
          method: "POST",
          path: `${API_PREFIX}/invocation/${encodeURIComponent(id)}/response`,
          agent: api.agent,
          highWaterMark,
          headers: {
            "Lambda-Runtime-Function-Response-Mode": "streaming",
            Trailer: [ERROR_TYPE_HEADER, "Lambda-Runtime-Function-Error-Body"],
            "Content-Type": "application/octet-stream",
          },
        },
        (response) => {
          response.resume();
          response.on("end", resolve);
          response.on("aborted", reject);
        },
      );
      this.request.on("error", reject);
    });
    this.done.catch(() => {}); // awaited by the invoke; never an unhandled rejection of its own
  }

  /** What the handler sees: the Writable part of the request, plus `setContentType`. */
  facade() {
    const request = this.request;
    const stream = this;
    const methods = ["cork", "uncork", "destroy", "on", "once", "off", "emit", "addListener", "removeListener",
      "removeAllListeners", "prependListener", "prependOnceListener", "listeners", "listenerCount", "eventNames",
      "rawListeners", "getMaxListeners", "setMaxListeners"]; // prettier-ignore
    const facade = Object.fromEntries(methods.map((name) => [name, request[name].bind(request)]));
    facade.write = (chunk, encoding, callback) => stream.write(chunk, encoding, callback);
    facade.end = (...args) => stream.end(...args);
    facade.setContentType = (type) => {
      if (stream.started) throw new InvalidStreamingOperation("Cannot set content-type, too late.");
      request.setHeader("Content-Type", type);
    };
    for (const name of ["writableFinished", "writableEnded", "writableLength", "writableHighWaterMark",
      "writableNeedDrain", "writableCorked", "writableObjectMode", "writableBuffer"]) { // prettier-ignore
      Object.defineProperty(facade, name, { get: () => request[name], enumerable: true });
    }
    for (const name of ["destroyed", "writable"]) {
      Object.defineProperty(facade, name, {
        get: () => request[name],
        set: (value) => {
          request[name] = value;
        },
        enumerable: true,
      });
    }
    Object.defineProperty(facade, "_onBeforeFirstWrite", {
      get: () => stream.beforeFirstWrite,
      set: (value) => {
        stream.beforeFirstWrite = value;
      },
    });
    return facade;
  }

  write(chunk, encoding, callback) {
    if (typeof chunk !== "string" && !Buffer.isBuffer(chunk) && !(chunk instanceof Uint8Array)) {
      chunk = JSON.stringify(chunk);
    }
    if (!this.started && typeof this.beforeFirstWrite === "function") {
      this.beforeFirstWrite((piece) => this.request.write(piece));
    }
    this.started = true;
    return this.request.write(chunk, encoding, callback);
  }

  end(...args) {
    if (!this.started && args.length > 0 && typeof args[0] !== "function" && args[0] !== undefined) {
      this.write(args.shift(), typeof args[0] === "string" ? args.shift() : undefined);
    } else if (!this.started && typeof this.beforeFirstWrite === "function") {
      this.beforeFirstWrite((piece) => this.request.write(piece));
      this.started = true;
    }
    return this.request.end(...args);
  }

  /** End the stream with the error in its trailers. */
  fail(error, then) {
    const body = errorBody(error);
    try {
      this.request.addTrailers({
        [ERROR_TYPE_HEADER]: headerSafe(body.errorType),
        "Lambda-Runtime-Function-Error-Body": Buffer.from(JSON.stringify(body)).toString("base64"),
      });
    } catch {
      // the stream had already ended: nothing more can be said on it
    }
    this.request.end(then);
  }
}

class HttpResponseStream {
  /** Prefix the stream with the HTTP-integration prelude: JSON metadata, then 8 NUL bytes. */
  static from(stream, prelude) {
    stream.setContentType(HTTP_INTEGRATION_TYPE);
    const metadata = JSON.stringify(prelude);
    stream._onBeforeFirstWrite = (write) => {
      write(metadata);
      write(new Uint8Array(8));
    };
    return stream;
  }
}

function installAwsLambdaGlobal() {
  const flag = process.env.AWS_LAMBDA_NODEJS_NO_GLOBAL_AWSLAMBDA;
  if (flag === "1" || flag === "true") return;
  globalThis.awslambda = {
    streamifyResponse(handler, options) {
      handler[STREAMING] = "response";
      if (typeof options?.highWaterMark === "number") handler[HIGH_WATER_MARK] = Number.parseInt(options.highWaterMark);
      return handler;
    },
    HttpResponseStream,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Loading the handler: `[dir/]module.path.to.fn`, the module resolved in the task root.

async function importFile(file) {
  return fs.existsSync(file) ? await import(pathToFileURL(file).href) : undefined;
}

function requireFile(file) {
  return fs.existsSync(file) ? require(file) : undefined;
}

/** Whether `.js` files in `folder` are ES modules: the nearest package.json says `"type": "module"`. */
function folderIsModuleType(folder) {
  for (let current = folder; ; current = path.dirname(current)) {
    if (current.endsWith("/node_modules")) return false;
    const manifest = path.join(current, "package.json");
    if (fs.existsSync(manifest)) {
      try {
        return JSON.parse(fs.readFileSync(manifest, "utf8"))?.type === "module";
      } catch (error) {
        console.warn(`${manifest} cannot be read, it will be ignored for ES module detection purposes.`, error);
        return false;
      }
    }
    if (current === path.dirname(current)) return false;
  }
}

async function loadModule(taskRoot, moduleRoot, name) {
  const base = path.resolve(taskRoot, moduleRoot, name);
  const exact = requireFile(base); // a file named exactly as the handler says is loaded as CommonJS
  if (exact) return exact;
  const esm = fs.existsSync(`${base}.js`) && folderIsModuleType(path.dirname(`${base}.js`));
  if (!esm) {
    const commonJs = requireFile(`${base}.js`);
    if (commonJs) return commonJs;
  }
  const found =
    (esm && (await importFile(`${base}.js`))) || (await importFile(`${base}.mjs`)) || requireFile(`${base}.cjs`);
  if (found) return found;
  // Last, Node's own resolution from the task root (a package directory, node_modules, NODE_PATH); its
  // MODULE_NOT_FOUND error is what a missing module reports.
  return require(require.resolve(name, { paths: [taskRoot, moduleRoot] }));
}

async function loadHandler(taskRoot, handlerString) {
  if (handlerString.includes("..")) {
    throw new MalformedHandlerName(
      `'${handlerString}' is not a valid handler name. Use absolute paths when specifying root directories in ` +
        "handler names.",
    );
  }
  const last = path.basename(handlerString);
  const moduleRoot = handlerString.slice(0, handlerString.length - last.length);
  const dot = last.indexOf(".");
  if (dot < 0) throw new MalformedHandlerName("Bad handler");
  const [moduleName, functionPath] = [last.slice(0, dot), last.slice(dot + 1)];

  installAwsLambdaGlobal();
  let loaded;
  try {
    loaded = await loadModule(taskRoot, moduleRoot, moduleName);
  } catch (error) {
    if (error instanceof SyntaxError) {
      const wrapped = new UserCodeSyntaxError(error);
      throw wrapped;
    }
    if (error?.code === "MODULE_NOT_FOUND") throw new ImportModuleError(error);
    throw error;
  }
  const handler = functionPath.split(".").reduce((object, key) => object?.[key], loaded);
  if (!handler) throw new HandlerNotFound(`${handlerString} is undefined or not exported`);
  if (typeof handler !== "function") throw new HandlerNotFound(`${handlerString} is not a function`);
  return handler;
}

function streamingMode(handler) {
  const mode = handler[STREAMING];
  if (mode === undefined || mode === null || mode === false) return false;
  if (mode === "response") return "response";
  throw new MalformedStreamingHandler("Only response streaming is supported.");
}

// ---------------------------------------------------------------------------------------------------------------
// The invoke loop.

const isThenable = (value) => Boolean(value) && typeof value.then === "function";
const isAsyncFunction = (fn) => fn?.constructor?.name === "AsyncFunction";

function parseHeaderJson(value, what) {
  if (value === undefined) return undefined;
  try {
    return JSON.parse(value);
  } catch (error) {
    throw new Error(`Cannot parse ${what} as json: ${error}`);
  }
}

/** The context a handler gets: the invoke's fields, the callbackWaitsForEmptyEventLoop switch (kept in `wait`),
 * and for callback-style handlers the legacy succeed/fail/done. */
function invokeContext(headers, wait, legacy = {}) {
  return {
    get callbackWaitsForEmptyEventLoop() {
      return wait.value;
    },
    set callbackWaitsForEmptyEventLoop(value) {
      wait.value = value;
    },
    ...legacy,
    ...contextData(headers),
  };
}

/** The context fields every invoke gets from the environment and the `/next` headers. */
function contextData(headers) {
  const deadline = Number(headers["lambda-runtime-deadline-ms"]);
  return {
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: parseHeaderJson(headers["lambda-runtime-client-context"], "ClientContext"),
    identity: parseHeaderJson(headers["lambda-runtime-cognito-identity"], "CognitoIdentity"),
    invokedFunctionArn: headers["lambda-runtime-invoked-function-arn"],
    awsRequestId: headers["lambda-runtime-aws-request-id"],
    tenantId: headers["lambda-runtime-aws-tenant-id"],
    getRemainingTimeInMillis: () => deadline - Date.now(),
  };
}

function forwardTraceId(headers) {
  const trace = headers["lambda-runtime-trace-id"];
  if (trace) process.env._X_AMZN_TRACE_ID = trace;
  else delete process.env._X_AMZN_TRACE_ID;
}

class Runtime {
  constructor(api, logError) {
    this.api = api;
    this.logError = logError;
    this.onEmptyLoop = () => {}; // what to do when the event loop has nothing left ("beforeExit")
    // Before the first invoke, a crash is an init error; during an invoke, that invoke's error.
    this.crash = (error, exitCode) => this.exitAfter(this.api.postInitError(error), exitCode);
  }

  installProcessHooks() {
    process.on("uncaughtException", (error) => {
      this.logError("Uncaught Exception", error);
      this.crash(error, EXIT_UNCAUGHT);
    });
    process.on("unhandledRejection", (reason, promise) => {
      const error = new UnhandledPromiseRejection(reason, promise);
      this.logError("Unhandled Promise Rejection", error);
      this.crash(error, EXIT_REJECTION);
    });
    process.on("beforeExit", () => this.onEmptyLoop());
  }

  exitAfter(posting, exitCode) {
    posting.then(
      () => process.exit(exitCode),
      () => process.exit(exitCode),
    );
  }

  /** Talking to the Runtime API failed: nothing can be reported any more. */
  fatal(error) {
    process.stderr.write(`lambdarun runtime client: Runtime API request failed: ${error?.stack ?? error}\n`);
    process.exit(1);
  }

  start(handler) {
    this.handler = handler;
    this.streaming = streamingMode(handler);
    this.highWaterMark = Number.isNaN(Number.parseInt(handler[HIGH_WATER_MARK], 10))
      ? undefined
      : Number.parseInt(handler[HIGH_WATER_MARK], 10);
    this.handlerIsAsync = isAsyncFunction(handler);
    this.scheduleNext();
  }

  scheduleNext() {
    setImmediate(() => {
      const once = this.streaming ? this.invokeStreaming() : this.invokeBuffered();
      once.catch((error) => {
        console.log(`Unexpected Top Level Error: ${error}`);
        this.crash(error, EXIT_UNCAUGHT);
      });
    });
  }

  async nextInvoke() {
    let invoke;
    try {
      invoke = await this.api.next();
    } catch (error) {
      this.fatal(error);
    }
    const id = invoke.headers["lambda-runtime-aws-request-id"];
    if (!id) throw new Error("invocation id is missing or invalid");
    setRequestId(id, invoke.headers["lambda-runtime-aws-tenant-id"]);
    this.crash = (error, exitCode) => this.exitAfter(this.api.postError(id, error), exitCode);
    return { id, ...invoke };
  }

  async invokeBuffered() {
    const { id, body, headers } = await this.nextInvoke();
    let reported = false; // a response or error went out for this invoke
    let settled = false; // the handler finished one way or another: later calls are ignored
    const wait = { value: true }; // context.callbackWaitsForEmptyEventLoop

    const respond = (result) => {
      if (reported) {
        console.error(
          "Invocation has already been reported as done. Cannot call complete more than once per invocation.",
        );
        return;
      }
      let text;
      try {
        text = serialize(result);
      } catch (error) {
        fail(error); // e.g. a circular result: reported as the invoke's error
        return;
      }
      reported = true;
      this.api.postResponse(id, text).then(() => this.scheduleNext(), (error) => this.fatal(error));
    };
    const fail = (error) => {
      reported = true;
      this.logError("Invoke Error", error);
      this.api.postError(id, error).then(() => this.scheduleNext(), (err) => this.fatal(err));
    };
    const finish = (error, result) => {
      this.onEmptyLoop = () => {};
      if (error !== undefined && error !== null) fail(error);
      else respond(result);
    };
    const once = (fn) => (...args) => {
      if (settled) return;
      fn(...args);
      settled = true;
    };

    const callback = once((error, result) => {
      this.onEmptyLoop = () => {};
      if (error !== undefined && error !== null) fail(error);
      else if (!wait.value) respond(result);
      else this.onEmptyLoop = () => setImmediate(() => respond(result));
    });
    const succeed = once((result) => finish(null, result));
    const failure = once((error) => finish(error === undefined || error === null ? "handled" : error, null));
    const done = once((error, result) => finish(error, result));

    // Nothing left to run and the handler never answered: a sync or callback handler answers null; an async
    // handler's promise can no longer settle, which is an error.
    this.onEmptyLoop = () => {
      reported = true; // a later callback still reports "already reported as done", as aws-lambda-ric does
      this.onEmptyLoop = () => {};
      if (this.handlerIsAsync) {
        const error = new NodeJsExit();
        this.logError("Invoke Error", error);
        this.api.postError(id, error).then(() => this.scheduleNext(), (err) => this.fatal(err));
      } else {
        this.api.postResponse(id, "null").then(() => this.scheduleNext(), (err) => this.fatal(err));
      }
    };

    try {
      forwardTraceId(headers);
      const context = invokeContext(headers, wait, { succeed, fail: failure, done });
      const result = this.handler(JSON.parse(body), context, callback);
      if (isThenable(result)) {
        // A promise's outcome is the answer; a plain return value of a non-async handler is ignored.
        Promise.resolve(result).then(succeed, failure).catch(failure);
      }
    } catch (error) {
      callback(error);
    }
  }

  async invokeStreaming() {
    const { id, body, headers } = await this.nextInvoke();
    const wait = { value: true }; // context.callbackWaitsForEmptyEventLoop
    const next = () => {
      this.onEmptyLoop = () => {};
      if (!wait.value) this.scheduleNext();
      else this.onEmptyLoop = () => setImmediate(() => this.scheduleNext());
    };
    const stream = this.api.openStream(id, this.highWaterMark);
    const fail = (error) => {
      this.logError("Invoke Error", error);
      stream.fail(error, next);
    };
    this.onEmptyLoop = () => this.scheduleNext();
    try {
      forwardTraceId(headers);
      const context = invokeContext(headers, wait);
      const returned = this.handler(JSON.parse(body), stream.facade(), context);
      if (!isThenable(returned)) {
        fail("Streaming does not support non-async handlers.");
        return;
      }
      const result = await returned;
      if (result !== undefined) console.warn("Streaming handlers ignore return values.");
      // aws-lambda-ric checks that the stream finished after the Runtime API answered; a stream never ended
      // would keep that answer from coming, so the end() call is checked first.
      if (!stream.request.writableEnded) {
        fail("Response stream is not finished.");
        return;
      }
      await stream.done;
      next();
    } catch (error) {
      fail(error);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------

async function main() {
  const logError = patchConsole();
  const api = new RuntimeApi(process.env.AWS_LAMBDA_RUNTIME_API);
  const runtime = new Runtime(api, logError);
  runtime.installProcessHooks();
  const taskRoot = process.env.LAMBDA_TASK_ROOT || process.cwd();
  let handler;
  try {
    handler = await loadHandler(taskRoot, process.env._HANDLER ?? "");
    streamingMode(handler);
  } catch (error) {
    // As an uncaught exception: logged, posted to /init/error with its type in the header, exit 129.
    logError("Uncaught Exception", error);
    runtime.crash(error, EXIT_UNCAUGHT);
    return;
  }
  runtime.start(handler);
}

await main();
