"""A small imagenet2012 prepared as real tfds TFRecord files, for tests and benchmarks.

``tfds.testing.mock_data`` replaces ``builder.as_dataset`` and so cannot exercise code that reads
a split's TFRecord files itself (``streaming_order``). ``prepare`` runs tfds' own writer on the
official imagenet2012 builder (same name, version and features: JPEG ``image``,
``ClassLabel(1000)`` ``label``, ``file_name``) with given images instead of the ImageNet tar
files, in the given order over ``num_files`` files per split, so that ``tfds.builder('imagenet2012',
data_dir=...)`` finds a prepared dataset that is read exactly like a real one.
"""

import io

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.datasets.imagenet2012 import (
  imagenet2012_dataset_builder as official,
)


class _GivenImages(official.Builder, skip_registration=True):
  """imagenet2012 whose splits are given as {split: (JPEG bytes, labels)}."""

  name = 'imagenet2012'

  def __init__(self, splits, **kwargs):
    self._given = splits
    super().__init__(**kwargs)

  def _info(self):
    official_info = super()._info()
    return tfds.core.DatasetInfo(
        builder=self, features=official_info.features,
        supervised_keys=official_info.supervised_keys,
        disable_shuffling=True)  # Stores the examples in the given order (keys sort so).

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate(*data) for split, data in self._given.items()}

  def _generate(self, jpegs, labels):
    for i, (jpeg, label) in enumerate(zip(jpegs, labels)):
      name = f'{i:08d}.JPEG'
      yield name, {'image': io.BytesIO(jpeg), 'label': int(label), 'file_name': name}


def prepare(data_dir: str, splits: dict, num_files: int, file_format: str = 'tfrecord'):
  """Writes imagenet2012 to ``data_dir``: split -> (JPEG bytes, labels in 0..999), each split
  stored in the given order in ``num_files`` TFRecord files (of equal size where it divides;
  every split needs at least ``num_files`` examples); ``file_format`` as tfds names them."""
  builder = _GivenImages(splits, data_dir=data_dir, file_format=file_format)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=num_files))
  return tfds.builder('imagenet2012', data_dir=data_dir)


def tiny_jpegs(num: int, size: int = 16, seed: int = 0) -> list[bytes]:
  """``num`` random size x size RGB JPEGs."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  pixels = np.random.default_rng(seed).integers(0, 256, (num, size, size, 3), np.uint8)
  return [tf.io.encode_jpeg(p).numpy() for p in pixels]
