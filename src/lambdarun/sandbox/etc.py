"""/etc inside a sandbox: what programs need and nothing else of the host's.

Written files (users, hosts, name service, resolver) come from here; a few host entries programs read are bound
read-only: the loader cache, Debian's alternatives (/usr/bin/java is a link through them), the CA certificates,
protocol and service names, MIME types, the JDK's configuration.
"""

from __future__ import annotations

import glob
import ipaddress
import os

from .spec import HOST_GATEWAY, HOST_GATEWAY_NAME

UID = 993  # Lambda's sbx_user1051
GID = 990

PASSWD = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    f"sbx_user1051:x:{UID}:{GID}::/home/sbx_user1051:/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/:/sbin/nologin\n"
)
GROUP = f"root:x:0:\nsbx_user1051:x:{GID}:\nnobody:x:65534:\n"
NSSWITCH = "".join(f"{db}: {how}\n" for db, how in [
    ("passwd", "files"), ("group", "files"), ("shadow", "files"), ("hosts", "files dns"), ("networks", "files"),
    ("protocols", "files"), ("services", "files"),
])  # fmt: skip
HOSTS = (
    "127.0.0.1\tlocalhost localhost.localdomain sandbox sandbox.localdomain\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    f"{HOST_GATEWAY}\t{HOST_GATEWAY_NAME}\n"
)

# Host entries bound read-only when present (globs allowed).
HOST_ENTRIES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates",
    "protocols",
    "services",
    "mime.types",
    "host.conf",
    "gai.conf",
    "java-*",
)
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
AMAZON_CA_BUNDLE = "/etc/pki/tls/certs/ca-bundle.crt"  # where Amazon Linux has it (NODE_EXTRA_CA_CERTS on Lambda)
UTC_ZONE = ("/usr/share/zoneinfo/Etc/UTC", "/usr/share/zoneinfo/UTC")  # Lambda's clock is UTC


def host_entries() -> list[str]:
    """The host paths under /etc to bind, each at the same path."""
    found: list[str] = []
    for entry in HOST_ENTRIES:
        found.extend(sorted(glob.glob(f"/etc/{entry}")))
    return [path for path in found if os.path.exists(path)]


def utc_zone() -> str | None:
    return next((zone for zone in UTC_ZONE if os.path.exists(zone)), None)


def nameservers(resolv_conf: str) -> list[str]:
    servers = []
    for line in resolv_conf.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            servers.append(fields[1])
    return servers


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def resolv_conf(host: str, forwarder: str | None) -> str:
    """The host's resolver settings; with `forwarder`, queries go there instead (the host resolves on its
    loopback, which the sandbox cannot reach directly)."""
    kept = [line for line in host.splitlines() if line.split()[:1] in (["search"], ["domain"], ["options"])]
    servers = [forwarder] if forwarder else [s for s in nameservers(host) if not is_loopback(s)]
    return "".join(f"nameserver {s}\n" for s in servers) + "".join(f"{line}\n" for line in kept)


def read_host_resolv_conf() -> str:
    try:
        with open("/etc/resolv.conf") as f:
            return f.read()
    except OSError:
        return ""


def memfds(forwarder: str | None) -> dict[str, int]:
    """The written files, each in a memfd bwrap copies from: nothing of a sandbox lands on the host's disk."""
    contents = {
        "/etc/passwd": PASSWD,
        "/etc/group": GROUP,
        "/etc/hosts": HOSTS,
        "/etc/nsswitch.conf": NSSWITCH,
        "/etc/resolv.conf": resolv_conf(read_host_resolv_conf(), forwarder),
    }
    files = {}
    for path, text in contents.items():
        fd = os.memfd_create(os.path.basename(path))  # close-on-exec: bwrap gets it through pass_fds
        os.write(fd, text.encode())
        os.lseek(fd, 0, os.SEEK_SET)
        files[path] = fd
    return files
