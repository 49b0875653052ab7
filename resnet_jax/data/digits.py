"""scikit-learn's handwritten digits as the tfds dataset ``digits``: real images, no network.

``sklearn.datasets.load_digits()`` ships 1,797 real 8x8 greyscale digits (values 0..16) inside
scikit-learn. This builder serves them through tfds like any other dataset, so the input pipeline
and the tests exercise the real tfds path offline. Importing this module registers the builder.

* Features: ``image`` uint8 (8, 8, 1), ``label`` ClassLabel(10).
* Pixel scaling: ``v -> (255 * v + 8) // 16``, i.e. ``255 * v / 16`` rounded half up
  (8 -> 128, 16 -> 255); see ``to_uint8``.
* Splits: a fixed permutation of the 1,797 examples (``np.random.default_rng(SPLIT_SEED)``)
  then the first 1,500 are ``train`` and the remaining 297 ``test``, stored in that order.
"""

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

tf.config.set_visible_devices([], 'GPU')  # TF never takes accelerator memory.

NUM_TRAIN = 1500
SPLIT_SEED = 0


def to_uint8(images):
  """Scales scikit-learn's 0..16 pixel values to 0..255, rounding half up."""
  return ((255 * np.asarray(images, np.int64) + 8) // 16).astype(np.uint8)


def split_indices():
  """Indices into ``load_digits()`` of the train and test examples, in stored order."""
  order = np.random.default_rng(SPLIT_SEED).permutation(1797)
  return {'train': order[:NUM_TRAIN], 'test': order[NUM_TRAIN:]}


class Digits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's 8x8 digits with a fixed 1,500 / 297 train/test split."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 1)),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('image', 'label'),
        disable_shuffling=True,  # Store the documented split order, not tfds' hash order.
        homepage='https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: scikit-learn bundles the data.
    return {split: self._generate_examples(indices)
            for split, indices in split_indices().items()}

  def _generate_examples(self, indices):
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    digits = load_digits()
    images = to_uint8(digits.images)[..., None]
    # tfds stores unshuffled examples sorted by key: the key is the position in the split.
    for position, i in enumerate(indices):
      yield position, {'image': images[i], 'label': int(digits.target[i])}
