"""A small imagenet2012, or another tfds image dataset, prepared as real tfds TFRecord files, for
tests and benchmarks.

``tfds.testing.mock_data`` replaces ``builder.as_dataset`` and so cannot exercise code that reads
a split's TFRecord files itself (``streaming_order``). ``prepare`` runs tfds' own writer on the
official builder of the dataset (same name, config, version and features: for imagenet2012 JPEG
``image``, ``ClassLabel(1000)`` ``label``, ``file_name``) with given images instead of its
source files, in the given order over ``num_files`` files per split, so that
``tfds.builder(name, data_dir=...)`` finds a prepared dataset that is read exactly like a real
one.
"""

import io

import numpy as np
import tensorflow_datasets as tfds


def _example(features, image, label, name):
  """The example of ``features`` with this image (encoded bytes), label and file name.

  ``label``: a class, or a list of classes for a dataset whose label is a set of them (ReaL);
  a single class feature beside a set takes its first class (0 for an empty set).
  """
  classes = list(label) if isinstance(label, (list, tuple)) else [label]

  def value(feature):
    if isinstance(feature, tfds.features.Image):
      return io.BytesIO(image)
    if isinstance(feature, tfds.features.ClassLabel):
      return int(classes[0]) if classes else 0
    if isinstance(feature, tfds.features.Sequence):  # A set of classes.
      return [int(c) for c in classes]
    if isinstance(feature, tfds.features.Text):
      return name
    raise ValueError(f'No test value for a {type(feature).__name__} feature.')
  return {key: value(feature) for key, feature in features.items()}


def _given_images_builder(name: str):
  """A builder of ``name`` (with its config, 'imagenette/full-size-v2') whose splits are given
  as {split: (encoded images, labels)}, and the keyword arguments that select its config."""
  base, kwargs = tfds.core.naming.parse_builder_name_kwargs(name)
  official = tfds.builder_cls(str(base))

  class GivenImages(official, skip_registration=True):
    """``official`` with given examples, stored in the given order (their keys sort so)."""

    def __init__(self, splits, **builder_kwargs):
      self._given = splits
      super().__init__(**builder_kwargs)

    def _info(self):
      official_info = super()._info()
      return tfds.core.DatasetInfo(
          builder=self, features=official_info.features,
          supervised_keys=official_info.supervised_keys, disable_shuffling=True)

    def _split_generators(self, dl_manager):
      del dl_manager  # Nothing to download.
      return {split: self._generate(*data) for split, data in self._given.items()}

    def _generate(self, images, labels):
      for i, (image, label) in enumerate(zip(images, labels)):
        file_name = f'{i:08d}.JPEG'
        yield file_name, _example(self.info.features, image, label, file_name)

  GivenImages.name = official.name
  return GivenImages, kwargs


def prepare(data_dir: str, splits: dict, num_files: int, file_format: str = 'tfrecord',
            name: str = 'imagenet2012'):
  """Writes the tfds dataset ``name`` to ``data_dir``: split -> (encoded images, labels as
  ``_example`` takes them), each split stored in the given order in ``num_files`` TFRecord files
  (of equal size where it divides; every split needs at least ``num_files`` examples);
  ``file_format`` as tfds names them. Returns the dataset's builder, read back from
  ``data_dir``."""
  builder_cls, kwargs = _given_images_builder(name)
  builder = builder_cls(splits, data_dir=data_dir, file_format=file_format, **kwargs)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=num_files))
  return tfds.builder(name, data_dir=data_dir)


def tiny_jpegs(num: int, size: int = 16, seed: int = 0) -> list[bytes]:
  """``num`` random size x size RGB JPEGs."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  pixels = np.random.default_rng(seed).integers(0, 256, (num, size, size, 3), np.uint8)
  return [tf.io.encode_jpeg(p).numpy() for p in pixels]
