"""Start-up hooks with real runtimes (SPEC 6): AWS_LAMBDA_EXEC_WRAPPER, NODE_OPTIONS, JAVA_TOOL_OPTIONS and
DOTNET_STARTUP_HOOKS, including internal extensions started through them.

The hook scripts live in tests/fixtures/hooks; `hook_layer` copies them into one layer with explicit file modes
(/opt/<name>.sh, /opt/pyext/sitecustomize.py, /opt/ext.js, /opt/ext.mjs). The Java handler and agent are compiled
once per session into temporary directories, and so are the .NET handlers and hooks (tests/fixtures/dotnet).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _dotnet_support import DotnetBuild
from _dotnet_support import build as build_dotnet

from lambdarun import Function, InvokeResult
from lambdarun.runtimes import registry

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HOOKS = FIXTURES / "hooks"
NODE_PROBE = FIXTURES / "nodejs" / "probe_cjs"
JAVA_HANDLER = "example.Hello::handleRequest"
INVOKES = 3
Invoked = tuple[list[InvokeResult], list[str]]  # several invokes of one function, and every function log record

pytestmark = pytest.mark.usefixtures("sandboxed")  # the hooks name /opt paths


def require_runtime(runtime: str) -> None:
    hint = registry.get_runtime(runtime).install_hint()
    if hint is not None:
        pytest.skip(f"{runtime} is not available on this machine: {hint}")


@pytest.fixture(scope="module")
def hook_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    layer = tmp_path_factory.mktemp("hook-layer")
    for script in (HOOKS / "wrappers").glob("*.sh"):
        shutil.copyfile(script, layer / script.name)
        (layer / script.name).chmod(0o755)
    shutil.copyfile(HOOKS / "wrappers" / "argv.sh", layer / "not_executable.sh")
    (layer / "not_executable.sh").chmod(0o644)
    shutil.copytree(HOOKS / "pyext" / "pyext", layer / "pyext")
    for module in (HOOKS / "node_ext").iterdir():
        shutil.copyfile(module, layer / module.name)
    return layer


@pytest.fixture(scope="session")
def java_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(code dir with example/Hello.class, layer dir with agent.jar) compiled from tests/fixtures/hooks/java."""
    require_runtime("java17")
    javac, jar = shutil.which("javac"), shutil.which("jar")
    if javac is None or jar is None:
        pytest.skip("the Java fixtures need a JDK (javac and jar), which is not installed")
    image = registry.get_runtime("java17").image()
    assert image is not None  # ready, so installed
    core = sorted((image.runtime / "lib").glob("aws-lambda-java-core-*.jar"))
    root = tmp_path_factory.mktemp("java")
    code, classes, layer = root / "code", root / "agent-classes", root / "layer"
    for directory in (code, classes, layer):
        directory.mkdir()
    java = HOOKS / "java"
    run = {"check": True, "capture_output": True, "timeout": 120}
    subprocess.run([javac, "-d", str(code), "-cp", str(core[-1]), str(java / "example" / "Hello.java")], **run)
    subprocess.run([javac, "-d", str(classes), str(java / "agent" / "ExtensionAgent.java")], **run)
    manifest = root / "manifest.txt"
    manifest.write_text("Premain-Class: agent.ExtensionAgent\n")
    subprocess.run([jar, "cfm", str(layer / "agent.jar"), str(manifest), "-C", str(classes), "."], **run)
    return code, layer


def python_function(hook_layer: Path, **options: Any) -> Function:
    return Function(code=HOOKS / "python_fn", runtime="python3.11", handler="app.handler", layers=[hook_layer],
                    **options)  # fmt: skip


def node_function(hook_layer: Path, **options: Any) -> Function:
    require_runtime("nodejs20.x")
    return Function(code=NODE_PROBE, runtime="nodejs20.x", handler="index.handler", layers=[hook_layer], **options)


def java_function(java_build: tuple[Path, Path], hook_layer: Path, **options: Any) -> Function:
    code, agent_layer = java_build
    options.setdefault("memory", 512)
    options.setdefault("timeout", 30)
    return Function(code=code, runtime="java17", handler=JAVA_HANDLER, layers=[hook_layer, agent_layer], **options)


def wrapped(path: str) -> dict[str, str]:
    return {"AWS_LAMBDA_EXEC_WRAPPER": path}


def invoke_several(fn: Function, event: Any) -> Invoked:
    """INVOKES invokes; with every function log record the environment wrote while they ran."""
    records: list[str] = []
    fn.start()
    fn.subscribe(lambda e: records.append(str(e.record)) if e.type == "function" else None)
    results = [fn.invoke(event) for _ in range(INVOKES)]
    return results, records


def events_seen(records: list[str], name: str) -> list[str]:
    """The request ids an extension logged as `[<name>] INVOKE <id>`."""
    return [m.group(1) for record in records if (m := re.search(rf"\[{name}\] INVOKE (\S+)", record))]


def wrapper_argv(result: InvokeResult) -> list[str]:
    return [line.removeprefix("WRAPPER-ARGV ") for line in result.function_logs if line.startswith("WRAPPER-ARGV ")]


# -- Python: AWS_LAMBDA_EXEC_WRAPPER


def test_importtime_wrapper_output_is_in_the_function_logs(hook_layer: Path) -> None:
    with python_function(hook_layer, env=wrapped("/opt/importtime.sh")) as fn:
        result = fn.invoke({})

    assert result.json()["handler"] == "app.handler"
    assert any(line.startswith("import time:") for line in result.function_logs)


def test_importtime_wrapper_passes_the_flag_to_the_interpreter(hook_layer: Path) -> None:
    with python_function(hook_layer, env=wrapped("/opt/importtime.sh")) as fn:
        result = fn.invoke({})

    # The flag went to the interpreter, not to bootstrap.py.
    assert result.json()["argv"] == ["/var/runtime/bootstrap.py"]


def test_python_wrapper_receives_interpreter_and_bootstrap_script(hook_layer: Path) -> None:
    with python_function(hook_layer, env=wrapped("/opt/argv.sh")) as fn:
        result = fn.invoke({})

    assert wrapper_argv(result) == ["/opt/argv.sh", "/var/lang/bin/python3.11", "/var/runtime/bootstrap.py"]


def test_python_runtime_runs_under_the_interpreter_the_wrapper_was_given(hook_layer: Path) -> None:
    with python_function(hook_layer, env=wrapped("/opt/argv.sh")) as fn:
        result = fn.invoke({})

    assert result.json()["executable"] == "/var/lang/bin/python3.11"


def test_wrapper_started_python_extension_receives_every_invoke(hook_layer: Path) -> None:
    with python_function(hook_layer, env=wrapped("/opt/python_extension.sh")) as fn:
        results, records = invoke_several(fn, {})

    assert events_seen(records, "py-hook-ext") == [r.request_id for r in results]


def test_wrapper_started_python_extension_is_announced_at_init(hook_layer: Path) -> None:
    with python_function(hook_layer, env=wrapped("/opt/python_extension.sh")) as fn:
        result = fn.invoke({})

    assert "EXTENSION\tName: py-hook-ext\tState: Ready\tEvents: [INVOKE]" in result.logs


def test_wrapper_changed_handler_is_the_one_invoked(hook_layer: Path) -> None:
    with python_function(hook_layer, env=wrapped("/opt/switch_handler.sh")) as fn:
        result = fn.invoke({})

    assert result.json() == {"handler": "app.other", "_HANDLER": "app.other"}


# -- Node.js: NODE_OPTIONS and the wrapper


def test_node_require_preload_extension_receives_every_invoke(hook_layer: Path) -> None:
    with node_function(hook_layer, env={"NODE_OPTIONS": "--require /opt/ext.js"}) as fn:
        results, records = invoke_several(fn, {"op": "echo"})

    assert events_seen(records, "node-require-ext") == [r.request_id for r in results]
    assert all(r.json() == {"event": {"op": "echo"}} for r in results)


def test_node_import_preload_extension_receives_every_invoke(hook_layer: Path) -> None:
    with node_function(hook_layer, env={"NODE_OPTIONS": "--import /opt/ext.mjs"}) as fn:
        results, records = invoke_several(fn, {"op": "echo"})

    assert events_seen(records, "node-import-ext") == [r.request_id for r in results]
    assert all(r.json() == {"event": {"op": "echo"}} for r in results)


def test_node_preload_extension_is_announced_at_init(hook_layer: Path) -> None:
    with node_function(hook_layer, env={"NODE_OPTIONS": "--require /opt/ext.js"}) as fn:
        result = fn.invoke({"op": "echo"})

    assert "EXTENSION\tName: node-require-ext\tState: Ready\tEvents: [INVOKE]" in result.logs


def test_node_wrapper_receives_node_flags_and_runtime_entry(hook_layer: Path) -> None:
    with node_function(hook_layer, env=wrapped("/opt/argv.sh")) as fn:
        result = fn.invoke({"op": "echo"})

    assert wrapper_argv(result) == ["/opt/argv.sh", "/var/lang/bin/node", "--expose-gc", "--max-http-header-size",
                                    "81920", "--max-semi-space-size=6", "--max-old-space-size=116",
                                    "/var/runtime/index.mjs"]  # fmt: skip


# -- Java: JAVA_TOOL_OPTIONS


@pytest.fixture(scope="module")
def java_tool_options(java_build: tuple[Path, Path], hook_layer: Path) -> Iterator[Invoked]:
    options = "-javaagent:/opt/agent.jar -XX:+UseParallelGC -Dfoo=bar"
    with java_function(java_build, hook_layer, env={"JAVA_TOOL_OPTIONS": options}) as fn:
        yield invoke_several(fn, {"n": 1})


@pytest.mark.slow
def test_java_agent_extension_receives_every_invoke(java_tool_options: Invoked) -> None:
    results, records = java_tool_options

    assert events_seen(records, "java-agent-ext") == [r.request_id for r in results]


@pytest.mark.slow
def test_java_tool_options_choose_the_garbage_collector(
    java_tool_options: Invoked,
) -> None:
    results, _ = java_tool_options

    assert sorted(results[0].json()["garbageCollectors"]) == ["PS MarkSweep", "PS Scavenge"]


@pytest.mark.slow
def test_java_tool_options_system_property_is_visible(java_tool_options: Invoked) -> None:
    results, _ = java_tool_options

    assert results[0].json()["foo"] == "bar"


@pytest.mark.slow
def test_jvm_announces_java_tool_options_in_the_function_logs(
    java_tool_options: Invoked,
) -> None:
    _, records = java_tool_options

    assert any(r.startswith("Picked up JAVA_TOOL_OPTIONS: -javaagent:/opt/agent.jar") for r in records)


@pytest.mark.slow
def test_java_wrapper_receives_the_java_interpreter(java_build: tuple[Path, Path], hook_layer: Path) -> None:
    with java_function(java_build, hook_layer, env=wrapped("/opt/argv.sh")) as fn:
        result = fn.invoke({"n": 1})

    argv = wrapper_argv(result)
    assert argv[:2] == ["/opt/argv.sh", "/var/lang/bin/java"]
    assert argv[-1] == "lambdarun.LambdarunMain"  # the main class is last; the handler comes from _HANDLER
    assert result.json()["event"] == {"n": 1}


@pytest.mark.slow
def test_java_wrapper_inserting_a_jvm_option_before_the_last_argument_works(
    java_build: tuple[Path, Path], hook_layer: Path
) -> None:
    with java_function(java_build, hook_layer, env=wrapped("/opt/insert_jvm_option.sh")) as fn:
        result = fn.invoke({"n": 1})

    assert result.function_error is None, result.payload
    assert result.json()["foo"] == "from-wrapper"


# -- wrapper failures: the runtime never starts, init fails, the suppressed init fails the same way

FAILURES = {
    # kind: (AWS_LAMBDA_EXEC_WRAPPER, what the function log shows, exit status)
    "missing": ("/opt/no_such_wrapper.sh", "/opt/no_such_wrapper.sh: does not exist", 127),
    "not_executable": ("/opt/not_executable.sh", "/opt/not_executable.sh: is not an executable", 126),
    "exits_3": ("/opt/exit3.sh", "wrapper giving up before exec", 3),
}
RUNTIMES = ["python3.11", "nodejs20.x", pytest.param("java17", marks=pytest.mark.slow), "dotnet8"]


@pytest.fixture(scope="module", params=RUNTIMES)
def failing_runtime(request: pytest.FixtureRequest) -> str:
    runtime: str = request.param
    require_runtime(runtime)
    return runtime


@pytest.fixture(scope="module")
def start_failing(
    failing_runtime: str, hook_layer: Path, request: pytest.FixtureRequest
) -> Callable[[str], InvokeResult]:
    """`start_failing(kind)`: the first invoke of a function of `failing_runtime` with that failing wrapper."""
    cache: dict[str, InvokeResult] = {}

    def make(kind: str) -> InvokeResult:
        if kind not in cache:
            env = wrapped(FAILURES[kind][0])
            if failing_runtime == "python3.11":
                fn = python_function(hook_layer, env=env)
            elif failing_runtime == "nodejs20.x":
                fn = node_function(hook_layer, env=env)
            elif failing_runtime == "dotnet8":
                fn = dotnet_function(request.getfixturevalue("dotnet_build"), hook_layer, env=env)
            else:
                fn = java_function(request.getfixturevalue("java_build"), hook_layer, env=env)
            with fn:
                cache[kind] = fn.invoke({})
        return cache[kind]

    return make


@pytest.mark.parametrize("kind", list(FAILURES))
def test_failing_wrapper_message_is_in_the_function_logs(start_failing: Callable[[str], InvokeResult],
                                                         kind: str) -> None:  # fmt: skip
    result = start_failing(kind)

    assert result.function_logs.count(FAILURES[kind][1]) == 2  # the init, then the suppressed init


@pytest.mark.parametrize("kind", list(FAILURES))
def test_failing_wrapper_fails_init_then_the_suppressed_init(start_failing: Callable[[str], InvokeResult],
                                                             kind: str) -> None:  # fmt: skip
    result = start_failing(kind)

    init_reports = [line for line in result.logs if line.startswith("INIT_REPORT ")]
    assert re.findall(r"\tPhase: (\w+)\t", "\n".join(init_reports)) == ["init", "invoke"]
    assert all(line.endswith("\tStatus: error\tError Type: Runtime.ExitError") for line in init_reports)


@pytest.mark.parametrize("kind", list(FAILURES))
def test_failing_wrapper_invoke_returns_the_exit_error(start_failing: Callable[[str], InvokeResult],
                                                       kind: str) -> None:  # fmt: skip
    result = start_failing(kind)

    status = FAILURES[kind][2]
    assert result.function_error == "Unhandled"
    assert result.json() == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {result.request_id} Error: Runtime exited with error: exit status {status}",
    }


# -- .NET: DOTNET_STARTUP_HOOKS


@pytest.fixture(scope="session")
def dotnet_build(tmp_path_factory: pytest.TempPathFactory) -> DotnetBuild:
    return build_dotnet(tmp_path_factory)


def dotnet_function(dotnet_build: DotnetBuild, hook_layer: Path, **options: Any) -> Function:
    return Function(code=dotnet_build.code, runtime="dotnet8", handler="Handlers::Fixtures.Probe::Echo",
                    layers=[hook_layer, dotnet_build.layer], **options)  # fmt: skip


def test_dotnet_startup_hooks_run_an_internal_extension(dotnet_build: DotnetBuild, hook_layer: Path) -> None:
    with dotnet_function(dotnet_build, hook_layer, env={"DOTNET_STARTUP_HOOKS": "/opt/ExtensionHook.dll"}) as fn:
        results, records = invoke_several(fn, "x")

    assert events_seen(records, "dotnet-hook-ext") == [r.request_id for r in results]
    assert all(r.json() == "hello x" for r in results)
