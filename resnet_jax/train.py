"""Training and evaluation of one run, data-parallel over every device of every host.

Read it top to bottom: the plan (every number of the run, every problem of its config), the data,
the program (mesh, model, optimizer and jitted calls: ``build_program``), the state (restored,
from ``init_from`` or fresh), the evaluation sets, logging, the input, then the loop with its
logging, evaluation and checkpoints. The run's guards (``guards.run_guards``: the workdir lease,
a full or read-only disk, a stop every process agrees on, divergence) are asked at its two
points: before a save, and after every call.
"""

import dataclasses
import functools
import time
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import NamedSharding

from resnet_jax import (
  checkpointing,
  console,
  ema,
  eval_sets,
  init_from,
  inference_record,
  library_logs,
  losses,
  mixing,
  models,
  optim,
  run_plan,
  run_summary,
  steps,
  workdirs,
)
from resnet_jax.data import device_resident
from resnet_jax.evaluation import loop as eval_loop
from resnet_jax.guards import run_guards, storage_faults
from resnet_jax.parallel import cpu_workarounds, multistep, sharding

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


def build_program(plan: run_plan.RunPlan, devices=None, image_correction=None) -> Program:
  """The mesh over ``devices`` (default: all), the plan's model and optimizer, the jitted calls.

  Platform-dependent choices (XLA:CPU's fusion barriers and loop-friendly convolutions, scanned or
  unrolled calls) follow the devices. ``image_correction``: the data's ``mean_correction()``, a
  constant of the steps.
  """
  config = plan.config
  mesh = sharding.create_mesh(devices)
  replicated, batch_sharding = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  model = models.from_config(config.model, plan.num_classes)
  if mesh.devices.flat[0].platform == 'cpu':
    model = cpu_workarounds.with_loop_friendly_convs(model)
  tx, learning_rate_fn = optim.create_optimizer(config.optimizer, plan.learning_rate)
  averaging = ema.from_config(config)
  init = jax.jit(functools.partial(steps.init_train_state, model, tx,
                                   image_shape=plan.image_shape, averaged=averaging is not None),
                 out_shardings=replicated)
  train_step = functools.partial(
      steps.train_step, model=model, tx=tx, learning_rate_fn=learning_rate_fn, mesh=mesh,
      gradient_allreduce_dtype=config.gradient_allreduce_dtype,
      label_smoothing=config.label_smoothing, loss=losses.from_config(config),
      mix=mixing.from_config(config), image_correction=image_correction,
      rng=jax.random.key(config.seed), averaging=averaging)
  if config.cpu_fusion_barriers and mesh.devices.flat[0].platform == 'cpu':
    train_step = cpu_workarounds.with_block_barriers(train_step)
  return Program(mesh=mesh, model=model, replicated=replicated, batch_sharding=batch_sharding,
                 init=init,
                 start=jax.jit(functools.partial(steps.start_train_state, tx,
                                                 averaged=averaging is not None),
                               out_shardings=replicated),
                 train_step=train_step,
                 train_fn=multistep.make_train_fn(train_step, mesh),
                 eval_fn=eval_loop.jit_eval_step(model, mesh, image_correction))


# More FLOP/s than a CPU host sustains on these convolutions: a CPU estimate is a lower bound.
CPU_FLOPS_PER_S = 1e12


def warn_if_imagenet_on_cpu(plan: run_plan.RunPlan, platform: str) -> None:
  """Warns that an ImageNet run on CPU hosts takes more than a day, with a lower bound of its
  time (its training FLOPs at ``CPU_FLOPS_PER_S`` per host) and the fix (an accelerator's
  install); nothing for other datasets or platforms, or a run shorter than a day."""
  if plan.dataset.name != 'imagenet2012' or platform != 'cpu':
    return
  image = jax.ShapeDtypeStruct((1, *plan.image_shape), jnp.float32)
  # Unrolled: XLA's cost analysis counts the body of a scanned stage's loop once.
  model = models.from_config(plan.config.model, plan.num_classes).clone(scan_blocks=False)
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), image)
  forward = jax.jit(functools.partial(model.apply, train=False)).lower(variables, image)
  flops = 3 * forward.cost_analysis()['flops'] * plan.total_steps * plan.config.batch_size
  days = flops / (CPU_FLOPS_PER_S * plan.processes) / 86_400
  if days >= 1:
    logging.warning(
        'This run trains %s on ImageNet on the CPU: %.1e FLOPs, at least %.1f days on %d '
        'host(s) even at %.0e FLOP/s each. JAX uses no GPU or TPU here. On NVIDIA GPUs, '
        'install the GPU requirements (pip install -r requirements.txt -r requirements-gpu.txt; '
        'docs/install.md); on a Cloud TPU VM, requirements-tpu.txt.', plan.config.model.name,
        flops, days, plan.processes, CPU_FLOPS_PER_S)


# An epoch may leave out at most this fraction of the train split (the last partial batch of
# each data shard) without a warning.
MAX_SILENT_DROP = 0.1


def warn_if_epochs_drop_examples(plan: run_plan.RunPlan) -> None:
  """Warns where each epoch leaves out more than ``MAX_SILENT_DROP`` of the train split."""
  dropped = plan.train_examples - plan.steps_per_epoch * plan.config.batch_size
  if dropped > MAX_SILENT_DROP * plan.train_examples:
    logging.warning(
        'Each epoch trains on %d of the %d examples of %s: the last %d (%.0f %%) do not fill a '
        'batch of %d (per data shard, of %d). Lower batch_size, or fewer data shards, to use '
        'them.', plan.steps_per_epoch * plan.config.batch_size, plan.train_examples,
        plan.config.dataset.train_split, dropped, 100 * dropped / plan.train_examples,
        plan.config.batch_size // plan.num_shards, plan.num_shards)


# --------------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------------


def train_and_evaluate(config, workdir: str) -> steps.TrainState:
  """Trains ``config`` in ``workdir``, resuming from its latest checkpoint if it has one."""
  library_logs.quiet()
  # TensorFlow (tfds, tf.data), imported when a run starts, not with the module.
  from resnet_jax.data import datasets  # pylint: disable=import-outside-toplevel

  # ---- The plan: every number of the run and every problem of its config, before anything is
  # read or compiled; a resume keeps the data shards its checkpoint was written with.
  workdirs.check_reachable(workdir)
  plan = datasets.plan_for(config, processes=jax.process_count(), devices=jax.device_count(),
                           recorded_shards=checkpointing.recorded_num_shards(workdir))
  init_from.check_config(plan.config)
  workdirs.check_workdir(plan.config, workdir)
  storage_faults.check_checkpoints_writable(workdir)
  warn_if_imagenet_on_cpu(plan, jax.default_backend())
  warn_if_epochs_drop_examples(plan)

  # ---- The data, opened once: prepared where the project prepares it, refused where not.
  data = datasets.open_dataset(plan, jax.process_index())
  # The weights of init_from, read and matched before the workdir is touched (a run that has
  # checkpoints resumes from them and never reads the source again).
  weights = None
  if config.init_from and not checkpointing.has_checkpoints(workdir):
    model = models.from_config(plan.config.model, plan.num_classes)
    weights = init_from.load(plan.config, jax.eval_shape(functools.partial(
        steps.init_variables, model, image_shape=plan.image_shape), jax.random.key(config.seed)))
  with run_guards.RunGuards(workdir) as guards:
    return _train(plan, data, workdir, guards, weights)


def _train(plan: run_plan.RunPlan, data, workdir: str, guards: run_guards.RunGuards,
           weights: init_from.Plan | None) -> steps.TrainState:
  """The run, in the workdir it holds: program, state, logging, input and the loop; ``weights``:
  those of ``init_from``, read already where the workdir had no checkpoints."""
  # TensorFlow (clu's writers), imported when a run starts, not with the module.
  from clu import metric_writers, periodic_actions  # pylint: disable=import-outside-toplevel

  from resnet_jax import events, reporting  # pylint: disable=import-outside-toplevel
  config = plan.config
  is_chief = jax.process_index() == 0
  started = time.perf_counter()

  # ---- Mesh, model, optimizer and the jitted calls: replicated state, batch split along 'data'.
  program = build_program(plan, image_correction=data.mean_correction())
  mesh, batch_sharding, init = program.mesh, program.batch_sharding, program.init

  # ---- State: the run's own latest checkpoint; else the weights of init_from, checkpointed as
  # step 0, so a restart never reads them again; else a fresh init.
  rng = jax.random.key(config.seed)
  abstract = jax.eval_shape(init, rng)
  manager = checkpointing.create_manager(workdir, keep=config.keep_checkpoints)
  restored = checkpointing.restore_latest(manager, abstract)

  def save(state, step) -> Callable[[], None]:
    """The save of ``state`` at ``step``, for the guards to call where the run may write."""
    return functools.partial(checkpointing.save, manager, state, data_position=step,
                             num_shards=plan.num_shards)

  if restored is None:
    state, data_position = init(rng), 0
    if config.init_from:
      weights = weights or init_from.load(config, abstract.variables)
      state = program.start(init_from.apply(weights, state.variables, program.replicated))
      if is_chief:
        init_from.record(workdir, weights)
      guards.checkpoint(0, save(state, 0))
  else:
    state, progress = restored
    data_position, guards.last_checkpoint = progress['data_position'], progress['step']
    logging.info('Resumed from the checkpoint at step %d.', progress['step'])
    if config.init_from:
      logging.info('The run started from init_from=%s (%s); it is not read again.',
                   config.init_from, init_from.RECORD)
  start_step = int(state.step)
  if start_step >= plan.total_steps:
    manager.close()
    if is_chief:
      run_summary.log_finished(plan, workdir, start_step)
    return state

  # ---- Evaluation: the eval split (the plateau schedule reads it), then config.extra_evals,
  # each under its summary prefix; every split is built once and read whole each time. The
  # weights' average (config.ema) is evaluated on each after them, under 'ema_' + its prefix.
  def run_eval(state) -> dict[str, dict[str, float]]:
    """{prefix: {prefix + metric: value}} for every eval set and weights."""
    weights = [('', state.variables)] + ([] if state.ema is None else [(ema.PREFIX, state.ema)])
    found = {}
    for s in plan.eval_sets:  # One pass over each split for both weights.
      found.update(eval_loop.evaluate_each(program.eval_fn, {w + s.prefix: v for w, v in weights},
                                           data.eval_split(s), batch_sharding))
    # The raw weights' sets first, then the average's: the order of the console's lines.
    return dict(sorted(found.items(), key=lambda item: item[0].startswith(ema.PREFIX)))

  plateau_fn = jax.jit(functools.partial(optim.plateau_update, plan.learning_rate),
                       out_shardings=program.replicated)

  # ---- Logging: what the run is (notebooks, reports and resumes read it), then its metrics.
  if is_chief:
    run_plan.save(plan, workdir)
    run_summary.describe(plan, workdir, state.params)
    inference_record.save(data.inference_record(), workdir)  # For predictions without data.
  # Metrics to the console (a line per interval and per evaluated set), and on the chief to
  # TensorBoard; the hyperparameters to TensorBoard only (config.json holds them too).
  summaries = [metric_writers.SummaryWriter(str(workdir))] if is_chief else []
  eval_names = {s.prefix: s.name for s in plan.eval_sets}
  if state.ema is not None:  # The weights' average: 'step 92: test (EMA) error ...'.
    eval_names.update({ema.PREFIX + s.prefix: f'{s.name} (EMA)' for s in plan.eval_sets})
  console_writer = reporting.ConsoleWriter(plan.total_steps, eval_names)
  writer = metric_writers.AsyncMultiWriter([console_writer, *summaries])
  if start_step == 0:
    for summary in summaries:
      summary.write_hparams(dict(flax.traverse_util.flatten_dict(config.to_dict(), sep='.')))
  progress_report = reporting.ReportProgress(  # on_steps: a call may run several steps.
      num_train_steps=plan.total_steps, writer=writer, batch_size=config.batch_size,
      num_devices=jax.device_count(),
      on_steps=range(plan.log_every, plan.total_steps + 1, plan.log_every))

  def check_and_write(step, train_metrics):
    """Fetches the accumulated metrics (a host sync), stops on divergence, writes summaries."""
    values = train_metrics.compute()
    bad_step = int(values.pop('first_nonfinite_step'))
    guards.check_finite(None if bad_step == np.iinfo(np.int32).max else bad_step,
                        manager.wait_until_finished)
    writer.write_scalars(step, {f'train_{k}': float(v) for k, v in values.items()})

  # ---- The input: a call runs several steps, ending where the loop logs, evaluates or
  # checkpoints.
  logging.info('Training %s for %d steps (%d per epoch) from step %d on %d device%s.',
               config.model.name, plan.total_steps, plan.steps_per_epoch, start_step,
               jax.device_count(), '' if jax.device_count() == 1 else 's')
  step_ends = multistep.call_ends(start_step, plan.total_steps, config.steps_per_call, (
      plan.log_every, plan.eval_every, plan.checkpoint_every))
  steps_per_call = np.diff([start_step, *step_ends])
  hooks = [progress_report]  # Called after every call with the step it ended at.
  if config.profile_steps and is_chief:
    # From the end of the first call, so the trace holds steps, not their compilation; no more
    # steps than follow it, or the trace would never be written.
    profile_steps = min(config.profile_steps, plan.total_steps - step_ends[0])
    if profile_steps < config.profile_steps:
      logging.warning('profile_steps=%d, but only %d steps follow the first call: tracing those.',
                      config.profile_steps, profile_steps)
    if profile_steps:
      hooks.append(periodic_actions.Profile(
          logdir=workdir, num_profile_steps=profile_steps, profile_duration_ms=None,
          first_profile=step_ends[0], every_secs=None))
  if config.dataset.device_resident:  # The split on the devices; a call takes a step count.
    augment, spec = config.dataset.augment, plan.dataset
    train_fn = device_resident.make_train_fn(
        program.train_step, device_resident.put_on_devices(*data.train_arrays(), mesh), mesh,
        seed=config.seed, batch_size=config.batch_size, steps_per_epoch=plan.steps_per_epoch,
        pad=spec.pad if augment else 0, flip=augment and spec.flip,
        erasing=device_resident.erasing_of(config.dataset))
    inputs = iter(steps_per_call)
  else:  # tf.data batches, a tuple per call, prefetched to the devices.
    train_fn = program.train_fn
    inputs = sharding.prefetch_to_devices(
        multistep.group_batches(data.train_batches(data_position), steps_per_call),
        batch_sharding)

  # ---- The loop.
  guards.watch_for_stop_requests(mesh)  # SIGTERM, Ctrl-C: checkpoint, then stop.
  train_metrics = None
  progress_bar = console.ProgressBar(plan.total_steps, start_step, enabled=is_chief)
  hooks.append(progress_bar)
  try:
    for step in step_ends:
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, step_metrics = train_fn(state, next(inputs))
      train_metrics = step_metrics if train_metrics is None else train_metrics.merge(
          step_metrics)
      for hook in hooks:
        hook(step)
      is_last, stop = step == plan.total_steps, guards.stop_requested()
      checkpoint_now = step % plan.checkpoint_every == 0 or is_last or stop
      if step % plan.log_every == 0 or checkpoint_now:
        check_and_write(step, train_metrics)
        train_metrics = None
      if step % plan.eval_every == 0 or is_last:
        evaluations = run_eval(state)
        for metrics in evaluations.values():
          writer.write_scalars(step, metrics)
        if is_chief:
          result = {'step': step, 'seconds': round(time.perf_counter() - started, 3),
                    **{k: v for metrics in evaluations.values() for k, v in metrics.items()}}
          events.append_result(workdir, result)
        if config.optimizer.schedule == 'plateau':  # Before the checkpoint that keeps it.
          main_error = evaluations[eval_sets.EVAL_PREFIX]['eval_error_top1']
          state = state.replace(opt_state=plateau_fn(state.opt_state, main_error))
      if checkpoint_now:
        guards.checkpoint(step, save(state, step))
      if stop:
        logging.warning('Stopped on request: saved a checkpoint at step %d; the same command '
                        'resumes the run.', step)
        break
    writer.flush()
  finally:
    progress_bar.close()
    manager.wait_until_finished()
    manager.close()
  if is_chief and step == plan.total_steps:
    run_summary.finish(plan, workdir, result, start_step, time.perf_counter() - started)
  return state
