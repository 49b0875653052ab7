"""Random boxes as torchvision draws them, in tf.data: the Inception-style random-resized crop
(``RandomResizedCrop.get_params``) and random erasing (``RandomErasing``).

Both draw up to ``TRIES`` boxes of an area fraction uniform in ``scale`` and an aspect ratio
log-uniform in ``ratio`` and keep the first that fits the image; the crop falls back to the
centre crop of the ratio range's nearest ratio, erasing to erasing nothing. All ``TRIES`` are
drawn at once from one stateless key, so a box is a function of its key alone.
"""

import math

import tensorflow as tf

TRIES = 10


def _candidates(key, height, width, scale, ratio):
  """(sqrt(area * aspect), sqrt(area / aspect), uniforms [2, TRIES]) of TRIES draws, the sides
  rounded half to even as Python's round, and two U[0, 1) per draw for the offsets."""
  u = tf.random.stateless_uniform([4, TRIES], key)
  area = tf.cast(height * width, tf.float32) * (scale[0] + (scale[1] - scale[0]) * u[0])
  low, high = math.log(ratio[0]), math.log(ratio[1])
  aspect = tf.exp(low + (high - low) * u[1])
  return (tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32),
          tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32), u[2:])


def _first(fits, values):
  """The entries of each tensor in ``values`` at the first index where ``fits`` holds."""
  index = tf.argmax(tf.cast(fits, tf.int32))
  return [v[..., index] for v in values]


def _offset(room, u):
  """A uniform integer in [0, room]: torch.randint(0, room + 1)."""
  return tf.minimum(tf.cast(u * tf.cast(room + 1, tf.float32), tf.int32), room)


def resized_crop_window(shape, key, scale, ratio):
  """int32 [y, x, h, w]: the window of ``RandomResizedCrop(scale, ratio)`` in an image of
  ``shape`` [H, W, ...] (width = sqrt(area * aspect), height = sqrt(area / aspect))."""
  height, width = shape[0], shape[1]
  w, h, u = _candidates(key, height, width, scale, ratio)
  fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
  h, w, uy, ux = _first(fits, [h, w, u[0], u[1]])
  drawn = tf.stack([_offset(height - h, uy), _offset(width - w, ux), h, w])
  in_ratio = tf.cast(width, tf.float32) / tf.cast(height, tf.float32)
  round_int = lambda x: tf.cast(tf.round(x), tf.int32)
  fallback_h = tf.where(in_ratio < ratio[0], round_int(tf.cast(width, tf.float32) / ratio[0]),
                        height)
  fallback_w = tf.where(in_ratio > ratio[1], round_int(tf.cast(height, tf.float32) * ratio[1]),
                        width)
  fallback = tf.stack([(height - fallback_h) // 2, (width - fallback_w) // 2, fallback_h,
                       fallback_w])
  return tf.where(tf.reduce_any(fits), drawn, fallback)


def erasing_box(shape, key, scale, ratio):
  """int32 [y, x, h, w] of ``RandomErasing(scale, ratio)``'s box in an image of ``shape``
  (height = sqrt(area * aspect), strictly inside the image); h = w = 0 where no draw fits."""
  height, width = shape[0], shape[1]
  h, w, u = _candidates(key, height, width, scale, ratio)
  fits = (h < height) & (w < width)
  h, w, uy, ux = _first(fits, [h, w, u[0], u[1]])
  box = tf.stack([_offset(height - h, uy), _offset(width - w, ux), h, w])
  return tf.where(tf.reduce_any(fits), box, tf.zeros([4], tf.int32))


def erase(image, key, probability, scale, ratio, value):
  """``image`` [H, W, C] with, with ``probability``, an ``erasing_box`` set to ``value`` (a
  scalar or [C], in the image's dtype)."""
  draw_key, box_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))

  def erased():
    y, x, h, w = tf.unstack(erasing_box(tf.shape(image), box_key, scale, ratio))
    rows, cols = tf.range(tf.shape(image)[0]), tf.range(tf.shape(image)[1])
    inside = (((rows >= y) & (rows < y + h))[:, None] & ((cols >= x) & (cols < x + w))[None, :])
    return tf.where(inside[:, :, None], tf.cast(value, image.dtype), image)

  return tf.cond(tf.random.stateless_uniform([], draw_key) < probability, erased, lambda: image)
