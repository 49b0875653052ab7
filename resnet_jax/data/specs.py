"""The facts of a dataset (its ``DatasetSpec``), and its prepared tfds builder.

``spec_of(name, dataset)`` is the one place a spec is obtained (``datasets.facts`` hands it to
``run_plan.resolve``): the registry's entry for a registered name, else the facts of the tfds
dataset of that name, read from its builder's info (no data is read): its ``image`` feature
(uint8, a known number of channels) and its ``label`` feature (a ClassLabel) and the sizes of its
prepared splits. A fixed square of at most ``registry.SMALL_MAX_SIDE`` pixels a side takes the
SMALL family (the CIFAR recipe: crops of its own size from a padding of an eighth of it, flips),
anything else the IMAGENET family, cropped at ``dataset.image_size``. ``dataset.name=image_folder``
is a folder of one's own images, read and checked without writing anything
(``data.image_folder``); ``prepared_builder`` prepares it. What is missing is refused with a
``ConfigError`` that names it; an unprepared dataset with a ``DatasetNotAvailableError`` that
says how to prepare it.

The registry (layer 1) holds facts and imports no TensorFlow, so reading a builder lives here.
"""

import dataclasses
import functools
import os

import tensorflow as tf
import tensorflow_datasets as tfds

from resnet_jax.data import digits as digits_dataset  # noqa: F401  (registers 'digits')
from resnet_jax.data import image_folder, registry
from resnet_jax.errors import ConfigError, DatasetNotAvailableError

tf.config.set_visible_devices([], 'GPU')  # TF never takes accelerator memory.


def spec_of(name: str, dataset) -> registry.DatasetSpec:
  """The facts of the dataset ``name`` for a config's ``dataset`` section (its ``data_dir``;
  an image folder's ``image_size`` and splits): its registry entry (with the split sizes of the
  copy prepared in ``data_dir``, where there is one: a test's or a subset's may differ from the
  catalog's), else what its tfds builder records, else what the folder holds."""
  if name in registry.DATASETS:
    return _with_prepared_splits(registry.DATASETS[name], dataset.data_dir)
  if name == registry.IMAGE_FOLDER:
    return image_folder.spec(dataset)
  return _from_builder_info(name, dataset.data_dir)


def _with_prepared_splits(spec: registry.DatasetSpec, data_dir) -> registry.DatasetSpec:
  builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
  if not builder.is_prepared():
    return spec
  return dataclasses.replace(spec, splits={split: info.num_examples
                                           for split, info in builder.info.splits.items()})


def not_prepared_message(builder) -> str:
  """What to run to prepare ``builder``'s dataset, and where to point a run at a copy."""
  root = os.fspath(builder.data_dir_root)
  name = builder.info.full_name.rsplit('/', 1)[0]  # With its config, without its version.
  how = (f'`tfds build {name} --data_dir={root}` or `python -c "import tensorflow_datasets as '
         f"tfds; tfds.builder('{name}', data_dir='{root}').download_and_prepare()\"`")
  if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
    how = (f'placing what tfds asks for ({" ".join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split())})'
           f' in the manual_dir {root}/downloads/manual, then running ' + how)
  return (f"Dataset '{name}' is not prepared in the tfds data_dir {root} (no {builder.data_path})"
          ' and training never downloads data. Prepare it once, on a machine with network, by '
          f'{how}; or point the run at an existing copy with '
          '--config.dataset.data_dir=/path/to/tensorflow_datasets.')


def prepared_builder(spec: registry.DatasetSpec, dataset):
  """The prepared tfds builder of ``spec`` for a config's ``dataset`` section (its
  ``data_dir``); the bundled digits and an image folder are prepared on the spot, any other
  unprepared dataset refused."""
  if spec.name == registry.IMAGE_FOLDER:
    return image_folder.prepare(dataset.data_dir, dataset.image_size)
  builder = tfds.builder(spec.tfds_name, data_dir=dataset.data_dir)
  if not builder.is_prepared():
    if spec.tfds_name != 'digits':
      raise DatasetNotAvailableError(not_prepared_message(builder))
    builder.download_and_prepare()
  return builder


def _tfds_builder(name: str, data_dir: str | None):
  """tfds' builder of ``name``, or a ConfigError for a name tfds does not know."""
  try:
    return tfds.builder(name, data_dir=data_dir)
  except ValueError as error:  # tfds' DatasetNotFoundError, or a config it does not have.
    raise ConfigError(
        f'The dataset {name!r} is neither a registered dataset ({", ".join(registry.DATASETS)}) '
        f'nor a tfds dataset: {str(error).splitlines()[0]} Use a name of the tfds catalog '
        "(tfds.list_builders(); with its config as 'name/config'), prepared in "
        'dataset.data_dir.') from None


def _feature_problem(features) -> str | None:
  """Why a dataset of these features cannot train a classifier, or None when it can."""
  by_key = dict(features.items())
  found = ', '.join(f'{key} ({type(feature).__name__})' for key, feature in by_key.items())
  image, label = by_key.get('image'), by_key.get('label')
  if not isinstance(image, tfds.features.Image):
    return f'it has no image feature named "image" (its features: {found})'
  if not isinstance(label, tfds.features.ClassLabel) or not label.num_classes:
    return ('it has no label feature named "label" holding one class of a known number per '
            f'image (a ClassLabel; its features: {found})')
  if len(image.shape) != 3 or image.shape[-1] is None:
    return (f'its image shape {image.shape} is unknown: the pipelines need (height, width, '
            'channels) with a known number of channels')
  if image.dtype != tf.uint8:
    return f'its images are {image.dtype.name}; the pipelines read 8-bit (uint8) images'
  return None


@functools.cache
def _from_builder_info(name: str, data_dir: str | None) -> registry.DatasetSpec:
  """The spec of the tfds dataset ``name`` from its builder's info (cached per process)."""
  builder = _tfds_builder(name, data_dir)
  problem = _feature_problem(builder.info.features)
  if problem:
    raise ConfigError(f'The dataset {name!r} cannot train an image classifier: {problem}. '
                      'Choose a dataset with "image" and "label" features, or register one in '
                      'resnet_jax/data/registry.py.')
  if not builder.is_prepared():
    raise DatasetNotAvailableError(not_prepared_message(builder))
  features = builder.info.features
  height, width, channels = features['image'].shape
  family = registry.family_of(height, width)
  splits = {split: info.num_examples for split, info in builder.info.splits.items()}
  if family == registry.IMAGENET:
    return registry.DatasetSpec(name, num_classes=features['label'].num_classes, channels=3,
                                family=family, image_sizes=registry.IMAGENET_CROP_SIZES,
                                splits=splits)
  # CIFAR-10's recipe scaled to the image: its 4 pixels of padding are an eighth of 32.
  return registry.DatasetSpec(name, num_classes=features['label'].num_classes, channels=channels,
                              family=family, image_sizes=(height, height), splits=splits,
                              pad=max(1, height // 8), flip=True)
