"""Orbax checkpoints of a run: ``workdir/checkpoints/<step>/{model, opt_state, progress}``.

Three items per step, so a notebook restores ``model`` (params and batch_stats) without building
optimizer state, and the training loop restores all three:

* ``model``: ``{'params', 'batch_stats'}``;
* ``opt_state``: the optax state;
* ``progress``: JSON ``{'step', 'data_position'}``: the next global step and the index of the
  next input batch, from which the input pipeline resumes exactly.
"""

import os
from typing import Any, Optional

import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
from absl import logging

from resnet_jax import workdirs
from resnet_jax.steps import TrainState

class CheckpointError(RuntimeError):
  """No usable checkpoint where one was expected, or one that does not fit this run."""


def checkpoint_dir(workdir: str) -> str:
  return os.fspath(workdirs.path(workdir) / 'checkpoints')


def has_checkpoints(workdir) -> bool:
  """Whether ``workdir`` has a checkpoints directory (a run was started there)."""
  return workdirs.path(checkpoint_dir(workdir)).is_dir()


def create_manager(workdir: str, keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
  """A manager of ``workdir/checkpoints`` keeping the last ``keep`` steps."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=None if read_only else keep, save_interval_steps=0 if read_only else 1,
      create=not read_only, read_only=read_only)
  handlers = {'model': ocp.StandardCheckpointHandler(),
              'opt_state': ocp.StandardCheckpointHandler(),
              'progress': ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_handlers=handlers)


def save(manager: ocp.CheckpointManager, state: TrainState, data_position: int) -> None:
  """Saves ``state`` at its step (asynchronously; ``manager.wait_until_finished`` to block)."""
  step = int(state.step)
  manager.save(step, args=ocp.args.Composite(
      model=ocp.args.StandardSave(state.variables),
      opt_state=ocp.args.StandardSave(state.opt_state),
      progress=ocp.args.JsonSave({'step': step, 'data_position': int(data_position)}),
  ), force=True)


def _restore_step(manager, step: int, abstract_state: TrainState):
  restored = manager.restore(step, args=ocp.args.Composite(
      model=ocp.args.StandardRestore(abstract_state.variables),
      opt_state=ocp.args.StandardRestore(abstract_state.opt_state),
      progress=ocp.args.JsonRestore(),
  ))
  model, progress = restored['model'], restored['progress']
  state = abstract_state.replace(
      step=jax.device_put(progress['step'], abstract_state.step.sharding),
      params=model['params'], batch_stats=model['batch_stats'],
      opt_state=restored['opt_state'])
  return state, progress


def restore_latest(manager: ocp.CheckpointManager,
                   abstract_state: TrainState) -> Optional[tuple[TrainState, dict]]:
  """Restores the newest readable checkpoint onto the abstract state's shardings.

  Returns ``(state, progress)``, or None when the workdir has no checkpoint. A newer checkpoint
  that cannot be read (truncated, partly written) is moved to ``workdir/unreadable_checkpoints``
  with a warning, and the one before it is restored; if none can be read this raises, so a run
  never silently starts from scratch over its own history.
  """
  failures = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = _restore_step(manager, step, abstract_state)
    except Exception as error:  # pylint: disable=broad-except
      logging.warning('The checkpoint at step %d cannot be restored (%s: %s); trying an older '
                      'one.', step, type(error).__name__, error)
      failures.append((step, f'{type(error).__name__}: {error}'))
      continue
    _set_aside(manager, [s for s, _ in failures])
    return restored
  if failures:
    raise CheckpointError(
        f'None of the checkpoints in {manager.directory} can be restored:\n  '
        + '\n  '.join(f'step {s}: {why}' for s, why in failures)
        + '\nMove the directory away to start afresh, or point --workdir elsewhere.')
  return None


def _set_aside(manager: ocp.CheckpointManager, steps) -> None:
  """Moves unreadable checkpoints out of the way (kept for inspection) so training can go on."""
  if not steps:
    return
  if jax.process_index() == 0:
    directory = workdirs.path(manager.directory)
    aside = directory.parent / 'unreadable_checkpoints'
    aside.mkdir(parents=True, exist_ok=True)
    for step in steps:
      target = aside / str(step)
      (directory / str(step)).rename(
          target if not target.exists() else aside / f'{step}.{os.getpid()}')
      logging.warning('Moved the unreadable checkpoint of step %d to %s.', step, aside)
  multihost_utils.sync_global_devices('set aside unreadable checkpoints')
  manager.reload()


def restore_variables(workdir: str, step: Optional[int] = None,
                      abstract_variables: Any = None) -> tuple[dict, int]:
  """Restores only ``{'params', 'batch_stats'}`` of ``step`` (default: the latest).

  Arrays land on this process's default device unless ``abstract_variables`` (a pytree of
  ``jax.ShapeDtypeStruct`` with shardings) says otherwise, so a run trained on many
  accelerators loads on one CPU.
  """
  if not has_checkpoints(workdir):
    raise CheckpointError(f'No checkpoints in {workdir!r}: {checkpoint_dir(workdir)} does not '
                          'exist. Train first, or check the path.')
  manager = create_manager(workdir, read_only=True)
  steps = list(manager.all_steps())
  if not steps:
    raise CheckpointError(f'{checkpoint_dir(workdir)} holds no finished checkpoint.')
  step = max(steps) if step is None else step
  if step not in steps:
    raise CheckpointError(f'No checkpoint at step {step} in {workdir!r}; it has steps '
                          f'{sorted(steps)}.')
  if abstract_variables is None:
    metadata = manager.item_metadata(step)['model']
    device = jax.local_devices()[0]
    abstract_variables = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype,
                                       sharding=jax.sharding.SingleDeviceSharding(device)),
        metadata)
  restored = manager.restore(step, args=ocp.args.Composite(
      model=ocp.args.StandardRestore(abstract_variables)))
  manager.close()
  return restored['model'], step
