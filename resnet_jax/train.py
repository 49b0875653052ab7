"""Training and evaluation of one run, data-parallel over every device of every host.

Read it top to bottom: the checks (and the dataset's facts), the program (mesh, model, optimizer
and jitted calls: ``build_program``), the state (fresh or restored), logging, the input, then the
loop with its logging, evaluation and checkpoints.
"""

import dataclasses
import functools
import signal
import threading
from collections.abc import Callable

import flax
import jax
import numpy as np
from absl import logging
from clu import parameter_overview
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

from resnet_jax import checkpointing, config_lib, library_logs, optim, steps
from resnet_jax.data import device_resident
from resnet_jax.errors import DivergenceError
from resnet_jax.evaluation import loop as eval_loop
from resnet_jax.parallel import cpu_workarounds, distributed, multistep, sharding

# --------------------------------------------------------------------------------------------
# The program: mesh, model, optimizer and jitted calls (tools/tpu_plan.py compiles it too).
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Program:
  """What a run executes: state replicated, batches split along ``data``, state donated.

  ``train_fn(state, batches)`` runs one step per batch of the tuple (the tf.data path);
  ``train_step`` is the step it and the device-resident path run; ``init(rng)`` the fresh state.
  """
  mesh: jax.sharding.Mesh
  model: flax.linen.Module
  replicated: NamedSharding
  batch_sharding: NamedSharding
  init: Callable
  train_step: Callable
  train_fn: Callable
  eval_fn: Callable


def build_program(config, image_shape, num_classes: int, steps_per_epoch: int,
                  devices=None, image_correction=None) -> Program:
  """The mesh over ``devices`` (default: all), the config's model and optimizer, the jitted calls.

  Platform-dependent choices (XLA:CPU's fusion barriers, scanned or unrolled calls) follow the
  devices.
  ``image_correction``: ``pipeline.imagenet_mean_correction``, a constant of the steps.
  """
  mesh = sharding.create_mesh(devices)
  replicated, batch_sharding = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  model = config_lib.build_model(config, num_classes)
  tx, learning_rate_fn = optim.create_optimizer(config, steps_per_epoch)
  init = jax.jit(functools.partial(steps.init_train_state, model, tx, image_shape=image_shape),
                 out_shardings=replicated)
  train_step = steps.with_image_correction(functools.partial(
      steps.train_step, model=model, tx=tx, learning_rate_fn=learning_rate_fn, mesh=mesh,
      gradient_allreduce_dtype=config.gradient_allreduce_dtype,
      label_smoothing=config.label_smoothing), image_correction)
  if config.cpu_fusion_barriers and mesh.devices.flat[0].platform == 'cpu':
    train_step = cpu_workarounds.with_block_barriers(train_step)
  return Program(mesh=mesh, model=model, replicated=replicated, batch_sharding=batch_sharding,
                 init=init, train_step=train_step,
                 train_fn=multistep.make_train_fn(train_step, mesh),
                 eval_fn=eval_loop.jit_eval_step(model, mesh, image_correction))


# --------------------------------------------------------------------------------------------
# Preemption: SIGTERM asks the loop to checkpoint and stop at the end of the current call.
# --------------------------------------------------------------------------------------------


class PreemptionFlag:
  """Whether SIGTERM (what cloud and TPU preemption sends) asks to checkpoint and stop now.

  Under ``jax.distributed`` (every multi-host run that main.py starts): JAX's preemption sync
  manager catches SIGTERM on any host and names one step at which every process stops, so all
  save the same checkpoint; a handler installed here would replace it. Otherwise (one process):
  a SIGTERM handler sets a flag.
  """

  def __init__(self):
    self._event = threading.Event()
    self._previous = None
    self._use_sync_point = distributed.preemption_sync_available()
    if (not self._use_sync_point and jax.process_count() == 1
        and threading.current_thread() is threading.main_thread()):
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self._event.set())

  def reached(self, step: int) -> bool:
    """Called by every process at every call end; True at the step where all of them stop."""
    if self._use_sync_point:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._event.is_set()

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


# --------------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------------


def train_and_evaluate(config, workdir: str) -> steps.TrainState:
  """Trains ``config`` in ``workdir``, resuming from its latest checkpoint if it has one."""
  library_logs.quiet()
  # ---- Checks, before reading data or compiling anything.
  config_lib.validate(config, device_count=jax.device_count(),
                      process_count=jax.process_count())
  config_lib.warn_if_imagenet_on_cpu(config, jax.default_backend(), jax.process_count())
  config_lib.check_workdir(config, workdir)
  config = config_lib.resume_data_shards(config, checkpointing.recorded_num_shards(workdir),
                                         jax.process_count())
  # TensorFlow (tfds, tf.data, clu's writers), imported when a run starts, not with the module.
  from clu import metric_writers, periodic_actions  # pylint: disable=import-outside-toplevel

  from resnet_jax import reporting  # pylint: disable=import-outside-toplevel
  from resnet_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  device_resident.check_config(config, pipeline.dataset_spec(config))
  info = pipeline.get_dataset_info(config)
  steps_per_epoch = pipeline.steps_per_epoch(config, process_count=jax.process_count())
  num_steps = config_lib.total_steps(config, steps_per_epoch)
  every = config_lib.intervals(config, steps_per_epoch)

  num_shards = config_lib.data_shards(config, jax.process_count())
  is_chief = jax.process_index() == 0

  # ---- Mesh, model, optimizer and the jitted calls: replicated state, batch split along 'data'.
  program = build_program(config, info.image_shape, info.num_classes, steps_per_epoch,
                          image_correction=pipeline.imagenet_mean_correction(config))
  mesh, batch_sharding, init = program.mesh, program.batch_sharding, program.init
  train_step, eval_fn = program.train_step, program.eval_fn

  # ---- State.
  rng = jax.random.key(config.seed)
  manager = checkpointing.create_manager(workdir, keep=config.keep_checkpoints)
  restored = checkpointing.restore_latest(manager, jax.eval_shape(init, rng))
  if restored is None:
    state, data_position = init(rng), 0
  else:
    state, progress = restored
    data_position = progress['data_position']
    logging.info('Resumed from the checkpoint at step %d.', progress['step'])
  start_step = int(state.step)
  if is_chief:
    parameter_overview.log_parameter_overview(state.params)

  plateau_fn = jax.jit(functools.partial(optim.plateau_update, config, steps_per_epoch),
                       out_shardings=program.replicated)

  def run_eval(variables):
    batches = pipeline.eval_batches(config, process_index=jax.process_index(),
                                          process_count=jax.process_count())
    return eval_loop.evaluate(eval_fn, variables, batches, batch_sharding)

  if start_step >= num_steps:
    logging.info('The run in %s already finished (%d of %d steps); nothing to train.',
                 workdir, start_step, num_steps)
    manager.close()
    return state

  # ---- Logging.
  if is_chief:
    config_lib.save_config(config, workdir)
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
  if start_step == 0:
    writer.write_hparams(dict(flax.traverse_util.flatten_dict(config.to_dict(), sep='.')))
  progress_report = reporting.ReportProgress(  # on_steps: a call may run several steps.
      num_train_steps=num_steps, writer=writer, batch_size=config.batch_size,
      num_devices=jax.device_count(),
      on_steps=range(config.log_every_steps, num_steps + 1, config.log_every_steps))
  preemption = PreemptionFlag()
  last_checkpoint = None if restored is None else start_step

  def check_and_write(step, train_metrics):
    """Fetches the accumulated metrics (a host sync), stops on divergence, writes summaries."""
    values = train_metrics.compute()
    bad_step = int(values.pop('first_nonfinite_step'))
    if bad_step != np.iinfo(np.int32).max:
      manager.wait_until_finished()
      where = (f'the last good checkpoint, step {last_checkpoint}, is intact in '
               f'{checkpointing.checkpoint_dir(workdir)}' if last_checkpoint is not None
               else 'no checkpoint was written yet')
      raise DivergenceError(
          f'The training loss or parameters became non-finite at step {bad_step}; {where}. '
          'Lower optimizer.learning_rate or add warmup (optimizer.warmup_steps), then resume.')
    writer.write_scalars(step, {f'train_{k}': float(v) for k, v in values.items()})

  def save_checkpoint(step):
    nonlocal last_checkpoint
    checkpointing.save(manager, state, data_position=step, num_shards=num_shards)
    last_checkpoint = step

  # ---- The loop.
  logging.info('Training %s for %d steps (%d per epoch) from step %d on %d devices.',
               config.model.name, num_steps, steps_per_epoch, start_step, jax.device_count())
  # A call runs several steps, ending where the loop logs, evaluates or checkpoints.
  step_ends = multistep.call_ends(start_step, num_steps, config.steps_per_call, (
      config.log_every_steps, every.eval_steps, every.checkpoint_steps))
  steps_per_call = np.diff([start_step, *step_ends])
  hooks = [progress_report]  # Called after every call with the step it ended at.
  if config.profile_steps and is_chief:
    # From the end of the first call, so the trace holds steps, not their compilation; no more
    # steps than follow it, or the trace would never be written.
    profile_steps = min(config.profile_steps, num_steps - step_ends[0])
    if profile_steps < config.profile_steps:
      logging.warning('profile_steps=%d, but only %d steps follow the first call: tracing those.',
                      config.profile_steps, profile_steps)
    if profile_steps:
      hooks.append(periodic_actions.Profile(
          logdir=workdir, num_profile_steps=profile_steps, profile_duration_ms=None,
          first_profile=step_ends[0], every_secs=None))
  if config.dataset.device_resident:  # The split on the devices; a call takes a step count.
    augment, spec = config.dataset.augment, pipeline.dataset_spec(config)
    train_fn = device_resident.make_train_fn(
        train_step, device_resident.put_on_devices(*pipeline.load_train_arrays(config), mesh),
        mesh, seed=config.seed, batch_size=config.batch_size, steps_per_epoch=steps_per_epoch,
        pad=spec.pad if augment else 0, flip=augment and spec.flip)
    inputs = iter(steps_per_call)
  else:  # tf.data batches, a tuple per call, prefetched to the devices.
    train_fn = program.train_fn
    batches = pipeline.train_batches(config, start_step=data_position,
                                           process_index=jax.process_index(),
                                           process_count=jax.process_count())
    inputs = sharding.prefetch_to_devices(multistep.group_batches(batches, steps_per_call),
                                           batch_sharding)
  train_metrics = None
  try:
    for step in step_ends:
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, step_metrics = train_fn(state, next(inputs))
      train_metrics = step_metrics if train_metrics is None else train_metrics.merge(
          step_metrics)
      for hook in hooks:
        hook(step)
      is_last = step == num_steps
      preempted = preemption.reached(step)
      if step % config.log_every_steps == 0 or step % every.checkpoint_steps == 0 or (
          is_last or preempted):
        check_and_write(step, train_metrics)
        train_metrics = None
      if step % every.eval_steps == 0 or is_last:
        with progress_report.timed('eval'):
          eval_metrics = run_eval(state.variables)
          writer.write_scalars(step, eval_metrics)
        if config.optimizer.schedule == 'plateau':  # Before the checkpoint that keeps it.
          state = state.replace(opt_state=plateau_fn(state.opt_state,
                                                     eval_metrics['eval_error_top1']))
      if step % every.checkpoint_steps == 0 or is_last or preempted:
        with progress_report.timed('checkpoint'):
          save_checkpoint(step)
      if preempted:
        logging.warning('SIGTERM received: saved a checkpoint at step %d and stopped.', step)
        break
    writer.flush()
  finally:
    manager.wait_until_finished()
    manager.close()
    preemption.restore()
  return state
