"""A local HTTP endpoint for the extension under check to send its data to (`$LAMBDARUN_CHECK_SINK`).

It notes when each request arrived and when it was answered, and holds every answer `HOLD_S`: a request an extension
starts after going back to `/event/next` is then still unanswered when the environment freezes, so the check sees
the work a real Lambda would cut off by the freeze, rather than letting a quick answer hide it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOLD_S = 0.02


@dataclass(frozen=True)
class SinkRequest:
    method: str
    path: str
    size: int
    arrived: float  # epoch seconds: the request line came in
    answered: float  # epoch seconds: the answer was written


class Sink:
    def __init__(self, hold_s: float = HOLD_S) -> None:
        self.requests: list[SinkRequest] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                arrived = time.time()
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                time.sleep(hold_s)
                answered = time.time()  # before the answer is written: the client cannot have it any earlier
                with sink._lock:
                    sink.requests.append(SinkRequest(self.command, self.path, length, arrived, answered))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = _any

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="check-sink", daemon=True)

    def url_for(self, host: str) -> str:
        """Its URL, for processes that reach this machine's loopback as `host`."""
        return f"http://{host}:{self._server.server_address[1]}"

    def __enter__(self) -> Sink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def taken(self) -> list[SinkRequest]:
        with self._lock:
            return sorted(self.requests, key=lambda r: r.arrived)
