"""check-extension's function: what each scenario of the battery asks of it."""

import time
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    op = event.get("op", "ok")
    if op == "error":
        raise RuntimeError("check-extension: a function error, on purpose")
    if op == "sleep":
        time.sleep(event["seconds"])
    if op == "log":
        line = "x" * event.get("width", 100)
        for n in range(event["lines"]):
            print(f"{n} {line}")
    return {"op": op, "requestId": context.aws_request_id}
