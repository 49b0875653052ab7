"""Evaluation modes of a trained model: centre crop, the paper's 10-crop and multi-scale testing.

* ``center``: the training pipeline's evaluation view (ImageNet: the centre 224 crop at shorter
  side 256; CIFAR and digits: the original image).
* ``ten_crop``: the 4 corner and the centre 224 crops of the image resized to shorter side 256,
  and their horizontal flips (ImageNet; paper Sec. 3.4).
* ``multi_scale``: the fully convolutional net (global average pooling) applied to the whole
  image at shorter side 224, 256, 384, 480 and 640 (ImageNet; paper Sec. 3.4). The longer side
  is centre-cropped to a multiple of 32, the net's output stride, which drops at most 31 border
  pixels and bounds the number of distinct input shapes (compilations).

Scores are softmax probabilities averaged over the views. Every example of the split counts
exactly once: a partial last batch is padded and masked, never dropped.
"""

import functools
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from resnet_jax import input_pipeline, runs, steps

MODES = ('center', 'ten_crop', 'multi_scale')
TEN_CROP_RESIZE = 256
SCALES = (224, 256, 384, 480, 640)
OUTPUT_STRIDE = 32
JPEG_DATASETS = ('imagenet2012',)


def ten_crops(image, crop_size: int) -> tf.Tensor:
  """[10, crop, crop, C]: top-left, top-right, bottom-left, bottom-right, centre, then flips."""
  image = tf.convert_to_tensor(image)
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  bottom, right = height - crop_size, width - crop_size
  corners = [(0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2)]
  crops = tf.stack([image[y:y + crop_size, x:x + crop_size] for y, x in corners])
  return tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)


def crop_to_stride(image, multiple: int = OUTPUT_STRIDE) -> tf.Tensor:
  """The centre window of ``image`` whose height and width are multiples of ``multiple``."""
  image = tf.convert_to_tensor(image)
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  new_height, new_width = height // multiple * multiple, width // multiple * multiple
  y, x = (height - new_height) // 2, (width - new_width) // 2
  return image[y:y + new_height, x:x + new_width]


@functools.partial(jax.jit, static_argnums=0)
def mean_probabilities(model, variables, views):
  """Softmax probabilities averaged over views: [B, V, H, W, C] -> [B, num_classes]."""
  batch, num_views = views.shape[:2]
  logits = model.apply(variables, views.reshape((batch * num_views,) + views.shape[2:]),
                       train=False)
  return jax.nn.softmax(logits.astype(jnp.float32)).reshape(batch, num_views, -1).mean(1)


def _jpeg_records(config):
  """(JPEG bytes, label) of the eval split in stored order."""
  builder = tfds.builder(config.dataset.name, data_dir=config.dataset.data_dir)
  return builder.as_dataset(split=config.dataset.eval_split, as_supervised=True,
                            shuffle_files=False,
                            decoders={'image': tfds.decode.SkipDecoding()})


def _padded(views, labels, batch_size):
  """Pads a partial batch to ``batch_size`` (one shape, one compilation) and masks the pad."""
  pad = batch_size - len(labels)
  mask = np.arange(batch_size) < len(labels)
  return (np.pad(views, ((0, pad),) + ((0, 0),) * (views.ndim - 1)),
          np.pad(labels, (0, pad)), mask)


def _center(config, model, variables, batch_size):
  del batch_size  # config.eval_batch_size, as in training.
  for batch in input_pipeline.eval_batches(config, process_index=0, process_count=1):
    images = steps.model_images(batch)[:, None]
    yield mean_probabilities(model, variables, images), batch['label'], batch['mask']


def _ten_crop(config, model, variables, batch_size):
  size = config.dataset.image_size
  ds = _jpeg_records(config).map(
      lambda image_bytes, label: (
          ten_crops(input_pipeline.decode_resized(image_bytes, TEN_CROP_RESIZE), size), label),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  for views, labels in ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
    views, labels, mask = _padded(views, labels, batch_size)
    yield mean_probabilities(model, variables, views), labels, mask


def _multi_scale(config, model, variables, batch_size):
  del batch_size  # Whole images differ in shape: one image per call.
  for image_bytes, label in _jpeg_records(config).as_numpy_iterator():
    probabilities = sum(
        mean_probabilities(model, variables, crop_to_stride(
            input_pipeline.decode_resized(image_bytes, scale)).numpy()[None, None])
        for scale in SCALES) / len(SCALES)
    yield probabilities, np.array([label]), np.array([True])


PREDICTORS = {'center': _center, 'ten_crop': _ten_crop, 'multi_scale': _multi_scale}


def predictions(config, model, variables, mode: str,
                batch_size: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """(averaged probabilities [B, K], labels [B], mask [B]) over the eval split, in order.

  ``batch_size``: images per call for ``ten_crop`` (0: config.eval_batch_size // 10).
  """
  if mode not in MODES:
    raise ValueError(f'Unknown evaluation mode {mode!r}; use one of {", ".join(MODES)}.')
  if mode != 'center' and config.dataset.name not in JPEG_DATASETS:
    raise ValueError(f'Mode {mode!r} crops and rescales full-size JPEG images '
                     f'({", ".join(JPEG_DATASETS)}); evaluate {config.dataset.name} with '
                     "'center', its single original view, as the paper does for CIFAR-10.")
  if mode != 'center' and config.dataset.get('imagenet_per_pixel_mean'):
    raise ValueError(f'Mode {mode!r} is not available with dataset.imagenet_per_pixel_mean: the '
                     'per-pixel mean is defined for the training crop; evaluate with '
                     "'center'.")
  input_pipeline.get_dataset_info(config)  # Stops with a clear message if the data is missing.
  batch_size = batch_size or max(config.eval_batch_size // 10, 1)
  for probabilities, labels, mask in PREDICTORS[mode](config, model, variables, batch_size):
    yield np.asarray(probabilities), np.asarray(labels), np.asarray(mask, bool)


def evaluate(config, model, variables, mode: str, batch_size: int = 0) -> dict:
  """{'error_top1', 'error_top5', 'num_examples'} of ``mode`` over the whole eval split."""
  count, errors_top1, errors_top5 = 0, 0.0, 0.0
  for probabilities, labels, mask in predictions(config, model, variables, mode, batch_size):
    # Ranks are what count: the log of the averaged probabilities ranks classes alike.
    outputs = steps.classification_outputs(jnp.log(probabilities), jnp.asarray(labels))
    count += int(mask.sum())
    errors_top1 += float(np.sum(np.asarray(outputs['error_top1']) * mask))
    errors_top5 += float(np.sum(np.asarray(outputs['error_top5']) * mask))
  return {'error_top1': errors_top1 / count, 'error_top5': errors_top5 / count,
          'num_examples': count}


def evaluate_workdir(workdir: str, mode: str, step=None, data_dir=None,
                     batch_size: int = 0) -> dict:
  """``evaluate`` for a run's checkpoint (default: the latest); adds 'mode' and 'step'."""
  run = runs.load_run(workdir, step, data_dir=data_dir)
  return dict(evaluate(run.config, run.model, run.variables, mode, batch_size), mode=mode,
              step=run.step)
