"""Multi-host start-up: one process per host, all joined through ``jax.distributed``."""

import os
from typing import Optional

import jax
from absl import logging


def launched_as_cluster() -> bool:
  """True when the environment describes a job of more than one process.

  Cloud TPU pods, SLURM and Open MPI announce themselves; ``jax.distributed.initialize()``
  then finds the coordinator and process ids on its own.
  """
  if os.environ.get('JAX_COORDINATOR_ADDRESS'):
    return True
  tpu_hosts = [h for h in os.environ.get('TPU_WORKER_HOSTNAMES', '').split(',') if h]
  sizes = (os.environ.get(v) or '1' for v in ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'))
  return len(tpu_hosts) > 1 or any(int(size) > 1 for size in sizes)


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> None:
  """Joins the processes of a multi-host job; does nothing for a single process.

  Explicit arguments (e.g. ``127.0.0.1:1234``, 2, 0) serve clusters JAX cannot detect; CPU
  processes then exchange collectives through gloo.
  """
  if coordinator_address or launched_as_cluster():
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  logging.info('Process %d of %d; %d local and %d global devices (%s).', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)
