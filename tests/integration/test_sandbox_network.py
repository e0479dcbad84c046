"""Each sandbox has its own network: the APIs at 127.0.0.1:9001 inside only, any port free for its processes, and
outbound traffic through pasta (the host's loopback at 169.254.1.1) unless the network is "none"."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from _sandbox_support import WHO, run_scenario


@pytest.mark.parametrize("who", WHO)
def test_two_sandboxes_each_have_9001_and_4243_and_the_host_reaches_neither(who: str) -> None:
    seen, _ = run_scenario(who, "ports")
    assert seen["runtime_api"] == ["127.0.0.1:9001", "127.0.0.1:9001"]
    assert (seen["api_seen_by_A"], seen["api_seen_by_B"]) == ("A", "B")  # each reaches its own APIs
    assert (seen["4243_of_A"], seen["4243_of_B"]) == ("A", "B")  # lambdarun reaches each one's own listener
    for port in (9001, 4243):
        assert seen[f"host_{port}"] not in ("A", "B")  # refused, or some host service that is not a sandbox


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello from the host")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def host_server() -> Iterator[int]:
    """A tiny HTTP server on the host's own loopback."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_with_outbound_network_the_host_loopback_answers_at_the_gateway(host_server: int) -> None:
    seen, _ = run_scenario("root", "outbound", {"network": "default", "port": host_server})
    if seen["network"] != "default":
        pytest.skip("this machine gives sandboxes no outbound network (pasta missing?)")
    assert seen["169.254.1.1"] == "hello from the host"
    assert seen["host.lambdarun.internal"] == "hello from the host"


@pytest.mark.parametrize("who", WHO)
def test_network_none_cuts_outbound_traffic(who: str, host_server: int) -> None:
    seen, _ = run_scenario(who, "outbound", {"network": "none", "port": host_server})
    assert seen["network"] == "none"
    assert "hello" not in seen["169.254.1.1"]
    assert "hello" not in seen["host.lambdarun.internal"]


def test_without_tun_an_ordinary_user_gets_loopback_only_and_is_told_once(host_server: int) -> None:
    seen, stderr = run_scenario("user", "outbound", {"network": "default", "port": host_server})
    if seen["network"] == "default":
        pytest.skip("this user can open /dev/net/tun here: outbound network works for it")
    assert "hello" not in seen["169.254.1.1"]
    assert stderr.count("no outbound network") == 1
