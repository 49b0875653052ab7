"""``config.extra_evals``: the evaluation sets a run scores beside its main eval split, parsed,
and checked against the main dataset's label space (``run_plan.resolve`` asks both)."""

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


def parse(config) -> tuple[list[ExtraEval], list[str]]:
  """The sets of ``config.extra_evals`` in their order (none in the config of a run saved before
  the field existed), and what is wrong with their entries: unreadable, or a name twice."""
  sets, problems, names = [], [], {}
  for entry in tuple(config.get('extra_evals', ())):
    try:
      extra = _parse_extra_eval(entry)
    except ConfigError as error:
      problems.append(str(error))
      continue
    names.setdefault(extra.name, []).append(entry)
    sets.append(extra)
  problems += [f'extra_evals names {name!r} {len(entries)} times ({", ".join(map(repr, entries))});'
               " give each its own summary prefix: 'NAME=DATASET:SPLIT'."
               for name, entries in names.items() if len(entries) > 1]
  return sets, problems


def _label_space_differences(main: registry.DatasetSpec, other: registry.DatasetSpec):
  """How ``other`` differs from ``main`` in what a net trained on ``main`` reads and predicts."""
  facts = (('num_classes', 'classes'), ('channels', 'channels'),
           ('family', 'preprocessing family'))
  return [f'{getattr(other, field)} {what}, not {getattr(main, field)}'
          for field, what in facts if getattr(other, field) != getattr(main, field)]


def label_space_problem(config, extra: ExtraEval, main: registry.DatasetSpec,
                        spec: registry.DatasetSpec) -> str | None:
  """What keeps the set ``extra``, of the facts ``spec``, from being scored by the network that
  ``config`` trains on the dataset of the facts ``main``; None where nothing does."""
  differences = _label_space_differences(main, spec)
  if differences:
    return (f"extra_evals entry '{extra}': {extra.dataset} does not share the label space of "
            f'dataset.name={config.dataset.name} ({"; ".join(differences)}): the network trained '
            'on it cannot be evaluated there. Evaluate a dataset of the same classes, channels '
            'and preprocessing (e.g. imagenet_v2 beside imagenet2012).')
  low, high = spec.image_sizes
  if not low <= config.dataset.image_size <= high:
    return (f"extra_evals entry '{extra}': dataset.image_size={config.dataset.image_size} does "
            f'not fit {extra.dataset} (crops between {low} and {high} pixels wide).')
  return None
