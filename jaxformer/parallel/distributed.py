"""Multi-process start-up: `jax.distributed.initialize`, once, before any computation.

- TPU pod slices, SLURM jobs (srun, one task per GPU or per node), Open MPI: JAX finds the
  coordinator, the process count and this process's id itself.
- Anywhere else (several processes on one machine, a hand-made cluster): set
  JAXFORMER_COORDINATOR_ADDRESS=host:port, JAXFORMER_NUM_PROCESSES=N and JAXFORMER_PROCESS_ID=i
  (JAX's own JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID work too), or pass them.
- A single process: nothing to do.

JAXFORMER_CPU_DEVICES=k makes each process expose k CPU devices (how the tests fake a multi-host
run on one machine); CPU collectives between processes go over gloo.
"""

import os

import jax

from jaxformer.errors import ConfigError

ENV = {
    "coordinator_address": ("JAXFORMER_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS"),
    "num_processes": ("JAXFORMER_NUM_PROCESSES", "JAX_NUM_PROCESSES"),
    "process_id": ("JAXFORMER_PROCESS_ID", "JAX_PROCESS_ID"),
}


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
               process_id: int | None = None) -> bool:
    """Join the multi-process run if there is one. Returns True if JAX is now distributed."""
    if jax.distributed.is_initialized():
        return True
    coordinator_address = coordinator_address or _from_env("coordinator_address")
    num_processes = num_processes if num_processes is not None else _int_env("num_processes")
    process_id = process_id if process_id is not None else _int_env("process_id")
    if cpu_devices := os.environ.get("JAXFORMER_CPU_DEVICES"):
        jax.config.update("jax_num_cpu_devices", int(cpu_devices))
    explicit = (coordinator_address, num_processes, process_id)
    if all(v is None for v in explicit):
        if not cluster_detected():
            return False
        jax.distributed.initialize()  # JAX reads the cluster's own environment
        return True
    if any(v is None for v in explicit):
        raise ConfigError("multi-process run: set all three of JAXFORMER_COORDINATOR_ADDRESS "
                          "(host:port), JAXFORMER_NUM_PROCESSES and JAXFORMER_PROCESS_ID, or none")
    if num_processes == 1:
        return False
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return True


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
