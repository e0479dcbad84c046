"""The pure parts of the sandbox: its /etc, the bwrap command, the control messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lambdarun.sandbox import bwrap, control, etc
from lambdarun.sandbox.spec import Bind, SandboxSpec


def test_resolv_conf_keeps_the_host_resolvers_and_search_but_not_loopback_ones() -> None:
    host = "# comment\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch corp.example\noptions edns0\n"
    assert etc.resolv_conf(host, None) == "nameserver 10.0.0.2\nsearch corp.example\noptions edns0\n"


def test_resolv_conf_sends_queries_to_the_forwarder_when_given() -> None:
    assert etc.resolv_conf("nameserver 127.0.0.53\n", "169.254.1.1") == "nameserver 169.254.1.1\n"


def test_passwd_and_hosts_name_lambdas_user_and_the_sandbox() -> None:
    assert "sbx_user1051:x:993:990:" in etc.PASSWD
    assert "sandbox sandbox.localdomain" in etc.HOSTS.splitlines()[0]


def _spec(tmp_path: Path, **kwargs: object) -> SandboxSpec:
    return SandboxSpec(task=tmp_path / "t", opt=tmp_path / "o", runtime=tmp_path / "r", lang=tmp_path / "l",
                       tmp=tmp_path / "tmp", **kwargs)  # type: ignore[arg-type]  # fmt: skip


def test_the_command_binds_lambdas_paths_and_runs_init_as_pid_1(tmp_path: Path) -> None:
    spec = _spec(tmp_path, binds=(Bind(tmp_path / "x", "/var/extra", writable=True),), masks=("/opt/secret",))
    fds = bwrap.Descriptors(control=5, info=6, userns=9, files={"/etc/passwd": 7}, cgroup_procs=(8,))
    argv = bwrap.command(spec, Path("/cache/init"), "/usr/bin/bwrap", fds)
    joined = " ".join(argv)
    for expected in (f"--ro-bind {tmp_path}/t /var/task", f"--ro-bind {tmp_path}/o /opt", f"--bind {tmp_path}/tmp /tmp",
                     f"--ro-bind {tmp_path}/r /var/runtime", f"--ro-bind {tmp_path}/l /var/lang",
                     f"--bind {tmp_path}/x /var/extra", "--tmpfs /opt/secret --remount-ro /opt/secret",
                     "--ro-bind /cache/init /var/rapid/init", "--ro-bind-data 7 /etc/passwd", "--as-pid-1",
                     "--unshare-net", "--die-with-parent", "--remount-ro / "):  # fmt: skip
        assert expected in joined, expected
    assert argv[0] == "/cache/init" and argv[1] == "userns-exec"
    serve = argv[argv.index("--", argv.index("/usr/bin/bwrap")) + 1 :]
    assert serve[:5] == ["/var/rapid/init", "serve", "5", "--listen", "9001"]
    assert serve[serve.index("--cgroup") + 1] == "8"
    assert serve[serve.index("--nofile") + 1] == "1024"  # Lambda's open-file limit on every process
    assert ("--user" in serve) == (os.geteuid() == 0)  # as root, init drops from the namespace's root itself


def test_missing_parents_are_made_outermost_first_and_host_trees_are_left_alone() -> None:
    assert bwrap._parents(["/var/task", "/var/rapid/init", "/etc/pki/tls/certs/x", "/usr/bin/sh"]) == [
        "/etc", "/var", "/etc/pki", "/var/rapid", "/etc/pki/tls", "/etc/pki/tls/certs"]  # fmt: skip


def test_a_spawn_request_refuses_nul_bytes_and_bad_variable_names() -> None:
    assert control.pack_spawn("/var/task", ["a", "b"], {"K": "v"}) == b"/var/task\0a\0b\0K=v\0"
    with pytest.raises(ValueError):
        control.pack_spawn("/var/task", ["a\0b"], {})
    with pytest.raises(ValueError):
        control.pack_spawn("/var/task", ["a"], {"A=B": "v"})


def test_a_spec_refuses_unknown_networks_and_relative_targets(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        _spec(tmp_path, network="host")
    with pytest.raises(ValueError):
        _spec(tmp_path, binds=(Bind(tmp_path, "relative"),))
