"""The guards of one training run behind one object, so that the loop reads as training.

The loop asks it three things: ``checkpoint(step, save)`` (saves only while the run still holds
its workdir and the storage takes writes), ``stop_requested()`` after every call (SIGTERM or
Ctrl-C on any process, agreed by all) and ``check_finite(first_bad_step)`` whenever it reads the
metrics (a non-finite loss or parameter stops the run, naming the last good checkpoint). Entered,
it holds the workdir (``workdir_lease``) and turns a full or read-only disk met anywhere inside
into one message (``storage_faults``).
"""

import contextlib
from collections.abc import Callable

import jax

from resnet_jax import checkpointing
from resnet_jax.errors import DivergenceError
from resnet_jax.guards import preemption, storage_faults, workdir_lease


class RunGuards:
  """The lease, the storage, the stop and the divergence check of the run in ``workdir``."""

  def __init__(self, workdir: str, last_checkpoint: int | None = None):
    self.workdir = workdir
    self.last_checkpoint = last_checkpoint
    self._lease = self._stop = None
    self._stack = contextlib.ExitStack()

  def __enter__(self) -> 'RunGuards':
    self._stack.enter_context(storage_faults.stops_the_run(self.workdir))
    self._lease = self._stack.enter_context(workdir_lease.hold(self.workdir))
    storage_faults.check_room_for_a_checkpoint(self.workdir)
    return self

  def __exit__(self, *exc_info):
    if self._stop is not None:
      self._stop.restore()
    return self._stack.__exit__(*exc_info)

  def watch_for_stop_requests(self, mesh: jax.sharding.Mesh) -> None:
    """From now on SIGTERM and Ctrl-C ask for a stop that every process of ``mesh`` agrees on."""
    self._stop = preemption.StopRequest(mesh)

  def stop_requested(self) -> bool:
    """Called by every process at the end of every call: True at the call where all stop."""
    return self._stop is not None and self._stop.after_call()

  def checkpoint(self, step: int, save: Callable[[], None]) -> None:
    """Calls ``save`` where the run may still write: it holds the workdir, and its checkpoint
    directory takes writes (checked here, where orbax's threads would wait minutes on it)."""
    self._lease.check(step)
    storage_faults.check_checkpoints_writable(self.workdir)
    save()
    self.last_checkpoint = step

  def check_finite(self, first_bad_step: int | None, wait_for_saves: Callable[[], None]) -> None:
    """Raises ``DivergenceError`` where a step's loss or parameters were not finite, once the
    saves in flight are complete (``wait_for_saves``), naming the last good checkpoint."""
    if first_bad_step is None:
      return
    wait_for_saves()
    where = (f'the last good checkpoint, step {self.last_checkpoint}, is intact in '
             f'{checkpointing.checkpoint_dir(self.workdir)}' if self.last_checkpoint is not None
             else 'no checkpoint was written yet')
    raise DivergenceError(
        f'The training loss or parameters became non-finite at step {first_bad_step}; {where}. '
        'Lower optimizer.learning_rate or add warmup (optimizer.warmup_steps), then resume.')
