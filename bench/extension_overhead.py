#!/usr/bin/env python3
"""What external extensions add to a warm invoke, as ratios to the no-extension figure measured in the same run.

    python3 bench/extension_overhead.py [--invokes N]

A no-op awslambdaric handler, warm, invoked through the Python API with 0, 1 and 4 no-op external extensions
subscribed to INVOKE (each answers its event by polling `/event/next` again at once, over one keep-alive
connection). The invoke ends only when every extension is back in `/event/next`, so each extension's round trip
is on the invoke's path. Target: 4 extensions add at most 40% to the p50.

The extensions are measured twice: in Python (http.client), as a minimal real extension would be written, and in
C (bench/fixtures/noop_extension.c, compiled with gcc when there is one), which leaves lambdarun's own
per-extension cost with little of the extension's.

The four environments are measured in interleaved blocks so that load on the machine hits them alike. Benchmarks
never fail a build on timing: the script exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from invoke_overhead import NOOP_HANDLER, percentile, timed_us, warmed

import lambdarun

BLOCK = 100
TARGET = 1.40

# A no-op extension over one keep-alive connection (http.client), as a minimal real extension would be.
NOOP_EXTENSION = """#!/usr/bin/python3
import http.client, json, os, sys
name = os.path.basename(sys.argv[0])
conn = http.client.HTTPConnection(os.environ["AWS_LAMBDA_RUNTIME_API"])
conn.request("POST", "/2020-01-01/extension/register", body=json.dumps({"events": ["INVOKE"]}),
             headers={"Lambda-Extension-Name": name})
response = conn.getresponse()
response.read()
me = {"Lambda-Extension-Identifier": response.getheader("Lambda-Extension-Identifier")}
while True:
    conn.request("GET", "/2020-01-01/extension/event/next", headers=me)
    conn.getresponse().read()
"""


def compiled_extension(root: Path) -> Path | None:
    """The C no-op extension, built with gcc; None when there is no compiler."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    binary = root / "noop-c"
    source = Path(__file__).parent / "fixtures" / "noop_extension.c"
    result = subprocess.run([gcc, "-O2", "-o", str(binary), str(source)], capture_output=True, text=True)
    return binary if result.returncode == 0 else None


def write_fixtures(root: Path) -> tuple[Path, dict[str, list[Path]]]:
    """The handler, and the layers of each configuration: `0`, `1 python`, `4 python`, `1 C`, `4 C`."""
    code = root / "code"
    code.mkdir()
    (code / "app.py").write_text(NOOP_HANDLER)
    layers: dict[str, list[Path]] = {"0": []}
    binary = compiled_extension(root)
    for language in ("python", "C"):
        if language == "C" and binary is None:
            continue
        for count in (1, 4):
            layer = root / f"layer-{language}-{count}"
            (layer / "extensions").mkdir(parents=True)
            for n in range(count):
                path = layer / "extensions" / f"noop-{n}"
                if language == "python":
                    path.write_text(NOOP_EXTENSION)
                else:
                    shutil.copyfile(binary, path)  # type: ignore[arg-type]
                path.chmod(0o755)
            layers[f"{count} {language}"] = [layer]
    return code, layers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invokes", type=int, default=2000, help="samples per figure (default 2000)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lambdarun-bench-"))
    try:
        code, layers = write_fixtures(root)
        with contextlib.ExitStack() as stack:
            functions = {
                count: stack.enter_context(lambdarun.Function(code, "python3.11", "app.handler", layers=layer))
                for count, layer in layers.items()
            }
            actions = {count: warmed(fn, 50) for count, fn in functions.items()}
            samples: dict[str, list[float]] = {count: [] for count in functions}
            for _ in range(max(1, args.invokes // BLOCK)):
                for count, action in actions.items():
                    samples[count] += timed_us(action, BLOCK)
        base = percentile(samples["0"], 50)
        print(f"lambdarun extension overhead: {len(samples['0'])} warm invokes per figure, no-op awslambdaric handler")
        print(f"{'external extensions subscribed to INVOKE':<44}{'p50':>9}{'p99':>9}    ratio  target")
        for count, values in samples.items():
            p50, p99 = percentile(values, 50), percentile(values, 99)
            line = f"{count:<44}{p50:>9.1f}{p99:>9.1f} us  {p50 / base:5.2f}x"
            if count.startswith("4 "):
                line += f"  <= {TARGET:.2f}x  {'MET' if p50 / base <= TARGET else 'MISSED'}"
            print(line)
        if "1 C" not in samples:
            print("(no gcc here: the C extension figures are left out)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
