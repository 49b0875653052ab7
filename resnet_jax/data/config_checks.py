"""What keeps a config's ``dataset`` section from training on a dataset, from its facts alone.

The facts are a ``registry.DatasetSpec``: a registry entry, a tfds builder's info or an image
folder's (``data.datasets.facts``). Nothing here reads data or imports TensorFlow, so configs
and tools check a registered dataset without either.
"""

from resnet_jax.data import registry, splits

AUTO_AUGMENT_POLICIES = ('rand_augment', 'trivial_augment_wide')  # dataset.auto_augment
AUTO_AUGMENT_INTERPOLATIONS = ('nearest', 'bilinear')  # dataset.auto_augment_interpolation


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
  return found + augmentation_problems(dataset, spec) + eval_view_problems(dataset, spec)


def _range_problem(field: str, values, high: float | None, what: str) -> str | None:
  """Why ``values`` (a config's ``field``) is not a pair 0 < a <= b (<= high), or None."""
  if len(values) == 2 and 0 < values[0] <= values[1] <= (high or float('inf')):
    return None
  bound = f' <= {high}' if high else ''
  return f'dataset.{field}={tuple(values)} must be a pair (a, b) with 0 < a <= b{bound}: {what}.'


def augmentation_problems(dataset, spec: registry.DatasetSpec) -> list[str]:
  """What keeps the modern augmentations of ``dataset`` from running on ``spec``'s path."""
  found = []
  if dataset.train_crop not in ('scale', 'random_resized'):
    found.append(f"dataset.train_crop={dataset.train_crop!r} is neither 'scale' (the paper's "
                 "scale augmentation) nor 'random_resized' (Inception-style).")
  elif dataset.train_crop == 'random_resized' and spec.in_memory:
    found.append(f"dataset.train_crop='random_resized' crops the streamed (ImageNet-family) "
                 f'datasets; {dataset.name} is held in memory and cropped with the paper\'s '
                 "padding. Set dataset.train_crop='scale' (its padded random crop).")
  ranges = (('crop_scale', 1.0, "the random-resized crop's fractions of the image area"),
            ('crop_ratio', None, "the random-resized crop's aspect ratios (width / height)"),
            ('erasing_scale', 1.0, "random erasing's fractions of the image area"),
            ('erasing_ratio', None, "random erasing's aspect ratios (height / width)"))
  found += [problem for field, high, what in ranges
            if (problem := _range_problem(field, dataset[field], high, what))]
  if dataset.auto_augment is not None and dataset.auto_augment not in AUTO_AUGMENT_POLICIES:
    found.append(f'dataset.auto_augment={dataset.auto_augment!r} is none of '
                 f'{", ".join(AUTO_AUGMENT_POLICIES)}; set one, or None for no policy.')
  if dataset.auto_augment_interpolation not in AUTO_AUGMENT_INTERPOLATIONS:
    found.append(f'dataset.auto_augment_interpolation={dataset.auto_augment_interpolation!r} '
                 f'is neither of {", ".join(AUTO_AUGMENT_INTERPOLATIONS)}.')
  if dataset.auto_augment_bins < 2:
    found.append(f'dataset.auto_augment_bins={dataset.auto_augment_bins} must be at least 2.')
  elif not 0 <= dataset.auto_augment_magnitude < dataset.auto_augment_bins:
    found.append(f'dataset.auto_augment_magnitude={dataset.auto_augment_magnitude} must be a '
                 f'bin from 0 to dataset.auto_augment_bins - 1 = '
                 f'{dataset.auto_augment_bins - 1} (RandAugment\'s M).')
  if dataset.auto_augment_ops < 1:
    found.append(f'dataset.auto_augment_ops={dataset.auto_augment_ops} must be at least 1 '
                 "(RandAugment's N); set dataset.auto_augment=None for no policy.")
  if not 0.0 <= dataset.random_erasing <= 1.0:
    found.append(f'dataset.random_erasing={dataset.random_erasing} is a probability: set it '
                 'between 0 and 1.')
  if dataset.device_resident and (dataset.auto_augment or dataset.train_crop != 'scale'):
    found.append('dataset.device_resident=True augments on the accelerators with the paper\'s '
                 'crop and flip and random erasing only, not dataset.auto_augment or '
                 "dataset.train_crop='random_resized': set dataset.device_resident=False (the "
                 'tf.data path, which has them).')
  return found


# The paper's evaluation view of large images: the centre crop at shorter side 256.
EVAL_RESIZE = 256


def eval_view(dataset) -> tuple[int, int]:
  """(crop, shorter side) of a streamed dataset's evaluation views (centre crop, 10-crop):
  ``dataset.eval_crop`` at ``dataset.eval_resize``, each None meaning ``image_size`` and 256."""
  return dataset.eval_crop or dataset.image_size, dataset.eval_resize or EVAL_RESIZE


def eval_view_problems(dataset, spec: registry.DatasetSpec) -> list[str]:
  """What keeps ``dataset.eval_resize`` and ``dataset.eval_crop`` from evaluating ``spec``."""
  resize = dataset.eval_resize
  if resize is None and dataset.eval_crop is None:
    return []
  if spec.in_memory:
    return [f'dataset.eval_resize={resize} and dataset.eval_crop={dataset.eval_crop}: '
            f'{dataset.name} is held in memory and evaluated whole at dataset.image_size; set '
            'both to None.']
  found, (crop, _) = [], eval_view(dataset)
  low, high = spec.image_sizes
  if not low <= crop <= high:
    found.append(f'dataset.eval_crop={crop} does not fit {dataset.name}: crops must be between '
                 f'{low} and {high} pixels wide.')
  if resize is not None and resize < crop:
    found.append(f'dataset.eval_resize={resize} is smaller than the eval crop {crop}: the '
                 'centre crop is cut from the image at that shorter side; set it to at least '
                 f'{crop}.')
  if crop != dataset.image_size and (dataset.imagenet_per_pixel_mean or spec.train_pixel_mean):
    found.append(f'The per-pixel mean of {dataset.name} (dataset.imagenet_per_pixel_mean; an '
                 'image folder always subtracts it) is one image of the eval crop\'s size, so '
                 f'train crops of dataset.image_size={dataset.image_size} and eval crops of '
                 f'dataset.eval_crop={crop} cannot both subtract it: set dataset.eval_crop=None '
                 '(or equal to dataset.image_size), or dataset.imagenet_per_pixel_mean=False.')
  return found
