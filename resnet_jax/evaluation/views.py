"""The views of the paper's 10-crop and multi-scale testing (Sec. 3.4), as tf.data pipelines.

* 10-crop: the 4 corner and the centre ``crop_size`` crops of the image resized to shorter side
  256, and their horizontal flips: one [10, crop, crop, 3] element per image.
* Multi-scale: the whole image resized to shorter side 224, 256, 384, 480 and 640. A fully
  convolutional net takes any shape, but every distinct shape is a compilation, so the views are
  bucketed by shape: each view is the centre window of the resized image whose sides are
  multiples of 32 (the net's output stride; at most 31 border pixels dropped), with the longer
  side at most ``MAX_ASPECT`` times the shorter. The scales are multiples of 32, so a bucket is
  one (scale, orientation, longer side) and there are at most ``max_view_shapes()`` of them (129
  for the defaults); images within ``MAX_ASPECT`` are seen exactly as one at a time, cut only to
  the stride. The alternative, padding every view to a few large shapes and pooling under a mask,
  would compile fewer shapes, but zero padding changes the features near the border (the
  convolutions see it; eval-mode BatchNorm then shifts it), so the scores would not be those of
  the image alone.

Pixels are float32 with the ImageNet RGB mean subtracted (``decode_resized``); ``correction``
(the per-pixel mean minus the per-channel one, ``crop_size`` square, or None) is subtracted too,
as is, from every 10-crop view, and resized bilinearly to each multi-scale view.
"""

import tensorflow as tf

from resnet_jax.data import imagenet

SCALES = (224, 256, 384, 480, 640)
OUTPUT_STRIDE = 32
MAX_ASPECT = 2.0
_KEY_BASE = 1 << 20  # Larger than any view side: key = height * _KEY_BASE + width.


def ten_crops(image, crop_size: int) -> tf.Tensor:
  """[10, crop, crop, C]: top-left, top-right, bottom-left, bottom-right, centre, then flips."""
  image = tf.convert_to_tensor(image)
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  bottom, right = height - crop_size, width - crop_size
  corners = [(0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2)]
  crops = tf.stack([image[y:y + crop_size, x:x + crop_size] for y, x in corners])
  return tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)


def centre_crop(image, height, width) -> tf.Tensor:
  """The centre ``height`` x ``width`` window of ``image`` (an odd margin leaves the extra
  pixel at the bottom / right)."""
  image = tf.convert_to_tensor(image)
  y, x = (tf.shape(image)[0] - height) // 2, (tf.shape(image)[1] - width) // 2
  return image[y:y + height, x:x + width]


def _longest(scale: int, max_aspect: float) -> int:
  return int(max_aspect * scale) // OUTPUT_STRIDE * OUTPUT_STRIDE


def view_shape(image_shape, scale: int, max_aspect: float = MAX_ASPECT) -> tf.Tensor:
  """int32 [2]: the (height, width) of the multi-scale view of an image of ``image_shape``:
  resized to shorter side ``scale``, each side cut to a multiple of 32, the longer side to at
  most ``max_aspect * scale``."""
  resized = imagenet.scaled_size(image_shape, scale)
  return tf.minimum(resized // OUTPUT_STRIDE * OUTPUT_STRIDE, _longest(scale, max_aspect))


def max_view_shapes(scales=SCALES, max_aspect: float = MAX_ASPECT) -> int:
  """The most distinct multi-scale view shapes (buckets): per scale, the longer side takes
  every multiple of 32 from the scale to its cap, in either orientation (the square once)."""
  return sum(2 * ((_longest(s, max_aspect) - s // OUTPUT_STRIDE * OUTPUT_STRIDE)
                  // OUTPUT_STRIDE) + 1 for s in scales)


def bucket_batch_size(height, width, pixels_per_call: int, multiple: int):
  """Views of ``height`` x ``width`` per call: as many as fit in ``pixels_per_call`` pixels (at
  least one), rounded up to a multiple of ``multiple`` (the devices). int64, tensors or ints."""
  fit = tf.maximum(tf.cast(pixels_per_call, tf.int64) // (tf.cast(height, tf.int64)
                                                          * tf.cast(width, tf.int64)), 1)
  return (fit + multiple - 1) // multiple * multiple


def _minus_correction(view, correction):
  if correction is None:
    return view
  if correction.shape[:2] != view.shape[-3:-1]:  # A multi-scale view.
    correction = tf.image.resize(correction, tf.shape(view)[-3:-1], method='bilinear')
  return view - correction


def ten_crop_views(records: tf.data.Dataset, crop_size: int, shorter_side: int,
                   correction=None) -> tf.data.Dataset:
  """(encoded image, label) records -> {'views': [10, crop, crop, 3], 'label'}, in order: the
  ten crops of each image resized to ``shorter_side``."""
  correction = None if correction is None else tf.constant(correction, tf.float32)

  def views(image_bytes, label):
    crops = ten_crops(imagenet.decode_resized(image_bytes, shorter_side), crop_size)
    return {'views': _minus_correction(crops, correction), 'label': tf.cast(label, tf.int32)}
  return records.map(views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def multi_scale_views(records: tf.data.Dataset, pixels_per_call: int, multiple: int,
                      correction=None, scales=SCALES,
                      max_aspect: float = MAX_ASPECT) -> tf.data.Dataset:
  """(encoded image, label) records -> batches {'views': [n, 1, h, w, 3], 'index', 'label': [n]}.

  Every record's view at every scale lands in exactly one batch; a batch holds views of one
  shape, ``bucket_batch_size`` of them except the last batch of each shape. ``index`` is the
  record's position. Only encoded bytes wait in the buckets (at most one batch per shape); a
  batch is decoded once full, in parallel.
  """
  correction = None if correction is None else tf.constant(correction, tf.float32)

  def at_every_scale(index, record):
    image_bytes, label = record
    shape = imagenet.image_shape(image_bytes)  # A JPEG's header only; no decoding yet.
    count = len(scales)
    return tf.data.Dataset.from_tensor_slices({
        'index': tf.fill([count], tf.cast(index, tf.int32)),
        'image': tf.fill([count], image_bytes),
        'label': tf.fill([count], tf.cast(label, tf.int32)),
        'scale': tf.constant(scales, tf.int32),
        'shape': tf.stack([view_shape(shape, s, max_aspect) for s in scales])})

  def bucket(view):
    return tf.cast(view['shape'][0], tf.int64) * _KEY_BASE + tf.cast(view['shape'][1], tf.int64)

  def batch_size(key):
    return bucket_batch_size(key // _KEY_BASE, key % _KEY_BASE, pixels_per_call, multiple)

  def decode(view):
    image = imagenet.decode_resized(view['image'], view['scale'])
    image = _minus_correction(centre_crop(image, view['shape'][0], view['shape'][1]), correction)
    return {'views': image[None], 'index': view['index'], 'label': view['label']}

  def batches(key, views):
    return views.map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=True).batch(batch_size(key))
  return records.enumerate().flat_map(at_every_scale).group_by_window(
      bucket, batches, window_size_func=batch_size)
