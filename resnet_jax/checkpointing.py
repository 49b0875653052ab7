"""Orbax checkpoints of a run: ``workdir/checkpoints/<step>/{model, opt_state, progress}``, and
``ema`` where the run averages its weights.

Items per step, so a notebook restores ``model`` (params and batch_stats) without building
optimizer state, and the training loop restores them all:

* ``model``: ``{'params', 'batch_stats'}``;
* ``opt_state``: the optax state;
* ``ema``: the weights' moving average ``{'params', 'batch_stats'}`` (``resnet_jax.ema``), only
  in the checkpoints of a run with ``ema.decay`` > 0;
* ``progress``: JSON ``{'step', 'data_position', 'num_shards'}``: the next global step, the
  index of the next input batch and the number of data shards the train split was read in,
  from which the input pipeline resumes exactly (``run_plan.resolve`` keeps the shards).

A checkpoint holds the net's variables in the layout it was trained with (a stage's blocks one
module each, or stacked: ``models.layouts``); it is read in that layout and handed over in the
run's.
"""

import enum
import os
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from resnet_jax import ema, models, read_errors, workdirs
from resnet_jax.errors import CheckpointError
from resnet_jax.steps import TrainState


def checkpoint_dir(workdir: str) -> str:
  return os.fspath(workdirs.path(workdir) / 'checkpoints')


def has_checkpoints(workdir) -> bool:
  """Whether ``workdir`` has a checkpoints directory (a run was started there)."""
  return workdirs.path(checkpoint_dir(workdir)).is_dir()


# What orbax appends to a step's directory until the checkpoint is complete (local filesystems).
UNFINISHED_SUFFIX = '.orbax-checkpoint-tmp'


def create_manager(workdir: str, keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
  """A manager of ``workdir/checkpoints`` keeping the last ``keep`` steps.

  A writing manager first removes the checkpoints a save left unfinished (a kill, a full disk):
  call it only while holding the workdir (``guards.workdir_lease``), or it could remove a live
  run's.
  """
  if not read_only and jax.process_index() == 0 and has_checkpoints(workdir):
    for unfinished in workdirs.path(checkpoint_dir(workdir)).glob(f'*{UNFINISHED_SUFFIX}*'):
      logging.warning('Removing the unfinished checkpoint %s (a save that did not complete).',
                      unfinished)
  options = ocp.CheckpointManagerOptions(
      preservation_policy=None if read_only else ocp.checkpoint_managers.LatestN(n=keep),
      save_interval_steps=0 if read_only else 1, create=not read_only, read_only=read_only,
      cleanup_tmp_directories=not read_only)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               handler_registry=_handler_registry())


# The item of each choice of weights (``ema.WEIGHTS``).
EMA_ITEM = 'ema'
WEIGHTS_ITEMS = dict(zip(ema.WEIGHTS, ('model', EMA_ITEM)))


def _handler_registry() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
  """The handler of each item, for saving and for restoring it."""
  registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
  for item, handler, save_args, restore_args in (
      ('model', ocp.StandardCheckpointHandler(), ocp.args.StandardSave, ocp.args.StandardRestore),
      ('opt_state', ocp.StandardCheckpointHandler(), ocp.args.StandardSave,
       ocp.args.StandardRestore),
      (EMA_ITEM, ocp.StandardCheckpointHandler(), ocp.args.StandardSave,
       ocp.args.StandardRestore),
      ('progress', ocp.JsonCheckpointHandler(), ocp.args.JsonSave, ocp.args.JsonRestore)):
    registry.add(item, save_args, handler)
    registry.add(item, restore_args, handler)
  return registry


def save(manager: ocp.CheckpointManager, state: TrainState, data_position: int,
         num_shards: int) -> None:
  """Saves ``state`` at its step (asynchronously; ``manager.wait_until_finished`` to block)."""
  step = int(state.step)
  averaged = {} if state.ema is None else {EMA_ITEM: ocp.args.StandardSave(state.ema)}
  manager.save(step, args=ocp.args.Composite(
      model=ocp.args.StandardSave(state.variables),
      opt_state=ocp.args.StandardSave(state.opt_state),
      progress=ocp.args.JsonSave({'step': step, 'data_position': int(data_position),
                                  'num_shards': int(num_shards)}),
      **averaged,
  ), force=True)


# --------------------------------------------------------------------------------------------
# Restoring the latest checkpoint, agreed by every process.
#
# Each process reads the checkpoint on its own (a process-local read has no collective inside,
# so one process failing cannot leave the others waiting in orbax's barriers), then one
# all-gather of the outcomes decides for all: restore it, set it aside, or stop.
# --------------------------------------------------------------------------------------------

# Waits before the retries of a transient read error (a GCS 503, a timeout): 4 tries in all.
RETRY_DELAYS_S = (1.0, 2.0, 4.0)
class Outcome(enum.IntEnum):
  """What one process found when it read a checkpoint (larger values take precedence)."""
  READ = 0
  DAMAGED = 1      # Files truncated, missing or unparsable: set it aside, try the one before.
  MISMATCH = 2     # Readable, but another network's: a user error; move nothing.
  UNREADABLE = 3   # Transient errors past every retry, or an error of unknown meaning.


class _ModelMismatch(ValueError):
  """The checkpoint holds another network's variables, or lacks the run's weight average."""


def model_mismatch(saved_model, abstract_model) -> list[str]:
  """Where the saved ``{'params', 'batch_stats'}`` differ from this run's: paths and shapes."""
  def shapes(tree):
    return {jax.tree_util.keystr(path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
  saved, expected = shapes(saved_model), shapes(abstract_model)
  return ([f'{k}: in the checkpoint, not in this model' for k in sorted(saved.keys() - expected)]
          + [f'{k}: in this model, not in the checkpoint' for k in sorted(expected.keys() - saved)]
          + [f'{k}: shape {saved[k]} in the checkpoint, {expected[k]} in this model'
             for k in sorted(saved.keys() & expected) if saved[k] != expected[k]])


def _local_reader(directory) -> ocp.CheckpointManager:
  """A read-only manager of this process alone: its reads wait on no other process."""
  here = jax.process_index()
  return ocp.CheckpointManager(directory, handler_registry=_handler_registry(), options=(
      ocp.CheckpointManagerOptions(read_only=True, multiprocessing_options=(
          ocp.options.MultiprocessingOptions(primary_host=here, active_processes={here})))))


def read_step(reader: ocp.CheckpointManager, step: int, abstract_state: TrainState):
  """This process's read of ``step``: ``(state, progress)`` in host-local arrays.

  The seam where tests inject a fault for one process.
  """
  metadata = reader.item_metadata(step)
  saved_model = metadata['model']
  run_layout = models.stacked_stages(abstract_state.variables)
  abstract_state = models.to_layout(abstract_state, models.stacked_stages(saved_model))
  mismatch = model_mismatch(saved_model, abstract_state.variables)
  if mismatch:
    raise _ModelMismatch('the checkpoint holds a different network:\n    '
                         + '\n    '.join(mismatch))
  if abstract_state.ema is not None and EMA_ITEM not in metadata:
    raise _ModelMismatch('this run averages its weights (ema.decay > 0), but the checkpoint '
                         'holds no average (its run had ema.decay=0)')
  if abstract_state.ema is None and EMA_ITEM in metadata:
    logging.warning('The checkpoint at step %d holds a weight average, which this run '
                    '(ema.decay=0) neither restores nor keeps.', step)
  local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  to_local = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=local)
  averaged = {} if abstract_state.ema is None else {
      EMA_ITEM: ocp.args.StandardRestore(jax.tree.map(to_local, abstract_state.ema))}
  restored = reader.restore(step, args=ocp.args.Composite(
      model=ocp.args.StandardRestore(jax.tree.map(to_local, abstract_state.variables)),
      opt_state=ocp.args.StandardRestore(jax.tree.map(to_local, abstract_state.opt_state)),
      progress=ocp.args.JsonRestore(),
      **averaged,
  ))
  model, progress = restored['model'], restored['progress']
  state = TrainState(step=np.int32(progress['step']), params=model['params'],
                     batch_stats=model['batch_stats'], opt_state=restored['opt_state'],
                     ema=restored[EMA_ITEM] if averaged else None)
  return models.to_layout(state, run_layout), progress


def _try_read(reader, step: int, abstract_state: TrainState):
  """``(Outcome, result or error text)``: one process's read, retrying transient errors."""
  for delay in (*RETRY_DELAYS_S, None):
    try:
      return Outcome.READ, read_step(reader, step, abstract_state)
    except _ModelMismatch as error:
      return Outcome.MISMATCH, str(error)
    except Exception as error:  # pylint: disable=broad-except
      kind, why = read_errors.classify(error), read_errors.describe(error)
      if kind == 'damaged':
        return Outcome.DAMAGED, why
      if kind == 'unknown' or delay is None:
        return Outcome.UNREADABLE, why
      logging.warning('Reading the checkpoint at step %d failed (%s); retrying in %.0f s.',
                      step, why, delay)
      time.sleep(delay)


def _all_outcomes(outcome: Outcome) -> np.ndarray:
  """Every process's outcome, in process order (one all-gather)."""
  if jax.process_count() == 1:
    return np.array([int(outcome)])
  return np.asarray(multihost_utils.process_allgather(np.array([int(outcome)]))).reshape(-1)


def _agreed_steps(manager: ocp.CheckpointManager) -> list[int]:
  """Process 0's list of steps, newest first, so every process tries the same steps."""
  steps = sorted(manager.all_steps(), reverse=True)
  if jax.process_count() == 1:
    return steps
  count = int(multihost_utils.broadcast_one_to_all(np.int32(len(steps))))
  if not count:
    return []
  padded = np.full(count, -1, np.int64)
  padded[:min(count, len(steps))] = steps[:count]
  return [int(s) for s in multihost_utils.broadcast_one_to_all(padded)]


def restore_latest(manager: ocp.CheckpointManager,
                   abstract_state: TrainState) -> tuple[TrainState, dict] | None:
  """Restores the newest checkpoint every process can read, onto the abstract state's shardings.

  Returns ``(state, progress)``, or None when the workdir has no checkpoint. All processes agree
  on each decision: a checkpoint damaged for any of them (truncated, missing or unparsable files)
  is moved to ``workdir/unreadable_checkpoints`` and the one before it tried; transient read
  errors are retried (``RETRY_DELAYS_S``) and then stop the run, as does a checkpoint of a
  different network or an error of unknown meaning, with every checkpoint left in place. If no
  checkpoint can be read this raises, so a run never silently starts over its own history.
  """
  reader = _local_reader(manager.directory)
  damaged = []
  try:
    for step in _agreed_steps(manager):
      outcome, result = _try_read(reader, step, abstract_state)
      outcomes = _all_outcomes(outcome)
      if outcomes.max() == Outcome.READ:
        _set_aside(manager, [s for s, _ in damaged])
        state, progress = result
        # Every process read the same values: each contributes them to its own devices.
        return jax.tree.map(lambda x, a: jax.make_array_from_process_local_data(
            a.sharding, np.asarray(x)), state, abstract_state), progress
      where = _describe(outcomes)
      if outcome != Outcome.READ:
        logging.warning('This process cannot read the checkpoint at step %d (%s).', step, result)
      if outcomes.max() == Outcome.MISMATCH:
        raise CheckpointError(
            f'The checkpoint at step {step} in {manager.directory} does not fit this run '
            f'({where}){": " + result if outcome == Outcome.MISMATCH else ""}.\nNothing was '
            'moved. Train this network in another --workdir, or restore the config the '
            'checkpoints were written with (its config.json).')
      if outcomes.max() == Outcome.UNREADABLE:
        raise CheckpointError(
            f'The checkpoint at step {step} in {manager.directory} could not be read ({where})'
            f'{": " + result if outcome == Outcome.UNREADABLE else ""}.\nEvery checkpoint was '
            'left in place. If the storage is unavailable, run again later; otherwise inspect '
            'the files.')
      damaged.append((step, f'{where}' + (f': {result}' if outcome == Outcome.DAMAGED else '')))
      logging.warning('The checkpoint at step %d cannot be restored (%s); trying an older one.',
                      step, where)
  finally:
    reader.close()
  if damaged:
    raise CheckpointError(
        f'None of the checkpoints in {manager.directory} can be restored:\n  '
        + '\n  '.join(f'step {s}: {why}' for s, why in damaged)
        + '\nMove the directory away to start afresh, or point --workdir elsewhere.')
  return None


def recorded_num_shards(workdir: str) -> int | None:
  """The data shards the newest checkpoint in ``workdir`` was written with (the same in every
  process); None without checkpoints.

  Read before the run is built, from the ``progress`` item alone. A damaged item gives way to
  the step before, as in ``restore_latest``; any other read error stops the run.
  """
  if not has_checkpoints(workdir):
    return None
  reader = _local_reader(checkpoint_dir(workdir))
  try:
    for step in _agreed_steps(reader):
      try:
        progress = reader.restore(step, args=ocp.args.Composite(
            progress=ocp.args.JsonRestore()))['progress']
      except Exception as error:  # pylint: disable=broad-except
        if read_errors.classify(error) != 'damaged':
          raise CheckpointError(
              f'Reading the progress of the checkpoint at step {step} in {reader.directory} '
              f'failed ({read_errors.describe(error)}). If the storage is unavailable, run '
              'again later; otherwise inspect the files.') from error
        logging.warning('The progress of the checkpoint at step %d is damaged; reading the '
                        'one before.', step)
        continue
      return progress['num_shards']
  finally:
    reader.close()
  return None


def _describe(outcomes: np.ndarray) -> str:
  """Which processes found what, e.g. 'process 2 of 4: damaged'."""
  if len(outcomes) == 1:
    return Outcome(outcomes[0]).name.lower()
  found = {}
  for process, outcome in enumerate(outcomes):
    found.setdefault(Outcome(outcome).name.lower(), []).append(str(process))
  return '; '.join(f'process {", ".join(ps)} of {len(outcomes)}: {name}'
                   for name, ps in found.items() if name != 'read')


def _set_aside(manager: ocp.CheckpointManager, steps) -> None:
  """Moves damaged checkpoints out of the way (kept for inspection) so training can go on."""
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
      logging.warning('Moved the damaged checkpoint of step %d to %s.', step, aside)
  multihost_utils.sync_global_devices('set aside unreadable checkpoints')
  manager.reload()


def restore_variables(workdir: str, step: int | None = None, abstract_variables: Any = None,
                      weights: str = 'raw') -> tuple[dict, int]:
  """Restores only ``{'params', 'batch_stats'}`` of ``step`` (default: the newest readable one):
  the trained weights (``weights='raw'``) or their moving average (``'ema'``, ``resnet_jax.ema``;
  an error where the run kept none).

  Arrays land on this process's default device unless ``abstract_variables`` (a pytree of
  ``jax.ShapeDtypeStruct`` with shardings) says otherwise, so a run trained on many
  accelerators loads on one CPU; they come in the checkpoint's layout, or in that of
  ``abstract_variables`` where given. The read is this process's own (no other process waits on
  it) and moves nothing: without ``step``, a damaged newest checkpoint gives way, with a warning
  that names it, to the newest one that reads; a damaged ``step`` asked for is an error.
  """
  if not has_checkpoints(workdir):
    raise CheckpointError(f'No checkpoints in {workdir!r}: {checkpoint_dir(workdir)} does not '
                          'exist. Train first, or check the path.')
  manager = _local_reader(checkpoint_dir(workdir))
  try:
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
      raise CheckpointError(f'{checkpoint_dir(workdir)} holds no finished checkpoint.')
    if step is not None and step not in steps:
      raise CheckpointError(f'No checkpoint at step {step} in {workdir!r}; it has steps '
                            f'{sorted(steps)}.')
    if weights not in WEIGHTS_ITEMS:
      raise ValueError(f'weights={weights!r}: choose one of {", ".join(map(repr, ema.WEIGHTS))}.')
    damaged = []
    for candidate in [step] if step is not None else steps:
      try:
        variables = _read_variables(manager, candidate, abstract_variables,
                                    WEIGHTS_ITEMS[weights])
      except Exception as error:  # pylint: disable=broad-except
        if read_errors.classify(error) != 'damaged':
          raise
        damaged.append(f'step {candidate}: {read_errors.describe(error)}')
        continue
      if damaged:
        logging.warning('Read the checkpoint at step %d of %s; newer ones are damaged (%s).',
                        candidate, workdir, '; '.join(damaged))
      return variables, candidate
  finally:
    manager.close()
  raise CheckpointError(
      f'No readable checkpoint in {checkpoint_dir(workdir)}' + (f' at step {step}' if step
                                                                 is not None else '')
      + ':\n  ' + '\n  '.join(damaged) + '\nA training run on this workdir sets damaged '
      'checkpoints aside in unreadable_checkpoints/ and resumes from an intact one.')


def _read_variables(manager: ocp.CheckpointManager, step: int, abstract_variables: Any,
                    item: str) -> dict:
  """``{'params', 'batch_stats'}`` of ``item`` at ``step``, on this process's first device by
  default, in the layout of ``abstract_variables`` where given, else the checkpoint's."""
  items = manager.item_metadata(step)
  if item == EMA_ITEM and item not in items:
    raise CheckpointError(
        f'The checkpoint at step {step} in {manager.directory} holds no weight average (EMA): '
        'its run trained with ema.decay=0. Choose its trained weights (weights=\'raw\', '
        'tools/evaluate.py --weights=raw), or train with weight averaging (e.g. '
        '--config.ema.decay=0.9999).')
  metadata = items[item]
  if abstract_variables is None:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract_variables = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
  restored = manager.restore(step, args=ocp.args.Composite(**{item: ocp.args.StandardRestore(
      models.to_layout(abstract_variables, models.stacked_stages(metadata)))}))[item]
  return models.to_layout(restored, models.stacked_stages(abstract_variables))
