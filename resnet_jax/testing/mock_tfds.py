"""tfds.testing.mock_data for datasets not downloadable here (CIFAR-10, ImageNet), for tests and
benchmarks.

``mock_data`` serves random examples through the real ``builder.as_dataset`` path but knows no
split sizes unless the dataset's metadata is on disk; ``prepared_mock`` writes that metadata
(the real features and labels, the given split sizes) so the input pipeline sees a prepared
dataset whose splits hold exactly the mocked examples.
"""

import contextlib
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core import splits as splits_lib


@contextlib.contextmanager
def prepared_mock(name: str, data_dir: str, num_examples: int, splits=('train', 'test')):
  """Mocks ``name`` in ``data_dir`` with ``num_examples`` random examples in each split."""
  builder = tfds.builder(name, data_dir=data_dir)
  builder.info.set_splits(splits_lib.SplitDict([
      splits_lib.SplitInfo(name=s, shard_lengths=[num_examples], num_bytes=0,
                           filename_template=None) for s in splits]))
  os.makedirs(builder.data_dir, exist_ok=True)
  builder.info.write_to_directory(builder.data_dir)
  with tfds.testing.mock_data(num_examples=num_examples, data_dir=data_dir):
    yield


def jpeg_dataset(images, labels):
  """An ``as_dataset_fn`` for ``tfds.testing.mock_data``: these images (as JPEGs), labels.

  Needs the split sizes on disk (``prepared_mock``); a part of a split gets its own examples.
  """
  def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
    del decoders, read_config, kwargs
    # A part of a split (e.g. tfds.even_splits) is one window of the single mocked shard.
    instruction, = self.info.splits[split].file_instructions
    chosen = range(instruction.skip, instruction.skip + instruction.take)
    return tf.data.Dataset.from_tensor_slices({
        'image': tf.constant([tf.io.encode_jpeg(images[i]).numpy() for i in chosen], tf.string),
        'label': np.asarray([labels[i] for i in chosen], np.int64),
        'file_name': tf.constant([f'{i}.JPEG' for i in chosen], tf.string)})
  return as_dataset
