"""A multi-process `jaxformer train` that cannot start ends with one line naming the cause, exit
status 2, within its time limit, and no C++ stack trace: a process that never comes, a coordinator
that cannot be reached, a port already taken, process counts that disagree, and a process that
leaves between the roll call and JAX's connection. Every process runs behind a dead proxy, as on
clusters whose environment sets one.
"""

import socket
import subprocess
import sys
import threading
import time

from support.dead_proxy import DEAD_PROXY_URL, with_dead_proxy
from support.locations import REPO, subprocess_env

sys.path.insert(0, str(REPO / "scripts"))
from launch_local import free_port  # noqa: E402

LIMIT_S = 3  # the start-up time limit given to the processes
# Loading Python, jax and the config before the time limit starts, on a loaded 2-core machine:
# generous, and still far below the five minutes JAX takes to give up by itself.
LOAD_ALLOWANCE_S = 60
CXX_TRACES = ("Check failure stack trace", "CoordinationServiceAgent", "*** ", "@     0x")
TRAIN = [sys.executable, "-m", "jaxformer", "train", "shakespeare_char_cpu"]
PROXIES = f"https_proxy={DEAD_PROXY_URL}, http_proxy={DEAD_PROXY_URL}"


def start(process_id: int, num_processes: int, port: int, tmp_path, *overrides,
          **env: str) -> subprocess.Popen:
    """`jaxformer train` as process `process_id` of a hand-made cluster whose coordinator is
    localhost:`port`."""
    env = with_dead_proxy(subprocess_env(JAXFORMER_COORDINATOR_ADDRESS=f"localhost:{port}",
                                         JAXFORMER_NUM_PROCESSES=str(num_processes),
                                         JAXFORMER_PROCESS_ID=str(process_id), **env))
    return subprocess.Popen([*TRAIN, f"train.run_dir={tmp_path / 'run'}", *overrides], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    """Exit status and stderr."""
    _, err = process.communicate(timeout=LIMIT_S + LOAD_ALLOWANCE_S)
    return process.returncode, err


def assert_one_line(stderr: str, expected: str) -> None:
    assert stderr.strip().splitlines() == [expected], stderr[-3000:]
    assert not any(trace in stderr for trace in CXX_TRACES)


def test_a_process_that_never_comes_is_named_after_the_time_limit(tmp_path):
    port = free_port()
    began = time.monotonic()
    status, err = finish(start(0, 2, port, tmp_path, f"mesh.init_timeout_s={LIMIT_S}"))
    elapsed = time.monotonic() - began
    assert status == 2
    assert_one_line(err, f"jaxformer train: error: process 1 of 2 never reached the coordinator "
                         f"localhost:{port} within {LIMIT_S} s: start it with the same command "
                         f"(JAXFORMER_PROCESS_ID=1), or allow more time (mesh.init_timeout_s, "
                         f"launch_local.py --init-timeout)")
    assert LIMIT_S <= elapsed < LIMIT_S + LOAD_ALLOWANCE_S  # it waited the limit, and no longer


def test_an_unreachable_coordinator_is_named_with_the_proxy(tmp_path):
    port = free_port()  # nothing listens there
    began = time.monotonic()
    status, err = finish(start(1, 2, port, tmp_path, JAXFORMER_INIT_TIMEOUT_S=str(LIMIT_S)))
    elapsed = time.monotonic() - began
    assert status == 2
    assert_one_line(err, f"jaxformer train: error: coordinator localhost:{port} unreachable after "
                         f"{LIMIT_S} s (connection refused): start process 0 on that host, or fix "
                         f"the address (JAXFORMER_COORDINATOR_ADDRESS) or a firewall in the way; a "
                         f"proxy is set ({PROXIES}), which jaxformer bypasses for the coordinator "
                         f"(no_proxy)")
    assert LIMIT_S <= elapsed < LIMIT_S + LOAD_ALLOWANCE_S


def test_a_port_in_use_stops_the_launcher_at_once(tmp_path):
    with socket.socket() as holder:  # another program on the port the run is told to use
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        launched = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "launch_local.py"), "-n", "2", "--port",
             str(port), "--init-timeout", "600", "--", *TRAIN, f"train.run_dir={tmp_path / 'run'}"],
            env=with_dead_proxy(subprocess_env()), cwd=tmp_path, capture_output=True, text=True,
            timeout=LOAD_ALLOWANCE_S)  # at once: long before the 600 s limit
    assert launched.returncode == 2
    errors = [line for line in launched.stdout.splitlines() if "error" in line]
    assert errors == [f"[0] jaxformer train: error: the coordinator's port {port} is already in "
                      f"use on this machine (another run or program holds it): choose a free port "
                      f"(JAXFORMER_COORDINATOR_ADDRESS=host:PORT, launch_local.py --port)"], \
        launched.stdout[-3000:]
    output = launched.stdout + launched.stderr
    assert not any(trace in output for trace in CXX_TRACES), output[-3000:]


def test_process_counts_that_disagree_stop_both(tmp_path):
    port = free_port()
    overrides = [f"mesh.init_timeout_s={LIMIT_S + LOAD_ALLOWANCE_S}"]  # not waited for
    processes = [start(0, 2, port, tmp_path, *overrides), start(1, 3, port, tmp_path, *overrides)]
    for process in processes:
        status, err = finish(process)
        assert status == 2
        assert_one_line(err, "jaxformer train: error: the processes disagree on their number: "
                             "process 0 was started with 2, process 1 with 3; give every process "
                             "the same JAXFORMER_NUM_PROCESSES")


def test_a_process_that_leaves_before_jax_connects_is_reported_in_time(tmp_path):
    """Process 1 (this test) reports to the coordinator, then is gone: process 0 passes the roll
    call and waits in JAX's connection, which the watchdog ends."""
    from jaxformer.parallel import rollcall

    port = free_port()
    process = start(0, 2, port, tmp_path, f"mesh.init_timeout_s={LIMIT_S}")
    reported = []
    thread = threading.Thread(target=lambda: reported.append(rollcall.report(
        f"localhost:{port}", 1, 2, LOAD_ALLOWANCE_S)))
    thread.start()
    thread.join()
    assert reported == [None]  # process 0 let it go
    began = time.monotonic()
    status, err = finish(process)
    elapsed = time.monotonic() - began
    assert status == 2
    line = err.strip().splitlines()
    assert len(line) == 1 and line[0].startswith(
        f"jaxformer: error: process 0: JAX did not connect to the coordinator localhost:{port} "
        f"within {LIMIT_S} s, although every process had reported to it: one may have failed "
        f"since (see the others' output); a proxy is set ({PROXIES}), which jaxformer bypasses "
        f"for the coordinator (no_proxy)"), err[-3000:]
    assert not any(trace in err for trace in CXX_TRACES)
    assert elapsed < LIMIT_S + LOAD_ALLOWANCE_S
