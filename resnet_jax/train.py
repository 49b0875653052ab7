"""Training and evaluation of one run, data-parallel over every device of every host.

Read it top to bottom: the checks (and the dataset's facts), the program (mesh, model, optimizer
and jitted calls: ``build_program``), the state (restored, from ``init_from`` or fresh), the eval
splits, logging, the input, then the loop with its logging, evaluation and checkpoints.
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

from resnet_jax import (
  checkpointing,
  config_lib,
  disk_full,
  eval_sets,
  init_from,
  library_logs,
  optim,
  steps,
  workdir_lease,
)
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
  ``train_step`` is the step it and the device-resident path run; ``init(rng)`` the fresh state;
  ``start(variables)`` the state of step 0 from given variables (``init_from``).
  """
  mesh: jax.sharding.Mesh
  model: flax.linen.Module
  replicated: NamedSharding
  batch_sharding: NamedSharding
  init: Callable
  start: Callable
  train_step: Callable
  train_fn: Callable
  eval_fn: Callable


def build_program(config, image_shape, num_classes: int, steps_per_epoch: int,
                  devices=None, image_correction=None) -> Program:
  """The mesh over ``devices`` (default: all), the config's model and optimizer, the jitted calls.

  Platform-dependent choices (XLA:CPU's fusion barriers and loop-friendly convolutions, scanned or
  unrolled calls) follow the devices.
  ``image_correction``: ``pipeline.imagenet_mean_correction``, a constant of the steps.
  """
  mesh = sharding.create_mesh(devices)
  replicated, batch_sharding = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  model = config_lib.build_model(config, num_classes)
  if mesh.devices.flat[0].platform == 'cpu':
    model = cpu_workarounds.with_loop_friendly_convs(model)
  tx, learning_rate_fn = optim.create_optimizer(config, steps_per_epoch)
  init = jax.jit(functools.partial(steps.init_train_state, model, tx, image_shape=image_shape),
                 out_shardings=replicated)
  train_step = functools.partial(
      steps.train_step, model=model, tx=tx, learning_rate_fn=learning_rate_fn, mesh=mesh,
      gradient_allreduce_dtype=config.gradient_allreduce_dtype,
      label_smoothing=config.label_smoothing, image_correction=image_correction,
      rng=jax.random.key(config.seed))
  if config.cpu_fusion_barriers and mesh.devices.flat[0].platform == 'cpu':
    train_step = cpu_workarounds.with_block_barriers(train_step)
  return Program(mesh=mesh, model=model, replicated=replicated, batch_sharding=batch_sharding,
                 init=init, start=jax.jit(functools.partial(steps.start_train_state, tx),
                                          out_shardings=replicated),
                 train_step=train_step,
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

  def reached(self, calls: int) -> bool:
    """Called by every process at every call end, ``calls`` the number of calls made so far
    (1, 2, 3, ...); True at the call where all of them stop.

    JAX names as the sync point the count after the largest one any process has passed, so the
    count must grow by one per call: a step count that grows by ``steps_per_call`` would pass
    over it and never stop."""
    if self._use_sync_point:
      return multihost_utils.reached_preemption_sync_point(calls)
    return self._event.is_set()

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


# --------------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------------


def train_and_evaluate(config, workdir: str) -> steps.TrainState:
  """Trains ``config`` in ``workdir``, resuming from its latest checkpoint if it has one.

  After the checks the run holds the workdir (``workdir_lease``: a second run there is refused)
  and a full disk stops it with one message (``disk_full``).
  """
  library_logs.quiet()
  # ---- Checks, before reading data or compiling anything.
  config_lib.validate(config, device_count=jax.device_count(),
                      process_count=jax.process_count())
  init_from.check_config(config)
  config_lib.warn_if_imagenet_on_cpu(config, jax.default_backend(), jax.process_count())
  config_lib.check_workdir(config, workdir)
  config = config_lib.resume_data_shards(config, checkpointing.recorded_num_shards(workdir),
                                         jax.process_count())
  # TensorFlow (tfds, tf.data), imported when a run starts, not with the module.
  from resnet_jax.data import pipeline, specs  # pylint: disable=import-outside-toplevel
  # The dataset's facts: its registry entry, or its tfds builder's info (metadata only).
  spec = specs.spec_of(config)
  config_lib.check_dataset(config, spec)
  device_resident.check_config(config, spec)
  info = pipeline.get_dataset_info(config)
  pipeline.check_extra_evals(config)
  steps_per_epoch = pipeline.steps_per_epoch(config, process_count=jax.process_count())
  # The weights of init_from, read and matched before the workdir is touched (a run that has
  # checkpoints resumes from them and never reads the source again).
  plan = None
  if config.init_from and not checkpointing.has_checkpoints(workdir):
    plan = init_from.load(config, jax.eval_shape(functools.partial(
        steps.init_variables, config_lib.build_model(config, info.num_classes),
        image_shape=info.image_shape), jax.random.key(config.seed)))
  with disk_full.stops_the_run(workdir), workdir_lease.hold(workdir) as lease:
    disk_full.check_room_for_a_checkpoint(workdir)
    return _train(config, workdir, lease, spec, info, steps_per_epoch, plan)


def _train(config, workdir: str, lease: workdir_lease.AgreedLease, spec, info,
           steps_per_epoch: int, plan: init_from.Plan | None) -> steps.TrainState:
  """The run, in the workdir it holds: program, state, logging, input and the loop; ``plan``:
  the weights of ``init_from``, read already where the workdir had no checkpoints."""
  # TensorFlow (clu's writers), imported when a run starts, not with the module.
  from clu import metric_writers, periodic_actions  # pylint: disable=import-outside-toplevel

  from resnet_jax import reporting  # pylint: disable=import-outside-toplevel
  from resnet_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  num_steps = config_lib.total_steps(config, steps_per_epoch)
  every = config_lib.intervals(config, steps_per_epoch)
  num_shards = config_lib.data_shards(config, jax.process_count())
  is_chief = jax.process_index() == 0

  # ---- Mesh, model, optimizer and the jitted calls: replicated state, batch split along 'data'.
  program = build_program(config, info.image_shape, info.num_classes, steps_per_epoch,
                          image_correction=pipeline.imagenet_mean_correction(config))
  mesh, batch_sharding, init = program.mesh, program.batch_sharding, program.init
  train_step, eval_fn = program.train_step, program.eval_fn

  # ---- State: the run's own latest checkpoint; else the weights of init_from, checkpointed as
  # step 0, so a restart never reads them again; else a fresh init.
  rng = jax.random.key(config.seed)
  abstract = jax.eval_shape(init, rng)
  manager = checkpointing.create_manager(workdir, keep=config.keep_checkpoints)
  restored = checkpointing.restore_latest(manager, abstract)
  last_checkpoint = None
  if restored is None:
    state, data_position = init(rng), 0
    if config.init_from:
      plan = plan or init_from.load(config, abstract.variables)
      state = program.start(init_from.apply(plan, state.variables, program.replicated))
      if is_chief:
        init_from.record(workdir, plan)
      checkpointing.save(manager, state, data_position=0, num_shards=num_shards)
      last_checkpoint = 0
  else:
    state, progress = restored
    data_position, last_checkpoint = progress['data_position'], progress['step']
    logging.info('Resumed from the checkpoint at step %d.', progress['step'])
    if config.init_from:
      logging.info('The run started from init_from=%s (%s); it is not read again.',
                   config.init_from, init_from.RECORD)
  start_step = int(state.step)
  if is_chief:
    parameter_overview.log_parameter_overview(state.params)

  plateau_fn = jax.jit(functools.partial(optim.plateau_update, config, steps_per_epoch),
                       out_shardings=program.replicated)

  if start_step >= num_steps:
    logging.info('The run in %s already finished (%d of %d steps); nothing to train.',
                 workdir, start_step, num_steps)
    manager.close()
    return state

  # ---- Evaluation: the eval split (the plateau schedule reads it), then config.extra_evals,
  # each under its summary prefix; every pipeline is built once and read whole each time.
  def eval_split(split=None, dataset=None):
    return pipeline.eval_split(config, split=split, dataset=dataset,
                               process_index=jax.process_index(),
                               process_count=jax.process_count())

  eval_splits = {eval_sets.EVAL_PREFIX: eval_split(), **{
      extra.prefix: eval_split(extra.split, extra.dataset)
      for extra in eval_sets.extra_evals(config)}}

  def run_eval(variables) -> dict[str, dict[str, float]]:
    """{prefix: {prefix + metric: value}} for every eval split."""
    return {prefix: eval_loop.evaluate(eval_fn, variables, batches, batch_sharding, prefix)
            for prefix, batches in eval_splits.items()}

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
    lease.check(step)
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
    augment = config.dataset.augment
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
    for calls, step in enumerate(step_ends, 1):
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, step_metrics = train_fn(state, next(inputs))
      train_metrics = step_metrics if train_metrics is None else train_metrics.merge(
          step_metrics)
      for hook in hooks:
        hook(step)
      is_last = step == num_steps
      preempted = preemption.reached(calls)
      if step % config.log_every_steps == 0 or step % every.checkpoint_steps == 0 or (
          is_last or preempted):
        check_and_write(step, train_metrics)
        train_metrics = None
      if step % every.eval_steps == 0 or is_last:
        with progress_report.timed('eval'):
          evaluations = run_eval(state.variables)
          for metrics in evaluations.values():
            writer.write_scalars(step, metrics)
        if config.optimizer.schedule == 'plateau':  # Before the checkpoint that keeps it.
          main_error = evaluations[eval_sets.EVAL_PREFIX]['eval_error_top1']
          state = state.replace(opt_state=plateau_fn(state.opt_state, main_error))
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
