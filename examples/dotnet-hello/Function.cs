// A .NET Lambda handler built with Mono's mcs against lambdarun's Amazon.Lambda.Core (see build.sh).
// Handler string: Hello::Example.Function::Handler
using System;
using Amazon.Lambda.Core;

namespace Example
{
    public class Function
    {
        public string Handler(string name, ILambdaContext context)
        {
            context.Logger.LogLine("greeting " + name + " in request " + context.AwsRequestId);
            return "Hello, " + name + "! " + (int)context.RemainingTime.TotalSeconds + " s left.";
        }
    }
}
