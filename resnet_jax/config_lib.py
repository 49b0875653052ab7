"""From a config to the objects of a run, and the checks that keep bad configs out early.

Every check here runs before any dataset is read or any function is compiled, and raises
``ConfigError`` with a message that says what is wrong and how to fix it.
"""

import dataclasses
import functools
import json
import math
import os
import re

import flax
import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from resnet_jax import eval_sets, models, workdirs
from resnet_jax.data import registry
from resnet_jax.errors import ConfigError

# Fields whose change makes a checkpoint belong to a different experiment (the optimizer's name
# and the plateau schedule decide the optimizer state in the checkpoint; init_from and its step
# the weights the run started from).
IDENTITY_FIELDS = ('model', 'dataset.name', 'dataset.image_size', 'seed', 'batch_size',
                   'optimizer.name', 'optimizer.schedule', 'init_from', 'init_from_step')

# optimizer.name and optimizer.schedule (resnet_jax/optim.py).
OPTIMIZERS = ('sgd', 'lars')
SCHEDULES = ('steps', 'plateau', 'cosine', 'polynomial')


def build_model(config, num_classes: int):
  """The Flax module that ``config.model`` describes."""
  overrides = {k: v for k, v in config.model.items() if k != 'name' and v is not None}
  return models.create_model(config.model.name, num_classes, **overrides)


# The paper's warm-up (Sec. 4.2): its deepest CIFAR nets start at lr 0.01 for about 400
# iterations (until training error is below 80%), then go back to the schedule; "Identity
# Mappings" warms up every CIFAR net of its comparison so.
NETWORK_WARMUP_STEPS = {
    'resnet110': 400, 'resnet1202': 400, 'plain110': 400,
    **dict.fromkeys(('resnet164', 'resnet1001', 'preact_resnet110', 'preact_resnet164',
                     'preact_resnet1001'), 400)}


def warmup_steps(config) -> int:
  """``optimizer.warmup_steps``, or the network's own recipe where it is None.

  The recipe follows ``model.name``, so ``configs/cifar10.py:resnet110`` and
  ``--config.model.name=resnet110`` train the same way.
  """
  steps = config.optimizer.warmup_steps
  return NETWORK_WARMUP_STEPS.get(config.model.name, 0) if steps is None else int(steps)


def scaled_learning_rate(config) -> float:
  """``optimizer.learning_rate``, scaled linearly with the batch when ``lr_reference_batch`` is
  set (0.1 x batch / 256 on ImageNet): the rate after any warm-up, before any decay."""
  opt = config.optimizer
  if opt.lr_reference_batch:
    return opt.learning_rate * config.batch_size / opt.lr_reference_batch
  return opt.learning_rate


def scales_rate_up(config) -> bool:
  """Whether the batch scales the rate above ``optimizer.learning_rate``, its base."""
  return scaled_learning_rate(config) > config.optimizer.learning_rate


def scaling_warmup_steps(config, steps_per_epoch: int) -> int:
  """Steps of the linear ramp from the base rate to the scaled one (Goyal et al. 2017):
  ``optimizer.scaling_warmup_epochs`` where the rate is scaled up, else 0."""
  if not scales_rate_up(config):
    return 0
  return round(config.optimizer.scaling_warmup_epochs * steps_per_epoch)


def in_steps(config, steps_field: str, epochs_field: str, steps_per_epoch: int) -> int:
  """A duration the config gives in steps or in epochs (the other field 0/None), in steps; an
  epoch-based one is at least one step."""
  epochs = config[epochs_field]
  return max(1, round(epochs * steps_per_epoch)) if epochs else int(config[steps_field])


def total_steps(config, steps_per_epoch: int) -> int:
  return in_steps(config, 'total_steps', 'total_epochs', steps_per_epoch)


@dataclasses.dataclass(frozen=True)
class Intervals:
  """The loop's intervals, resolved from the config's steps or epochs for one steps_per_epoch.

  ``plateau_patience`` counts evaluations: an epoch-based patience is the number of evaluations
  that covers it (rounded up, at least one), so it means the same time at every batch size.
  """
  eval_steps: int
  checkpoint_steps: int
  plateau_patience: int


def intervals(config, steps_per_epoch: int) -> Intervals:
  """The evaluation and checkpoint intervals in steps and the plateau patience in evaluations."""
  eval_steps = in_steps(config, 'eval_every_steps', 'eval_every_epochs', steps_per_epoch)
  patience = config.optimizer.plateau_patience
  if config.optimizer.plateau_patience_epochs:
    # round() first: epochs x steps / steps is exact only up to float error.
    patience = max(1, math.ceil(round(
        config.optimizer.plateau_patience_epochs * steps_per_epoch / eval_steps, 9)))
  return Intervals(eval_steps=eval_steps,
                   checkpoint_steps=in_steps(config, 'checkpoint_every_steps',
                                             'checkpoint_every_epochs', steps_per_epoch),
                   plateau_patience=int(patience))


def _exactly_one(config, steps_field: str, epochs_field: str) -> list[str]:
  """The problems of a duration given in steps or in epochs: exactly one, not negative."""
  steps, epochs = (functools.reduce(lambda c, key: c[key], field.split('.'), config) or 0
                   for field in (steps_field, epochs_field))
  if bool(steps) == bool(epochs):
    return [(f'Set exactly one of {steps_field} and {epochs_field} (the other to 0, e.g. '
             f'--config.{epochs_field if steps else steps_field}=0); got {steps_field}={steps}, '
             f'{epochs_field}={epochs}.')]
  if steps < 0 or epochs < 0:
    return [(f'{steps_field} / {epochs_field} must not be negative; got {steps_field}={steps}, '
             f'{epochs_field}={epochs}.')]
  return []

# More FLOP/s than a CPU host sustains on these convolutions: a CPU estimate is a lower bound.
CPU_FLOPS_PER_S = 1e12


def warn_if_imagenet_on_cpu(config, platform: str, process_count: int) -> None:
  """Warns that an ImageNet run on CPU hosts takes more than a day, with a lower bound of its
  time (its training FLOPs at ``CPU_FLOPS_PER_S`` per host) and the fix (an accelerator's
  install); nothing for other datasets or platforms, or a run shorter than a day."""
  if config.dataset.name != 'imagenet2012' or platform != 'cpu':
    return
  size = config.dataset.image_size
  spec = registry.get(config.dataset.name)
  image = jax.ShapeDtypeStruct((1, size, size, spec.channels), jnp.float32)
  # Unrolled: XLA's cost analysis counts the body of a scanned stage's loop once.
  model = build_model(config, spec.num_classes).clone(scan_blocks=False)
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), image)
  forward = jax.jit(functools.partial(model.apply, train=False)).lower(variables, image)
  steps = total_steps(config, spec.splits['train'] // config.batch_size)
  flops = 3 * forward.cost_analysis()['flops'] * steps * config.batch_size  # Forward, backward.
  days = flops / (CPU_FLOPS_PER_S * process_count) / 86_400
  if days >= 1:
    logging.warning(
        'This run trains %s on ImageNet on the CPU: %.1e FLOPs, at least %.1f days on %d '
        'host(s) even at %.0e FLOP/s each. JAX uses no GPU or TPU here. On NVIDIA GPUs, '
        'install the GPU requirements (pip install -r requirements.txt -r requirements-gpu.txt; '
        'docs/install.md); on a Cloud TPU VM, requirements-tpu.txt.', config.model.name, flops,
        days, process_count, CPU_FLOPS_PER_S)


def _split_names(split: str) -> list[str]:
  """The tfds split names of a split expression: 'train[:45000]+extra' -> ['train', 'extra']."""
  return [part.strip() for part in re.sub(r'\[[^\]]*\]', '', split).split('+')]


def _describe(splits: dict[str, int]) -> str:
  return ', '.join(f'{name} ({count:,} images)' for name, count in splits.items())


def _dataset_problems(config, spec: registry.DatasetSpec) -> list[str]:
  """What keeps ``config.dataset`` from training on the dataset ``spec`` describes: an image size
  it cannot crop, a split it lacks, no training split at all."""
  ds, sizes = config.dataset, spec.image_sizes
  problems = []
  if not sizes[0] <= ds.image_size <= sizes[1]:
    problems.append(f'dataset.image_size={ds.image_size} does not fit {ds.name}: crops must be '
                    f'between {sizes[0]} and {sizes[1]} pixels wide (a crop cannot be larger '
                    'than the image it is cut from).')
  if spec.eval_only:
    problems.append(
        f'dataset.name={ds.name!r} is an evaluation-only dataset: it has no train split, only '
        f'{_describe(spec.splits)}. Train on a dataset of the same {spec.num_classes} classes '
        f'and evaluate on {ds.name} beside it.')
    return problems
  held_out = next((name for name in spec.splits if name != registry.TRAIN_SPLIT), None)
  for field, suggested in (('train_split', registry.TRAIN_SPLIT), ('eval_split', held_out)):
    missing = [name for name in _split_names(ds[field])
               if name not in spec.splits and name != 'all']  # tfds' name for every split.
    if missing:
      problems.append(f'dataset.{field}={ds[field]!r} names no split of {ds.name} '
                      f'({", ".join(map(repr, missing))}); its splits are {_describe(spec.splits)}.'
                      f' Set e.g. --config.dataset.{field}={suggested or "train[90%:]"} (tfds '
                      "split syntax: 'train[:90%]', 'train+extra').")
  return problems


def check_dataset(config, spec: registry.DatasetSpec) -> None:
  """Raises ``ConfigError`` where ``config.dataset`` cannot train on the dataset ``spec``
  describes (``data.specs.spec_of``: its registry entry, or its tfds builder's info)."""
  problems = _dataset_problems(config, spec)
  if problems:
    raise ConfigError('Invalid config:\n  ' + '\n  '.join(problems))


def validate(config, *, device_count: int, process_count: int) -> None:
  """Raises ``ConfigError`` for any config that cannot train correctly.

  A dataset without a registry entry is checked by ``check_dataset`` once its facts are read
  from its tfds builder (``train`` does both), so that everything else is checked without
  TensorFlow.
  """
  problems = []
  if not models.is_model_name(config.model.name):
    problems.append(f'model.name={config.model.name!r} is not a model. Valid names: '
                    f'{", ".join(models.MODEL_NAMES)}, wrn{{6n+4}}_{{k}}.')
  if config.model.shortcut not in (None, *models.SHORTCUT_OPTIONS):
    problems.append(f'model.shortcut={config.model.shortcut!r}; use A, B or C (or None for the '
                    'family default).')
  if config.model.bottleneck_stride_on not in models.BOTTLENECK_STRIDE_ON:
    problems.append(f'model.bottleneck_stride_on={config.model.bottleneck_stride_on!r}; use '
                    "'1x1' or '3x3'.")
  problems += models.config_problems(config.model)
  for field, value in (('model.dtype', config.model.dtype),
                       ('gradient_allreduce_dtype', config.gradient_allreduce_dtype)):
    if value not in ('float32', 'bfloat16'):
      problems.append(f"{field}={value!r}; use 'float32' or 'bfloat16'.")
  if config.dataset.name in registry.DATASETS:
    problems += _dataset_problems(config, registry.DATASETS[config.dataset.name])
  if config.dataset.shuffle_buffer < 1:
    problems.append(f'dataset.shuffle_buffer={config.dataset.shuffle_buffer} must be at least 1 '
                    '(records per shuffled window of the streamed ImageNet order).')
  if config.dataset.imagenet_per_pixel_mean and config.dataset.mean_examples < 1:
    problems.append(f'dataset.mean_examples={config.dataset.mean_examples} must be at least 1 '
                    'for dataset.imagenet_per_pixel_mean.')
  for field in ('batch_size', 'eval_batch_size'):
    value = config[field]
    if value <= 0:
      problems.append(f'{field}={value} must be positive.')
    elif value % device_count:
      problems.append(f'{field}={value} is not divisible by the {device_count} devices; use a '
                      f'multiple of {device_count} (e.g. --config.{field}='
                      f'{max(device_count, value - value % device_count)}).')
    elif value % process_count:
      problems.append(f'{field}={value} is not divisible by the {process_count} processes.')
  group = config.model.bn_group_size
  if group < 0 or (group and (config.batch_size // device_count) % group):
    problems.append(f'model.bn_group_size={group} must divide the per-device batch '
                    f'{config.batch_size // device_count} (or be 0 for global statistics).')
  if config.steps_per_call < 1:
    problems.append(f'steps_per_call={config.steps_per_call} must be at least 1.')
  if config.profile_steps < 0:
    problems.append(f'profile_steps={config.profile_steps} must not be negative (0: no profile).')
  for steps_field, epochs_field in (
      ('total_steps', 'total_epochs'), ('eval_every_steps', 'eval_every_epochs'),
      ('checkpoint_every_steps', 'checkpoint_every_epochs'),
      ('optimizer.plateau_patience', 'optimizer.plateau_patience_epochs')):
    problems += _exactly_one(config, steps_field, epochs_field)
  opt = config.optimizer
  if not opt.learning_rate > 0:
    problems.append(f'optimizer.learning_rate={opt.learning_rate} must be positive.')
  if opt.lr_reference_batch < 0:
    problems.append(f'optimizer.lr_reference_batch={opt.lr_reference_batch} must be 0 (no '
                    'scaling) or the batch size the learning rate is given for.')
  if (opt.warmup_steps or 0) < 0:
    problems.append(f'optimizer.warmup_steps={opt.warmup_steps} must not be negative (None: the '
                    "network's recipe).")
  if warmup_steps(config) and not opt.warmup_learning_rate > 0:
    problems.append(f'optimizer.warmup_learning_rate={opt.warmup_learning_rate} must be positive.')
  if opt.scaling_warmup_epochs < 0:
    problems.append(f'optimizer.scaling_warmup_epochs={opt.scaling_warmup_epochs} must not be '
                    'negative (0: no ramp to the scaled rate).')
  elif scales_rate_up(config) and opt.scaling_warmup_epochs and warmup_steps(config):
    problems.append(
        f'Two warm-ups apply: the constant one of optimizer.warmup_steps={warmup_steps(config)} '
        f'(at {opt.warmup_learning_rate}) and the ramp of optimizer.scaling_warmup_epochs='
        f'{opt.scaling_warmup_epochs} to the rate scaled for batch_size={config.batch_size} '
        f'(lr_reference_batch={opt.lr_reference_batch}). A run starts with one of them: set '
        '--config.optimizer.warmup_steps=0 or --config.optimizer.scaling_warmup_epochs=0.')
  elif (scales_rate_up(config) and config.total_epochs
        and opt.scaling_warmup_epochs >= config.total_epochs):
    problems.append(f'optimizer.scaling_warmup_epochs={opt.scaling_warmup_epochs} must be shorter '
                    f'than the run (total_epochs={config.total_epochs}).')
  if opt.name not in OPTIMIZERS:
    problems.append(f'optimizer.name={opt.name!r} is not an optimizer; use one of '
                    f'{", ".join(map(repr, OPTIMIZERS))}.')
  elif opt.name == 'lars' and opt.weight_decay_on != 'kernels':
    problems.append(f'optimizer.name=lars adapts and decays the conv and dense kernels only '
                    '(BatchNorm parameters and biases take plain momentum SGD, as You et al. and '
                    'the MLPerf reference do), but optimizer.weight_decay_on='
                    f"{opt.weight_decay_on!r}: set --config.optimizer.weight_decay_on=kernels.")
  if not opt.lars_trust_coefficient > 0 or opt.lars_epsilon < 0:
    problems.append(f'optimizer.lars_trust_coefficient={opt.lars_trust_coefficient} must be '
                    f'positive and optimizer.lars_epsilon={opt.lars_epsilon} not negative.')
  if not 0 <= config.label_smoothing < 1:
    problems.append(f'label_smoothing={config.label_smoothing} must be in [0, 1) (0: the plain '
                    'cross-entropy; MLPerf uses 0.1).')
  if not 0 <= opt.momentum < 1:
    problems.append(f'optimizer.momentum={opt.momentum} must be in [0, 1).')
  if opt.weight_decay < 0:
    problems.append(f'optimizer.weight_decay={opt.weight_decay} must not be negative.')
  if opt.weight_decay_on not in ('all', 'kernels'):
    problems.append(f"optimizer.weight_decay_on={opt.weight_decay_on!r}; use 'all' or 'kernels'.")
  if opt.lr_boundaries_unit not in ('steps', 'epochs'):
    problems.append(f"optimizer.lr_boundaries_unit={opt.lr_boundaries_unit!r}; use 'steps' or "
                    "'epochs'.")
  boundaries = list(opt.lr_boundaries)
  if boundaries != sorted(boundaries) or len(set(boundaries)) != len(boundaries) or any(
      b <= 0 for b in boundaries):
    problems.append(f'optimizer.lr_boundaries={tuple(boundaries)} must be positive and strictly '
                    'increasing, e.g. (32000, 48000).')
  if opt.schedule not in SCHEDULES:
    problems.append(f'optimizer.schedule={opt.schedule!r} is not a schedule; use one of '
                    f'{", ".join(map(repr, SCHEDULES))}.')
  elif opt.schedule in ('cosine', 'polynomial') and not (
      0 <= opt.end_learning_rate < scaled_learning_rate(config)):
    problems.append(f'optimizer.end_learning_rate={opt.end_learning_rate} must be at least 0 and '
                    f'below the rate it decays from, {scaled_learning_rate(config):g}.')
  if not opt.decay_power > 0:
    problems.append(f'optimizer.decay_power={opt.decay_power} must be positive.')
  if opt.plateau_threshold < 0:
    problems.append(f'optimizer.plateau_threshold={opt.plateau_threshold} must not be negative.')
  if not 0 < opt.lr_decay_factor <= 1:
    problems.append(f'optimizer.lr_decay_factor={opt.lr_decay_factor} must be in (0, 1].')
  for field in ('log_every_steps', 'keep_checkpoints'):
    if config[field] <= 0:
      problems.append(f'{field}={config[field]} must be positive.')
  problems += eval_sets.extra_eval_problems(config)
  if problems:
    raise ConfigError('Invalid config:\n  ' + '\n  '.join(problems))


def data_shards(config, process_count: int) -> int:
  """The data shards the train split is cut into: ``dataset.num_shards``, or one per process
  where it is 0."""
  return config.dataset.num_shards or process_count


def resume_data_shards(config, recorded: int | None, process_count: int):
  """The config that resumes a run whose checkpoint was written with ``recorded`` data shards.

  The train order of an epoch follows the number of shards (``data.pipeline``), so a resume
  keeps it: ``dataset.num_shards=0`` means one shard per process when a run starts, and the
  shards it started with when it resumes. On a process count that divides them (e.g. 8 hosts
  resumed on 4, 2 or 1) the epoch in progress goes on exactly as it would have, which is what a
  resume promises; the returned config says so (``num_shards=recorded``) and ``config.json``
  keeps it. A process count that cannot share them out is refused (``ConfigError``) before
  anything is compiled, naming both ways out: such a process count, or
  ``--config.dataset.num_shards=N`` to accept another order from there on. A ``num_shards`` set
  by the user is followed as given, with a warning where it changes the order. ``recorded`` None
  (no checkpoint, or one older than the record) leaves the config as it is.
  """
  asked = config.dataset.num_shards
  if recorded is None or recorded == data_shards(config, process_count):
    return config
  if asked:
    logging.warning('Resuming with dataset.num_shards=%d data shards, not the %d the '
                    'checkpoint was written with: the epoch in progress continues in another '
                    'order.', asked, recorded)
    return config
  if recorded % process_count:
    raise ConfigError(
        f'The checkpoints were written with {recorded} data shards, which dataset.num_shards=0 '
        'resumes with so that the epoch in progress continues in its order, but '
        f'{process_count} processes cannot share {recorded} shards out. Resume on a number of '
        f'processes that divides {recorded}, or accept another order from here on with '
        f'--config.dataset.num_shards={process_count} (or another multiple of {process_count} '
        f'that divides batch_size={config.batch_size}).')
  logging.info('Resuming with the %d data shards the checkpoints were written with, on %d '
               'processes: the epoch in progress continues in the same order.', recorded,
               process_count)
  config = config.copy_and_resolve_references()
  config.dataset.num_shards = recorded
  return config


def changed_fields(saved, current, fields) -> list[str]:
  """``'key: saved -> current'`` for each config key under ``fields`` where the two differ.

  ``saved`` and ``current`` are ConfigDicts; keys are dotted.
  """
  saved, current = (flax.traverse_util.flatten_dict(json.loads(c.to_json_best_effort()),
                                                    sep='.') for c in (saved, current))
  return [f'{key}: {saved.get(key)!r} -> {current.get(key)!r}'
          for key in sorted(saved.keys() | current.keys())
          if any(key == f or key.startswith(f + '.') for f in fields)
          and saved.get(key) != current.get(key)]


def check_workdir(config, workdir: str) -> None:
  """Refuses a workdir that is unwritable or holds a run of a different experiment.

  Reads ``workdir/config.json`` (written by ``save_config``) and compares the fields that
  define the experiment; nothing in the workdir is modified.
  """
  path = workdirs.path(workdir)
  if not workdirs.is_remote(workdir):
    existing = os.fspath(path)
    while not os.path.exists(existing):
      existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
      raise ConfigError(f'The workdir {workdir!r} cannot be written ({existing!r} is not a '
                        'writable directory). Choose another --workdir or fix its permissions.')
  if not (path / 'config.json').exists():
    return
  changed = changed_fields(load_config(workdir), config, IDENTITY_FIELDS)
  if changed:
    raise ConfigError(
        f'The workdir {workdir!r} holds a run of a different experiment ('
        + '; '.join(changed) + '). Resuming it with this config would mix two runs. Use a new '
        '--workdir, or the config that run was started with.')


def save_config(config, workdir: str) -> None:
  """Writes the run's config as ``workdir/config.json`` (what notebooks and resumes read)."""
  directory = workdirs.path(workdir)
  directory.mkdir(parents=True, exist_ok=True)
  tmp = directory / 'config.json.tmp'
  tmp.write_text(config.to_json_best_effort(indent=2, sort_keys=True))
  tmp.replace(directory / 'config.json')


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with."""
  path = workdirs.path(workdir) / 'config.json'
  if not path.exists():
    raise FileNotFoundError(f'{path} does not exist: {workdir!r} is not a training workdir.')
  return ml_collections.ConfigDict(json.loads(path.read_text()))
