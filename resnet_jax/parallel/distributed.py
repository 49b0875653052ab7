"""Multi-host start-up: one process per host, all joined through ``jax.distributed``.

JAX detects the clusters it knows (Cloud TPU VMs and GKE, SLURM, Open MPI, Kubernetes) by itself;
on a plain machine it finds none, without any network call, and the run is one process.
"""

import collections

import jax
from absl import logging

from resnet_jax import library_logs


def describe_backend() -> str:
  """The platform and devices of the job, e.g. 'Backend gpu: 8 x NVIDIA H100 80GB HBM3 (8 local,
  1 process)'."""
  kinds = collections.Counter(device.device_kind for device in jax.devices())
  processes = jax.process_count()
  return (f'Backend {jax.default_backend()}: '
          + ', '.join(f'{count} x {kind}' for kind, count in kinds.items())
          + f' ({jax.local_device_count()} local, {processes} '
          + ('process)' if processes == 1 else 'processes)'))


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Joins the processes of a multi-host job; a single process where no cluster is detected.

  Explicit arguments (e.g. ``127.0.0.1:1234``, 2, 0) serve clusters JAX cannot detect; CPU
  processes exchange collectives through gloo. Logs the backend first (``describe_backend``).
  """
  library_logs.use_cpu_without_accelerators()
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  # The run agrees on its own stop (``preemption``); JAX's sync point would catch SIGTERM in
  # its place and count in a counter that orbax moves too.
  jax.config.update('jax_enable_preemption_service', False)
  explicit = (coordinator_address, num_processes, process_id) != (None, None, None)
  no_cluster = None
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  except ValueError as error:
    # With no arguments and no cluster detected, JAX has no coordinator address: one process.
    if explicit or 'coordinator_address' not in str(error):
      raise
    no_cluster = error
  logging.info('%s.', describe_backend())
  if no_cluster is not None:
    logging.info('No multi-host cluster detected (%s); running as one process.', no_cluster)
  if jax.process_count() == 1:
    return
  logging.info('Process %d of %d; %d local and %d global devices (%s).', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)
