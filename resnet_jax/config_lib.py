"""From a config to the objects of a run, and the checks that keep bad configs out early.

Every check here runs before any dataset is read or any function is compiled, and raises
``ConfigError`` with a message that says what is wrong and how to fix it.
"""

import json
import os

import flax
import jax
import ml_collections

from resnet_jax import models, workdirs


class ConfigError(ValueError):
  """The config cannot give a correct run; the message says which field and what to do."""


# The input resolution each dataset allows: (smallest, largest) image_size.
IMAGE_SIZES = {
    'digits': (8, 64),          # 8x8 originals, upsampled.
    'cifar10': (32, 32),        # Random 32x32 crops of the padded 32x32 images.
    'imagenet2012': (32, 256),  # Crops of the image resized to shorter side 256 (eval).
}

# What the model and the learning-rate schedule need of each dataset, known without TensorFlow
# (as tfds reports them): classes, image channels, examples in the whole train split.
NUM_CLASSES = {'digits': 10, 'cifar10': 10, 'imagenet2012': 1000}
CHANNELS = {'digits': 1, 'cifar10': 3, 'imagenet2012': 3}
TRAIN_EXAMPLES = {'digits': 1_500, 'cifar10': 50_000, 'imagenet2012': 1_281_167}

# Fields whose change makes a checkpoint belong to a different experiment.
IDENTITY_FIELDS = ('model', 'dataset.name', 'dataset.image_size', 'seed', 'batch_size',
                   'optimizer.schedule')  # The plateau schedule's state is in the checkpoint.
# What a config saved before these identity fields existed meant by them.
ADDED_FIELDS = {'optimizer.schedule': 'steps'}
# Fields that change how a step executes, not what it computes: two configs may differ in them.
EXECUTION_FIELDS = ('model.fusion_barriers',)


def build_model(config, num_classes: int, platform: str | None = None):
  """The Flax module that ``config.model`` describes, for devices of ``platform`` (default: the
  default backend's)."""
  overrides = {k: v for k, v in config.model.items() if k != 'name' and v is not None}
  if config.model.get('fusion_barriers') is None:
    overrides['fusion_barriers'] = (platform or jax.default_backend()) == 'cpu'
  return models.create_model(config.model.name, num_classes, **overrides)


# The paper's warm-up (Sec. 4.2): its deepest CIFAR nets start at lr 0.01 for about 400
# iterations (until training error is below 80%), then go back to the schedule.
NETWORK_WARMUP_STEPS = {'resnet110': 400, 'resnet1202': 400, 'plain110': 400}


def warmup_steps(config) -> int:
  """``optimizer.warmup_steps``, or the network's own recipe where it is None.

  The recipe follows ``model.name``, so ``configs/cifar10.py:resnet110`` and
  ``--config.model.name=resnet110`` train the same way.
  """
  steps = config.optimizer.warmup_steps
  return NETWORK_WARMUP_STEPS.get(config.model.name, 0) if steps is None else int(steps)


def total_steps(config, steps_per_epoch: int) -> int:
  if config.total_epochs:
    return int(round(config.total_epochs * steps_per_epoch))
  return int(config.total_steps)


def validate(config, *, device_count: int, process_count: int) -> None:
  """Raises ``ConfigError`` for any config that cannot train correctly."""
  problems = []
  if config.model.name not in models.MODEL_NAMES:
    problems.append(f'model.name={config.model.name!r} is not a model. Valid names: '
                    f'{", ".join(models.MODEL_NAMES)}.')
  if config.model.shortcut not in (None, *models.SHORTCUT_OPTIONS):
    problems.append(f'model.shortcut={config.model.shortcut!r}; use A, B or C (or None for the '
                    'family default).')
  if config.model.bottleneck_stride_on not in models.BOTTLENECK_STRIDE_ON:
    problems.append(f'model.bottleneck_stride_on={config.model.bottleneck_stride_on!r}; use '
                    "'1x1' or '3x3'.")
  for field, value in (('model.dtype', config.model.dtype),
                       ('gradient_allreduce_dtype', config.gradient_allreduce_dtype)):
    if value not in ('float32', 'bfloat16'):
      problems.append(f"{field}={value!r}; use 'float32' or 'bfloat16'.")
  sizes = IMAGE_SIZES.get(config.dataset.name)
  if sizes is None:
    problems.append(f'dataset.name={config.dataset.name!r} is not supported; use one of '
                    f'{", ".join(IMAGE_SIZES)}.')
  elif not sizes[0] <= config.dataset.image_size <= sizes[1]:
    problems.append(f'dataset.image_size={config.dataset.image_size} does not fit '
                    f'{config.dataset.name}: crops must be between {sizes[0]} and {sizes[1]} '
                    'pixels wide (a crop cannot be larger than the image it is cut from).')
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
  if bool(config.total_steps) == bool(config.total_epochs):
    problems.append('Set exactly one of total_steps and total_epochs (the other to 0/None); '
                    f'got total_steps={config.total_steps}, total_epochs={config.total_epochs}.')
  elif (config.total_steps or 0) < 0 or (config.total_epochs or 0) < 0:
    problems.append('total_steps / total_epochs must not be negative.')
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
  if opt.schedule not in ('steps', 'plateau'):
    problems.append(f"optimizer.schedule={opt.schedule!r}; use 'steps' or 'plateau'.")
  if opt.plateau_patience < 1 or opt.plateau_threshold < 0:
    problems.append(f'optimizer.plateau_patience={opt.plateau_patience} must be at least 1 and '
                    f'optimizer.plateau_threshold={opt.plateau_threshold} not negative.')
  if not 0 < opt.lr_decay_factor <= 1:
    problems.append(f'optimizer.lr_decay_factor={opt.lr_decay_factor} must be in (0, 1].')
  for field in ('log_every_steps', 'eval_every_steps', 'checkpoint_every_steps',
                'keep_checkpoints'):
    if config[field] <= 0:
      problems.append(f'{field}={config[field]} must be positive.')
  if problems:
    raise ConfigError('Invalid config:\n  ' + '\n  '.join(problems))


def changed_fields(saved, current, fields) -> list[str]:
  """``'key: saved -> current'`` for each config key under ``fields`` where the two differ.

  ``saved`` and ``current`` are ConfigDicts; keys are dotted; ``EXECUTION_FIELDS`` are ignored.
  """
  saved, current = (flax.traverse_util.flatten_dict(json.loads(c.to_json_best_effort()),
                                                    sep='.') for c in (saved, current))
  saved = {**ADDED_FIELDS, **saved}
  return [f'{key}: {saved.get(key)!r} -> {current.get(key)!r}'
          for key in sorted(saved.keys() | current.keys())
          if any(key == f or key.startswith(f + '.') for f in fields)
          and key not in EXECUTION_FIELDS and saved.get(key) != current.get(key)]


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
