"""A stop that every process of a run agrees on: SIGTERM or Ctrl-C checkpoints, then exits.

Preemption (cloud VMs, TPU maintenance, SLURM's requeue and time limit) sends SIGTERM to one
process or to all of them, at different moments. Each process keeps its own flag, set by its
signal handler, and at the end of every call each process contributes its flag to one max over
all devices (an all-reduce the loop dispatches after the call, like the call itself). The loop
reads the agreed value of the previous call, not of this one, so reading it never waits for the
call just dispatched; every process reads the same value after the same call, so all stop there
and save one checkpoint, one or two calls after the first signal.

The decision depends on nothing another library keeps: JAX's own preemption sync point counts
calls in a counter that orbax's ``CheckpointManager`` also moves (with step numbers), so a stop
based on it can come many calls late or never; ``parallel.distributed.initialize`` switches that
service off.

Ctrl-C (SIGINT) asks for the same stop; a second Ctrl-C exits at once, as an unhandled one would
(the complete checkpoints stay as they are).
"""

import signal
import threading

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from resnet_jax.parallel import sharding

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
  """Whether a signal asks the run to checkpoint and stop, agreed by every process.

  Handlers are installed from the main thread (elsewhere Python cannot install them, and the
  run has no stop); ``restore()`` puts the previous ones back.
  """

  def __init__(self, mesh: jax.sharding.Mesh):
    self._requested = threading.Event()
    self._previous = {}
    self._mesh = mesh
    self._agreed_before = None  # The agreed flag of the previous call, not read yet.
    if jax.process_count() > 1:
      self._agree = jax.jit(jnp.max, out_shardings=sharding.replicated(mesh))
    if threading.current_thread() is threading.main_thread():
      for signum in SIGNALS:
        self._previous[signum] = signal.signal(signum, self._on_signal)

  def _on_signal(self, signum, _):
    name = signal.Signals(signum).name
    if signum == signal.SIGINT and self._requested.is_set():
      signal.signal(signal.SIGINT, signal.SIG_DFL)
      signal.raise_signal(signal.SIGINT)  # The second Ctrl-C: stop at once.
    logging.warning('%s received: the run saves a checkpoint at the end of this call and stops%s.',
                    name, ' (Ctrl-C again stops at once, without it)'
                    if signum == signal.SIGINT else '')
    self._requested.set()

  def request(self) -> None:
    """Asks for the stop, as a signal does."""
    self._requested.set()

  def after_call(self) -> bool:
    """Called by every process at the end of every call; True at the call where all stop."""
    if jax.process_count() == 1:
      return self._requested.is_set()
    flags = np.full(len(self._mesh.local_devices), int(self._requested.is_set()), np.int32)
    agreed_now = self._agree(jax.make_array_from_process_local_data(
        sharding.batch_sharding(self._mesh), flags))
    agreed_before, self._agreed_before = self._agreed_before, agreed_now
    return agreed_before is not None and bool(agreed_before)

  def restore(self) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}
