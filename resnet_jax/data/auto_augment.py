"""RandAugment (Cubuk et al. 2020) and TrivialAugmentWide (Müller and Hutter 2021) on uint8
[H, W, C] images in tf.data, with torchvision's operations, magnitude bins and sampling.

Keras' ``RandAugment`` layer draws its magnitudes differently, lacks Identity and
TrivialAugmentWide, and keeps its random state in the layer, not in a per-example key; so the
policies are written here, one table of operations and magnitudes as
``torchvision.transforms.RandAugment`` / ``TrivialAugmentWide`` define them. Each operation
reproduces what torchvision applies to a PIL image (PIL's ImageEnhance, ImageOps and affine
transforms with a black fill, sampling the nearest pixel as torchvision's classes do by default,
or interpolating bilinearly as torchvision's reference training script asks), within the
tolerances ``tests/test_auto_augment.py`` states. Randomness is a stateless key per image.
"""

import math

import numpy as np
import tensorflow as tf

from resnet_jax.data.streamed_order import fold

def _blend(degenerate, image, factor):
  """PIL's ``Image.blend(degenerate, image, factor)``: extrapolated, clipped, truncated."""
  degenerate = tf.cast(degenerate, tf.float32)
  mixed = degenerate + factor * (tf.cast(image, tf.float32) - degenerate)
  return tf.cast(tf.clip_by_value(mixed, 0.0, 255.0), tf.uint8)


def _luminance(image):
  """PIL's RGB -> L conversion, int32 [H, W, 1] (a one-channel image is its own)."""
  if image.shape[-1] == 1:
    return tf.cast(image, tf.int32)
  weights = tf.constant([19595, 38470, 7471], tf.int32)
  return tf.bitwise.right_shift(
      tf.reduce_sum(tf.cast(image, tf.int32) * weights, -1, keepdims=True) + 0x8000, 16)


def _affine(image, matrix, interpolation):
  """PIL's ``Image.transform(AFFINE, matrix, NEAREST or BILINEAR)``, black fill. ``matrix`` (a,
  b, c, d, e, f) maps output to input coordinates (x, y) -> (a x + b y + c, d x + e y + f) with
  pixel centres at +0.5; PIL samples the floor, ImageProjectiveTransform rounds pixel indices."""
  a, b, c, d, e, f = tf.unstack(tf.cast(matrix, tf.float32))
  transform = tf.stack([a, b, c + 0.5 * (a + b) - 0.5, d, e, f + 0.5 * (d + e) - 0.5, 0.0, 0.0])
  nearest = interpolation == 'nearest'
  transformed = tf.raw_ops.ImageProjectiveTransformV3(
      images=(image if nearest else tf.cast(image, tf.float32))[None],
      transforms=transform[None], output_shape=tf.shape(image)[:2], fill_value=0.0,
      interpolation=interpolation.upper(), fill_mode='CONSTANT')[0]
  return transformed if nearest else tf.cast(tf.round(transformed), tf.uint8)


def _rotate(image, degrees, interpolation):
  """PIL's ``Image.rotate(degrees)``: counter-clockwise about (W / 2, H / 2)."""
  angle = -degrees * math.pi / 180
  cos, sin = tf.cos(angle), tf.sin(angle)
  cy, cx = (tf.cast(s, tf.float32) / 2 for s in tf.unstack(tf.shape(image)[:2]))
  return _affine(image, [cos, sin, cx - cos * cx - sin * cy,
                         -sin, cos, cy + sin * cx - cos * cy], interpolation)


def _smooth(image):
  """PIL's ``ImageFilter.SMOOTH`` (3x3, centre 5, others 1, over 13), rounded; the one-pixel
  border kept as it is."""
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13
  channels = image.shape[-1]
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
  inner = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1],
                                 'VALID')[0]
  inner = tf.pad(tf.cast(tf.round(inner), tf.uint8), [[1, 1], [1, 1], [0, 0]])
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  border = tf.pad(tf.ones([height - 2, width - 2, 1], tf.bool), [[1, 1], [1, 1], [0, 0]],
                  constant_values=False)
  return tf.where(border, inner, image)


def _autocontrast(image):
  """PIL's ``ImageOps.autocontrast``: each channel's range stretched to 0..255, truncated."""
  pixels = tf.cast(image, tf.float64)
  low = tf.reduce_min(pixels, [0, 1])
  high = tf.reduce_max(pixels, [0, 1])
  scale = 255.0 / tf.maximum(high - low, 1.0)
  stretched = tf.clip_by_value(tf.floor(pixels * scale - low * scale), 0.0, 255.0)
  return tf.where(high > low, tf.cast(stretched, tf.uint8), image)


def _equalize(image):
  """PIL's ``ImageOps.equalize``: each channel through the lookup table of its histogram."""
  channels = tf.transpose(tf.reshape(tf.cast(image, tf.int32), [-1, image.shape[-1]]))
  histogram = tf.math.bincount(channels, minlength=256, maxlength=256, axis=-1)
  last = tf.gather(histogram, tf.reduce_max(channels, 1), batch_dims=1)  # Top bin's count.
  step = (tf.reduce_sum(histogram, 1) - last) // 255
  below = tf.cumsum(histogram, 1, exclusive=True)
  table = tf.minimum((step[:, None] // 2 + below) // tf.maximum(step[:, None], 1), 255)
  table = tf.where(step[:, None] > 0, table, tf.range(256)[None])
  equalized = tf.gather(table, channels, batch_dims=1)
  return tf.reshape(tf.cast(tf.transpose(equalized), tf.uint8), tf.shape(image))


def _whole(magnitude):
  """A magnitude truncated towards zero, as Python's int()."""
  return tf.cast(tf.cast(magnitude, tf.int32), tf.float32)


def _posterize(image, bits):
  mask = tf.cast(255 - (2 ** (8 - tf.cast(bits, tf.int32)) - 1), tf.uint8)
  return tf.bitwise.bitwise_and(image, mask)


def _solarize(image, threshold):
  return tf.where(tf.cast(image, tf.float32) >= threshold, 255 - image, image)


def _geometric(interpolation):
  """The geometric operations (below) sampling with ``interpolation``."""
  affine = lambda image, matrix: _affine(image, matrix, interpolation)
  return {
      'ShearX': lambda image, m: affine(image, [1.0, m, 0.0, 0.0, 1.0, 0.0]),
      'ShearY': lambda image, m: affine(image, [1.0, 0.0, 0.0, m, 1.0, 0.0]),
      'TranslateX': lambda image, m: affine(image, [1.0, 0.0, -_whole(m), 0.0, 1.0, 0.0]),
      'TranslateY': lambda image, m: affine(image, [1.0, 0.0, 0.0, 0.0, 1.0, -_whole(m)]),
      'Rotate': lambda image, m: _rotate(image, m, interpolation),
  }


# name -> (operation (uint8 image, float32 magnitude) -> uint8 image), torchvision's
# ``_apply_op`` (the geometric ones sampling the nearest pixel): a factor's magnitude m is
# 1 + m, a translation is truncated to whole pixels.
OPERATIONS = {
    'Identity': lambda image, m: image,
    **_geometric('nearest'),
    'Brightness': lambda image, m: _blend(tf.zeros_like(image), image, 1.0 + m),
    'Color': lambda image, m: _blend(tf.cast(_luminance(image), tf.uint8), image, 1.0 + m),
    'Contrast': lambda image, m: _blend(
        tf.floor(tf.reduce_mean(tf.cast(_luminance(image), tf.float64)) + 0.5), image, 1.0 + m),
    'Sharpness': lambda image, m: _blend(_smooth(image), image, 1.0 + m),
    'Posterize': _posterize,
    'Solarize': _solarize,
    'AutoContrast': lambda image, m: _autocontrast(image),
    'Equalize': lambda image, m: _equalize(image),
}


def magnitudes(policy: str, bins: int, height: int, width: int) -> dict:
  """name -> (float32 [bins] magnitudes or None, signed): torchvision's ``_augmentation_space``
  of ``RandAugment`` (``policy='rand_augment'``) or ``TrivialAugmentWide``."""
  ramp = lambda end: np.linspace(0.0, end, bins, dtype=np.float32)
  wide = policy == 'trivial_augment_wide'
  levels = 6 if wide else 4
  factor = ramp(0.99 if wide else 0.9)
  return {
      'Identity': (None, False),
      'ShearX': (ramp(0.99 if wide else 0.3), True),
      'ShearY': (ramp(0.99 if wide else 0.3), True),
      'TranslateX': (ramp(32.0 if wide else 150.0 / 331.0 * width), True),
      'TranslateY': (ramp(32.0 if wide else 150.0 / 331.0 * height), True),
      'Rotate': (ramp(135.0 if wide else 30.0), True),
      'Brightness': (factor, True),
      'Color': (factor, True),
      'Contrast': (factor, True),
      'Sharpness': (factor, True),
      'Posterize': ((8 - np.round(np.arange(bins) / ((bins - 1) / levels))).astype(np.float32),
                    False),
      'Solarize': (np.linspace(255.0, 0.0, bins, dtype=np.float32), False),
      'AutoContrast': (None, False),
      'Equalize': (None, False),
  }


def _apply(image, op, bin_index, negate, space, interpolation):
  """The operation of index ``op`` in ``space`` at magnitude bin ``bin_index``, its magnitude
  negated where ``negate`` and the operation is signed."""
  bins = len(space['ShearX'][0])
  table = np.stack([np.zeros(bins, np.float32) if m is None else m for m, _ in space.values()])
  signed = tf.constant([s for _, s in space.values()])
  magnitude = tf.gather_nd(tf.constant(table), tf.stack([op, bin_index]))
  magnitude = tf.where(negate & tf.gather(signed, op), -magnitude, magnitude)
  operations = {**OPERATIONS, **_geometric(interpolation)}
  branches = [lambda f=operations[name]: f(image, magnitude) for name in space]
  result = tf.switch_case(op, branches)
  result.set_shape(image.shape)
  return result


def _draw(key, count):
  return tf.cast(tf.random.stateless_uniform([], key) * count, tf.int32)


def augment(image, key, policy: str, num_ops: int, magnitude: int, bins: int,
            interpolation: str = 'nearest'):
  """``image`` (uint8 [H, W, C], static H and W) through ``policy``: RandAugment's ``num_ops``
  uniformly chosen operations at bin ``magnitude`` of ``bins``, or TrivialAugmentWide's one
  operation at a uniformly chosen bin; signed magnitudes negated with probability 1/2; the
  geometric operations sample with ``interpolation``, 'nearest' or 'bilinear'."""
  space = magnitudes(policy, bins, *image.shape[:2])
  count = len(space)
  if policy == 'trivial_augment_wide':
    keys = [fold(key, i) for i in range(3)]
    return _apply(image, _draw(keys[0], count), _draw(keys[1], bins), _draw(keys[2], 2) > 0,
                  space, interpolation)
  for i in range(num_ops):
    op_key, sign_key = fold(key, i, 0), fold(key, i, 1)
    image = _apply(image, _draw(op_key, count), tf.constant(magnitude), _draw(sign_key, 2) > 0,
                   space, interpolation)
  return image
