"""An internal extension: a thread in the runtime process, registered for INVOKE before the runtime's first /next."""

import json
import os
import threading
import urllib.request

API = f"http://{os.environ['AWS_LAMBDA_RUNTIME_API']}"


def _run() -> None:
    request = urllib.request.Request(
        f"{API}/2020-01-01/extension/register",
        data=b'{"events": ["INVOKE"]}',
        method="POST",
        headers={"Lambda-Extension-Name": "demo-internal"},
    )
    with urllib.request.urlopen(request) as response:
        me = {"Lambda-Extension-Identifier": response.headers["Lambda-Extension-Identifier"]}
    while True:
        with urllib.request.urlopen(urllib.request.Request(f"{API}/2020-01-01/extension/event/next", headers=me)) as r:
            event = json.loads(r.read())
        print(f"[demo-internal] INVOKE {event['requestId']}", flush=True)


_thread = threading.Thread(target=_run, name="demo-internal", daemon=True)
_thread.start()
