"""How many examples a tfds split expression holds, and its data shards, from split sizes alone.

tfds reads ``'train[:45000]'``, ``'train[10%:]'`` or ``'train+extra'`` against a dataset's split
sizes; ``tfds.even_splits(expression, n)`` cuts each part of an expression into ``n`` pieces
whose sizes differ by at most one. The same arithmetic here, on the sizes a ``DatasetSpec``
records, lets a run's plan (steps per epoch, the schedule in epochs) be worked out before
anything is read, and where tfds and TensorFlow are not installed. Nothing here imports either;
``tests/test_splits.py`` holds it to tfds' own arithmetic.
"""

import re

# tfds' name of every split together, which takes no slice.
ALL = 'all'
_PART = re.compile(r'^(?P<name>[\w-]+)(\[(?P<slice>[^\]]*)\])?$')
_BOUND = re.compile(r'^\s*(?P<value>-?\d+(\.\d+)?)?\s*(?P<unit>%)?\s*$')


class SplitError(ValueError):
  """A split expression that cannot be read against a dataset's splits."""


def names(expression: str) -> list[str]:
  """The split names an expression reads: 'train[:45000]+extra' -> ['train', 'extra']."""
  return [_PART.match(part.strip())['name'] if _PART.match(part.strip()) else part.strip()
          for part in expression.split('+')]


def _bound(text: str, size: int, default: int) -> int:
  """One end of a slice in examples: absolute, or a percentage rounded to the closest example."""
  found = _BOUND.match(text)
  if not found:
    raise SplitError(f'{text!r} is not a slice bound (an integer, or a percentage like 10%).')
  if found['value'] is None:
    return default
  value = float(found['value'])
  if found['unit']:
    value = round(value * size / 100)
  elif found['value'] != str(int(value)):
    raise SplitError(f'{text!r}: an absolute slice bound is a whole number of examples.')
  value = int(value)
  if abs(value) > size:
    raise SplitError(f'the slice bound {text!r} is beyond the {size} examples of the split.')
  return value + size if value < 0 else value


def part_sizes(expression: str, sizes: dict[str, int]) -> list[int]:
  """The examples of each '+'-joined part of ``expression``, given ``sizes`` (split -> examples)."""
  counts = []
  for part in expression.split('+'):
    found = _PART.match(part.strip())
    if not found:
      raise SplitError(f'{part.strip()!r} is not a split (tfds syntax: train, train[:90%], '
                       'train[:45000]+test).')
    name, selector = found['name'], found['slice']
    if name == ALL and selector is None:
      counts += list(sizes.values())
      continue
    if name not in sizes:
      raise SplitError(f'it has no split {name!r}.')
    if selector is None:
      counts.append(sizes[name])
      continue
    if selector.count(':') != 1:
      raise SplitError(f'{part.strip()!r}: a slice is [from:to].')
    start, stop = (_bound(text, sizes[name], default)
                   for text, default in zip(selector.split(':'), (0, sizes[name])))
    counts.append(max(0, stop - start))
  return counts


def num_examples(expression: str, sizes: dict[str, int]) -> int:
  """The examples of ``expression``, given ``sizes`` (split name -> examples)."""
  return sum(part_sizes(expression, sizes))


def smallest_shard(expression: str, sizes: dict[str, int], num_shards: int) -> int:
  """The examples of the smallest of ``tfds.even_splits(expression, num_shards)``: each part
  of the expression is cut in ``num_shards`` pieces, the first ones one example longer where the
  part does not divide, so the last piece of every part is the shortest."""
  return sum(count // num_shards for count in part_sizes(expression, sizes))
