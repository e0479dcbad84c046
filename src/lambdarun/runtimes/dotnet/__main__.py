"""`python3 -m lambdarun.runtimes.dotnet [--core]`: fetch .NET if the machine has none, compile lambdarun's runtime
client, and say where Amazon.Lambda.Core.dll is (the assembly .NET handlers are compiled against)."""

from __future__ import annotations

import argparse
import sys

from ..registry import RuntimeUnavailable
from . import cache, client, find, locate


def main() -> int:
    parser = argparse.ArgumentParser(prog="python3 -m lambdarun.runtimes.dotnet", description=__doc__)
    parser.add_argument("--core", action="store_true", help="print only the path of Amazon.Lambda.Core.dll")
    parser.add_argument("--runtime", default="dotnet8", help="the runtime identifier to prepare (default dotnet8)")
    args = parser.parse_args()
    try:
        locate(args.runtime)
    except RuntimeUnavailable as exc:
        print(f"lambdarun: {exc}", file=sys.stderr)
        return 1
    core = client.ensure(cache()) / f"{client.CORE}.dll"
    if args.core:
        print(core)
        return 0
    install = find(args.runtime)
    assert install is not None
    print(f"{args.runtime}: runs {install.describe()}\nAmazon.Lambda.Core: {core}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
