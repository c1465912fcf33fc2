"""Keep the coordinator's traffic away from HTTP proxies.

`jax.distributed` reaches the coordinator over gRPC, and gRPC sends every connection through the
proxy in `grpc_proxy`, `https_proxy` or `http_proxy` (the first one set) unless the host is listed
in `no_grpc_proxy`, or in `no_proxy` when `no_grpc_proxy` is unset. Clusters often set a proxy for
the outside world; it cannot reach a coordinator inside the cluster (let alone on localhost), and
the connection then hangs until JAX's time-out ends the process.
"""

import os
import urllib.parse
from collections.abc import MutableMapping

# What gRPC reads (lower case only), then what other HTTP clients read.
PROXY_VARS = ("grpc_proxy", "https_proxy", "http_proxy", "HTTPS_PROXY", "HTTP_PROXY", "all_proxy",
              "ALL_PROXY")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def coordinator_host(address: str) -> str:
    """The host of "host:port", "[v6 address]:port" or a bare host."""
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 or "]:" in address else address
    return host.strip("[]")


def is_local(host: str) -> bool:
    return host in LOCAL_HOSTS or host.startswith("127.")


def exempt(host: str, environ: MutableMapping[str, str] | None = None) -> None:
    """Append `host` (and the loopback names, for a local host) to `no_proxy` and `NO_PROXY`, and
    to `no_grpc_proxy` when it is set (gRPC then reads it instead of `no_proxy`). Entries already
    there stay: they may be what other traffic needs."""
    environ = os.environ if environ is None else environ
    hosts = list(dict.fromkeys([host, *LOCAL_HOSTS] if is_local(host) else [host]))
    names = ["no_proxy", "NO_PROXY"] + (["no_grpc_proxy"] if "no_grpc_proxy" in environ else [])
    for name in names:
        entries = [e.strip() for e in environ.get(name, "").split(",") if e.strip()]
        entries += [h for h in hosts if h not in entries]
        environ[name] = ",".join(entries)


def proxies_set(environ: MutableMapping[str, str] | None = None) -> str:
    """"http_proxy=http://proxy:3128, ..." for the proxy variables set, with any password left out;
    "" when none is."""
    environ = os.environ if environ is None else environ
    return ", ".join(f"{name}={_without_credentials(environ[name])}" for name in PROXY_VARS
                     if environ.get(name))


def bypass_note(environ: MutableMapping[str, str] | None = None) -> str:
    """For an error message: which proxy is set, if any, and that the coordinator bypasses it."""
    proxies = proxies_set(environ)
    return (f"; a proxy is set ({proxies}), which jaxformer bypasses for the coordinator (no_proxy)"
            if proxies else "")


def _without_credentials(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if not parts.username and not parts.password:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{netloc}"))
