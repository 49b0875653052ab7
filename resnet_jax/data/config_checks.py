"""What keeps a config's ``dataset`` section from training on a dataset, from its facts alone.

The facts are a ``registry.DatasetSpec``: a registry entry, a tfds builder's info or an image
folder's (``data.datasets.facts``). Nothing here reads data or imports TensorFlow, so configs
and tools check a registered dataset without either.
"""

from resnet_jax.data import registry, splits


def describe(sizes: dict[str, int]) -> str:
  return ', '.join(f'{name} ({count:,} images)' for name, count in sizes.items())


def split_problem(what: str, expression: str, spec: registry.DatasetSpec,
                  fix: str = '') -> str | None:
  """Why the split ``expression`` (``what`` names where it is given) selects no examples of
  ``spec``'s dataset, with ``fix`` (how to give another), or None."""
  try:
    count = splits.num_examples(expression, spec.splits)
  except splits.SplitError as error:
    return (f'{what} cannot be read from {spec.name}: {error} Its splits are '
            f"{describe(spec.splits)}.{fix} (tfds split syntax: 'train[:90%]', 'train+extra').")
  if not count:
    return f'{what} holds no examples of {spec.name}.'
  return None


def problems(dataset, spec: registry.DatasetSpec, training: bool = True) -> list[str]:
  """What keeps ``dataset`` (a config's ``dataset`` section) from training on ``spec``'s
  dataset (``training=False``: from being evaluated): an image size it cannot crop, a split it
  lacks, no training split at all, an input path that cannot hold it."""
  found = []
  low, high = spec.image_sizes
  if not low <= dataset.image_size <= high:
    found.append(f'dataset.image_size={dataset.image_size} does not fit {dataset.name}: crops '
                 f'must be between {low} and {high} pixels wide (a crop cannot be larger than '
                 'the image it is cut from).')
  if spec.eval_only and training:
    return found + [
        f'dataset.name={dataset.name!r} is an evaluation-only dataset: it has no train split, '
        f'only {describe(spec.splits)}. Train on a dataset of the same {spec.num_classes} '
        f'classes and evaluate on {dataset.name} beside it.']
  held_out = next((name for name in spec.splits if name != registry.TRAIN_SPLIT), None)
  fields = (('train_split', registry.TRAIN_SPLIT),) if training else ()
  for field, suggested in (*fields, ('eval_split', held_out)):
    problem = split_problem(f'dataset.{field}={dataset[field]!r}', dataset[field], spec,
                            f' Set e.g. --config.dataset.{field}={suggested or "train[90%:]"}')
    if problem:
      found.append(problem)
  if dataset.device_resident and not spec.in_memory:
    held = [name for name, entry in registry.DATASETS.items() if entry.in_memory]
    found.append(f'dataset.device_resident=True needs a dataset held in memory '
                 f'({", ".join(held)}, {registry.IMAGE_FOLDER} at dataset.image_size <= '
                 f'{registry.SMALL_MAX_SIDE}), not {dataset.name!r} at {dataset.image_size}; '
                 'set dataset.device_resident=False.')
  if dataset.shuffle_buffer < 1:
    found.append(f'dataset.shuffle_buffer={dataset.shuffle_buffer} must be at least 1 (records '
                 'per shuffled window of the streamed ImageNet order).')
  if dataset.imagenet_per_pixel_mean and dataset.mean_examples < 1:
    found.append(f'dataset.mean_examples={dataset.mean_examples} must be at least 1 for '
                 'dataset.imagenet_per_pixel_mean.')
  return found
