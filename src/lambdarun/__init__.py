"""lambdarun: the AWS Lambda execution environment, locally."""

from .config import ConfigError, FunctionConfig
from .function import Function, InvokeResult, PendingInvoke
from .runtimes.registry import RuntimeUnavailable

__all__ = ["ConfigError", "Function", "FunctionConfig", "InvokeResult", "PendingInvoke", "RuntimeUnavailable"]
