// lambdarun's .NET runtime interface client: /var/runtime/Amazon.Lambda.RuntimeSupport.dll of the .NET runtimes.
//
// Written for lambdarun (AWS's Amazon.Lambda.RuntimeSupport comes from NuGet, which lambdarun cannot reach), with
// the observable behaviour of AWS's client as its source shows it [S-DOTNET]: the handler string
// `Assembly::Namespace.Type::Method` as the last argument, one instance of the handler's type made at init, the
// error body `{errorType, errorMessage, stackTrace, cause}` with the exception's type name, Console.Out/Error and
// the loggers as `<time>\t<request id>\t<level>\t<message>` records (plain lines on dotnetcore3.1), and one log
// record per line through `_LAMBDA_TELEMETRY_LOG_FD`.
//
// Only signatures that need no serializer package are supported: Stream, string or nothing in; Stream, string,
// void, Task or Task<Stream|string> out; an optional ILambdaContext last. Compiled with Mono's `mcs` against its
// mscorlib/System, which load on .NET Core 3.1 and later.

using System;
using System.Collections;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Net;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Text;
using System.Threading;
using Amazon.Lambda.Core;
using Microsoft.Win32.SafeHandles;

namespace Lambdarun.RuntimeSupport
{
    public static class Program
    {
        public static int Main(string[] args)
        {
            // Before any method that names an Amazon.Lambda.Core type is compiled: that assembly is found here.
            Dependencies.Install(Environment.GetEnvironmentVariable("LAMBDA_TASK_ROOT") ?? "/var/task");
            return Run(args);
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        static int Run(string[] args)
        {
            var logs = Logs.Install();
            var api = new RuntimeApi(Environment.GetEnvironmentVariable("AWS_LAMBDA_RUNTIME_API"));
            Handler handler;
            try
            {
                // Lambda's bootstrap passes the handler as the last argument; _HANDLER is the fallback.
                var handlerString = args.Length > 0 ? args[args.Length - 1] : Environment.GetEnvironmentVariable("_HANDLER");
                handler = Handler.Load(handlerString, Dependencies.TaskRoot);
            }
            catch (Exception ex)
            {
                var error = Errors.Unwrap(ex);
                logs.Error(error.ToString());
                api.PostInitError(error);
                return 1;
            }
            new Loop(api, handler, logs).Run();
            return 0;
        }
    }

    /// <summary>The invoke loop: next, handler, response or error, forever.</summary>
    sealed class Loop
    {
        readonly RuntimeApi _api;
        readonly Handler _handler;
        readonly Logs _logs;

        public Loop(RuntimeApi api, Handler handler, Logs logs)
        {
            _api = api;
            _handler = handler;
            _logs = logs;
        }

        public void Run()
        {
            while (true)
            {
                var invocation = _api.Next();
                _logs.RequestId = invocation.RequestId;
                Environment.SetEnvironmentVariable("_X_AMZN_TRACE_ID", invocation.TraceId);
                byte[] response;
                try
                {
                    response = _handler.Invoke(invocation.Body, new Context(invocation, _logs));
                }
                catch (Exception ex)
                {
                    var error = Errors.Unwrap(ex);
                    _logs.Error(error.ToString());
                    _api.PostError(invocation.RequestId, error);
                    continue;
                }
                _api.PostResponse(invocation.RequestId, response);
            }
        }
    }

    sealed class Invocation
    {
        public string RequestId;
        public long DeadlineMs;
        public string FunctionArn;
        public string TraceId;
        public string ClientContext;
        public string CognitoIdentity;
        public byte[] Body;
    }

    /// <summary>The Runtime API (2018-06-01) over HttpWebRequest, the HTTP client mscorlib/System offer.</summary>
    sealed class RuntimeApi
    {
        readonly string _base;

        public RuntimeApi(string address)
        {
            if (string.IsNullOrEmpty(address))
                throw new InvalidOperationException("AWS_LAMBDA_RUNTIME_API is not set");
            _base = "http://" + address + "/2018-06-01/runtime/";
            ServicePointManager.Expect100Continue = false;
        }

        public Invocation Next()
        {
            var request = Create("invocation/next", "GET");
            request.Timeout = Timeout.Infinite;
            request.ReadWriteTimeout = Timeout.Infinite;
            try
            {
                using (var response = (HttpWebResponse)request.GetResponse())
                {
                    var headers = response.Headers;
                    long deadline;
                    long.TryParse(headers["Lambda-Runtime-Deadline-Ms"], NumberStyles.Integer, CultureInfo.InvariantCulture, out deadline);
                    return new Invocation
                    {
                        RequestId = headers["Lambda-Runtime-Aws-Request-Id"],
                        DeadlineMs = deadline,
                        FunctionArn = headers["Lambda-Runtime-Invoked-Function-Arn"],
                        TraceId = headers["Lambda-Runtime-Trace-Id"],
                        ClientContext = headers["Lambda-Runtime-Client-Context"],
                        CognitoIdentity = headers["Lambda-Runtime-Cognito-Identity"],
                        Body = ReadAll(response.GetResponseStream()),
                    };
                }
            }
            catch (WebException ex)
            {
                // Nothing can be reported any more: the platform sees the runtime exit.
                Console.Error.WriteLine("lambdarun .NET runtime client: GET /runtime/invocation/next failed: " + ex.Message);
                Environment.Exit(1);
                throw;
            }
        }

        public void PostResponse(string requestId, byte[] body)
        {
            Post("invocation/" + Uri.EscapeDataString(requestId) + "/response", body, null);
        }

        public void PostError(string requestId, Exception error)
        {
            Post("invocation/" + Uri.EscapeDataString(requestId) + "/error", Errors.Body(error), null);
        }

        public void PostInitError(Exception error)
        {
            Post("init/error", Errors.Body(error), Errors.TypeName(error));
        }

        void Post(string path, byte[] body, string errorType)
        {
            var request = Create(path, "POST");
            request.ContentType = "application/json";
            request.ContentLength = body.Length;
            if (errorType != null)
                request.Headers["Lambda-Runtime-Function-Error-Type"] = errorType;
            try
            {
                using (var stream = request.GetRequestStream())
                    stream.Write(body, 0, body.Length);
                using (var response = (HttpWebResponse)request.GetResponse())
                    ReadAll(response.GetResponseStream());
            }
            catch (WebException ex)
            {
                // A refused response (e.g. 413 for one over 6 MB) is the platform's to report; the loop goes on.
                var refused = ex.Response as HttpWebResponse;
                if (refused == null)
                {
                    Console.Error.WriteLine("lambdarun .NET runtime client: POST /runtime/" + path + " failed: " + ex.Message);
                    Environment.Exit(1);
                }
                refused.Close();
            }
        }

        HttpWebRequest Create(string path, string method)
        {
            var request = (HttpWebRequest)WebRequest.Create(_base + path);
            request.Method = method;
            request.Proxy = null; // the Runtime API is local: never through an http_proxy from the environment
            request.KeepAlive = true;
            return request;
        }

        internal static byte[] ReadAll(Stream stream)
        {
            using (var buffer = new MemoryStream())
            {
                stream.CopyTo(buffer);
                return buffer.ToArray();
            }
        }
    }

    /// <summary>A handler string resolved to a method, and how to call it.</summary>
    sealed class Handler
    {
        enum Input { None, Stream, String }

        MethodInfo _method;
        object _instance;
        Input _input;
        bool _takesContext;

        public static Handler Load(string handlerString, string taskRoot)
        {
            const string Format = "The valid format is 'ASSEMBLY::TYPE::METHOD'.";
            if (string.IsNullOrEmpty(handlerString))
                throw new LambdaValidationException("Empty lambda function handler. " + Format);
            var parts = handlerString.Split(new[] { "::" }, StringSplitOptions.None);
            if (parts.Length != 3)
                throw new LambdaValidationException("Invalid lambda function handler: '" + handlerString + "'. " + Format);
            string[] what = { "assembly", "type", "method" };
            for (var i = 0; i < 3; i++)
                if (parts[i].Trim().Length == 0)
                    throw new LambdaValidationException("Invalid lambda function handler: '" + handlerString + "', the " + what[i] + " is missing. " + Format);
            string assemblyName = parts[0].Trim(), typeName = parts[1].Trim(), methodName = parts[2].Trim();

            var file = Path.Combine(taskRoot, assemblyName.EndsWith(".dll", StringComparison.Ordinal) ? assemblyName : assemblyName + ".dll");
            if (!File.Exists(file))
                throw new LambdaValidationException("Could not find the specified handler assembly with the file name '" + assemblyName + "'. The assembly should be located in the root of your uploaded .zip file.");
            Assembly assembly;
            try
            {
                assembly = Assembly.LoadFrom(file);
            }
            catch (Exception ex)
            {
                throw new LambdaValidationException("Unable to load assembly '" + assemblyName + "'.", ex);
            }
            var type = assembly.GetType(typeName, false);
            if (type == null)
                throw new LambdaValidationException("Unable to load type '" + typeName + "' from assembly '" + assemblyName + "'.");
            var methods = type.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static)
                .Where(m => m.Name == methodName).ToArray();
            if (methods.Length == 0)
                throw new LambdaValidationException("Unable to find method '" + methodName + "' in type '" + typeName + "' from assembly '" + assemblyName + "': Found no methods matching method name '" + methodName + "'.");
            if (methods.Length > 1)
                throw new LambdaValidationException("The method '" + methodName + "' in type '" + typeName + "' appears to have a number of overloads. lambdarun's runtime client cannot choose between them.");

            var handler = new Handler { _method = methods[0] };
            handler.CheckSignature(typeName);
            if (!handler._method.IsStatic)
                handler._instance = Activator.CreateInstance(type, true); // made once, at init, as Lambda does
            return handler;
        }

        void CheckSignature(string typeName)
        {
            var parameters = _method.GetParameters();
            if (parameters.Length > 2)
                throw new LambdaValidationException("Method '" + _method.Name + "' of type '" + typeName + "' is not supported: the method has more than 2 parameters.");
            var last = parameters.Length > 0 ? parameters[parameters.Length - 1].ParameterType : null;
            _takesContext = last == typeof(ILambdaContext);
            if (parameters.Length == 2 && !_takesContext)
                throw new LambdaValidationException("Method '" + _method.Name + "' of type '" + typeName + "' is not supported: the method has 2 parameters, but the second parameter is not of type '" + typeof(ILambdaContext).FullName + "'.");
            var inputCount = parameters.Length - (_takesContext ? 1 : 0);
            _input = Input.None;
            if (inputCount == 1)
            {
                var input = parameters[0].ParameterType;
                if (input == typeof(Stream))
                    _input = Input.Stream;
                else if (input == typeof(string))
                    _input = Input.String;
                else
                    throw NeedsSerializer("deserialize input data", input);
            }
            var output = ResultType(_method.ReturnType);
            if (output != typeof(void) && output != typeof(Stream) && output != typeof(string))
                throw NeedsSerializer("serialize output data", output);
        }

        Exception NeedsSerializer(string doing, Type type)
        {
            return new LambdaValidationException("Could not find the LambdaSerializerAttribute on the assembly '" + _method.DeclaringType.Assembly.GetName().Name + "' or method '" + _method.Name + "' while attempting to " + doing + " of type '" + type.FullName + "'. lambdarun's .NET runtime client has no serializer: use System.IO.Stream or string.");
        }

        /// <summary>What a method's result is once awaited: T for Task&lt;T&gt;, void for Task.</summary>
        static Type ResultType(Type returnType)
        {
            if (returnType == typeof(System.Threading.Tasks.Task))
                return typeof(void);
            if (returnType.IsGenericType && returnType.GetGenericTypeDefinition() == typeof(System.Threading.Tasks.Task<>))
                return returnType.GetGenericArguments()[0];
            return returnType;
        }

        public byte[] Invoke(byte[] body, ILambdaContext context)
        {
            var arguments = new List<object>();
            if (_input == Input.Stream)
                arguments.Add(new MemoryStream(body, false));
            else if (_input == Input.String)
                arguments.Add(StringInput(body));
            if (_takesContext)
                arguments.Add(context);
            // A TargetInvocationException from here carries the handler's own exception (Errors.Unwrap).
            var result = _method.Invoke(_instance, arguments.ToArray());
            var task = result as System.Threading.Tasks.Task;
            if (task != null)
            {
                // GetResult throws the task's own exception rather than an AggregateException.
                var awaiter = task.GetType().GetMethod("GetAwaiter").Invoke(task, null);
                result = awaiter.GetType().GetMethod("GetResult").Invoke(awaiter, null);
            }
            var stream = result as Stream;
            if (stream != null)
                return RuntimeApi.ReadAll(stream);
            var text = result as string;
            if (text != null)
                return Encoding.UTF8.GetBytes(Json.Quote(text)); // as a JSON serializer would write it
            return new byte[0];
        }

        /// <summary>A string parameter gets the event's value when the event is a JSON string (as a JSON serializer
        /// would give it), else the event's JSON text. Lambda would need a serializer for either [lambdarun's choice].</summary>
        static string StringInput(byte[] body)
        {
            var text = Encoding.UTF8.GetString(body);
            var trimmed = text.Trim();
            if (trimmed.StartsWith("\"", StringComparison.Ordinal))
            {
                var value = Json.TryParse(trimmed) as string;
                if (value != null)
                    return value;
            }
            return text;
        }
    }

    /// <summary>Where assemblies the handler needs come from: the task root, and this client's Amazon.Lambda.Core.</summary>
    static class Dependencies
    {
        public static string TaskRoot;

        public static void Install(string taskRoot)
        {
            TaskRoot = taskRoot;
            var runtimeDir = Path.GetDirectoryName(typeof(Dependencies).Assembly.Location);
            AppDomain.CurrentDomain.AssemblyResolve += (sender, args) =>
            {
                var name = new AssemblyName(args.Name).Name;
                // One Amazon.Lambda.Core for the client and the handler: ours, so that their ILambdaContext is one type.
                var dirs = name == "Amazon.Lambda.Core" ? new[] { runtimeDir } : new[] { taskRoot, runtimeDir };
                foreach (var dir in dirs)
                {
                    var file = Path.Combine(dir, name + ".dll");
                    if (File.Exists(file))
                        return Assembly.LoadFrom(file);
                }
                return null;
            };
        }
    }

    sealed class Context : ILambdaContext
    {
        readonly Invocation _invocation;
        readonly ILambdaLogger _logger;

        public Context(Invocation invocation, Logs logs)
        {
            _invocation = invocation;
            _logger = new ContextLogger(logs);
            ClientContext = ClientContextOf(invocation.ClientContext);
            Identity = IdentityOf(invocation.CognitoIdentity);
        }

        public string AwsRequestId { get { return _invocation.RequestId; } }
        public IClientContext ClientContext { get; private set; }
        public string FunctionName { get { return Environment.GetEnvironmentVariable("AWS_LAMBDA_FUNCTION_NAME"); } }
        public string FunctionVersion { get { return Environment.GetEnvironmentVariable("AWS_LAMBDA_FUNCTION_VERSION"); } }
        public ICognitoIdentity Identity { get; private set; }
        public string InvokedFunctionArn { get { return _invocation.FunctionArn; } }
        public ILambdaLogger Logger { get { return _logger; } }
        public string LogGroupName { get { return Environment.GetEnvironmentVariable("AWS_LAMBDA_LOG_GROUP_NAME"); } }
        public string LogStreamName { get { return Environment.GetEnvironmentVariable("AWS_LAMBDA_LOG_STREAM_NAME"); } }

        public int MemoryLimitInMB
        {
            get
            {
                int memory;
                int.TryParse(Environment.GetEnvironmentVariable("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), out memory);
                return memory;
            }
        }

        public TimeSpan RemainingTime
        {
            get { return TimeSpan.FromMilliseconds(_invocation.DeadlineMs - DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()); }
        }

        static IClientContext ClientContextOf(string header)
        {
            var json = Json.TryParse(header) as Dictionary<string, object>;
            if (json == null)
                return null;
            var client = Json.Get(json, "client") as Dictionary<string, object>;
            return new ClientContextData
            {
                Environment = Json.Strings(Json.Get(json, "env")),
                Custom = Json.Strings(Json.Get(json, "custom")),
                Client = client == null ? null : new ClientApplication
                {
                    AppPackageName = Json.Get(client, "app_package_name") as string,
                    AppTitle = Json.Get(client, "app_title") as string,
                    AppVersionCode = Json.Get(client, "app_version_code") as string,
                    AppVersionName = Json.Get(client, "app_version_name") as string,
                    InstallationId = Json.Get(client, "installation_id") as string,
                },
            };
        }

        static ICognitoIdentity IdentityOf(string header)
        {
            var json = Json.TryParse(header) as Dictionary<string, object>;
            if (json == null)
                return null;
            return new CognitoIdentity
            {
                IdentityId = Json.Get(json, "cognitoIdentityId") as string,
                IdentityPoolId = Json.Get(json, "cognitoIdentityPoolId") as string,
            };
        }
    }

    sealed class ClientContextData : IClientContext
    {
        public IDictionary<string, string> Environment { get; set; }
        public IClientApplication Client { get; set; }
        public IDictionary<string, string> Custom { get; set; }
    }

    sealed class ClientApplication : IClientApplication
    {
        public string AppPackageName { get; set; }
        public string AppTitle { get; set; }
        public string AppVersionCode { get; set; }
        public string AppVersionName { get; set; }
        public string InstallationId { get; set; }
    }

    sealed class CognitoIdentity : ICognitoIdentity
    {
        public string IdentityId { get; set; }
        public string IdentityPoolId { get; set; }
    }

    /// <summary>context.Logger: LogLine is one record at Information level; Log writes its text unformatted.</summary>
    sealed class ContextLogger : ILambdaLogger
    {
        readonly Logs _logs;

        public ContextLogger(Logs logs)
        {
            _logs = logs;
        }

        public void Log(string message)
        {
            Console.Write(message);
        }

        public void LogLine(string message)
        {
            _logs.Record("Information", message);
        }
    }

    /// <summary>Errors reported to the Runtime API.</summary>
    static class Errors
    {
        public static Exception Unwrap(Exception ex)
        {
            while (ex is TargetInvocationException && ex.InnerException != null)
                ex = ex.InnerException;
            return ex;
        }

        /// <summary>The exception type's name as Lambda's .NET client reports it: `Type.Name`, without the namespace.</summary>
        public static string TypeName(Exception ex)
        {
            return ex.GetType().Name;
        }

        public static byte[] Body(Exception ex)
        {
            return Encoding.UTF8.GetBytes(Describe(ex, true));
        }

        static string Describe(Exception ex, bool top)
        {
            var fields = new List<string>
            {
                "\"errorType\": " + Json.Quote(TypeName(ex)),
                "\"errorMessage\": " + Json.Quote(ex.Message),
            };
            if (!string.IsNullOrEmpty(ex.StackTrace))
            {
                var lines = ex.StackTrace.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0).Select(Json.Quote);
                fields.Add("\"stackTrace\": [" + string.Join(", ", lines) + "]");
            }
            if (ex.InnerException != null)
                fields.Add("\"cause\": " + Describe(ex.InnerException, false));
            var aggregate = ex as AggregateException;
            if (aggregate != null && aggregate.InnerExceptions.Count > 0)
                fields.Add("\"causes\": [" + string.Join(", ", aggregate.InnerExceptions.Select(e => Describe(e, false))) + "]");
            return "{" + string.Join(", ", fields) + "}";
        }
    }

    /// <summary>A handler string or handler that Lambda's client would refuse. The name is that of AWS's client's
    /// class for these [S-DOTNET]; AWS's docs show `LambdaException` for the older .NET runtimes [UNCONFIRMED which
    /// name dotnet8 reports]. A throwing constructor is reported here as its own exception, not wrapped.</summary>
    public sealed class LambdaValidationException : Exception
    {
        public LambdaValidationException(string message) : base(message) { }
        public LambdaValidationException(string message, Exception inner) : base(message, inner) { }
    }

    /// <summary>Log records: where they go (framed to `_LAMBDA_TELEMETRY_LOG_FD`, else stdout) and their format.</summary>
    sealed class Logs
    {
        // Text frames with a level (SPEC 3.5): the header lambdarun's platform side reads. Lambda's own .NET client
        // writes the older 8-byte header (type 0xA55A0001, length, no timestamp) [S-DOTNET FileDescriptorLogStream].
        const uint TextFrame = 0xA55A0003, JsonFrame = 0xA55A0002;

        readonly object _lock = new object();
        readonly Stream _frames; // null: records go to stdout as lines
        readonly TextWriter _stdout;
        readonly bool _prefixed; // .NET 6+: `<time>\t<request id>\t<level>\t<message>`; dotnetcore3.1: the message only
        readonly bool _json;
        readonly int _threshold;

        public string RequestId = "";

        Logs(Stream frames, TextWriter stdout, bool prefixed, bool json, int threshold)
        {
            _frames = frames;
            _stdout = stdout;
            _prefixed = prefixed;
            _json = json;
            _threshold = threshold;
        }

        public static Logs Install()
        {
            var legacy = Environment.GetEnvironmentVariable("AWS_EXECUTION_ENV") == "AWS_Lambda_dotnetcore3.1";
            var json = !legacy && string.Equals(Environment.GetEnvironmentVariable("AWS_LAMBDA_LOG_FORMAT"), "JSON", StringComparison.OrdinalIgnoreCase);
            var level = Environment.GetEnvironmentVariable("AWS_LAMBDA_HANDLER_LOG_LEVEL") ?? Environment.GetEnvironmentVariable("AWS_LAMBDA_LOG_LEVEL");
            Stream frames = null;
            var fd = Environment.GetEnvironmentVariable("_LAMBDA_TELEMETRY_LOG_FD");
            if (fd != null)
            {
                Environment.SetEnvironmentVariable("_LAMBDA_TELEMETRY_LOG_FD", null); // not for the function's children
                try
                {
                    var handle = new SafeFileHandle(new IntPtr(int.Parse(fd, CultureInfo.InvariantCulture)), false);
                    frames = new FileStream(handle, FileAccess.Write, 1);
                }
                catch (Exception ex)
                {
                    Console.Error.WriteLine("lambdarun .NET runtime client: cannot write to _LAMBDA_TELEMETRY_LOG_FD " + fd + ", logging to stdout: " + ex.Message);
                }
            }
            var logs = new Logs(frames, Console.Out, !legacy, json, Rank(level ?? "Information"));
            if (!legacy)
            {
                // As Lambda's .NET 6+ client: Console.Out lines at Information, Console.Error lines at Error.
                Console.SetOut(new LevelWriter(logs, "Information"));
                Console.SetError(new LevelWriter(logs, "Error"));
            }
            else if (frames != null)
            {
                Console.SetOut(new LevelWriter(logs, null));
            }
            Redirect(logs);
            return logs;
        }

        /// <summary>Point Amazon.Lambda.Core's LambdaLogger at these records (its private fields, by reflection, as
        /// Lambda's client does with the NuGet package's).</summary>
        static void Redirect(Logs logs)
        {
            var type = typeof(LambdaLogger);
            var plain = type.GetField("_loggingAction", BindingFlags.NonPublic | BindingFlags.Static);
            if (plain != null)
                plain.SetValue(null, new Action<string>(message => logs.Record(null, message)));
            var leveled = type.GetField("_levelLoggingAction", BindingFlags.NonPublic | BindingFlags.Static);
            if (leveled != null)
                leveled.SetValue(null, new Action<string, string>((level, message) => logs.Record(level, message)));
        }

        public void Error(string message)
        {
            Record("Error", message);
        }

        /// <summary>One record: `level` is a .NET level name (Information, ...) or null for none.</summary>
        public void Record(string level, string message)
        {
            var rank = level == null ? 2 : Rank(level);
            if (rank < _threshold)
                return;
            message = message ?? "";
            var now = DateTimeOffset.UtcNow;
            var time = now.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture);
            string text;
            if (_json)
                text = "{\"timestamp\":" + Json.Quote(time) + ",\"level\":" + Json.Quote(level ?? "Information") +
                       ",\"requestId\":" + Json.Quote(RequestId) + TraceField() + ",\"message\":" + Json.Quote(message) + "}";
            else if (_prefixed)
                text = time + "\t" + RequestId + (level == null ? "" : "\t" + Label(rank)) + "\t" + message;
            else
                text = message;
            Write(text, _json ? JsonFrame : TextFrame, level == null ? -1 : rank, !_json);
        }

        /// <summary>Text written without a line end (Console.Write, context.Logger.Log): passed on unformatted.</summary>
        public void Raw(string text)
        {
            Write(text, TextFrame, -1, false);
        }

        void Write(string text, uint frameType, int rank, bool newline)
        {
            lock (_lock)
            {
                if (_frames == null)
                {
                    if (newline)
                        _stdout.WriteLine(text);
                    else
                        _stdout.Write(text);
                    _stdout.Flush();
                    return;
                }
                var payload = Encoding.UTF8.GetBytes(newline ? text + "\n" : text);
                var frame = new byte[16 + payload.Length];
                PutBigEndian(frame, 0, frameType | LevelMask(rank), 4);
                PutBigEndian(frame, 4, (ulong)payload.Length, 4);
                PutBigEndian(frame, 8, (ulong)(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() * 1000), 8);
                Buffer.BlockCopy(payload, 0, frame, 16, payload.Length);
                _frames.Write(frame, 0, frame.Length); // one write(2) per record
                _frames.Flush();
            }
        }

        string TraceField()
        {
            var trace = Environment.GetEnvironmentVariable("_X_AMZN_TRACE_ID");
            if (string.IsNullOrEmpty(trace))
                return "";
            var root = trace.Split(';').FirstOrDefault(p => p.StartsWith("Root=", StringComparison.Ordinal));
            return root == null ? "" : ",\"traceId\":" + Json.Quote(root.Substring(5));
        }

        static void PutBigEndian(byte[] buffer, int offset, ulong value, int size)
        {
            for (var i = size - 1; i >= 0; i--)
            {
                buffer[offset + i] = (byte)(value & 0xFF);
                value >>= 8;
            }
        }

        /// <summary>The level bits of a frame type (SPEC 3.5): TRACE 0x04 ... FATAL 0x18; none for a record without.</summary>
        static uint LevelMask(int rank)
        {
            switch (rank)
            {
                case 0: return 0x04;
                case 1: return 0x08;
                case 2: return 0x0C;
                case 3: return 0x10;
                case 4: return 0x14;
                case 5: return 0x18;
                default: return 0;
            }
        }

        /// <summary>A level name (.NET's or Lambda's) as a rank: Trace 0 ... Critical 5.</summary>
        static int Rank(string level)
        {
            switch (level.ToUpperInvariant())
            {
                case "TRACE": case "TRCE": return 0;
                case "DEBUG": case "DBUG": return 1;
                case "INFORMATION": case "INFO": return 2;
                case "WARNING": case "WARN": return 3;
                case "ERROR": case "FAIL": return 4;
                case "CRITICAL": case "CRIT": case "FATAL": return 5;
                default: return 2;
            }
        }

        /// <summary>The short labels Lambda's .NET client prints (those of Microsoft.Extensions.Logging's console).</summary>
        static string Label(int rank)
        {
            return new[] { "trce", "dbug", "info", "warn", "fail", "crit" }[rank];
        }
    }

    /// <summary>Console.Out/Error inside the runtime: each line one record at the writer's level.</summary>
    sealed class LevelWriter : TextWriter
    {
        readonly Logs _logs;
        readonly string _level;

        public LevelWriter(Logs logs, string level)
        {
            _logs = logs;
            _level = level;
        }

        public override Encoding Encoding { get { return Encoding.UTF8; } }

        public override void WriteLine(string value)
        {
            _logs.Record(_level, value);
        }

        public override void WriteLine()
        {
            _logs.Record(_level, "");
        }

        public override void WriteLine(object value)
        {
            _logs.Record(_level, value == null ? "" : value.ToString());
        }

        public override void WriteLine(string format, params object[] args)
        {
            _logs.Record(_level, string.Format(FormatProvider, format, args));
        }

        public override void WriteLine(char[] buffer, int index, int count)
        {
            _logs.Record(_level, new string(buffer, index, count));
        }

        public override void Write(string value)
        {
            if (!string.IsNullOrEmpty(value))
                _logs.Raw(value);
        }

        public override void Write(char value)
        {
            _logs.Raw(value.ToString());
        }

        public override void Write(char[] buffer, int index, int count)
        {
            if (count > 0)
                _logs.Raw(new string(buffer, index, count));
        }
    }

    /// <summary>The little JSON this client reads (client context and identity headers, a string event) and writes
    /// (error bodies, JSON log records). mscorlib/System have no JSON reader, and NuGet is out of reach.</summary>
    static class Json
    {
        public static string Quote(string value)
        {
            var sb = new StringBuilder("\"");
            foreach (var c in value ?? "")
            {
                switch (c)
                {
                    case '"': sb.Append("\\\""); break;
                    case '\\': sb.Append("\\\\"); break;
                    case '\n': sb.Append("\\n"); break;
                    case '\r': sb.Append("\\r"); break;
                    case '\t': sb.Append("\\t"); break;
                    default:
                        if (c < 0x20)
                            sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                        else
                            sb.Append(c);
                        break;
                }
            }
            return sb.Append('"').ToString();
        }

        public static object Get(Dictionary<string, object> json, string key)
        {
            object value;
            return json.TryGetValue(key, out value) ? value : null;
        }

        public static IDictionary<string, string> Strings(object value)
        {
            var json = value as Dictionary<string, object>;
            if (json == null)
                return null;
            return json.Where(kv => kv.Value is string).ToDictionary(kv => kv.Key, kv => (string)kv.Value);
        }

        /// <summary>The value of a JSON text (Dictionary, List, string, double, bool or null), or null when invalid.</summary>
        public static object TryParse(string text)
        {
            if (string.IsNullOrEmpty(text))
                return null;
            try
            {
                var i = 0;
                var value = Value(text, ref i);
                Space(text, ref i);
                return i == text.Length ? value : null;
            }
            catch (FormatException)
            {
                return null;
            }
        }

        static object Value(string s, ref int i)
        {
            Space(s, ref i);
            if (i >= s.Length)
                throw new FormatException();
            switch (s[i])
            {
                case '{':
                    var obj = new Dictionary<string, object>();
                    i++;
                    Space(s, ref i);
                    if (i < s.Length && s[i] == '}') { i++; return obj; }
                    while (true)
                    {
                        Space(s, ref i);
                        var key = String(s, ref i);
                        Space(s, ref i);
                        Expect(s, ref i, ':');
                        obj[key] = Value(s, ref i);
                        Space(s, ref i);
                        if (i < s.Length && s[i] == ',') { i++; continue; }
                        Expect(s, ref i, '}');
                        return obj;
                    }
                case '[':
                    var list = new List<object>();
                    i++;
                    Space(s, ref i);
                    if (i < s.Length && s[i] == ']') { i++; return list; }
                    while (true)
                    {
                        list.Add(Value(s, ref i));
                        Space(s, ref i);
                        if (i < s.Length && s[i] == ',') { i++; continue; }
                        Expect(s, ref i, ']');
                        return list;
                    }
                case '"':
                    return String(s, ref i);
                default:
                    foreach (var literal in new[] { "true", "false", "null" })
                        if (string.CompareOrdinal(s, i, literal, 0, literal.Length) == 0)
                        {
                            i += literal.Length;
                            return literal == "null" ? null : (object)(literal == "true");
                        }
                    var start = i;
                    while (i < s.Length && "+-0123456789.eE".IndexOf(s[i]) >= 0)
                        i++;
                    double number;
                    if (!double.TryParse(s.Substring(start, i - start), NumberStyles.Float, CultureInfo.InvariantCulture, out number))
                        throw new FormatException();
                    return number;
            }
        }

        static string String(string s, ref int i)
        {
            Expect(s, ref i, '"');
            var sb = new StringBuilder();
            while (i < s.Length)
            {
                var c = s[i++];
                if (c == '"')
                    return sb.ToString();
                if (c != '\\')
                {
                    sb.Append(c);
                    continue;
                }
                if (i >= s.Length)
                    break;
                var e = s[i++];
                switch (e)
                {
                    case 'n': sb.Append('\n'); break;
                    case 'r': sb.Append('\r'); break;
                    case 't': sb.Append('\t'); break;
                    case 'b': sb.Append('\b'); break;
                    case 'f': sb.Append('\f'); break;
                    case 'u':
                        if (i + 4 > s.Length)
                            throw new FormatException();
                        sb.Append((char)int.Parse(s.Substring(i, 4), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
                        i += 4;
                        break;
                    default: sb.Append(e); break;
                }
            }
            throw new FormatException();
        }

        static void Space(string s, ref int i)
        {
            while (i < s.Length && char.IsWhiteSpace(s[i]))
                i++;
        }

        static void Expect(string s, ref int i, char c)
        {
            if (i >= s.Length || s[i] != c)
                throw new FormatException();
            i++;
        }
    }
}
