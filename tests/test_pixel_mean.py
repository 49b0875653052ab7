"""ImageNet's per-pixel mean option on a small ImageNet of hand-made two-colour photos."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from configs import imagenet
from resnet_jax import steps
from resnet_jax.data import datasets
from resnet_jax.data import imagenet as imagenet_preprocessing
from resnet_jax.evaluation import protocols
from resnet_jax.testing import tfrecord_imagenet

# Left half one grey level, right half another; the 4th image lies beyond mean_examples=3.
GREYS = [(200, 40), (120, 80), (160, 20), (0, 255)]
SIZES = [(300, 400), (256, 256), (400, 300), (280, 290)]
IMAGE_SIZE = 32


def photo(grey, size):
  height, width = size
  image = np.full((height, width, 3), grey[1], np.uint8)
  image[:, :width // 2] = grey[0]
  return image


def config_for(data_dir, per_pixel, image_size=IMAGE_SIZE):
  config = imagenet.get_config('resnet18,pixel_mean' if per_pixel else 'resnet18')
  config.model.bn_group_size = 0  # Global BatchNorm: the batches here are small.
  config.dataset.update(data_dir=data_dir, image_size=image_size, mean_examples=3)
  config.update(batch_size=4, eval_batch_size=4)
  return config


@pytest.fixture
def mock_imagenet(tmp_path):
  jpegs = [tf.io.encode_jpeg(photo(g, s)).numpy() for g, s in zip(GREYS, SIZES)]
  tfrecord_imagenet.prepare(str(tmp_path), {split: (jpegs, range(len(jpegs)))
                                            for split in ('train', 'validation')}, num_files=1)
  return str(tmp_path)


def first_batches(config):
  """The first train and the first eval batch of one process, as the host ships them."""
  data = datasets.open_config(config)
  return next(data.train_batches(0)), next(iter(data.eval_split()))


def train_mean_image(config):
  return datasets.open_config(config).train_mean_image()


def device_images(config):
  """``steps.model_images`` jitted as the train and eval steps run it for ``config``."""
  correction = datasets.open_config(config).mean_correction()
  return jax.jit(lambda batch: steps.model_images(batch, correction))


def test_per_pixel_mean_is_the_mean_of_the_first_training_crops(mock_imagenet):
  mean = train_mean_image(config_for(mock_imagenet, per_pixel=True))
  assert mean.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
  # By hand: the centre crops keep each photo's two halves; the first three photos average
  # (200 + 120 + 160) / 3 = 160 on the left and (40 + 80 + 20) / 3 = 46.7 on the right.
  np.testing.assert_allclose(mean[:, 2], 160 / 255, atol=3 / 255)
  np.testing.assert_allclose(mean[:, -3], 140 / 3 / 255, atol=3 / 255)
  per_channel = train_mean_image(config_for(mock_imagenet, per_pixel=False))
  np.testing.assert_allclose(per_channel, np.broadcast_to(imagenet_preprocessing.IMAGENET_RGB_MEAN,
                                                          per_channel.shape), rtol=1e-6)


def test_train_and_eval_inputs_subtract_the_per_pixel_mean(mock_imagenet):
  configs = [config_for(mock_imagenet, per_pixel) for per_pixel in (False, True)]
  difference = train_mean_image(configs[1]) - train_mean_image(configs[0])
  assert np.abs(difference).max() > 0.1
  # The images as the model sees them (uint8 and an offset until the device).
  evals = [np.asarray(device_images(c)(first_batches(c)[1])) for c in configs]
  trains = [np.asarray(device_images(c)(first_batches(c)[0])) for c in configs]
  for channel_mean_images, pixel_mean_images in (evals, trains):
    np.testing.assert_allclose(channel_mean_images - pixel_mean_images,
                               np.broadcast_to(difference, pixel_mean_images.shape), atol=1e-5)
  np.testing.assert_allclose(
      datasets.open_config(configs[1]).preprocess_for_eval([photo(GREYS[0], SIZES[0])]),
      evals[1][:1], atol=1e-5)


@pytest.mark.parametrize('image_size', [IMAGE_SIZE, 224])
def test_batches_ship_uint8_images_and_three_floats_per_example(mock_imagenet, image_size):
  config = config_for(mock_imagenet, per_pixel=True, image_size=image_size)
  for batch in first_batches(config):
    assert batch['image'].dtype == np.uint8 and batch['image_offset'].dtype == np.float32
    shipped = (batch['image'].nbytes + batch['image_offset'].nbytes) / len(batch['label'])
    assert shipped == image_size * image_size * 3 + 3 * 4


def test_the_device_subtracts_the_per_pixel_mean_exactly_as_the_host_did(mock_imagenet):
  config = config_for(mock_imagenet, per_pixel=True)
  correction = datasets.open_config(config).mean_correction()
  train, evals = first_batches(config)
  # Before, the host shipped the offset minus the correction, per pixel, for the device to add.
  shift_before = jax.jit(lambda images, offsets: images.astype(jnp.float32) / 255.0 + offsets)
  for batch in (train, evals):
    offsets_before = batch['image_offset'][:, None, None, :] - correction
    np.testing.assert_array_equal(device_images(config)(batch),
                                  shift_before(batch['image'], offsets_before))
  # Evaluation's crops minus the per-pixel mean, written out.
  np.testing.assert_allclose(device_images(config)(evals), evals['image'] / 255.0
                             - train_mean_image(config), rtol=0, atol=1e-6)


class LargestPixel(nn.Module):
  """Scores class 0 with 100 x the largest |pixel| of its input, every other class 0."""

  @nn.compact
  def __call__(self, x, train):
    del train
    return jnp.zeros((x.shape[0], 1000)).at[:, 0].set(100 * jnp.abs(x).max(axis=(1, 2, 3)))


def test_ten_crop_and_multi_scale_subtract_the_per_pixel_mean_from_every_view(tmp_path):
  # Photos of one grey level: their per-pixel mean is the photo itself, so with it subtracted
  # every 10-crop and multi-scale view (whatever its size) is zero and class 0 gets exp(0) of
  # 1,000 equal scores; with the per-channel mean, 200/255 - 0.406 per pixel stays.
  flat = [tf.io.encode_jpeg(np.full((*size, 3), 200, np.uint8)).numpy() for size in SIZES]
  tfrecord_imagenet.prepare(str(tmp_path), {split: (flat, range(len(flat)))
                                            for split in ('train', 'validation')}, num_files=1)
  for mode in ('ten_crop', 'multi_scale'):
    for per_pixel, low, high in ((True, 0.001, 0.0012), (False, 0.99, 1.0)):
      scores = np.concatenate([p[m] for p, _, m in protocols.predictions(
          datasets.plan_for(config_for(str(tmp_path), per_pixel)), LargestPixel(), {}, mode)])
      assert len(scores) == len(flat)
      assert np.all((low <= scores[:, 0]) & (scores[:, 0] <= high)), (mode, per_pixel)
