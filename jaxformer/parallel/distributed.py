"""Multi-process start-up: `jax.distributed.initialize`, once, before any computation.

- TPU pod slices, SLURM jobs (srun, one task per GPU or per node), Open MPI: JAX finds the
  coordinator, the process count and this process's id itself.
- Anywhere else (several processes on one machine, a hand-made cluster): set
  JAXFORMER_COORDINATOR_ADDRESS=host:port, JAXFORMER_NUM_PROCESSES=N and JAXFORMER_PROCESS_ID=i
  (JAX's own JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID work too), or pass them.
- A single process: nothing to do.

JAXFORMER_CPU_DEVICES=k makes each process expose k CPU devices (how the tests fake a multi-host
run on one machine); CPU collectives between processes go over gloo.

Start-up either succeeds or ends every process with one line naming the cause, within a time limit:
`mesh.init_timeout_s`, else JAXFORMER_INIT_TIMEOUT_S (`launch_local.py --init-timeout` sets it),
else 120 s. The coordinator's host is exempted from HTTP proxies (proxy.py); the processes report
to process 0 before JAX connects them (rollcall.py: a process missing, a port taken, a coordinator
unreachable, counts that disagree); JAX's own connection is then bounded too (watchdog.py).
"""

import os

import jax

from jaxformer.errors import ConfigError
from jaxformer.parallel import proxy, rollcall
from jaxformer.parallel.watchdog import call_within

ENV = {
    "coordinator_address": ("JAXFORMER_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS"),
    "num_processes": ("JAXFORMER_NUM_PROCESSES", "JAX_NUM_PROCESSES"),
    "process_id": ("JAXFORMER_PROCESS_ID", "JAX_PROCESS_ID"),
}
TIMEOUT_ENV = "JAXFORMER_INIT_TIMEOUT_S"
DEFAULT_INIT_TIMEOUT_S = 120.0
JAX_EXTRA_S = 60  # JAX's own time-out comes later than ours: our line, not XLA's abort, reports


def _from_env(name: str) -> str | None:
    for var in ENV[name]:
        if os.environ.get(var):
            return os.environ[var]
    return None


def cluster_detected() -> bool:
    """True inside a multi-process job that JAX can set itself up in (TPU pod, SLURM, Open MPI)."""
    env = os.environ
    tpu_hosts = env.get("TPU_WORKER_HOSTNAMES", "") or env.get("TPU_PROCESS_ADDRESSES", "")
    return ("," in tpu_hosts or "MEGASCALE_COORDINATOR_ADDRESS" in env
            or int(env.get("SLURM_NTASKS", "1") or 1) > 1
            or int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1)


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout_s: float | None = None) -> bool:
    """Join the multi-process run if there is one. Returns True if JAX is now distributed.
    `timeout_s`: the start-up time limit (None: $JAXFORMER_INIT_TIMEOUT_S or 120 s)."""
    if jax.distributed.is_initialized():
        return True
    coordinator_address = coordinator_address or _from_env("coordinator_address")
    num_processes = num_processes if num_processes is not None else _int_env("num_processes")
    process_id = process_id if process_id is not None else _int_env("process_id")
    timeout_s = init_timeout_s(timeout_s)
    if cpu_devices := os.environ.get("JAXFORMER_CPU_DEVICES"):
        jax.config.update("jax_num_cpu_devices", int(cpu_devices))
    local_device_ids = None
    explicit = (coordinator_address, num_processes, process_id)
    if all(v is None for v in explicit):
        if not cluster_detected():
            return False
        detected = _detect_cluster(timeout_s)
        if detected is None:  # JAX finds its peers itself, still within the time limit
            call_within(timeout_s, lambda: jax.distributed.initialize(
                initialization_timeout=int(timeout_s + JAX_EXTRA_S)),
                lambda: _undetected_failure(timeout_s))
            return True
        coordinator_address, num_processes, process_id, local_device_ids = detected
    elif any(v is None for v in explicit):
        raise ConfigError("multi-process run: set all three of JAXFORMER_COORDINATOR_ADDRESS "
                          "(host:port), JAXFORMER_NUM_PROCESSES and JAXFORMER_PROCESS_ID, or none")
    if num_processes == 1:
        return False
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ConfigError(f"process id {process_id} of {num_processes} processes: the count must "
                          f"be positive and the id in 0..count-1 (JAXFORMER_NUM_PROCESSES, "
                          f"JAXFORMER_PROCESS_ID)")
    if not coordinator_address.rpartition(":")[2].isdigit():
        raise ConfigError(f"coordinator address {coordinator_address!r} has no port: give "
                          f"JAXFORMER_COORDINATOR_ADDRESS as host:port")
    _join(coordinator_address, num_processes, process_id, local_device_ids, timeout_s)
    return True


def _join(address: str, num_processes: int, process_id: int, local_device_ids, timeout_s: float):
    proxy.exempt(proxy.coordinator_host(address))
    jax.config.update("jax_check_proxy_envs", False)  # its advice, unset the proxy, is moot now
    if process_id == 0:
        rollcall.gather(address, num_processes, timeout_s)
    else:
        rollcall.report(address, process_id, num_processes, timeout_s)
    # Every process is there now; JAX connecting them should take seconds.
    call_within(timeout_s, lambda: jax.distributed.initialize(
        address, num_processes, process_id, local_device_ids,
        initialization_timeout=int(timeout_s + JAX_EXTRA_S)),
        lambda: (f"process {process_id}: JAX did not connect to the coordinator {address} within "
                 f"{timeout_s:g} s, although every process had reported to it: one may have "
                 f"failed since (see the others' output){proxy.bypass_note()}"))


def init_timeout_s(configured: float | None = None) -> float:
    """The start-up time limit: `configured` (mesh.init_timeout_s), else $JAXFORMER_INIT_TIMEOUT_S,
    else DEFAULT_INIT_TIMEOUT_S."""
    source, value = "mesh.init_timeout_s", configured
    if value is None and os.environ.get(TIMEOUT_ENV):
        source, value = TIMEOUT_ENV, os.environ[TIMEOUT_ENV]
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{TIMEOUT_ENV}={value!r} is not a number of seconds") from None
    if value is None:
        return DEFAULT_INIT_TIMEOUT_S
    if not value > 0:
        raise ConfigError(f"{source} must be positive (seconds), got {value}")
    return float(value)


def _undetected_failure(timeout_s: float) -> str:
    proxies = proxy.proxies_set()  # the coordinator is unknown here, so not exempted
    hint = f"; a proxy is set ({proxies}): add the coordinator's host to no_proxy" if proxies else ""
    return f"JAX's distributed start-up did not finish within {timeout_s:g} s{hint}"


def _detect_cluster(timeout_s: float):
    """(coordinator address, process count, process id, local device ids) as JAX finds them in a
    TPU pod, SLURM or Open MPI job; None if JAX's detection (a private API) is not there."""
    try:
        from jax._src import clusters

        found = clusters.ClusterEnv.auto_detect_unset_distributed_params(
            None, None, None, None, None, int(timeout_s))
    except Exception:  # noqa: BLE001 -- then JAX detects them itself, in initialize()
        return None
    return found if None not in found[:3] else None


def _int_env(name: str) -> int | None:
    value = _from_env(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{ENV[name][0]}={value!r} is not an integer") from None


def is_main_process() -> bool:
    """Process 0 writes logs, metrics and plots; every process takes part in checkpoints."""
    return jax.process_index() == 0
