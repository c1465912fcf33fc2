"""What multi-process start-up sets before any process connects: the coordinator exempted from
proxies (in each process and in the launcher's environment), and the start-up time limit from the
config, the environment or the default."""

import sys

import pytest

from support.locations import REPO

sys.path.insert(0, str(REPO / "scripts"))
from launch_local import process_env  # noqa: E402


def test_the_coordinator_is_added_to_every_exemption_list_keeping_what_is_there():
    from jaxformer.parallel import proxy

    env = {"no_proxy": ".corp.example, 10.0.0.0/8", "no_grpc_proxy": "grpc.example"}
    proxy.exempt("node07", env)
    proxy.exempt("node07", env)  # a second call adds nothing
    assert env == {"no_proxy": ".corp.example,10.0.0.0/8,node07", "NO_PROXY": "node07",
                   "no_grpc_proxy": "grpc.example,node07"}

    env = {}
    proxy.exempt("localhost", env)
    # gRPC reads no_grpc_proxy instead of no_proxy when it is set, so it is not created.
    assert env == {"no_proxy": "localhost,127.0.0.1,::1", "NO_PROXY": "localhost,127.0.0.1,::1"}


@pytest.mark.parametrize("address, host", [("localhost:1234", "localhost"), ("10.0.0.2:8476", "10.0.0.2"),
                                           ("[::1]:1234", "::1"), ("node07", "node07")])
def test_coordinator_host(address, host):
    from jaxformer.parallel import proxy

    assert proxy.coordinator_host(address) == host


def test_a_proxy_is_named_without_its_password():
    from jaxformer.parallel import proxy

    env = {"https_proxy": "http://alice:s3cret@proxy.corp:3128", "no_proxy": "localhost"}
    assert proxy.proxies_set(env) == "https_proxy=http://***@proxy.corp:3128"
    assert proxy.proxies_set({}) == "" and proxy.bypass_note({}) == ""


def test_the_launcher_exempts_localhost_and_passes_the_time_limit():
    env = process_env(1, 2, 4321, None, base={"no_proxy": ".corp.example", "PATH": "/bin"},
                      init_timeout=4.5)
    assert env["no_proxy"] == ".corp.example,localhost,127.0.0.1,::1"
    assert env["NO_PROXY"] == "localhost,127.0.0.1,::1"
    assert "no_grpc_proxy" not in env
    assert env["JAXFORMER_INIT_TIMEOUT_S"] == "4.5"
    assert env["JAXFORMER_COORDINATOR_ADDRESS"] == "localhost:4321"


def test_the_time_limit_comes_from_the_config_then_the_environment(monkeypatch):
    from jaxformer.errors import ConfigError
    from jaxformer.parallel.distributed import init_timeout_s

    monkeypatch.delenv("JAXFORMER_INIT_TIMEOUT_S", raising=False)
    assert init_timeout_s() == 120
    monkeypatch.setenv("JAXFORMER_INIT_TIMEOUT_S", "30")
    assert init_timeout_s() == 30
    assert init_timeout_s(7.5) == 7.5  # the config's value wins over the launcher's
    monkeypatch.setenv("JAXFORMER_INIT_TIMEOUT_S", "soon")
    with pytest.raises(ConfigError, match="JAXFORMER_INIT_TIMEOUT_S='soon' is not a number"):
        init_timeout_s()


def test_the_config_rejects_a_time_limit_that_is_not_positive():
    from jaxformer.config import load_config
    from jaxformer.errors import ConfigError

    assert load_config("shakespeare_char_cpu", ["mesh.init_timeout_s=7.5"]).mesh.init_timeout_s == 7.5
    assert load_config("shakespeare_char_cpu").mesh.init_timeout_s is None
    with pytest.raises(ConfigError, match="mesh.init_timeout_s must be positive"):
        load_config("shakespeare_char_cpu", ["mesh.init_timeout_s=0"])
