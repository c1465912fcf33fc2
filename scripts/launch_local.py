#!/usr/bin/env python
"""Run N processes of one command on this machine, as a multi-host JAX job in miniature.

    python scripts/launch_local.py -n 2 --cpu-devices 2 -- jaxformer train shakespeare_char_cpu

Each process gets JAXFORMER_COORDINATOR_ADDRESS=localhost:PORT, JAXFORMER_NUM_PROCESSES=N,
JAXFORMER_PROCESS_ID=i and JAXFORMER_CPU_DEVICES=k, which `jaxformer.parallel.initialize` reads
to call `jax.distributed.initialize` (CPU collectives go over gloo). Output lines are prefixed with
the process id. If one process fails the others are stopped; the exit status is the first
non-zero one.

The coordinator (localhost) is added to each process's no_proxy: gRPC would otherwise send the
processes' connections to it through any http(s)_proxy the environment sets, where they hang.
`--init-timeout S` (JAXFORMER_INIT_TIMEOUT_S) bounds the start-up: a process that never comes, or a
coordinator that cannot be reached, ends the run with one line naming it after S seconds.
"""

import argparse
import os
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def process_env(process_id: int, num_processes: int, port: int, cpu_devices: int | None,
                base: dict | None = None, init_timeout: float | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env.update(JAXFORMER_COORDINATOR_ADDRESS=f"localhost:{port}",
               JAXFORMER_NUM_PROCESSES=str(num_processes), JAXFORMER_PROCESS_ID=str(process_id))
    if cpu_devices:
        env.update(JAXFORMER_CPU_DEVICES=str(cpu_devices), JAX_PLATFORMS="cpu")
    if init_timeout:
        env["JAXFORMER_INIT_TIMEOUT_S"] = str(init_timeout)
    bypass_proxies(env)
    return env


def bypass_proxies(env: dict) -> None:
    """Append the local host names to no_proxy and NO_PROXY (and to no_grpc_proxy, which gRPC reads
    instead of no_proxy when set), keeping what is there. jaxformer.parallel.proxy does the same
    inside each process; this copy keeps the launcher from importing jaxformer (and jax), and
    covers a command that is not jaxformer's."""
    for name in ["no_proxy", "NO_PROXY"] + (["no_grpc_proxy"] if "no_grpc_proxy" in env else []):
        entries = [e.strip() for e in env.get(name, "").split(",") if e.strip()]
        env[name] = ",".join(entries + [h for h in LOCAL_HOSTS if h not in entries])


def _pump(stream, prefix: str, sink) -> None:
    for line in iter(stream.readline, ""):
        sink.write(f"{prefix}{line}")
        sink.flush()
    stream.close()


def launch(command: list[str], num_processes: int, *, cpu_devices: int | None = None,
           port: int | None = None, timeout: float | None = None, init_timeout: float | None = None,
           sink=sys.stdout) -> int:
    """Start `command` N times and wait for all; returns the first non-zero exit status (or 0)."""
    port = port or free_port()
    procs, pumps = [], []
    for i in range(num_processes):
        env = process_env(i, num_processes, port, cpu_devices, init_timeout=init_timeout)
        proc = subprocess.Popen(command, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        pump = threading.Thread(target=_pump, args=(proc.stdout, f"[{i}] ", sink), daemon=True)
        pump.start()
        procs.append(proc)
        pumps.append(pump)
    status = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        pending = list(procs)
        while pending:
            for proc in list(pending):
                try:
                    rc = proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    continue
                pending.remove(proc)
                if rc and not status:
                    status = rc
                    for other in pending:  # a lone survivor would wait for its peers forever
                        other.terminate()
            if deadline is not None and pending and time.monotonic() > deadline:
                raise TimeoutError(f"processes still running after the time limit: {pending}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for pump in pumps:
            pump.join(timeout=5)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--num-processes", type=int, default=2)
    parser.add_argument("--cpu-devices", type=int, default=None,
                        help="fake CPU devices per process (CPU only); default: the real devices")
    parser.add_argument("--port", type=int, default=None, help="coordinator port (default: a free one)")
    parser.add_argument("--init-timeout", type=float, default=None, metavar="SECONDS",
                        help="start-up time limit of each process (sets JAXFORMER_INIT_TIMEOUT_S, "
                             "which a config's mesh.init_timeout_s overrides; default 120)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --, e.g. -- jaxformer train CONFIG")
    if args.num_processes < 1:
        parser.error("--num-processes must be at least 1")
    if args.init_timeout is not None and not args.init_timeout > 0:
        parser.error("--init-timeout must be positive (seconds)")
    return launch(command, args.num_processes, cpu_devices=args.cpu_devices, port=args.port,
                  init_timeout=args.init_timeout)


if __name__ == "__main__":
    sys.exit(main())
