"""Proxy variables pointing at a closed port on this machine, as on clusters whose environment sets
a proxy for the outside world: a connection sent through them fails. The multi-process tests run
with them, so that the coordinator's connections must bypass the proxy to start at all."""

DEAD_PROXY_URL = "http://127.0.0.1:9"  # the discard port: nothing listens there
PROXY_VARS = ("http_proxy", "https_proxy")
EXEMPTIONS = ("no_proxy", "NO_PROXY", "no_grpc_proxy")
OTHER_PROXY_VARS = ("grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def with_dead_proxy(env: dict[str, str]) -> dict[str, str]:
    """`env` with http_proxy and https_proxy set to a dead proxy and no exemption from it (an
    exemption this machine's environment may hold would hide the proxy from the test)."""
    # Other proxy variables this machine may set are dropped too, so the proxies a message lists
    # are exactly these two.
    env = {k: v for k, v in env.items() if k not in EXEMPTIONS and k not in OTHER_PROXY_VARS}
    return {**env, **{name: DEAD_PROXY_URL for name in PROXY_VARS}}
