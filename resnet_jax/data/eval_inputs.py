"""Images as evaluation preprocesses them, from a run's inference record alone (no dataset).

``record_of`` makes the ``inference_record.InferenceRecord`` of an opened dataset: its label
names, eval size and view (``dataset.eval_crop`` at ``dataset.eval_resize``), and its train
mean. ``preprocess`` applies a record with the ops of the training pipeline's evaluation: the
SMALL family's ``cifar.scale_and_resize``, the IMAGENET family's centre window
(``imagenet.centre_window``) resized to uint8, then the record's normalisation.
``dataset.Dataset.preprocess_for_eval`` goes through it too, so a run predicts the same with its
data or with only its record. ``read_image`` reads an image file as
an image folder reads it, at the record's channels.
"""

import json

import numpy as np
import tensorflow as tf

from resnet_jax import inference_record
from resnet_jax.data import cifar, folder_builder, imagenet


def record_of(data) -> inference_record.InferenceRecord:
  """The record of an opened dataset (``data.dataset.Dataset``) and the plan it was opened for."""
  plan = data.plan
  config, spec = plan.config, plan.dataset
  constants = {
      'net': config.model.name, 'model': json.loads(config.model.to_json_best_effort()),
      'dataset': config.dataset.name,
      'label_names': list(data.label_names), 'image_size': config.dataset.image_size,
      'channels': spec.channels, 'eval_batch_size': config.eval_batch_size,
  }
  if spec.in_memory:
    constants['eval_view'] = 'resize'
    arrays = {'pixel_mean': np.float32(data.train_mean_image())}
  else:
    correction, (size, shorter_side) = data.mean_correction(), data.eval_view
    constants.update(image_size=size, eval_view='centre_crop', eval_shorter_side=shorter_side,
                     channel_mean=list(imagenet.IMAGENET_RGB_MEAN))
    arrays = {} if correction is None else {'pixel_mean': np.float32(correction)}
  return inference_record.InferenceRecord(constants, arrays)


def _centre_crop(image, size: int, shorter_side: int) -> tf.Tensor:
  """uint8 [size, size, C]: the centre window at shorter side ``shorter_side``, resized."""
  y, x, h, w = imagenet.centre_window(np.shape(image), size, shorter_side).numpy()
  return imagenet.to_uint8(imagenet.resize(image[y:y + h, x:x + w], (size, size)))


def _views(record, images) -> tf.Tensor:
  """float32 [N, S, S, C] in [0, 1]: the images at the eval size, as the record's view."""
  size = record.image_size
  if record.constants['eval_view'] == 'centre_crop':
    shorter_side = record.constants['eval_shorter_side']
    return tf.stack([tf.cast(_centre_crop(image, size, shorter_side), tf.float32) / 255.0
                     for image in images])
  if len({np.shape(image) for image in images}) == 1:
    return cifar.scale_and_resize(size, images)
  return tf.stack([cifar.scale_and_resize(size, image) for image in images])


def preprocess(record, images) -> np.ndarray:
  """Raw uint8 images, [N, h, w, C] or a sequence of [h, w, C] of any sizes, as evaluation
  preprocesses them: float32 [N, S, S, C]."""
  views = _views(record, images) - tf.constant(record.channel_mean)
  return (views - tf.constant(record.pixel_mean)).numpy()


def read_image(path: str, record) -> np.ndarray:
  """uint8 [h, w, C] of an image file (any format PIL reads) at the record's channels C, as an
  image folder stores it: greyscale or RGB at 8 bits a sample, and for the SMALL family (whose
  evaluation resizes without cropping) its centre square. Raises PIL's errors for a file that
  does not decode (``folder_builder.UNDECODABLE``)."""
  image = folder_builder.eight_bit_image(path).convert('L' if record.channels == 1 else 'RGB')
  if record.constants['eval_view'] == 'resize':
    image = folder_builder.centre_square(image)
  return np.asarray(image, np.uint8).reshape(image.size[1], image.size[0], record.channels)
