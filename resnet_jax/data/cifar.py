"""The preprocessing ops of the small in-memory datasets, digits and CIFAR-10 (paper, Sec. 4.2):
pixels scaled to [0, 1] (digits upsampled bilinearly), and the training augmentation, zero
padding, a random crop of the original size and (CIFAR-10) a random horizontal flip.

The mean image is subtracted by ``data.small`` (it is computed from the train split);
``data.device_resident`` applies the same augmentation on the accelerators. How much each
dataset pads and whether it flips are its ``data.registry`` entry's ``pad`` and ``flip``.
"""

import tensorflow as tf


def scale_and_resize(size, images):
  """Pixels [..., h, w, C] in 0..255 -> float32 in [0, 1] at size x size (digits are upsampled)."""
  images = tf.cast(images, tf.float32) / 255.0
  if images.shape[-3:-1] != (size, size):
    images = tf.image.resize(images, (size, size), method='bilinear', antialias=True)
  return images


def pad_crop_flip(image, key, pad, flip):
  """Random crop of the zero-padded image, then (optionally) a random horizontal flip."""
  crop_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
  padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
  image = tf.image.stateless_random_crop(padded, image.shape, seed=crop_key)
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_key)
  return image
