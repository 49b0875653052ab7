"""A run resolved once: every number it derives from its config, and every problem in one error.

``resolve(config, devices=..., processes=..., facts=...)`` reads the config with the dataset's
facts (``facts(name) -> DatasetSpec``: the registry's entry, a tfds builder's info or an image
folder's; ``registry.get`` where TensorFlow is not installed) and returns a frozen ``RunPlan``:
the data shards and batches, the image shape, steps per epoch, the run's length and its
intervals in steps, the learning rate's numbers and the evaluation sets. Each part checks its
own section (``models.config_problems``, ``optim.problems``, ``losses.problems``,
``mixing.problems``, ``data.config_checks.problems``, ``eval_sets``, ``ema.problems``);
``resolve`` gathers what they find into one ``ConfigError`` before anything is read or compiled.
Everything downstream takes the plan, or numbers from it, and derives nothing from the config
again; a run writes it beside ``config.json`` (``save``), where reports, ``load_run`` and the TPU
planner read it.

Steps per epoch have one formula: the train split is cut into ``num_shards`` data shards
(``tfds.even_splits``), each step takes ``batch_size // num_shards`` examples of every shard, and
an epoch ends when the smallest shard is used up (``data.splits.smallest_shard``).
"""

import dataclasses
import json
import math
import numbers
from collections.abc import Callable

import ml_collections
from absl import logging

from resnet_jax import ema, eval_sets, learning_rate, losses, mixing, models, optim, workdirs
from resnet_jax.data import config_checks, registry, splits
from resnet_jax.errors import ConfigError, DatasetNotAvailableError

PLAN_FILE = 'plan.json'
# Durations in steps or in epochs: exactly one field of each pair.
_DURATIONS = (('total_steps', 'total_epochs'), ('eval_every_steps', 'eval_every_epochs'),
              ('checkpoint_every_steps', 'checkpoint_every_epochs'),
              ('optimizer.plateau_patience', 'optimizer.plateau_patience_epochs'))


@dataclasses.dataclass(frozen=True)
class EvalSet:
  """A split evaluated at every evaluation, its summaries under ``prefix``."""
  prefix: str                  # 'eval_' for the main eval split, 'NAME/' for config.extra_evals.
  dataset: str
  split: str
  spec: registry.DatasetSpec
  num_examples: int

  @property
  def name(self) -> str:
    """What the console calls it: the main eval split's name ('test'), else its NAME."""
    return self.split if self.prefix == eval_sets.EVAL_PREFIX else self.prefix.rstrip('/')


@dataclasses.dataclass(frozen=True, eq=False)
class RunPlan:
  """Every number a run derives from its config (``resolve``)."""
  config: ml_collections.ConfigDict  # As the run reads it (a resume's data shards filled in).
  dataset: registry.DatasetSpec
  processes: int
  devices: int
  num_shards: int               # Data shards of the train split (a multiple of processes).
  train_examples: int           # In dataset.train_split.
  steps_per_epoch: int
  total_steps: int
  log_every: int
  eval_every: int
  checkpoint_every: int
  learning_rate: learning_rate.LearningRate
  eval_sets: tuple[EvalSet, ...]  # The main eval split first.

  @property
  def num_classes(self) -> int:
    return self.dataset.num_classes

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) as the model sees it in training."""
    size = self.config.dataset.image_size
    return (size, size, self.dataset.channels)

  @property
  def eval_image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of the eval split's images (``dataset.eval_crop``; the nets are fully
    convolutional with a global pooling, so they take either)."""
    size = config_checks.eval_view(self.config.dataset)[0]
    return (size, size, self.dataset.channels)

  @property
  def shard_batch(self) -> int:
    """Examples each data shard gives every step."""
    return self.config.batch_size // self.num_shards

  @property
  def process_batch(self) -> int:
    return self.config.batch_size // self.processes

  @property
  def eval_process_batch(self) -> int:
    return self.config.eval_batch_size // self.processes

  def to_dict(self) -> dict:
    """The plan as JSON-ready values (the config is ``config.json``'s)."""
    numbers = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ('config', 'dataset', 'learning_rate', 'eval_sets')}
    return json.loads(json.dumps({
        **numbers, 'image_shape': self.image_shape, 'eval_image_shape': self.eval_image_shape,
        'shard_batch': self.shard_batch,
        'process_batch': self.process_batch, 'dataset': dataclasses.asdict(self.dataset),
        'learning_rate': dataclasses.asdict(self.learning_rate),
        'eval_sets': [dataclasses.asdict(s) for s in self.eval_sets]}))


def in_steps(steps, epochs, steps_per_epoch: int) -> int:
  """A duration the config gives in steps or in epochs (the other 0/None), in steps; an
  epoch-based one is at least one step."""
  return max(1, round(epochs * steps_per_epoch)) if epochs else int(steps)


def _field(config, dotted: str):
  for key in dotted.split('.'):
    config = config[key]
  return config


def _non_finite(config, prefix: str = '') -> list[str]:
  """A problem for every field that holds NaN or an infinity, alone or in a tuple or list."""
  found = []
  for key, value in config.items():
    name = f'{prefix}{key}'
    if isinstance(value, ml_collections.ConfigDict):
      found += _non_finite(value, f'{name}.')
    elif any(isinstance(v, numbers.Real) and not math.isfinite(v)
             for v in (value if isinstance(value, (tuple, list)) else (value,))):
      found.append(f'{name}={value} is not a finite number; give a finite one.')
  return found


def _duration_problems(config) -> list[str]:
  """Each duration in steps or in epochs: exactly one of its pair, not negative."""
  found = []
  for steps_field, epochs_field in _DURATIONS:
    steps, epochs = (_field(config, f) or 0 for f in (steps_field, epochs_field))
    if bool(steps) == bool(epochs):
      found.append(f'Set exactly one of {steps_field} and {epochs_field} (the other to 0, e.g. '
                   f'--config.{epochs_field if steps else steps_field}=0); got {steps_field}='
                   f'{steps}, {epochs_field}={epochs}.')
    elif steps < 0 or epochs < 0:
      found.append(f'{steps_field} / {epochs_field} must not be negative; got {steps_field}='
                   f'{steps}, {epochs_field}={epochs}.')
  return found


def _run_problems(config, devices: int, processes: int) -> list[str]:
  """The batches against the devices and processes, and the loop's own fields."""
  found = []
  for field in ('batch_size', 'eval_batch_size'):
    value = config[field]
    if value <= 0:
      found.append(f'{field}={value} must be positive.')
    elif value % devices:
      found.append(f'{field}={value} is not divisible by the {devices} devices; use a multiple '
                   f'of {devices} (e.g. --config.{field}={max(devices, value - value % devices)}).')
    elif value % processes:
      found.append(f'{field}={value} is not divisible by the {processes} processes.')
  if config.gradient_allreduce_dtype not in models.COMPUTE_DTYPES:
    found.append(f'gradient_allreduce_dtype={config.gradient_allreduce_dtype!r}; use '
                 "'float32' or 'bfloat16'.")
  if config.steps_per_call < 1:
    found.append(f'steps_per_call={config.steps_per_call} must be at least 1.')
  if config.profile_steps < 0:
    found.append(f'profile_steps={config.profile_steps} must not be negative (0: no profile).')
  for field in ('log_every_steps', 'keep_checkpoints'):
    if config[field] <= 0:
      found.append(f'{field}={config[field]} must be positive.')
  return found


def _num_shards(config, processes: int, recorded: int | None) -> int:
  """The data shards: ``dataset.num_shards``, or one per process where it is 0; a resume
  keeps the shards its checkpoint was written with (``recorded``), so that the epoch in
  progress goes on in its order (docs/reliability.md). A process count that cannot share them
  out is refused; a ``num_shards`` the user set is followed, with a warning where it changes the
  order."""
  asked = config.dataset.num_shards
  if recorded is None or recorded == (asked or processes):
    return asked or processes
  if asked:
    logging.warning('Resuming with dataset.num_shards=%d data shards, not the %d the '
                    'checkpoint was written with: the epoch in progress continues in another '
                    'order.', asked, recorded)
    return asked
  if recorded % processes:
    raise ConfigError(
        f'The checkpoints were written with {recorded} data shards, which dataset.num_shards=0 '
        'resumes with so that the epoch in progress continues in its order, but '
        f'{processes} processes cannot share {recorded} shards out. Resume on a number of '
        f'processes that divides {recorded}, or accept another order from here on with '
        f'--config.dataset.num_shards={processes} (or another multiple of {processes} '
        f'that divides batch_size={config.batch_size}).')
  logging.info('Resuming with the %d data shards the checkpoints were written with, on %d '
               'processes: the epoch in progress continues in the same order.', recorded,
               processes)
  return recorded


def _eval_sets(config, main: registry.DatasetSpec, facts) -> tuple[list[EvalSet], list[str]]:
  """The main eval split and each set of ``config.extra_evals``, or what keeps them out."""
  ds = config.dataset
  sets = [EvalSet(eval_sets.EVAL_PREFIX, ds.name, ds.eval_split, main,
                  splits.num_examples(ds.eval_split, main.splits))]
  extras, found = eval_sets.parse(config)
  for extra in extras:
    try:
      spec = main if extra.dataset == ds.name else facts(extra.dataset)
    except (ConfigError, DatasetNotAvailableError) as error:
      found.append(f"extra_evals entry '{extra}': {error}")
      continue
    problem = (eval_sets.label_space_problem(config, extra, main, spec)
               or config_checks.split_problem(f"extra_evals entry '{extra}'", extra.split, spec))
    if problem:
      found.append(problem)
      continue
    sets.append(EvalSet(extra.prefix, extra.dataset, extra.split, spec,
                        splits.num_examples(extra.split, spec.splits)))
  return sets, found


def resolve(config, *, devices: int, processes: int,
            facts: Callable[[str], registry.DatasetSpec] = registry.get,
            recorded_shards: int | None = None, training: bool = True) -> RunPlan:
  """The plan of ``config`` on ``devices`` devices over ``processes`` processes, resuming a
  checkpoint written with ``recorded_shards`` data shards (None: a fresh start, or a checkpoint
  that records none); every problem in one ``ConfigError`` (``DatasetNotAvailableError`` where
  a dataset is not prepared). ``training=False`` plans an evaluation: the train split is not
  needed (an evaluation-only dataset, a copy without one), and its numbers are 0 where it is
  missing."""
  found = _non_finite(config)
  if found:  # The other checks compute with these numbers.
    raise ConfigError('Invalid config:\n  ' + '\n  '.join(found))
  found = models.config_problems(config.model, max(config.batch_size // devices, 1))
  found += _run_problems(config, devices, processes) + _duration_problems(config)
  found += (optim.problems(config) + losses.problems(config) + mixing.problems(config)
            + ema.problems(config))
  unprepared = False
  try:
    spec = facts(config.dataset.name)
  except (ConfigError, DatasetNotAvailableError) as error:
    spec, unprepared = None, isinstance(error, DatasetNotAvailableError)
    found.append(str(error))
  num_shards = config.dataset.num_shards or processes
  try:
    num_shards = _num_shards(config, processes, recorded_shards)
  except ConfigError as error:
    found.append(str(error))
  if num_shards % processes or config.batch_size % num_shards:
    found.append(f'dataset.num_shards={num_shards} data shards must be a multiple of the '
                 f'{processes} processes and divide batch_size={config.batch_size}; set '
                 'dataset.num_shards to 0 (one shard per process) or to such a value.')
  if spec is not None:
    data_found = config_checks.problems(config.dataset, spec, training)
    found += data_found
    if not data_found:
      sets, set_found = _eval_sets(config, spec, facts)
      found += set_found
      train_examples = smallest = 0
      if not config_checks.split_problem('', config.dataset.train_split, spec):
        train_examples = splits.num_examples(config.dataset.train_split, spec.splits)
        smallest = splits.smallest_shard(config.dataset.train_split, spec.splits, num_shards)
      if training and not found and not smallest // (config.batch_size // num_shards):
        found.append(f'batch_size={config.batch_size} exceeds the {config.dataset.train_split!r} '
                     f'split of {config.dataset.name} (per data shard); lower batch_size.')
  if found:
    error = DatasetNotAvailableError if unprepared else ConfigError
    raise error('Invalid config:\n  ' + '\n  '.join(found))
  config = config.copy_and_resolve_references()
  if num_shards != (config.dataset.num_shards or processes):  # A resume keeps its shards.
    config.dataset.num_shards = num_shards
  steps_per_epoch = smallest // (config.batch_size // num_shards)
  total_steps = in_steps(config.total_steps, config.total_epochs, steps_per_epoch)
  eval_every = in_steps(config.eval_every_steps, config.eval_every_epochs, steps_per_epoch)
  return RunPlan(
      config=config, dataset=spec, processes=processes, devices=devices, num_shards=num_shards,
      train_examples=train_examples,
      steps_per_epoch=steps_per_epoch, total_steps=total_steps,
      log_every=config.log_every_steps, eval_every=eval_every,
      checkpoint_every=in_steps(config.checkpoint_every_steps, config.checkpoint_every_epochs,
                                steps_per_epoch),
      learning_rate=learning_rate.resolve(config, steps_per_epoch=steps_per_epoch,
                                          total_steps=total_steps, eval_every=eval_every),
      eval_sets=tuple(sets))


def save(plan: RunPlan, workdir: str) -> None:
  """Writes ``workdir/plan.json`` beside ``config.json`` (``workdirs.save_config``)."""
  workdirs.save_json(plan.to_dict(), workdir, PLAN_FILE)
  workdirs.save_config(plan.config, workdir)


def _spec(facts: dict) -> registry.DatasetSpec:
  return registry.DatasetSpec(**{**facts, 'image_sizes': tuple(facts['image_sizes'])})


def load(workdir: str) -> RunPlan | None:
  """The plan a run wrote (``save``), with its config; None for a run that wrote none."""
  path = workdirs.path(workdir) / PLAN_FILE
  if not path.exists():
    return None
  saved = json.loads(path.read_text())
  fields = {f.name for f in dataclasses.fields(RunPlan)}
  numbers = {k: v for k, v in saved.items()
             if k in fields and k not in ('dataset', 'learning_rate', 'eval_sets')}
  rate = saved['learning_rate']
  return RunPlan(
      config=workdirs.load_config(workdir), dataset=_spec(saved['dataset']), **numbers,
      learning_rate=learning_rate.LearningRate(**{**rate,
                                                  'boundaries': tuple(rate['boundaries'])}),
      eval_sets=tuple(EvalSet(**{**s, 'spec': _spec(s['spec'])}) for s in saved['eval_sets']))
