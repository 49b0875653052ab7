"""Starting a run from trained weights: ``config.init_from`` (docs/training.md, 'Fine-tuning').

The source is a run's workdir (its latest checkpoint, or ``init_from_step``), a ``.msgpack`` file
that ``Run.export`` writes, or a torchvision state dict (``.pth``, ``.pt``, ``.npz``) of the
config's net, converted by ``torchvision_weights`` with torchvision's input scale folded into
the stem (its nets take ``(x - mean) / std``, this project's ``x - mean``). Variables (params
and batch_stats) are matched by path and shape:

* every variable of the run that the source holds with the same shape is loaded;
* the classifier (``models.CLASSIFIER``) keeps its fresh initialisation where the number of
  classes differs, and ``init_exclude`` patterns keep more variables fresh on purpose;
* anything else that does not fit is an ``InitFromError`` naming each variable, raised before
  anything is compiled.

Only variables come from the source: the step, the optimizer state and the data position start
fresh. Every process reads the source itself, and all check that they read the same values.
"""

import dataclasses
import json
import re
import zlib

import flax
import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from resnet_jax import checkpointing, exports, models, torchvision_weights, workdirs
from resnet_jax.errors import CheckpointError, ConfigError, InitFromError, listed

# What the run writes beside its checkpoints: where its weights came from.
RECORD = 'init_from.json'
TORCHVISION_SUFFIXES = ('.pth', '.pt', '.npz')
MSGPACK_SUFFIX = '.msgpack'
_CLASSES = f'params/{models.CLASSIFIER}/bias'  # Its length is the number of classes.
# The model fields that change what a variable means without changing its shape.
_MEANING_FIELDS = ('model.name', 'model.shortcut', 'model.bottleneck_stride_on', 'model.avg_down')


def check_config(config) -> None:
  """``ConfigError`` for fine-tuning fields that cannot work, before anything is read."""
  problems = []
  if not config.init_from:
    problems += [f'{field}={config[field]!r} needs init_from (the weights to start from).'
                 for field in ('init_from_step', 'init_exclude') if config[field]]
  if (config.init_from_step or 0) < 0:
    problems.append(f'init_from_step={config.init_from_step} must not be negative (None: the '
                    "source's latest checkpoint).")
  for pattern in config.init_exclude or ():
    try:
      re.compile(pattern)
    except (re.error, TypeError) as error:
      problems.append(f'init_exclude: {pattern!r} is not a regular expression ({error}); e.g. '
                      "--config.init_exclude=\"('fc/.*',)\".")
  if problems:
    raise ConfigError('Invalid config:\n  ' + '\n  '.join(problems))


# --------------------------------------------------------------------------------------------
# Reading the source.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Source:
  """The variables of ``init_from``, flat: ``{'params/fc/kernel': numpy array, ...}``."""
  path: str
  kind: str          # 'workdir', 'msgpack' or 'torchvision'.
  step: int | None   # The checkpoint's step, for a workdir.
  variables: dict

  def describe(self) -> str:
    where = f'its checkpoint of step {self.step}' if self.step is not None else self.kind
    return f'{self.path} ({where})'


def _flat(variables) -> dict:
  """``{'params/fc/kernel': leaf, ...}`` of a ``{'params', 'batch_stats'}`` pytree."""
  return flax.traverse_util.flatten_dict(
      {c: flax.core.unfreeze(variables[c]) for c in ('params', 'batch_stats')}, sep='/')


def _from_workdir(config, source: str):
  try:
    variables, step = checkpointing.restore_variables(source, config.init_from_step)
  except CheckpointError as error:
    raise InitFromError(f'init_from={source!r}: {error}') from error
  if (workdirs.path(source) / 'config.json').exists():
    differ = workdirs.changed_fields(workdirs.load_config(source), config, _MEANING_FIELDS)
    if differ:
      logging.warning('init_from=%s trained another network (%s): variables that fit by name '
                      'and shape are loaded all the same.', source, '; '.join(differ))
  return jax.device_get(variables), step


def _from_msgpack(source: str):
  try:
    variables = exports.variables_of(
        flax.serialization.msgpack_restore(workdirs.path(source).read_bytes()))
  except Exception as error:  # pylint: disable=broad-except  (msgpack raises several kinds)
    raise InitFromError(f'init_from={source!r} cannot be read as a flax msgpack file '
                        f'({type(error).__name__}: {error}).') from error
  problem = _structure_problem(variables)
  if problem:
    raise InitFromError(f"init_from={source!r} does not hold {{'params', 'batch_stats'}} of "
                        f'arrays, as the file that Run.export writes does: {problem}. Export the '
                        'run again (resnet_jax.load_run(workdir).export(path)), or give its '
                        'workdir.')
  return variables


def _structure_problem(variables) -> str | None:
  """What keeps a restored msgpack from being a network's variables, or None."""
  if not isinstance(variables, dict):
    return f'it holds a value of type {type(variables).__name__}'
  for collection in ('params', 'batch_stats'):
    if collection not in variables:
      return f'it has no {collection!r}'
    if not isinstance(variables[collection], dict):
      return f'its {collection!r} is of type {type(variables[collection]).__name__}, not a dict'
  for key, value in _flat(variables).items():
    if np.asarray(value).dtype.kind not in 'biuf':
      return f'its {key} is of type {type(value).__name__}, not an array of numbers'
  return None


def _from_torchvision(config, source: str):
  name = config.model.name
  if name not in torchvision_weights.TORCHVISION_NAMES:
    raise InitFromError(f'init_from={source!r} is a torchvision state dict, but model.name='
                        f'{name!r} has no torchvision counterpart; use one of '
                        f'{", ".join(torchvision_weights.TORCHVISION_NAMES)}.')
  if models.model_spec(name)['block'] is models.BottleneckBlock and (
      config.model.bottleneck_stride_on != '3x3'):
    raise InitFromError(f"torchvision's {name} strides on the bottleneck's 3x3 convolution: set "
                        '--config.model.bottleneck_stride_on=3x3 to load init_from='
                        f'{source!r}.')
  try:
    return torchvision_weights.from_torchvision(
        torchvision_weights.read_state_dict(source), name,
        input_std=torchvision_weights.TORCHVISION_INPUT_STD)
  except ValueError as error:
    raise InitFromError(f'init_from={source!r}: {error}') from error


def _finite(source: Source) -> Source:
  """``source``, whose every value is finite; else ``InitFromError`` naming the variables."""
  bad = sorted(k for k, v in source.variables.items() if not np.all(np.isfinite(v)))
  if bad:
    raise InitFromError(
        f'init_from={source.describe()} holds NaN or infinite values in {len(bad)} of its '
        f'{len(source.variables)} variables ({listed(bad)}); no run can start from them. '
        'Start from weights saved before they diverged (for a workdir, an earlier checkpoint: '
        'init_from_step) or from other weights.')
  return source


def read(config) -> Source:
  """The variables of ``config.init_from``, in host memory; ``InitFromError`` if unreadable or
  not finite."""
  return _finite(_read(config))


def _read(config) -> Source:
  source = config.init_from
  try:
    workdirs.check_reachable(source)
  except ConfigError as error:  # An InitFromError, that every process agrees on (load).
    raise InitFromError(f'init_from={source!r}: {error}') from None
  path = workdirs.path(source)
  if config.init_from_step is not None and not path.is_dir():
    raise InitFromError(f'init_from_step={config.init_from_step} picks a checkpoint of a '
                        f'workdir, but init_from={source!r} is not a directory.')
  if path.is_dir():
    variables, step = _from_workdir(config, source)
    return Source(source, 'workdir', step, _flat(variables))
  if path.is_file() and path.suffix == MSGPACK_SUFFIX:
    return Source(source, 'msgpack', None, _flat(_from_msgpack(source)))
  if path.is_file() and path.suffix in TORCHVISION_SUFFIXES:
    return Source(source, 'torchvision', None, _flat(_from_torchvision(config, source)))
  found = 'is a file of another kind' if path.is_file() else 'does not exist'
  raise InitFromError(
      f'init_from={source!r} {found}. Give a run\'s workdir (with checkpoints/), a '
      f'{MSGPACK_SUFFIX} file that Run.export writes, or a torchvision state dict '
      f'({", ".join(TORCHVISION_SUFFIXES)}).')


# --------------------------------------------------------------------------------------------
# Matching it to the run.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
  """Which variables of the run come from the source, and why the others stay fresh."""
  source: Source
  loaded: tuple[str, ...]
  fresh: dict       # path -> 'classes' (the class count differs) or 'init_exclude'.
  total: int
  classes: tuple[int, int] | None = None  # (source, run) where the class counts differ.

  @property
  def record(self) -> dict:
    """What ``workdir/init_from.json`` holds."""
    return {'init_from': self.source.path, 'kind': self.source.kind, 'step': self.source.step,
            'loaded': len(self.loaded), 'variables': self.total, 'fresh': self.fresh,
            'classes': self.classes}


def _module_path(key: str) -> str:
  """'params/stage1_block1/conv1/kernel' -> 'stage1_block1/conv1/kernel': what patterns see."""
  return key.split('/', 1)[1]


def _is_classifier(key: str) -> bool:
  return _module_path(key).split('/')[0] == models.CLASSIFIER


def _exclude_hint(keys) -> str:
  modules = sorted({_module_path(k).rsplit('/', 1)[0] for k in keys})
  return ', '.join(repr(f'{re.escape(m)}/.*') for m in modules[:5])


def _in_layout_of(source: Source, abstract_variables) -> Source:
  """``source`` with each stage's blocks stacked or one module each, as the run has them."""
  nested = flax.traverse_util.unflatten_dict(source.variables, sep='/')
  laid_out = models.to_layout(nested, models.stacked_stages(abstract_variables))
  return dataclasses.replace(source, variables=flax.traverse_util.flatten_dict(laid_out,
                                                                               sep='/'))


def match(source: Source, abstract_variables, exclude=()) -> Plan:
  """The plan that loads ``source`` into variables shaped as ``abstract_variables``.

  The source's blocks are laid out as the run's first (``models.layouts``: a scanned and an
  unrolled net load each other's weights). ``InitFromError`` lists every variable that is
  missing on either side or of another shape, except the classifier where the class count
  differs and what ``exclude`` (regular expressions, matched in full against paths without
  their collection) names.
  """
  source = _in_layout_of(source, abstract_variables)
  run = {k: tuple(v.shape) for k, v in _flat(abstract_variables).items()}
  given = {k: tuple(np.shape(v)) for k, v in source.variables.items()}
  patterns = [re.compile(p) for p in exclude]
  excluded = lambda key: any(p.fullmatch(_module_path(key)) for p in patterns)
  classes_differ = _CLASSES in given and given[_CLASSES] != run[_CLASSES]
  fresh = {k: 'init_exclude' for k in run if excluded(k)}
  if classes_differ:
    fresh.update({k: 'classes' for k in run if _is_classifier(k) and k not in fresh})
  skipped = lambda key: excluded(key) or (classes_differ and _is_classifier(key))
  problems = ([(k, 'in this model, not in the source') for k in sorted(run.keys() - given.keys())]
              + [(k, 'in the source, not in this model') for k in sorted(given.keys() - run.keys())]
              + [(k, f'shape {given[k]} in the source, {run[k]} in this model')
                 for k in sorted(run.keys() & given.keys()) if given[k] != run[k]])
  problems = [(k, why) for k, why in problems if not skipped(k)]
  unused = [p.pattern for p in patterns
            if not any(p.fullmatch(_module_path(k)) for k in run.keys() | given.keys())]
  if problems or unused:
    lines = [f'{k}: {why}' for k, why in problems] + [
        f"init_exclude {p!r} matches no variable (paths look like 'stage1_block1/conv1/kernel')"
        for p in unused]
    hint = ('\nStart the same network (model.name and its options, the dataset\'s channels), or '
            'keep those variables freshly initialised on purpose with --config.init_exclude='
            f'"({_exclude_hint([k for k, _ in problems])},)".' if problems else '')
    raise InitFromError(f'init_from={source.describe()} does not fit this run:\n  '
                        + '\n  '.join(lines) + hint)
  loaded = tuple(sorted(k for k in run if k not in fresh))
  return Plan(source=source, loaded=loaded, fresh=fresh, total=len(run),
              classes=(given[_CLASSES][0], run[_CLASSES][0]) if classes_differ else None)


def _fingerprint(plan: Plan) -> int:
  """A checksum of the names and bytes of the loaded values."""
  crc = 0
  for key in plan.loaded:
    crc = zlib.crc32(key.encode(), crc)
    crc = zlib.crc32(np.ascontiguousarray(plan.source.variables[key]).tobytes(), crc)
  return crc


def load(config, abstract_variables) -> Plan:
  """``match(read(config), ...)`` on every process, which all agree: one failure, or values
  that differ between processes (a file not the same on every host, a workdir that gained a
  checkpoint while being read), stops all of them with the reason."""
  plan = error = None
  try:
    plan = match(read(config), abstract_variables, config.init_exclude or ())
  except InitFromError as raised:
    error = raised
  if jax.process_count() > 1:
    prints = np.asarray(multihost_utils.process_allgather(
        np.array([-1 if plan is None else _fingerprint(plan)], np.int64))).reshape(-1)
    failed = [str(p) for p, value in enumerate(prints) if value < 0]
    if error is None and failed:
      error = InitFromError(f'Process {", ".join(failed)} of {len(prints)} could not read '
                            f'init_from={config.init_from!r}: see its log.')
    elif error is None and len(set(prints.tolist())) > 1:
      error = InitFromError(
          f'The processes read different values from init_from={config.init_from!r}: give '
          'every host the same file, and init_from_step for a workdir still being trained.')
  if error is not None:
    raise error
  _log(plan)
  return plan


def _log(plan: Plan) -> None:
  logging.info('init_from: loaded %d of the %d variables (params and batch_stats) from %s.',
               len(plan.loaded), plan.total, plan.source.describe())
  if plan.classes:
    classifier = sorted(k for k, why in plan.fresh.items() if why == 'classes')
    logging.info('init_from: re-initialised the classifier (%s): %d classes in the source, %d '
                 'in this run.', ', '.join(classifier), *plan.classes)
  excluded = sorted(k for k, why in plan.fresh.items() if why == 'init_exclude')
  if excluded:
    logging.info('init_from: %d variables keep their fresh initialisation (init_exclude): %s.',
                 len(excluded), ', '.join(excluded))


def apply(plan: Plan, fresh_variables, sharding) -> dict:
  """``fresh_variables`` (global arrays) with the loaded ones replaced by the source's values,
  placed on ``sharding`` from every process's own copy."""
  flat = _flat(fresh_variables)
  for key in plan.loaded:
    value = np.asarray(plan.source.variables[key], dtype=flat[key].dtype)
    flat[key] = jax.make_array_from_process_local_data(sharding, value)
  return flax.traverse_util.unflatten_dict(flat, sep='/')


def record(workdir: str, plan: Plan) -> None:
  """Writes ``workdir/init_from.json``: the source, its step and what was loaded."""
  directory = workdirs.path(workdir)
  directory.mkdir(parents=True, exist_ok=True)
  tmp = directory / f'{RECORD}.tmp'
  tmp.write_text(json.dumps(plan.record, indent=2, sort_keys=True))
  tmp.replace(directory / RECORD)
