"""``config.extra_evals``: the evaluation sets a run scores beside its main eval split, parsed
and checked against the main dataset's label space before anything is read or compiled."""

import dataclasses
import re

from resnet_jax.data import registry
from resnet_jax.errors import ConfigError

# The summary prefix of the main eval split (dataset.eval_split), which the plateau schedule reads.
EVAL_PREFIX = 'eval_'
# The characters of a name of config.extra_evals, the prefix of its summaries: no '/', '=' or
# spaces.
_NAME_CHARACTERS = 'A-Za-z0-9_.-'


@dataclasses.dataclass(frozen=True)
class ExtraEval:
  """One entry of ``config.extra_evals``, 'NAME=DATASET:SPLIT': a split evaluated beside the main
  one at every evaluation, its summaries under ``NAME/`` (big_vision names its evaluators so)."""
  name: str
  dataset: str  # dataset.name itself (another of its splits), or a dataset of its label space:
                # registered, or any tfds dataset.
  split: str    # tfds split syntax, e.g. 'test' or 'train[:10000]'.

  @property
  def prefix(self) -> str:
    return f'{self.name}/'

  def __str__(self) -> str:
    return f'{self.name}={self.dataset}:{self.split}'


def _parse_extra_eval(entry) -> ExtraEval:
  """'NAME=DATASET:SPLIT', or 'DATASET:SPLIT' named after its dataset; ConfigError otherwise."""
  named, has_name, rest = str(entry).partition('=')
  dataset, _, split = (rest if has_name else named).partition(':')
  name = named if has_name else re.sub(f'[^{_NAME_CHARACTERS}]', '_', dataset)
  if not (isinstance(entry, str) and dataset and split
          and re.fullmatch(f'[{_NAME_CHARACTERS}]+', name)):
    raise ConfigError(
        f"extra_evals entry {entry!r} is not 'NAME=DATASET:SPLIT' or 'DATASET:SPLIT' (e.g. "
        "'v2=imagenet_v2:test'), where NAME, the prefix of its summaries, is made of letters, "
        "digits, '_', '.' and '-'.")
  return ExtraEval(name=name, dataset=dataset, split=split)


def _extra_eval_entries(config) -> tuple:
  """``config.extra_evals``; none in the config of a run saved before the field existed."""
  return tuple(config.get('extra_evals', ()))


def extra_evals(config) -> tuple[ExtraEval, ...]:
  """The evaluation sets of ``config.extra_evals``, in their order (``validate`` checks them)."""
  return tuple(_parse_extra_eval(entry) for entry in _extra_eval_entries(config))


def _label_space_differences(main: registry.DatasetSpec, other: registry.DatasetSpec):
  """How ``other`` differs from ``main`` in what a network trained on ``main`` reads and predicts."""
  facts = (('num_classes', 'classes'), ('channels', 'channels'),
           ('family', 'preprocessing family'))
  return [f'{getattr(other, field)} {what}, not {getattr(main, field)}'
          for field, what in facts if getattr(other, field) != getattr(main, field)]


def set_problems(config, extra: ExtraEval, main: registry.DatasetSpec,
                 spec: registry.DatasetSpec) -> list[str]:
  """What keeps the set ``extra``, of the facts ``spec``, from being scored by the network that
  ``config`` trains on the dataset of the facts ``main``."""
  differences = _label_space_differences(main, spec)
  if differences:
    return [f"extra_evals entry '{extra}': {extra.dataset} does not share the label space of "
            f'dataset.name={config.dataset.name} ({"; ".join(differences)}): the network trained '
            'on it cannot be evaluated there. Evaluate a dataset of the same classes, channels '
            'and preprocessing (e.g. imagenet_v2 beside imagenet2012).']
  low, high = spec.image_sizes
  if not low <= config.dataset.image_size <= high:
    return [f"extra_evals entry '{extra}': dataset.image_size={config.dataset.image_size} does "
            f'not fit {extra.dataset} (crops between {low} and {high} pixels wide).']
  return []


def extra_eval_problems(config) -> list[str]:
  """What keeps ``config.extra_evals`` from being evaluated by the network of ``dataset.name``,
  as far as the registry tells: a set of a dataset without an entry (or beside one) is checked
  once its builder is read (``data.pipeline.check_extra_evals``)."""
  problems, names = [], {}
  main = registry.DATASETS.get(config.dataset.name)
  for entry in _extra_eval_entries(config):
    try:
      extra = _parse_extra_eval(entry)
    except ConfigError as error:
      problems.append(str(error))
      continue
    names.setdefault(extra.name, []).append(entry)
    spec = registry.DATASETS.get(extra.dataset)
    if main and spec and extra.dataset != config.dataset.name:
      problems += set_problems(config, extra, main, spec)
  problems += [f'extra_evals names {name!r} {len(entries)} times ({", ".join(map(repr, entries))});'
               " give each its own summary prefix: 'NAME=DATASET:SPLIT'."
               for name, entries in names.items() if len(entries) > 1]
  return problems
