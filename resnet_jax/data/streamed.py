"""The IMAGENET family (ImageNet, Imagenette, photographs, large image folders): the paper's
ImageNet recipe on encoded images streamed from their TFRecord files (paper, Sec. 3.4).

Training: scale augmentation, a random ``image_size`` crop, a flip and PCA lighting
(``imagenet.train_example``), with the modern parts the config asks for
(``augmentation.Augmentation``); evaluation: the centre crop at shorter side 256
(``imagenet.eval_example``), or ``dataset.eval_crop`` at ``dataset.eval_resize``. Batches hold
uint8 pixels plus one RGB offset per image (the lighting minus the ImageNet mean), scaled and
shifted on the device by ``steps.model_images``. The per-pixel mean
(``dataset.imagenet_per_pixel_mean``, of the dataset's own training images; always for an image
folder) is the same image for every example: ``mean_correction`` gives its difference from the
per-channel mean once, for the device to subtract, so batches stay uint8 plus 3 floats. Resizing
is bilinear when it enlarges and area averaging (antialiased) when it shrinks. Each epoch streams
a shard's files in a fresh order, windows of about ``shuffle_buffer`` records each shuffled whole
(``streamed_order``); a resumed run reads only the window of its position.
"""

import functools

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from resnet_jax.data import augmentation, config_checks, dataset, imagenet, streamed_order
from resnet_jax.data.streamed_order import fold


class StreamedDataset(dataset.Dataset):
  """An IMAGENET-family dataset's batches: uint8 images and an RGB offset per image."""

  decode_eval = False  # Eval views are cropped from the encoded images.

  def __init__(self, plan, process_index: int = 0):
    super().__init__(plan, process_index)
    streamed_order.check_tfrecord(self.builder)  # Before any training work.

  @functools.cached_property
  def _correction(self) -> np.ndarray | None:
    ds, spec = self.plan.config.dataset, self.plan.dataset
    if not (ds.imagenet_per_pixel_mean or spec.train_pixel_mean):
      return None
    return self._pixel_mean() - np.float32(imagenet.IMAGENET_RGB_MEAN)

  @property
  def eval_view(self) -> tuple[int, int]:
    """(crop, shorter side) of the evaluation's centre crop."""
    ds = self.plan.config.dataset
    return config_checks.eval_view(ds)

  def _pixel_mean(self) -> np.ndarray:
    """Per-pixel mean in [0, 1] of the first ``dataset.mean_examples`` train images (stored
    order), each cropped as evaluation crops it."""
    ds, (size, shorter_side) = self.plan.config.dataset, self.eval_view
    crops = dataset.read(self.builder, ds.train_split, self.plan.dataset.label_feature,
                         decode=False).take(ds.mean_examples).map(
        lambda image_bytes, _: tf.cast(imagenet.eval_example(image_bytes, size, shorter_side),
                                       tf.float64) / 255.0,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(256)
    total, count = crops.reduce(
        (tf.zeros((size, size, 3), tf.float64), tf.constant(0, tf.int64)),
        lambda acc, batch: (acc[0] + tf.reduce_sum(batch, 0),
                            acc[1] + tf.shape(batch, tf.int64)[0]))
    return (total / tf.cast(count, tf.float64)).numpy().astype(np.float32)

  def mean_correction(self) -> np.ndarray | None:
    """The per-pixel mean minus the per-channel one, float32 [image_size, image_size, 3], with
    ``dataset.imagenet_per_pixel_mean`` (an image folder of large images: always); else None."""
    return self._correction

  def _correction_tensor(self) -> tf.Tensor:
    return tf.constant(0.0 if self._correction is None else self._correction)

  def train_mean_image(self) -> np.ndarray:
    size = self.plan.config.dataset.image_size
    return (np.broadcast_to(np.float32(imagenet.IMAGENET_RGB_MEAN), (size, size, 3))
            + self._correction_tensor().numpy())

  def _eval_preprocessing(self):
    (size, shorter_side), offset = self.eval_view, -tf.constant(imagenet.IMAGENET_RGB_MEAN)
    return lambda image_bytes: {'image': imagenet.eval_example(image_bytes, size, shorter_side),
                                'image_offset': offset}

  def eval_jpeg_records(self) -> tuple[tf.data.Dataset, int]:
    """(encoded image, label) records of this process's part of the eval split, in stored
    order, and their number (the 10-crop and multi-scale views are cut from them)."""
    plan = self.plan
    part = tfds.even_splits(plan.config.dataset.eval_split, plan.processes)[self.process_index]
    return (dataset.read(self.builder, part, plan.dataset.label_feature, decode=False),
            self.builder.info.splits[part].num_examples)

  def _shard(self, split, key, start_step) -> tf.data.Dataset:
    plan, size = self.plan, self.plan.config.dataset.image_size
    sub_batch = plan.shard_batch
    records = streamed_order.shard_records(
        streamed_order.pieces(self.builder, split), key, plan.config.dataset.shuffle_buffer,
        plan.steps_per_epoch * sub_batch, start_step * sub_batch)
    deserialize = functools.partial(self.builder.info.features.deserialize_example,
                                    decoders={'image': tfds.decode.SkipDecoding()})
    label_feature = plan.dataset.label_feature
    recipe = augmentation.Augmentation.of(plan.config.dataset)

    def example(epoch, position, record):
      record = deserialize(record)
      image, offset = imagenet.train_example(record['image'], fold(key, epoch, position), size,
                                             recipe)
      return {'image': image, 'image_offset': offset,
              'label': tf.cast(record[label_feature], tf.int32)}

    ds = records.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(sub_batch, drop_remainder=True)
