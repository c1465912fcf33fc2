"""No test reaches the network: connections and name lookups for anything but this machine fail.

`install()` replaces the socket functions that leave the machine; the tests' conftest calls it for
the test process, and `sitecustomize.py` beside this file calls it in every Python the tests start
(`locations.subprocess_env` puts this folder on their PYTHONPATH). Local connections stay open:
the multi-process tests talk to a coordinator on localhost.
"""

import ipaddress
import socket

_ORIGINAL = {"connect": socket.socket.connect, "connect_ex": socket.socket.connect_ex,
             "getaddrinfo": socket.getaddrinfo}


class NetworkBlocked(OSError):
    """A test tried to reach another machine."""


def _is_local(host) -> bool:
    if host in (None, "", "localhost") or not isinstance(host, str):
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host.endswith(".localhost")
    return address.is_loopback or address.is_unspecified


def _check(address) -> None:
    host = address[0] if isinstance(address, tuple) else None  # AF_UNIX paths are local
    if not _is_local(host):
        raise NetworkBlocked(f"tests do not use the network (tried to reach {address!r})")


def _connect(self, address):
    _check(address)
    return _ORIGINAL["connect"](self, address)


def _connect_ex(self, address):
    _check(address)
    return _ORIGINAL["connect_ex"](self, address)


def _getaddrinfo(host, *args, **kwargs):
    _check((host.decode() if isinstance(host, bytes) else host, 0))
    return _ORIGINAL["getaddrinfo"](host, *args, **kwargs)


def install() -> None:
    socket.socket.connect = _connect
    socket.socket.connect_ex = _connect_ex
    socket.getaddrinfo = _getaddrinfo


def uninstall() -> None:
    socket.socket.connect = _ORIGINAL["connect"]
    socket.socket.connect_ex = _ORIGINAL["connect_ex"]
    socket.getaddrinfo = _ORIGINAL["getaddrinfo"]
