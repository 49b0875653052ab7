"""The SMALL family (digits, CIFAR, small image folders): the paper's CIFAR-10 recipe on images
held in memory (paper, Sec. 4.2).

Pixels are scaled to [0, 1] (digits upsampled bilinearly, half-pixel centres, to
``dataset.image_size``), then the per-pixel mean of the train split is subtracted. Training
augments with the entry's ``pad`` (zeros, after the mean subtraction) and a random crop of the
original size, and a random horizontal flip where the entry's ``flip`` says so (the ops:
``cifar``); evaluation sees the original image. The modern parts a config may add
(``augmentation.Augmentation``, with or without ``dataset.augment``'s): an auto-augment policy on
the uint8 image at ``image_size`` before the rest (so before the crop and flip, not after as
torchvision's CIFAR recipes do; the policy's draws are symmetric under a flip), and random erasing
last, its box set to 0 (the mean). Each shard is read in a stateless random order
(``index_shuffle``) keyed by (seed, shard, epoch), so a resumed run jumps straight to its step;
the augmentation is keyed by (seed, shard, epoch, position).
"""

import functools

import numpy as np
import tensorflow as tf

from resnet_jax.data import augmentation, cifar, dataset
from resnet_jax.data.streamed_order import fold


class SmallDataset(dataset.Dataset):
  """A SMALL dataset's batches: float32 images, preprocessed on the host."""

  @functools.cached_property
  def _mean(self) -> np.ndarray:
    """Per-pixel mean of the train split at image_size, float32 in [0, 1] (once per object)."""
    images, _ = self.load_arrays(self.plan.config.dataset.train_split)
    mean = np.mean(images, axis=0, dtype=np.float64).astype(np.float32)
    # Bilinear resizing is linear, so this equals the mean of the resized images.
    return cifar.scale_and_resize(self.plan.config.dataset.image_size, mean).numpy()

  def train_mean_image(self) -> np.ndarray:
    return self._mean

  def _eval_preprocessing(self):
    size, mean = self.plan.config.dataset.image_size, tf.constant(self._mean)
    return lambda image: {'image': cifar.scale_and_resize(size, image) - mean}

  def train_arrays(self) -> tuple[np.ndarray, np.ndarray]:
    """The whole train split as float32 [N, H, W, C] (mean subtracted, not augmented) and int32
    [N] labels: what ``device_resident`` puts on the accelerators."""
    images, labels = self.load_arrays(self.plan.config.dataset.train_split)
    return self.preprocess_for_eval(images), labels

  def _shard(self, split, key, start_step) -> tf.data.Dataset:
    plan, spec = self.plan, self.plan.dataset
    sub_batch, augment = plan.shard_batch, plan.config.dataset.augment
    per_epoch = plan.steps_per_epoch * sub_batch
    images, labels = (tf.constant(a) for a in self.load_arrays(split))
    mean, size = tf.constant(self._mean), plan.config.dataset.image_size
    recipe = augmentation.Augmentation.of(plan.config.dataset)

    def example(count):
      epoch, position = count // per_epoch, count % per_epoch
      epoch_key = fold(key, epoch)
      index = tf.random.experimental.index_shuffle(position, epoch_key, len(labels) - 1)
      example_key, image = fold(epoch_key, position), tf.gather(images, index)
      if recipe.policy:
        image = tf.cast(tf.round(cifar.scale_and_resize(size, image) * 255.0), tf.uint8)
        image = recipe.policy_of(image, example_key)
      image = cifar.scale_and_resize(size, image) - mean
      if augment:
        image = cifar.pad_crop_flip(image, example_key, spec.pad, spec.flip)
      image = recipe.erase(image, example_key, 0.0)
      return {'image': image, 'label': tf.gather(labels, index)}

    ds = tf.data.Dataset.counter(start_step * sub_batch)
    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(sub_batch, drop_remainder=True)
