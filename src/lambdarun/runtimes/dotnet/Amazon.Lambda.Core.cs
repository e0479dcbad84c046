// lambdarun's Amazon.Lambda.Core: the types a .NET Lambda handler is compiled against (ILambdaContext,
// ILambdaLogger, LambdaLogger, IClientContext, ICognitoIdentity), with the names and members of AWS's NuGet package,
// written for lambdarun so that handlers build with Mono's `mcs` and run without NuGet.
//
// Differences from the NuGet package: the level methods of ILambdaLogger (LogInformation, LogError, ...) are
// extension methods here, since `mcs` cannot compile default interface members; source that calls them compiles
// the same way. The assembly is not strong-named.

using System;
using System.Collections.Generic;
using System.Reflection;

[assembly: AssemblyVersion("1.0.0.0")]
[assembly: AssemblyTitle("Amazon.Lambda.Core (lambdarun)")]

namespace Amazon.Lambda.Core
{
    /// <summary>What a handler learns about its invoke and the function.</summary>
    public interface ILambdaContext
    {
        string AwsRequestId { get; }
        IClientContext ClientContext { get; }
        string FunctionName { get; }
        string FunctionVersion { get; }
        ICognitoIdentity Identity { get; }
        string InvokedFunctionArn { get; }
        ILambdaLogger Logger { get; }
        string LogGroupName { get; }
        string LogStreamName { get; }
        int MemoryLimitInMB { get; }
        TimeSpan RemainingTime { get; }
    }

    /// <summary>The logger of an invoke: each call is one log record.</summary>
    public interface ILambdaLogger
    {
        void Log(string message);
        void LogLine(string message);
    }

    public interface IClientApplication
    {
        string AppPackageName { get; }
        string AppTitle { get; }
        string AppVersionCode { get; }
        string AppVersionName { get; }
        string InstallationId { get; }
    }

    public interface IClientContext
    {
        IDictionary<string, string> Environment { get; }
        IClientApplication Client { get; }
        IDictionary<string, string> Custom { get; }
    }

    public interface ICognitoIdentity
    {
        string IdentityId { get; }
        string IdentityPoolId { get; }
    }

    /// <summary>Levels of the .NET 6+ Lambda logger.</summary>
    public enum LogLevel
    {
        Trace = 0,
        Debug = 1,
        Information = 2,
        Warning = 3,
        Error = 4,
        Critical = 5,
    }

    /// <summary>Static logging, also usable outside a handler. Outside Lambda it writes to Console.Out.</summary>
    public static class LambdaLogger
    {
        // The runtime client replaces these by reflection, as Lambda's runtime client does with the NuGet package's
        // `_loggingAction`, so that the same field names work with either assembly.
        private static Action<string> _loggingAction = message => Console.WriteLine(message);
        private static Action<string, string> _levelLoggingAction = (level, message) => Console.WriteLine(message);

        public static void Log(string message)
        {
            _loggingAction(message);
        }

        internal static void LogWithLevel(string level, string message)
        {
            _levelLoggingAction(level, message);
        }
    }

    /// <summary>The level methods of the NuGet package's ILambdaLogger, as extension methods.</summary>
    public static class LambdaLoggerExtensions
    {
        public static void Log(this ILambdaLogger logger, string level, string message)
        {
            LambdaLogger.LogWithLevel(level, message);
        }

        public static void Log(this ILambdaLogger logger, LogLevel level, string message)
        {
            LambdaLogger.LogWithLevel(level.ToString(), message);
        }

        public static void LogTrace(this ILambdaLogger logger, string message)
        {
            LambdaLogger.LogWithLevel("Trace", message);
        }

        public static void LogDebug(this ILambdaLogger logger, string message)
        {
            LambdaLogger.LogWithLevel("Debug", message);
        }

        public static void LogInformation(this ILambdaLogger logger, string message)
        {
            LambdaLogger.LogWithLevel("Information", message);
        }

        public static void LogWarning(this ILambdaLogger logger, string message)
        {
            LambdaLogger.LogWithLevel("Warning", message);
        }

        public static void LogError(this ILambdaLogger logger, string message)
        {
            LambdaLogger.LogWithLevel("Error", message);
        }

        public static void LogCritical(this ILambdaLogger logger, string message)
        {
            LambdaLogger.LogWithLevel("Critical", message);
        }
    }
}
