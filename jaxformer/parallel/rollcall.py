"""The roll call before `jax.distributed.initialize`: every process reports to process 0 over plain
TCP on the coordinator's port, so that a run that cannot start ends with one line naming the cause.

JAX gives no such answer: when its connection fails or a process never comes, the C++ side ends
the process (LOG(FATAL), a stack trace) after its time-out, without naming the process or the
reason. Here process 0 listens on the coordinator's port (a port already taken fails at once);
the others connect, retrying until the time is up, and send their id and process count; process 0
answers "go" once all have come, or an error naming who never came or who disagrees. Then the port
is free again for JAX's coordination service, which every process joins knowing that the others
are there. The connection is plain TCP, made by this module: no proxy is involved.
"""

import errno
import socket
import time

from jaxformer.errors import StartupError
from jaxformer.parallel.proxy import bypass_note

MAGIC = "jaxformer-rollcall/1"
REPLY_GRACE_S = 5.0  # process 0 answers within its own time limit, which began before ours


def gather(address: str, num_processes: int, timeout_s: float) -> None:
    """Process 0: wait up to `timeout_s` for processes 1..N-1 to report, then let them all go."""
    port = int(address.rsplit(":", 1)[1])
    listener = _listen(port)
    deadline = time.monotonic() + timeout_s
    joined: dict[int, socket.socket] = {}
    try:
        with listener:
            while len(joined) < num_processes - 1:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = sorted(set(range(1, num_processes)) - set(joined))
                    _fail(joined.values(), _missing_message(missing, num_processes, address,
                                                            timeout_s))
                listener.settimeout(remaining)
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                hello = _read_line(conn, min(remaining, REPLY_GRACE_S))
                reported = _parse_hello(hello)
                if reported is None:  # not one of ours (a port scanner, a stray client)
                    conn.close()
                    continue
                problem = _disagreement(*reported, num_processes, joined)
                if problem:
                    _fail([*joined.values(), conn], problem)
                joined[reported[0]] = conn
        # The listener is closed before anyone goes on, so that no JAX connection lands in it.
        for conn in joined.values():
            _send_if_there(conn, "go")  # one gone since is JAX's to miss, and the watchdog's
        for conn in joined.values():  # they close first: the port is left without TIME_WAITs
            _read_line(conn, REPLY_GRACE_S)
    finally:
        for conn in joined.values():
            conn.close()


def report(address: str, process_id: int, num_processes: int, timeout_s: float) -> None:
    """Process 1..N-1: report to process 0 and wait for its answer."""
    host, port = address.rsplit(":", 1)
    host = host.strip("[]")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn = socket.create_connection((host, int(port)),
                                            timeout=max(0.1, min(deadline - time.monotonic(), 5)))
            break
        except OSError as e:
            if time.monotonic() >= deadline:
                raise StartupError(_unreachable_message(address, timeout_s, e)) from None
            time.sleep(0.2)
    with conn:
        _send_if_there(conn, f"{MAGIC} process={process_id} of={num_processes}")
        answer = _read_line(conn, timeout_s + REPLY_GRACE_S)
    if answer == "go":
        return
    if answer.startswith("error "):
        raise StartupError(answer.removeprefix("error "))
    if answer:
        raise StartupError(f"{address} answered, but not as process 0 of this run: another program "
                           f"holds that port; choose a free port for the coordinator")
    raise StartupError(f"the coordinator {address} gave no answer: process 0 stopped (see its "
                       f"output), or another program holds that port")


def _listen(port: int) -> socket.socket:
    """Listen on every interface, as JAX's coordination service will ([::]:port)."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        bind_to = ("::", port)
    except OSError:  # no IPv6 on this machine
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        bind_to = ("", port)
    # Not SO_REUSEPORT: a second listener (another run's coordinator) must make bind fail.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(bind_to)
        sock.listen(128)
    except OSError as e:
        sock.close()
        problem = ("is already in use on this machine (another run or program holds it)"
                   if e.errno == errno.EADDRINUSE else f"cannot be listened on ({e.strerror})")
        raise StartupError(f"the coordinator's port {port} {problem}: choose a free port "
                           f"(JAXFORMER_COORDINATOR_ADDRESS=host:PORT, launch_local.py --port)"
                           ) from None
    return sock


def _parse_hello(line: str) -> tuple[int, int] | None:
    fields = line.split()
    if len(fields) != 3 or fields[0] != MAGIC:
        return None
    try:
        values = dict(field.split("=", 1) for field in fields[1:])
        return int(values["process"]), int(values["of"])
    except (KeyError, ValueError):
        return None


def _disagreement(process_id: int, count: int, num_processes: int, joined) -> str | None:
    if count != num_processes:
        return (f"the processes disagree on their number: process 0 was started with "
                f"{num_processes}, process {process_id} with {count}; give every process the same "
                f"JAXFORMER_NUM_PROCESSES")
    if not 0 < process_id < num_processes:
        return (f"a process reported id {process_id}, outside 1..{num_processes - 1} of a run of "
                f"{num_processes}: give each process its own JAXFORMER_PROCESS_ID, "
                f"0..{num_processes - 1}")
    if process_id in joined:
        return (f"two processes reported id {process_id}: give each process its own "
                f"JAXFORMER_PROCESS_ID, 0..{num_processes - 1}")
    return None


def _missing_message(missing: list[int], num_processes: int, address: str, timeout_s: float) -> str:
    who = f"process {missing[0]}" if len(missing) == 1 else f"processes {_ids(missing)}"
    return (f"{who} of {num_processes} never reached the coordinator {address} within "
            f"{timeout_s:g} s: start {'it' if len(missing) == 1 else 'them'} with the same command "
            f"(JAXFORMER_PROCESS_ID={_ids(missing)}), or allow more time (mesh.init_timeout_s, "
            f"launch_local.py --init-timeout)")


def _unreachable_message(address: str, timeout_s: float, error: OSError) -> str:
    reason = ("connection refused" if isinstance(error, ConnectionRefusedError)
              else "host name not found" if isinstance(error, socket.gaierror)
              else "no answer" if isinstance(error, TimeoutError) else error.strerror or str(error))
    return (f"coordinator {address} unreachable after {timeout_s:g} s ({reason}): start process 0 "
            f"on that host, or fix the address (JAXFORMER_COORDINATOR_ADDRESS) or a firewall in "
            f"the way{bypass_note()}")


def _ids(ids: list[int]) -> str:
    return ",".join(map(str, ids))


def _fail(conns, message: str):
    for conn in conns:  # the others learn why, and end with the same line
        _send_if_there(conn, f"error {message}")
    raise StartupError(message)


def _send(conn: socket.socket, line: str) -> None:
    conn.sendall(line.encode() + b"\n")


def _send_if_there(conn: socket.socket, line: str) -> None:
    try:
        _send(conn, line)
    except OSError:  # that process has gone
        pass


def _read_line(conn: socket.socket, timeout_s: float) -> str:
    """One line from `conn`; what came before EOF or the time-out, if no newline did."""
    conn.settimeout(max(timeout_s, 0.01))
    data = b""
    try:
        while b"\n" not in data and len(data) < 4096:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:  # timed out or reset: what came so far
        pass
    return data.split(b"\n", 1)[0].decode(errors="replace").strip()
