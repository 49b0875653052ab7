"""ImageNet preprocessing (paper, Sec. 3.4): encoded images -> uint8 crops plus an RGB offset.

Train: a random square window ``image_size`` wide once the shorter side is rescaled to a uniform
value in [256, 480] (or, ``augmentation.Augmentation.crop_scale``, torchvision's random-resized
crop window), decoded alone (a JPEG at a reduced DCT scale when the window is at least twice
``image_size``; PNG and other formats whole, then cut) and resized, a random horizontal flip, the
modern parts the config asks for (``augmentation``), AlexNet's PCA lighting. Eval: the centre
window ``image_size`` wide at shorter side 256 (or the config's ``dataset.eval_crop`` at
``dataset.eval_resize``). Images are decoded as RGB, whatever their stored channels. Resizing is
bilinear when it enlarges and area averaging (antialiased) when it shrinks. The pixels stay uint8;
the lighting shift minus the ImageNet mean travels as one float32 RGB offset per image, which the
jitted step adds to the pixels scaled to [0, 1] (``steps.model_images``). Stateless random ops
keyed by the caller's key.
"""

import tensorflow as tf

from resnet_jax.data import augmentation, config_checks

IMAGENET_RGB_MEAN = (0.485, 0.456, 0.406)
IMAGENET_EVAL_RESIZE = config_checks.EVAL_RESIZE
IMAGENET_SCALE_RANGE = (256.0, 480.0)
# AlexNet's PCA lighting noise for RGB in [0, 1]: eigenvalues, eigenvectors (columns), alpha std.
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
              (-0.5808, -0.0045, -0.8140),
              (-0.5836, -0.6948, 0.4203))
PCA_ALPHA_STD = 0.1
JPEG_DCT_RATIOS = (1, 2, 4, 8)  # libjpeg's reduced-size decoding.


def resize(image, size):
  """Bilinear resizing to size; area averaging (antialiased) where it shrinks the image."""
  shrink = lambda: tf.image.resize(image, size, method='area')
  enlarge = lambda: tf.image.resize(image, size, method='bilinear')
  return tf.cond(tf.shape(image)[-3] > size[0], shrink, enlarge)


def normalize(image):
  """float32 pixels in 0..255 -> [0, 1] minus the ImageNet RGB mean."""
  return image / 255.0 - tf.constant(IMAGENET_RGB_MEAN)


def centre_window(shape, image_size, shorter_side=IMAGENET_EVAL_RESIZE):
  """[y, x, h, w] of the centre crop: image_size wide at shorter side ``shorter_side``."""
  height, width = shape[0], shape[1]
  side = tf.cast(tf.minimum(height, width), tf.float32)
  crop = tf.cast(tf.round(side * image_size / shorter_side), tf.int32)
  return tf.stack([(height - crop + 1) // 2, (width - crop + 1) // 2, crop, crop])


def to_uint8(image):
  """float32 pixels in 0..255 -> uint8, rounded."""
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _decode_window(image_bytes, window, image_size, resize_to=resize):
  """The JPEG window [y, x, h, w] as uint8 image_size x image_size (``resize_to``).

  Only the window is decoded, at the smallest of libjpeg's DCT scales 1, 1/2, 1/4, 1/8 that
  keeps its shorter side at least image_size (a low-pass filter, and far less work than a full
  decode).
  """
  crop = tf.minimum(window[2], window[3])
  ratio_index = tf.reduce_sum(tf.cast(crop >= image_size * tf.constant([2, 4, 8]), tf.int32))

  def decode(ratio):
    return lambda: tf.image.decode_and_crop_jpeg(image_bytes, window // ratio, channels=3,
                                                 ratio=ratio)

  image = tf.switch_case(ratio_index, [decode(r) for r in JPEG_DCT_RATIOS])
  image.set_shape([None, None, 3])
  return to_uint8(resize_to(image, (image_size, image_size)))


def decode(image_bytes):
  """Encoded bytes of any format tf.io reads (JPEG, PNG, GIF, BMP) -> uint8 [H, W, 3]."""
  return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)


def image_shape(image_bytes):
  """int32 [3], the shape of an encoded image: a JPEG's from its header, others by decoding."""
  return tf.cond(tf.io.is_jpeg(image_bytes), lambda: tf.image.extract_jpeg_shape(image_bytes),
                 lambda: tf.shape(decode(image_bytes)))


def _decode_crop(image_bytes, window_of, image_size, resize_to=resize):
  """The uint8 image_size x image_size crop of the window ``window_of(shape)`` [y, x, h, w]: a
  JPEG decodes the window alone (``_decode_window``), other formats decode whole and cut it."""
  def jpeg():
    return _decode_window(image_bytes, window_of(tf.image.extract_jpeg_shape(image_bytes)),
                          image_size, resize_to)

  def other():
    image = decode(image_bytes)
    y, x, h, w = tf.unstack(window_of(tf.shape(image)))
    return to_uint8(resize_to(image[y:y + h, x:x + w], (image_size, image_size)))

  crop = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
  crop.set_shape([image_size, image_size, 3])
  return crop


def eval_example(image_bytes, image_size, shorter_side=IMAGENET_EVAL_RESIZE):
  """Encoded bytes -> uint8 centre image_size crop at shorter side ``shorter_side`` (see
  model_images)."""
  return _decode_crop(image_bytes, lambda shape: centre_window(shape, image_size, shorter_side),
                      image_size)


def _random_window(shape, image_size, uniforms):
  """[y, x, h, w] of a random crop image_size wide at a random shorter side in [256, 480].

  uniforms: three U[0, 1) draws, for the shorter side and the y and x offsets.
  """
  low, high = IMAGENET_SCALE_RANGE
  height, width = shape[0], shape[1]
  shorter = low + (high - low) * uniforms[0]
  side = tf.cast(tf.minimum(height, width), tf.float32)
  crop = tf.maximum(tf.cast(tf.round(side * image_size / shorter), tf.int32), 1)
  room = tf.cast(tf.stack([height, width]) - crop + 1, tf.float32)
  offset = tf.cast(uniforms[1:3] * room, tf.int32)
  return tf.concat([offset, [crop, crop]], 0)


def _lighting(key):
  """AlexNet's colour augmentation, an RGB shift: eigvec @ (alpha * eigval), alpha ~ N(0, 0.1^2)."""
  alpha = tf.random.stateless_normal([3], key, stddev=PCA_ALPHA_STD)
  return tf.linalg.matvec(tf.constant(PCA_EIGVEC), alpha * tf.constant(PCA_EIGVAL))


def _resize_window(image, size):
  """A random-resized crop's window to ``size``: area averaging where it shrinks both ways (as
  ``resize``; a quarter of the work of an antialiased bilinear filter), else bilinear,
  antialiased along a side that shrinks (torchvision's resizing)."""
  shrink = lambda: tf.image.resize(image, size, method='area')
  other = lambda: tf.image.resize(image, size, method='bilinear', antialias=True)
  shape = tf.shape(image)
  return tf.cond((shape[-3] > size[0]) & (shape[-2] > size[1]), shrink, other)


def train_example(image_bytes, key, image_size, recipe=augmentation.Augmentation()):
  """Encoded bytes -> (uint8 scale-augmented random crop, randomly flipped, through ``recipe``'s
  modern parts; its float32 [3] offset).

  The offset is the PCA lighting shift minus the ImageNet mean; the device adds it to the
  pixels scaled to [0, 1] (``steps.model_images``), so the host ships a quarter of the bytes.
  Random erasing fills its box with the ImageNet mean rounded to uint8, 0 after normalisation
  up to that rounding and the example's lighting shift.
  """
  uniform_key, light_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
  uniforms = tf.random.stateless_uniform([4], uniform_key)
  if recipe.crop_scale:
    image = _decode_crop(image_bytes, lambda shape: recipe.crop_window(shape, key), image_size,
                         _resize_window)
  else:
    image = _decode_crop(image_bytes, lambda shape: _random_window(shape, image_size, uniforms),
                         image_size)
  image = tf.cond(uniforms[3] < 0.5, lambda: tf.reverse(image, [1]), lambda: image)
  image = recipe.policy_of(image, key)
  image = recipe.erase(image, key, to_uint8(255.0 * tf.constant(IMAGENET_RGB_MEAN)))
  lighting = _lighting(light_key) if recipe.lighting else tf.zeros([3])
  return image, lighting - tf.constant(IMAGENET_RGB_MEAN)


def decode_resized(image_bytes, shorter_side):
  """Encoded bytes -> float32 [H, W, 3] with shorter side `shorter_side`, ImageNet mean
  subtracted.

  The building block of 10-crop and multi-scale testing (crops of it are what the model sees).
  """
  image = decode(image_bytes)
  return normalize(resize(image, scaled_size(tf.shape(image), shorter_side)))


def scaled_size(shape, shorter_side):
  """int32 [2]: the (height, width) of an image of ``shape`` [H, W, ...] resized to shorter side
  ``shorter_side``, the longer side rounded to the nearest pixel (``decode_resized``)."""
  size = tf.cast(shape[:2], tf.float32)
  return tf.cast(tf.round(size * tf.cast(shorter_side, tf.float32) / tf.reduce_min(size)),
                 tf.int32)
